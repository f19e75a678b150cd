import pytest
import torch

from gmmmem import mixtures
from reference import tweedie_posterior_mean

F64 = torch.float64


def _setup(d, M, n, var, seed):
    g = torch.Generator().manual_seed(seed)
    gmm = mixtures.random_iso_gmm(d, M, var=max(var, 0.3), generator=g, dtype=F64)
    x0, _ = gmm.sample(n, g)
    return g, gmm.means, x0


@pytest.mark.parametrize("d,M,var", [(1, 3, 0.5), (3, 5, 0.0), (8, 4, 1.0), (5, 7, 1e-6)])
@pytest.mark.parametrize("t", [0.001, 0.3, 0.7, 0.999])
def test_denoiser_equals_tweedie_brute_force(d, M, var, t):
    g, means, x0 = _setup(d, M, 16, var, seed=d * 100 + M)
    # Points both near the data and between components, where the posterior is mixed.
    x_t = (1 - t * t) ** 0.5 * x0 + t * torch.randn(x0.shape, generator=g, dtype=F64)
    got = mixtures.gmm_denoise(x_t, t, means, var)
    want = tweedie_posterior_mean(x_t, torch.tensor(t, dtype=F64), means, var)
    assert torch.allclose(got, want, rtol=1e-7, atol=1e-7 * (1 + want.abs().max()))


def test_batched_times_and_leading_dims():
    g, means, x0 = _setup(4, 6, 12, 0.7, seed=1)
    t = torch.rand(3, 12, generator=g, dtype=F64) * 0.99 + 0.005
    x_t = torch.sqrt(1 - t * t)[..., None] * x0 + t[..., None] * torch.randn(3, 12, 4, generator=g, dtype=F64)
    got = mixtures.gmm_denoise(x_t, t, means, 0.7)
    assert got.shape == (3, 12, 4)
    want = tweedie_posterior_mean(x_t, t, means, 0.7)
    assert torch.allclose(got, want, rtol=1e-7, atol=1e-9)


def test_memorizing_denoiser_at_small_noise_returns_the_nearest_training_point():
    g, _, X = _setup(10, 5, 30, 1.0, seed=2)
    means, var = mixtures.memorizing(X)
    x_t = (1 - 1e-6) ** 0.5 * X + 1e-3 * torch.randn(X.shape, generator=g, dtype=F64)
    assert torch.allclose(mixtures.gmm_denoise(x_t, 0.001, means, var), X, atol=1e-9)


def test_float32_matches_float64():
    g, means, x0 = _setup(30, 10, 64, 1.0, seed=3)
    for t in (0.001, 0.36, 0.999):
        x_t = (1 - t * t) ** 0.5 * x0 + t * torch.randn(x0.shape, generator=g, dtype=F64)
        for var in (0.0, 1e-6, 1.0):
            ref = mixtures.gmm_denoise(x_t, t, means, var)
            got = mixtures.gmm_denoise(x_t.float(), t, means.float(), var).double()
            assert torch.allclose(got, ref, atol=1e-3 * (1 + ref.abs().max()))


@pytest.mark.parametrize("t", [0.001, 0.999])
@pytest.mark.parametrize("var0", [0.0, 1e-6])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_gradients_are_finite_at_the_extremes(t, var0, dtype):
    g, means, x0 = _setup(6, 4, 20, 1.0, seed=4)
    means = means.to(dtype).requires_grad_(True)
    var = torch.tensor(var0, dtype=dtype, requires_grad=True)
    # Far from every mean as well as near the data: the softmax saturates at small t.
    x_t = torch.cat([x0.to(dtype), 50 * torch.randn(5, 6, generator=g, dtype=F64).to(dtype)])
    x_t.requires_grad_(True)
    out = mixtures.gmm_denoise(x_t, t, means, var)
    out.square().sum().backward()
    assert torch.isfinite(out).all()
    for p in (means, var, x_t):
        assert torch.isfinite(p.grad).all()


def test_sampling_moments():
    g = torch.Generator().manual_seed(5)
    gmm = mixtures.random_iso_gmm(3, 2, var=0.5, generator=g, dtype=F64)
    assert torch.allclose(gmm.means.norm(dim=1), torch.full((2,), 3**0.5, dtype=F64))
    x, labels = gmm.sample(200_000, g)
    for k in range(2):
        xk = x[labels == k]
        assert abs(len(xk) / 200_000 - 0.5) < 0.01
        assert torch.allclose(xk.mean(0), gmm.means[k], atol=0.01)
        assert torch.allclose(torch.cov(xk.T), 0.5 * torch.eye(3, dtype=F64), atol=0.01)


def test_sampling_is_reproducible_under_a_seed():
    a = mixtures.random_iso_gmm(5, 3, generator=torch.Generator().manual_seed(7))
    b = mixtures.random_iso_gmm(5, 3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.means, b.means)
    assert torch.equal(a.sample(10, torch.Generator().manual_seed(1))[0], b.sample(10, torch.Generator().manual_seed(1))[0])


def test_partially_memorizing_picks_distinct_training_points():
    X = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    means, var = mixtures.partially_memorizing(X, 7, torch.Generator().manual_seed(1))
    assert var == 0.0 and means.shape == (7, 4)
    hits = (means[:, None, :] == X[None]).all(-1)
    assert (hits.sum(1) == 1).all() and hits.any(0).sum() == 7


@pytest.mark.parametrize(
    "call,word",
    [
        (lambda X: mixtures.gmm_denoise(torch.zeros(3, 5), 0.5, X, 1.0), "dimension"),
        (lambda X: mixtures.gmm_denoise(torch.zeros(3, 4), 0.5, X, -1.0), "var"),
        (lambda X: mixtures.gmm_denoise(torch.zeros(3, 4), 0.0, X, 1.0), "t"),
        (lambda X: mixtures.gmm_denoise(torch.zeros(3, 4), 1.0, X, 1.0), "t"),
        (lambda X: mixtures.gmm_denoise(torch.zeros(3, 4), torch.full((2,), 0.5), X, 1.0), "broadcast"),
        (lambda X: mixtures.partially_memorizing(X, 11), "M"),
        (lambda X: mixtures.partially_memorizing(X, 0), "M"),
        (lambda X: mixtures.memorizing(X[:0]), "empty"),
        (lambda X: mixtures.memorizing(X.fill_(float("nan"))), "NaN"),
        (lambda X: mixtures.IsoGMM(X, var=float("nan")), "var"),
        (lambda X: mixtures.IsoGMM(X[0], var=1.0), "shape"),
    ],
)
def test_bad_input_gives_clear_errors(call, word):
    with pytest.raises(ValueError, match=word):
        call(torch.randn(10, 4))
