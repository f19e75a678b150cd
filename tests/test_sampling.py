import math

import pytest
import torch

from gmmmem import diffusion, metrics, mixtures, sampling

F64 = torch.float64
T_MAX = 0.999


def _gaussian(m, s2):
    """The exact denoiser of N(m, s2 I) (a one-component mixture)."""
    return lambda x, t: mixtures.gmm_denoise(x, t, m[None], s2)


def _predicted(times, s2, stochastic):
    """Slope C and variance V of the sampler's output with the N(m, s2 I) denoiser.

    The denoiser is m + r_t y with y = x_t - alpha_t m and r_t = alpha_t s2 / v_t,
    v_t = alpha_t^2 s2 + sigma_t^2, so every step is affine in y: y_s = A y_t (+ noise of
    variance w). DDIM: A = (alpha_s alpha_t s2 + sigma_s sigma_t) / v_t, w = 0. DDPM:
    A = c_t + c_0 r_t, w = the posterior variance. The output is m + r_{t_L} y_{t_L}, and
    y_{t_1} = x_{t_1} - alpha_{t_1} m with x_{t_1} ~ N(0, I), so the output mean is
    m - C alpha_{t_1} m and its per-coordinate variance V.
    """
    ts = sorted(times, reverse=True)
    C, V = 1.0, 1.0
    for t, s in zip(ts[:-1], ts[1:]):
        a_t, a_s = math.sqrt(1 - t * t), math.sqrt(1 - s * s)
        v_t = a_t * a_t * s2 + t * t
        if stochastic:
            a_ts = a_t / a_s
            s2_ts = t * t - a_ts * a_ts * s * s
            A = a_ts * s * s / (t * t) + a_s * s2_ts / (t * t) * (a_t * s2 / v_t)
            w = s2_ts * s * s / (t * t)
        else:
            A, w = (a_s * a_t * s2 + s * t) / v_t, 0.0
        C, V = A * C, A * A * V + w
    a_L = math.sqrt(1 - ts[-1] ** 2)
    r_L = a_L * s2 / (a_L * a_L * s2 + ts[-1] ** 2)
    return r_L * C, r_L * r_L * V


@pytest.fixture(scope="module")
def mixture_data():
    g = torch.Generator().manual_seed(0)
    gmm = mixtures.random_iso_gmm(30, 4, generator=g, dtype=F64)
    X, _ = gmm.sample(100, g)
    return gmm, X


@pytest.mark.parametrize("stochastic", [False, True])
def test_true_mixture_generalizes_and_memorizing_denoiser_memorizes(mixture_data, stochastic):
    gmm, X = mixture_data
    times = diffusion.time_grid(dtype=F64)
    kw = dict(dtype=F64, stochastic=stochastic)
    g = torch.Generator().manual_seed(1)
    fresh = sampling.ddim_sample(gmm.denoise, 200, 30, times, g, **kw)
    assert metrics.memorization_ratio(fresh, X) <= 0.05
    means, var = mixtures.memorizing(X)
    copies = sampling.ddim_sample(lambda x, t: mixtures.gmm_denoise(x, t, means, var), 200, 30, times, g, **kw)
    assert metrics.memorization_ratio(copies, X) >= 0.95


M4 = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)


@pytest.mark.parametrize("stochastic", [False, True])
def test_single_gaussian_moments_match_the_exact_discretized_recursion(stochastic):
    # On the paper's 26 times the discretization error is large (output variance 10-16%
    # below s2), and differs between DDIM and DDPM: the moments must match the recursion
    # of *this* sampler, to Monte Carlo accuracy (5 standard errors).
    s2, n = 0.25, 40_000
    times = diffusion.time_grid(dtype=F64).tolist()
    C, V = _predicted(times, s2, stochastic)
    C_other, V_other = _predicted(times, s2, not stochastic)
    g = torch.Generator().manual_seed(2)
    x = sampling.ddim_sample(_gaussian(M4, s2), n, 4, times, g, dtype=F64, stochastic=stochastic)
    want_mean = M4 * (1 - C * math.sqrt(1 - T_MAX**2))
    assert torch.allclose(x.mean(0), want_mean, atol=5 * math.sqrt(V / n))
    tol = 5 * math.sqrt(2 / (n * 4))  # relative standard error of the pooled variance
    var = x.var(0).mean().item()
    assert abs(var / V - 1) < tol
    assert abs(V_other / V - 1) > 3 * tol  # the check tells the two samplers apart


def test_ddim_is_exactly_the_affine_map_of_the_discretized_ode():
    # With the same start x_T, the output is m + C (x_T - alpha_T m): recover x_T from two
    # different Gaussians and compare to float64 precision.
    times = diffusion.time_grid(dtype=F64).tolist()
    a_T = math.sqrt(1 - T_MAX**2)
    starts = []
    for m, s2 in ((M4, 0.25), (-3 * M4, 4.0)):
        C, _ = _predicted(times, s2, stochastic=False)
        x = sampling.ddim_sample(_gaussian(m, s2), 50, 4, times, torch.Generator().manual_seed(3), dtype=F64)
        starts.append((x - m) / C + a_T * m)
    assert torch.allclose(starts[0], starts[1], rtol=0, atol=1e-11)


@pytest.mark.parametrize("stochastic", [False, True])
def test_single_gaussian_fine_grid_recovers_the_distribution(stochastic):
    # Samples of N(m, s2 I) up to three known errors:
    # * the N(0, I) start instead of N(alpha_T m, v_T I) biases the mean by at most
    #   alpha_T s |m_i| / sqrt(v_T) (the exact-ODE slope s / sqrt(v_T) times the start's mean
    #   error alpha_T m; DDPM propagates it with the smaller slope alpha_T s2 / v_T);
    # * 500 times leave a variance error below 1.1% (DDIM 0.4%, DDPM 1.0%, from the
    #   recursion above; 26 times would give 10-16% and fail);
    # * Monte Carlo error: 5 standard errors.
    s2, n, d = 0.25, 20_000, 4
    times = diffusion.time_grid(500, dtype=F64)
    g = torch.Generator().manual_seed(4)
    x = sampling.ddim_sample(_gaussian(M4, s2), n, d, times, g, dtype=F64, stochastic=stochastic)
    a_T = math.sqrt(1 - T_MAX**2)
    v_T = a_T**2 * s2 + T_MAX**2
    bias = a_T * math.sqrt(s2 / v_T) * M4.abs()
    assert ((x.mean(0) - M4).abs() <= bias + 5 * math.sqrt(s2 / n)).all()
    cov = torch.cov(x.T)
    pooled = cov.diagonal().mean().item()
    assert abs(pooled / s2 - 1) < 0.011 + 5 * math.sqrt(2 / (n * d))
    off = cov - torch.diag(cov.diagonal())
    assert off.abs().max() < 5 * s2 / math.sqrt(n)


@pytest.mark.parametrize("t,s", [(0.999, 0.5), (0.5, 0.499), (0.3, 0.001), (0.002, 0.001)])
def test_posterior_coefficients_define_the_forward_posterior(t, s):
    # If x_t ~ N(a_t x0, sig_t^2) and x_s | x_t ~ N(c_t x_t + c_0 x0, v), then x_s must have
    # the forward marginal N(a_s x0, sig_s^2), and Cov(x_s, x_t) = c_t sig_t^2 must be the
    # forward chain's a_{t|s} sig_s^2. These three equations fix (c_t, c_0, v).
    c_t, c_0, v = sampling.posterior_coefficients(t, s)
    a_t, a_s = math.sqrt(1 - t * t), math.sqrt(1 - s * s)
    assert c_t * a_t + c_0 == pytest.approx(a_s, rel=1e-12)
    assert c_t**2 * t * t + v == pytest.approx(s * s, rel=1e-10)
    assert c_t * t * t == pytest.approx(a_t / a_s * s * s, rel=1e-12)
    assert v > 0


def test_reproducible_under_a_seed_and_dtype_respected(mixture_data):
    gmm, _ = mixture_data
    times = diffusion.time_grid()
    for stochastic in (False, True):
        run = lambda seed: sampling.ddim_sample(  # noqa: E731
            gmm.denoise, 10, 30, times, torch.Generator().manual_seed(seed), dtype=F64, stochastic=stochastic
        )
        assert torch.equal(run(5), run(5))
        assert not torch.equal(run(5), run(6))
    x = sampling.ddim_sample(lambda x, t: 0.5 * x, 3, 2, [0.2, 0.1], dtype=torch.float32)
    assert x.dtype == torch.float32 and x.shape == (3, 2)


def test_times_any_order_one_denoiser_call_each_on_the_whole_batch():
    seen = []

    def denoise(x, t):
        seen.append((t, tuple(x.shape)))
        return torch.zeros_like(x)

    times = torch.tensor([0.3, 0.9, 0.001, 0.6])
    x = sampling.ddim_sample(denoise, 7, 3, times, torch.Generator().manual_seed(0))
    assert [t for t, _ in seen] == pytest.approx([0.9, 0.6, 0.3, 0.001])
    assert all(shape == (7, 3) for _, shape in seen)
    assert torch.equal(x, torch.zeros(7, 3))  # the output is the last denoiser call


def test_no_autograd_graph_is_built():
    w = torch.tensor(0.5, requires_grad=True)
    x = sampling.ddim_sample(lambda x, t: w * x, 4, 2, [0.5, 0.1])
    assert not x.requires_grad


@pytest.mark.parametrize(
    "kw,name",
    [
        (dict(n=0), "n"),
        (dict(n=2.5), "n"),
        (dict(d=0), "d"),
        (dict(times=[0.5]), "times"),
        (dict(times=[[0.5, 0.2]]), "times"),
        (dict(times=[0.0, 0.5]), "times"),
        (dict(times=[0.5, 1.0]), "times"),
        (dict(times=[0.5, 0.2, 0.5]), "times"),
        (dict(denoise=lambda x, t: x[:, :1]), "denoise"),
        (dict(denoise=lambda x, t: 0.0), "denoise"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(kw, name):
    args = dict(denoise=lambda x, t: x, n=3, d=2, times=[0.5, 0.2]) | kw
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        sampling.ddim_sample(**args)


@pytest.mark.parametrize("t,s,name", [(0.5, 0.5, "s"), (0.2, 0.5, "s"), (1.0, 0.5, "t"), (0.5, 0.0, "s")])
def test_posterior_coefficients_reject_bad_times(t, s, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        sampling.posterior_coefficients(t, s)
