import sys

import pytest
import torch

from gmmmem import mixtures, templates
from gmmmem.templates import ColoredTemplates, colorize, load_templates, lowrank_denoise
from reference import dense_template_posterior_mean

F64 = torch.float64
TIMES = [0.001, 0.2, 0.5, 0.8, 0.999]


def _model(M, h, w, seed, *, zero_means=False, dtype=F64):
    """Non-negative templates of clearly different norms (scales 0.5 .. 2.5), colour means."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.5, 2.5, M, dtype=F64)[:, None, None]
    T = torch.rand(M, h, w, generator=g, dtype=F64) * scales
    mu = torch.zeros(M, 3, dtype=F64) if zero_means else torch.randn(M, 3, generator=g, dtype=F64)
    return g, T.to(dtype), mu.to(dtype)


def _noisy(g, T, mu, t, n, var=0.5):
    """Noised samples of the mixture, midpoints between them (mixed posteriors) and far points."""
    x0, _ = ColoredTemplates(T, mu, max(var, 0.3)).sample(n, g)
    far = 5 * torch.randn(4, *x0.shape[1:], generator=g, dtype=x0.dtype)
    x0 = torch.cat([x0, 0.5 * (x0[: n // 2] + x0[n // 2 :]), far])
    return (1 - t * t) ** 0.5 * x0 + t * torch.randn(x0.shape, generator=g, dtype=x0.dtype)


def _close(got, want, tol):
    return torch.allclose(got, want, rtol=tol, atol=tol * (1 + want.abs().max()))


# ----------------------------------------------------------------------- exactness


@pytest.mark.parametrize("var", [0.0, 1e-6, 0.5, 2.0])
@pytest.mark.parametrize("t", TIMES)
def test_denoiser_equals_dense_float64_posterior_mean(t, var):
    # 4 templates of 3 x 4 pixels: 3hw = 36, dense covariances are cheap. Float64 on both
    # sides; the dense side solves with covariances of condition number up to ~1e7
    # (t = 0.001, var = 2), so agreement to 1e-7 relative leaves ample margin.
    g, T, mu = _model(4, 3, 4, seed=int(1000 * t) + int(10 * var))
    x_t = _noisy(g, T, mu, t, 16, var)
    got = lowrank_denoise(x_t, t, T, mu, var)
    want = dense_template_posterior_mean(x_t, t, T, mu, var)
    assert _close(got, want, 1e-7)


@pytest.mark.parametrize("t", [0.5, 0.7, 0.9])
def test_log_determinant_term_matters_and_is_right(t):
    # Colour means 0 (the paper's setting) and T_1 = 3 T_0: components 0 and 1 differ only in
    # the variance along one rank-3 subspace, which the -(3/2) log(1 + a^2 s^2 n_j^2 / sigma^2)
    # term weighs. Dropping it (cancelled here through logit_bias) moves the output by more
    # than 10% of its scale (measured: 11-22% at these t; 0.1% at t = 0.1, hence these t),
    # while the full formula matches the dense reference to rounding.
    g, T, mu = _model(3, 4, 5, seed=7, zero_means=True)
    T[1] = 3 * T[0]
    x_t = _noisy(g, T, mu, t, 40, 1.0)
    want = dense_template_posterior_mean(x_t, t, T, mu, 1.0)
    assert _close(lowrank_denoise(x_t, t, T, mu, 1.0), want, 1e-8)

    a, s2 = (1 - t * t) ** 0.5, t * t
    lam = a * a * 1.0 * T.flatten(1).square().sum(1)
    without_logdet = templates.posterior_mean(
        x_t.flatten(2), torch.tensor(a, dtype=F64), torch.tensor(s2, dtype=F64),
        T.flatten(1), mu, torch.tensor(1.0, dtype=F64), logit_bias=1.5 * torch.log1p(lam / s2),
    ).reshape(x_t.shape)
    assert (without_logdet - want).abs().max() > 0.1 * want.abs().max()


@pytest.mark.parametrize("var", [0.3, 2.0])
@pytest.mark.parametrize("t", [0.01, 0.5, 0.99])
def test_single_template_is_the_linear_gaussian_posterior_mean(t, var):
    # K = 1: x_0 ~ N(m, Sigma), Sigma = var n^2 P with P = I_3 ⊗ u u^T, so the posterior mean
    # is affine: m + a Sigma (a^2 Sigma + sigma^2 I)^{-1} (x - a m) = m + r P (x - a m),
    # r = a var n^2 / (sigma^2 + a^2 var n^2). P is built here as an explicit 60 x 60 matrix.
    g, T, mu = _model(1, 4, 5, seed=3)
    x_t = 3 * torch.randn(10, 3, 4, 5, generator=g, dtype=F64)
    a, s2 = (1 - t * t) ** 0.5, t * t
    u = T.flatten() / T.norm()
    P = torch.kron(torch.eye(3, dtype=F64), torch.outer(u, u))
    n2 = T.square().sum()
    r = a * var * n2 / (s2 + a * a * var * n2)
    m = colorize(mu[0], T[0]).flatten()
    want = m + r * (x_t.flatten(1) - a * m) @ P
    got = lowrank_denoise(x_t, t, T, mu, var)
    assert _close(got.flatten(1), want, 1e-10)
    # and it is affine in x_t
    x1, x2 = x_t[:5], x_t[5:]
    lhs = lowrank_denoise(0.3 * x1 + 0.7 * x2, t, T, mu, var)
    rhs = 0.3 * lowrank_denoise(x1, t, T, mu, var) + 0.7 * lowrank_denoise(x2, t, T, mu, var)
    assert _close(lhs, rhs, 1e-10)


@pytest.mark.parametrize("t", [0.001, 0.36, 0.999])
def test_zero_colour_variance_is_the_memorizing_denoiser_of_the_point_masses(t):
    # At s_c^2 = 0 the mixture is point masses mu_j ⊗ T_j; gmm_denoise computes its posterior
    # mean from differently arranged logits, so float64 agreement is to rounding (1e-9).
    g, T, mu = _model(6, 5, 4, seed=11)
    x_t = _noisy(g, T, mu, t, 20)
    got = lowrank_denoise(x_t, t, T, mu, 0.0)
    means = colorize(mu, T).flatten(1)
    want = mixtures.gmm_denoise(x_t.flatten(1), t, means, 0.0).reshape(x_t.shape)
    assert _close(got, want, 1e-9)


def test_batched_times_and_leading_dims():
    g, T, mu = _model(3, 3, 3, seed=5)
    t = torch.rand(2, 6, generator=g, dtype=F64) * 0.99 + 0.005
    x0, _ = ColoredTemplates(T, mu, 0.7).sample(12, g)
    x0 = x0.reshape(2, 6, 3, 3, 3)
    eps = torch.randn(x0.shape, generator=g, dtype=F64)
    x_t = torch.sqrt(1 - t * t)[..., None, None, None] * x0 + t[..., None, None, None] * eps
    got = lowrank_denoise(x_t, t, T, mu, 0.7)
    assert got.shape == x_t.shape
    for i in range(2):
        for k in range(6):
            want = dense_template_posterior_mean(x_t[i, k : k + 1], float(t[i, k]), T, mu, 0.7)
            assert _close(got[i, k : k + 1], want, 1e-8)


def test_hot_path_batched_over_models_with_per_component_variance():
    # posterior_mean with a leading model axis S = 2, padded components (-inf bias) and a
    # per-component variance of shape (S, 1, M), against the dense reference per model.
    g, T, mu = _model(4, 3, 4, seed=9)
    Ts = torch.stack([T, T.flip(0)])
    mus = torch.stack([mu, -mu])
    var = torch.tensor([[[0.2, 1.0, 0.0, 3.0]], [[0.5, 0.5, 0.5, 0.5]]], dtype=F64)
    bias = torch.zeros(2, 1, 4, dtype=F64)
    bias[1, 0, 3] = -torch.inf
    t = 0.4
    x_t = _noisy(g, T, mu, t, 10)
    out = templates.posterior_mean(
        x_t.flatten(2), torch.tensor(0.84**0.5, dtype=F64), torch.tensor(t * t, dtype=F64),
        Ts.flatten(2), mus, var, logit_bias=bias,
    )
    want0 = dense_template_posterior_mean(x_t, t, Ts[0], mus[0], var[0, 0].tolist())
    want1 = dense_template_posterior_mean(x_t, t, Ts[1, :3], mus[1, :3], 0.5)
    assert _close(out[0].reshape(x_t.shape), want0, 1e-8)
    assert _close(out[1].reshape(x_t.shape), want1, 1e-8)


def test_float32_matches_float64_on_15x15_templates():
    g, T, mu = _model(10, 15, 15, seed=13)
    for t in (0.001, 0.36, 0.999):
        x_t = _noisy(g, T, mu, t, 32)
        for var in (0.0, 1e-6, 1.0):
            ref = lowrank_denoise(x_t, t, T, mu, var)
            got = lowrank_denoise(x_t.float(), t, T.float(), mu.float(), var).double()
            assert _close(got, ref, 1e-4)  # measured worst 4e-6


# ----------------------------------------------------------------------- stability


@pytest.mark.parametrize("t", [0.001, 0.999])
@pytest.mark.parametrize("var0", [0.0, 1e-6])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_values_and_gradients_are_finite_at_the_extremes(t, var0, dtype):
    g, T, mu = _model(5, 6, 6, seed=4)
    x_t = _noisy(g, T, mu, t, 12).to(dtype)
    x_t = torch.cat([x_t, 50 * torch.randn(3, 3, 6, 6, generator=g, dtype=F64).to(dtype)])
    T = T.to(dtype).requires_grad_(True)
    mu = mu.to(dtype).requires_grad_(True)
    var = torch.tensor(var0, dtype=dtype, requires_grad=True)
    x_t.requires_grad_(True)
    out = lowrank_denoise(x_t, t, T, mu, var)
    out.square().sum().backward()
    assert torch.isfinite(out).all()
    for p in (T, mu, var, x_t):
        assert torch.isfinite(p.grad).all()


def test_zero_colour_means_and_variance_is_finite():
    # Every component a point mass at 0: D = 0 exactly, whatever x_t.
    _, T, _ = _model(3, 4, 4, seed=2)
    x_t = torch.randn(5, 3, 4, 4, dtype=F64)
    out = lowrank_denoise(x_t, 0.001, T, torch.zeros(3, 3, dtype=F64), 0.0)
    assert torch.equal(out, torch.zeros_like(out))


# ----------------------------------------------------------------------- sampling


def test_sample_moments_along_and_orthogonal_to_the_template():
    # One template, 200,000 samples. Standard errors: per-pixel mean <= sqrt(0.7) * max T /
    # sqrt(n) ~ 0.005 (bound 0.02); the variance of the projections on u, 0.7 n^2, has relative
    # standard error sqrt(2/n) ~ 0.003 (bound 2%); the part orthogonal to span{e_i ⊗ u} is 0
    # up to float64 rounding.
    g, T, _ = _model(1, 4, 5, seed=6)
    mu = torch.tensor([[0.5, -1.0, 2.0]], dtype=F64)
    x, labels = ColoredTemplates(T, mu, 0.7).sample(200_000, g)
    assert x.shape == (200_000, 3, 4, 5) and torch.equal(labels, torch.zeros_like(labels))
    assert torch.allclose(x.mean(0), colorize(mu[0], T[0]), atol=0.02)
    u = T[0].flatten() / T.norm()
    p = x.flatten(2) @ u  # (n, 3)
    cov = torch.cov(p.T)
    n2 = T.square().sum()
    assert torch.allclose(cov, 0.7 * n2 * torch.eye(3, dtype=F64), atol=0.02 * 0.7 * n2)
    residual = x.flatten(2) - p[..., None] * u
    assert residual.abs().max() < 1e-12 * x.abs().max()


def test_sample_labels_are_uniform_and_images_match_their_template():
    g, T, mu = _model(3, 4, 4, seed=8)
    x, labels = ColoredTemplates(T, mu, 0.0).sample(30_000, g)
    freq = torch.bincount(labels, minlength=3) / 30_000
    assert torch.allclose(freq, torch.full((3,), 1 / 3, dtype=freq.dtype), atol=0.015)
    assert torch.allclose(x, colorize(mu, T)[labels])


def test_class_properties_and_denoise():
    g, T, mu = _model(2, 3, 5, seed=1)
    model = ColoredTemplates(T, mu, 0.4)
    assert (model.K, model.image_shape, model.d) == (2, (3, 3, 5), 45)
    assert model.means().shape == (2, 3, 3, 5)
    x_t = _noisy(g, T, mu, 0.5, 4)
    assert torch.equal(model.denoise(x_t, 0.5), lowrank_denoise(x_t, 0.5, T, mu, 0.4))


# ----------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_clear_value_errors():
    _, T, mu = _model(3, 4, 5, seed=0)
    x = torch.zeros(2, 3, 4, 5, dtype=F64)
    cases = [
        (lambda: lowrank_denoise(x, 0.5, T[0], mu, 1.0), "templates must be a tensor of shape"),
        (lambda: lowrank_denoise(x, 0.5, T, mu[:2], 1.0), "color_means has 2 rows"),
        (lambda: lowrank_denoise(x, 0.5, T, mu[:, :2], 1.0), "color_means has dimension 2"),
        (lambda: lowrank_denoise(x, 0.5, T, mu, -0.1), "color_var must be finite and >= 0"),
        (lambda: lowrank_denoise(x, 0.0, T, mu, 1.0), "t must lie in the open interval"),
        (lambda: lowrank_denoise(x, 1.0, T, mu, 1.0), "t must lie in the open interval"),
        (lambda: lowrank_denoise(x, torch.full((3,), 0.5), T, mu, 1.0), "does not broadcast"),
        (lambda: lowrank_denoise(x[..., :4], 0.5, T, mu, 1.0),
         r"x_t must have shape \(\.\.\., 3, 4, 5\), got \(2, 3, 4, 4\)"),
        (lambda: lowrank_denoise(x[:, :2], 0.5, T, mu, 1.0), r"x_t must have shape"),
        (lambda: lowrank_denoise(x.long(), 0.5, T, mu, 1.0), "x_t must be a floating-point"),
        (lambda: lowrank_denoise(x, 0.5, T.clone().index_fill_(0, torch.tensor([2]), 0.0), mu, 1.0),
         r"templates \[2\] are all zero"),
        (lambda: lowrank_denoise(x, 0.5, T[:0], mu[:0], 1.0), "templates is empty"),
        (lambda: ColoredTemplates(T.tolist(), mu, 1.0), "templates must be a tensor"),
        (lambda: lowrank_denoise(x, 0.5, T * torch.nan, mu, 1.0), "templates contains NaN"),
        (lambda: ColoredTemplates(T, mu[:2], 1.0), "color_means has 2 rows"),
        (lambda: ColoredTemplates(T, mu, float("nan")), "color_var"),
        (lambda: ColoredTemplates(T.flatten(1), mu, 1.0), "templates must be a tensor of shape"),
        (lambda: ColoredTemplates(T, mu, 1.0).sample(0), "n must be an integer >= 1"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


# ----------------------------------------------------------------------- load_templates


def test_load_templates_shapes_range_and_determinism():
    pytest.importorskip("sklearn")
    for K, size in [(1, 15), (6, 15), (10, 3), (25, 8), (4, 1)]:
        X = load_templates(K, size=size)
        assert X.shape == (K, size, size) and X.dtype == torch.get_default_dtype()
        assert X.min() >= 0 and X.max() <= 1 and (X.flatten(1).norm(dim=1) > 0).all()
        assert torch.equal(X, load_templates(K, size=size, seed=0))
    assert not torch.equal(load_templates(6, seed=0), load_templates(6, seed=1))
    assert not torch.equal(load_templates(25, seed=0), load_templates(25, seed=1))
    X = load_templates(200, size=8, dtype=F64)
    assert X.dtype == F64 and len(torch.unique(X.flatten(1), dim=0)) == 200  # distinct images


def test_load_templates_one_per_digit_class():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=F64)
    X = load_templates(10, size=8, seed=3, dtype=F64)  # 8 x 8 is the native size: no resampling
    for k in range(10):
        match = ((images - 16 * X[k]).flatten(1).abs().amax(1) < 1e-9).nonzero().flatten()
        assert len(match) == 1 and digits.target[int(match[0])] == k


def test_load_templates_bad_arguments():
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match="K must be <= 1797"):
        load_templates(1798)
    with pytest.raises(ValueError, match="K must be an integer >= 1"):
        load_templates(0)
    with pytest.raises(ValueError, match="source must be one of"):
        load_templates(3, source="fashion_mnist")
    with pytest.raises(ValueError, match="size must be an integer >= 1"):
        load_templates(3, size=0)
    with pytest.raises(ValueError, match="size must be an integer >= 1"):
        load_templates(3, size=2.5)


def test_load_templates_without_scikit_learn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        load_templates(3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_denoiser_on_cuda_matches_cpu():
    g, T, mu = _model(8, 15, 15, seed=21)
    x_t = _noisy(g, T, mu, 0.36, 64)
    t = torch.rand(x_t.shape[0], generator=g, dtype=F64) * 0.99 + 0.005
    for var in (0.0, 1e-6, 1.0):
        cpu = lowrank_denoise(x_t, t, T, mu, var)
        gpu = lowrank_denoise(x_t.cuda(), t.cuda(), T.cuda(), mu.cuda(), var).cpu()
        assert _close(gpu, cpu, 1e-10)
