r"""Denoising losses: Monte Carlo estimates, the paper's closed forms, and where they cross.

The training loss of a denoiser :math:`D` at time :math:`t`, in :math:`x_0` units, is

.. math:: L_{N,t}(D) = \frac1N \sum_{i=1}^N \mathbb{E}_\varepsilon
          \big\|D(\alpha_t x_i + \sigma_t \varepsilon, t) - x_i\big\|^2 ;

the :math:`\varepsilon`-prediction loss is :math:`\psi_t L_{N,t}` with
:math:`\psi_t = \alpha_t^2/\sigma_t^2`. The closed forms compare three denoisers: the true
mixture (generalizing), the memorizing one (all N training points, variance 0) and the
partially memorizing one (M of them). :func:`crossover` finds where the time-weighted losses
of the generalizing and partially memorizing models cross, whichever way they were obtained
(Monte Carlo, :func:`closed_form_losses`, :func:`finite_size_losses`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
from scipy import integrate, special, stats

from . import validate
from .diffusion import alpha, sigma, snr
from .mixtures import random_iso_gmm

Denoiser = Callable[[torch.Tensor, float], torch.Tensor]

#: Upper bound on the floats in one chunk of noisy points (keeps memory bounded).
CHUNK_FLOATS = 2**22


class CrossoverWarning(UserWarning):
    """The weighted losses given to :func:`crossover` do not cross."""


def mc_loss(
    denoise: Denoiser,
    X: torch.Tensor,
    t: float,
    num_draws: int,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    r"""Monte Carlo estimate of :math:`L_{N,t}(D)` and its standard error.

    Draw :math:`R` = ``num_draws`` noise vectors per training point. With
    :math:`\ell_r = \frac1N\sum_i \|D(\alpha_t x_i + \sigma_t\varepsilon_{ir}) - x_i\|^2`
    the estimate is the mean of :math:`\ell_1..\ell_R` and the standard error their
    standard deviation over :math:`\sqrt R` (the data are held fixed). Draws are processed
    in chunks of at most :data:`CHUNK_FLOATS` floats; the noise comes from ``generator``
    (on ``X``'s device), so the same generator state gives the same numbers.
    """
    validate.points(X, "X")
    validate.times(t)
    num_draws = validate.positive_int(num_draws, "num_draws")
    t = float(t)
    N, d = X.shape
    chunk = max(1, CHUNK_FLOATS // (N * d))
    per_draw = []
    with torch.no_grad():
        for start in range(0, num_draws, chunk):
            r = min(chunk, num_draws - start)
            eps = torch.randn(r, N, d, generator=generator, dtype=X.dtype, device=X.device)
            x_t = alpha(t) * X + sigma(t) * eps
            err = denoise(x_t, t) - X
            per_draw.append((err * err).sum(-1).mean(-1))
    draws = torch.cat(per_draw).double()
    stderr = draws.std().item() / math.sqrt(num_draws) if num_draws > 1 else float("nan")
    return draws.mean().item(), stderr


def eps_units(loss: float | torch.Tensor, t: float | torch.Tensor) -> float | torch.Tensor:
    """Convert an x_0-units loss to the epsilon-prediction loss: multiply by psi_t."""
    return loss * snr(t)


def _as_times(t: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float64)
    validate.times(t)
    return t


def gen_excess(t: float | torch.Tensor, d: int, var: float = 1.0) -> torch.Tensor:
    r"""Theorem 3.1: :math:`L_{N,t}(\theta_\star) - L_{N,t}(\theta_{mem}) \approx d s^2/(1+\psi_t s^2)`.

    This is the posterior variance of one Gaussian cluster summed over the ``d`` coordinates:
    the true mixture cannot recover a training point beyond its cluster's posterior spread,
    while the memorizing denoiser recovers it exactly when the noise is small.
    """
    validate.variance(var)
    t = _as_times(t)
    return d * var / (1.0 + snr(t) * var)


def pmem_excess(
    t: float | torch.Tensor, d: int, var: float, M: int, N: int, c: float = 2.0
) -> torch.Tensor:
    r"""Theorem 3.2: :math:`L_{N,t}(\theta_{pmem,M}) - L_{N,t}(\theta_{mem}) \approx c\,d s^2 (1 - M/N)`.

    Constant in ``t``. A training point that is not memorized is denoised (at small noise) to
    its nearest memorized point, about :math:`2 d s^2` away in squared distance when that
    point is an independent draw of the same cluster: hence ``c = 2`` (the rebuttal's
    constant, the default). The authors' code uses ``c = 1``; chapter 2 measures it.
    """
    validate.variance(var)
    validate.model_size(M, N)
    t = _as_times(t)
    return torch.full_like(t, c * d * var * (1.0 - M / N))


def _normalized(weights: Any, T: int) -> np.ndarray:
    """Time weights of shape (T,), finite, >= 0 and not all zero, scaled to sum to one."""
    w = validate.array(weights, "weights")
    if w.shape != (T,):
        raise ValueError(f"weights must have shape ({T},), one per time, got {w.shape}")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be >= 0 and not all zero")
    return w / w.sum()


def _crossings(
    sizes: np.ndarray, gaps: np.ndarray, w: np.ndarray, *, grad: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    r"""The crossing rule of :func:`crossover` on checked arrays, with why and how it moves.

    ``sizes`` (C, S), ``gaps`` (C, S, T) = generalizing minus partially memorizing loss,
    ``w`` (T,) normalized. Returns ``(r, status, dr)``: ``r`` (C,) the crossings (NaN where
    none); ``status`` (C,) 0 crossed, -1 none because the weighted gap is already > 0 at the
    smallest size, +1 because it is < 0 at every size; ``dr`` (C, T), when ``grad``, the
    gradient of ``r`` with respect to ``w`` (zero where there is no crossing or it sits on the
    smallest size).
    """
    C, S, T = gaps.shape
    f = gaps @ w
    nonneg = f >= 0
    status = np.where(f[:, 0] > 0, -1, np.where(nonneg.any(axis=1), 0, 1))
    j = np.argmax(nonneg, axis=1)  # the first size with f >= 0
    r = np.full(C, np.nan)
    first = np.nonzero((status == 0) & (j == 0))[0]  # f is exactly 0 at the smallest size
    r[first] = sizes[first, 0]
    rows = np.nonzero((status == 0) & (j > 0))[0]
    jj = j[rows]
    f0, f1 = f[rows, jj - 1], f[rows, jj]
    r0, r1 = sizes[rows, jj - 1], sizes[rows, jj]
    r[rows] = r0 + (r1 - r0) * (-f0) / (f1 - f0)
    dr = None
    if grad:
        dr = np.zeros((C, T))
        a0, a1 = gaps[rows, jj - 1], gaps[rows, jj]
        dr[rows] = ((r1 - r0) / (f1 - f0) ** 2)[:, None] * (f0[:, None] * a1 - f1[:, None] * a0)
    return r, status, dr


def crossover(sizes: Any, gen: Any, pmem: Any, weights: Any) -> float | np.ndarray:
    r"""The crossover :math:`M^\star/N` (Section 3): where the time-weighted loss gap turns >= 0.

    The gap is :math:`f(M) = \sum_t \bar\lambda_t [L^{gen}_t - L^{pmem}_t(M)]`: ``gen``
    (..., T) and ``pmem`` (..., S, T) are the generalizing and partially memorizing losses
    (Monte Carlo, :func:`closed_form_losses` or :func:`finite_size_losses`) at S strictly
    increasing model sizes ``sizes`` ((S,) or (..., S), as M/N), ``weights`` (T,) the time
    weights. The crossing is the first size where :math:`f \ge 0`, interpolated linearly from
    the size before (the smallest size itself only where :math:`f` is exactly 0 there); NaN,
    with a :class:`CrossoverWarning` saying why, where there is none. Returns a float for one
    configuration (``gen`` 1-D), else an array of shape ``gen.shape[:-1]``.
    """
    gen = validate.array(gen, "gen")
    pmem = validate.array(pmem, "pmem")
    if gen.ndim < 1 or gen.shape[-1] == 0:
        raise ValueError(f"gen must have shape (..., T) with T >= 1, got {gen.shape}")
    batch, T = gen.shape[:-1], gen.shape[-1]
    if pmem.ndim != gen.ndim + 1 or pmem.shape[:-2] != batch or pmem.shape[-1] != T:
        raise ValueError(f"pmem must have shape {batch + ('S', T)} to match gen {gen.shape}, "
                         f"got {pmem.shape}")
    S = pmem.shape[-2]
    sizes = validate.array(sizes, "sizes")
    if sizes.ndim == 1 and sizes.shape == (S,):
        sizes = np.broadcast_to(sizes, batch + (S,))
    if sizes.shape != batch + (S,):
        raise ValueError(f"sizes must have shape ({S},) or {batch + (S,)}, got {sizes.shape}")
    if S < 2 or (np.diff(sizes, axis=-1) <= 0).any():
        raise ValueError("sizes must hold at least two strictly increasing values per configuration")
    w = _normalized(weights, T)
    C = int(np.prod(batch))
    r, status, _ = _crossings(sizes.reshape(C, S), (gen[..., None, :] - pmem).reshape(C, S, T), w)
    below, above = int((status == -1).sum()), int((status == 1).sum())
    if below or above:
        count = (lambda n: "") if not batch else (lambda n: f" ({n} of {C} configurations)")
        why = ([f"the generalizing model already loses to the partially memorizing one at the "
                f"smallest size{count(below)}"] if below else []) + \
              ([f"the generalizing model wins at every size up to the largest{count(above)}"]
               if above else [])
        warnings.warn(f"no crossover: {'; '.join(why)}", CrossoverWarning, stacklevel=2)
    return float(r[0]) if not batch else r.reshape(batch)


def closed_form_losses(t: Any, var: Any, c: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Theorems 3.1/3.2 as loss arrays for :func:`crossover`, in units of :math:`d s^2`.

    Returns ``(sizes, gen, pmem)``: ``sizes`` = (0, 1) as M/N, ``gen`` (..., T) =
    :math:`1/(1 + \psi_t s^2)` and ``pmem`` (..., 2, T) = :math:`c(1 - M/N)`, for the
    data variance(s) ``var`` (a scalar or an array, the leading shape ``...``). Both are the
    excesses over the memorizing loss divided by :math:`d s^2`, which does not move the
    crossing; the partially memorizing one is linear in M/N, so two sizes give its crossing
    :math:`1 - \frac1c \sum_t \bar\lambda_t/(1 + \psi_t s^2)` exactly.
    """
    c = validate.positive(c, "c")
    v = validate.variances(var)
    t = _as_times(t).reshape(-1)
    if t.numel() == 0:
        raise ValueError("t must hold at least one time")
    sizes = np.array([0.0, 1.0])
    gen = 1.0 / (1.0 + snr(t).numpy() * v[..., None])
    pmem = np.broadcast_to(c * (1.0 - sizes)[:, None], v.shape + (2, t.numel())).copy()
    return sizes, gen, pmem


def mc_losses(
    denoisers: Denoiser | Sequence[Denoiser],
    X: torch.Tensor,
    times: Sequence[float] | torch.Tensor,
    num_draws: int,
    generator: torch.Generator | None = None,
    *,
    reference: Denoiser | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Monte Carlo losses of one or several denoisers at several times, on common noise.

    For each time :math:`t` in ``times`` (in order) the noise is drawn exactly as
    :func:`mc_loss` draws it, and every denoiser is evaluated on the *same* noisy points
    (common random numbers). With one callable and one time the result equals
    :func:`mc_loss` under the same generator state.

    Returns ``(mean, stderr)`` as float64 NumPy arrays of shape (T,) when ``denoisers`` is
    one callable, else (S, T) for S denoisers. With ``reference`` (a denoiser), each entry
    is instead the *excess* :math:`L_{N,t}(D) - L_{N,t}(D_{ref})`, averaged per draw before
    the standard error is taken, so the error bar is that of the paired difference (much
    smaller than the two separate error bars when the losses are correlated).
    """
    validate.points(X, "X")
    num_draws = validate.positive_int(num_draws, "num_draws")
    times = _as_times(times).reshape(-1)
    single = callable(denoisers)
    dens = [denoisers] if single else list(denoisers)
    if not dens:
        raise ValueError("denoisers must hold at least one denoiser")
    N, d = X.shape
    chunk = max(1, CHUNK_FLOATS // (N * d))
    means = np.empty((len(dens), times.numel()))
    errs = np.empty_like(means)
    with torch.no_grad():
        for k, t in enumerate(times.tolist()):
            per_draw: list[list[torch.Tensor]] = [[] for _ in dens]
            for start in range(0, num_draws, chunk):
                r = min(chunk, num_draws - start)
                eps = torch.randn(r, N, d, generator=generator, dtype=X.dtype, device=X.device)
                x_t = alpha(t) * X + sigma(t) * eps
                base = 0.0
                if reference is not None:
                    e = reference(x_t, t) - X
                    base = (e * e).sum(-1).mean(-1)
                for s, den in enumerate(dens):
                    e = den(x_t, t) - X
                    per_draw[s].append((e * e).sum(-1).mean(-1) - base)
            for s in range(len(dens)):
                draws = torch.cat(per_draw[s]).double()
                means[s, k] = draws.mean().item()
                errs[s, k] = (
                    draws.std().item() / math.sqrt(num_draws) if num_draws > 1 else float("nan")
                )
    return (means[0], errs[0]) if single else (means, errs)


def nearest_memorized_excess(X: torch.Tensor, memorized: torch.Tensor) -> float:
    r"""Small-noise limit of the partially memorizing excess loss (Theorem 3.2).

    .. math:: \lim_{t\to 0}\big[L_{N,t}(\theta_{pmem}) - L_{N,t}(\theta_{mem})\big]
              = \frac1N \sum_{i=1}^N \min_j \|x_i - m_j\|^2 ,

    the mean squared distance from each training point :math:`x_i` (rows of ``X``, shape
    (N, d)) to its nearest memorized point :math:`m_j` (rows of ``memorized``, shape (M, d)).
    A memorized training point contributes 0; at small noise the partially memorizing
    denoiser sends every other training point to its nearest memorized point, while the
    memorizing denoiser returns it exactly. Distances are computed as exact differences
    (no :math:`\|x\|^2 - 2\langle x, m\rangle + \|m\|^2` cancellation), in row chunks.
    """
    validate.points(X, "X")
    validate.points(memorized, "memorized", dim=X.shape[1])
    M, d = memorized.shape
    rows = max(1, CHUNK_FLOATS // (M * d))
    mins = []
    for start in range(0, X.shape[0], rows):
        diff = X[start : start + rows, None, :] - memorized.to(X.dtype)[None, :, :]
        mins.append((diff * diff).sum(-1).min(-1).values)
    return torch.cat(mins).double().mean().item()


def expected_max_normal(n: float) -> float:
    r"""Expected maximum of ``n`` independent standard normal variables, :math:`n \ge 1`.

    :math:`\int x\, n\, \varphi(x)\, \Phi(x)^{n-1}\, dx` by quadrature (``n`` may be
    fractional: the formula interpolates smoothly). 0 for one variable,
    :math:`1/\sqrt\pi` for two.
    """
    if not n >= 1 or not math.isfinite(n):
        raise ValueError(f"n must be finite and >= 1, got {n}")
    f = lambda x: x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1)  # noqa: E731
    return float(integrate.quad(f, -np.inf, np.inf, epsabs=1e-12)[0])


def pmem_constant_approx(d: int, per_component: float) -> float:
    r"""Gaussian approximation of the constant :math:`c` of Theorem 3.2 at small noise.

    A training point :math:`x = \mu + z` that is not memorized is sent to its nearest
    memorized point; suppose that is one of the ``per_component`` = :math:`n` memorized
    points :math:`y_j = \mu + z_j` of its own component (:math:`z, z_j \sim N(0, s^2 I_d)`).
    Then :math:`\|x - y_j\|^2 = \|z\|^2 + A_j` with :math:`A_j = \|z_j\|^2 - 2\langle z, z_j\rangle`,
    independent given :math:`z`, of mean :math:`d s^2` and variance
    :math:`2 d s^4 + 4 s^2\|z\|^2 \approx 6 d s^4`. Treating the :math:`A_j` as Gaussian,

    .. math:: \mathbb{E}\min_j \|x - y_j\|^2 \approx 2 d s^2 - \sqrt{6d}\, s^2\, e_n,
              \qquad c \approx 2 - \sqrt{6/d}\; e_n ,

    with :math:`e_n` = :func:`expected_max_normal` (n). It tends to 2 as ``d`` grows and
    falls as ``n`` grows. Accurate to a few percent for d >= 50 when every component keeps
    several memorized points; poor at small d (the chi-squared tails are not Gaussian).
    """
    d = validate.positive_int(d, "d")
    return 2.0 - math.sqrt(6.0 / d) * expected_max_normal(per_component)


#: Quadrature nodes of :func:`expected_nearest_memorized_excess`: for the projection of a
#: training point's noise on its own mean, the rest of that noise's squared norm, the cosine
#: between the point and another cluster's mean, and the squared distance.
FINITE_SIZE_NODES = (10, 10, 12, 200)


def _model_sizes(M: int | Sequence[int] | np.ndarray, N: int) -> np.ndarray:
    sizes = np.asarray(M)
    if sizes.ndim > 1 or sizes.size == 0:
        raise ValueError(f"M must be an integer or a non-empty 1-D sequence of integers, got {M}")
    return np.array([validate.model_size(m, N) for m in sizes.reshape(-1)], dtype=float)


def _chi2_nodes(n: int, dof: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Gauss nodes and weights (summing to 1) for the law :math:`\chi^2_{dof}`, ``dof >= 1``.

    Generalized Gauss-Laguerre in :math:`x = r/2` with :math:`\alpha = dof/2 - 1`; the
    weights :math:`\Gamma(n+\alpha+1)\, x_i / (n!\,((n+1) L^{\alpha}_{n+1}(x_i))^2)` are
    formed in logarithms, since the Gamma function overflows for large ``dof``.
    """
    alpha_ = dof / 2 - 1
    x, _ = special.roots_genlaguerre(n, alpha_)
    log_w = (special.gammaln(n + alpha_ + 1) - special.gammaln(n + 1) + np.log(x)
             - 2.0 * np.log((n + 1) * np.abs(special.eval_genlaguerre(n + 1, alpha_, x))))
    w = np.exp(log_w - log_w.max())
    return 2.0 * x, w / w.sum()


def expected_nearest_memorized_excess(
    d: int, K: int, var: float, M: int | Sequence[int] | np.ndarray, N: int
) -> float | np.ndarray:
    r"""Finite-size Theorem 3.2: the expected small-noise excess of the partially memorizing model.

    The expectation of :func:`nearest_memorized_excess` over the laboratory (the K means
    :math:`\sqrt d\, u_k`, the N training points :math:`x_i = \mu_{k_i} + s z_i`, a uniform
    M-subset memorized), derived in chapter 6:

    .. math:: \mathbb E\big[\tfrac1N \textstyle\sum_i \min_j \|x_i - m_j\|^2\big]
              = \Big(1 - \frac MN\Big)\,\mathbb E_{x_i} \int_0^\infty
                \Big[\frac1K Q_d\Big(\frac{y}{s^2}; \|z_i\|^2\Big)
                + \frac{K-1}{K}\,\mathbb E_c\, Q_d\Big(\frac{y}{s^2}; \lambda(c)\Big)\Big]^M dy ,

    :math:`Q_d(\cdot;\lambda)` the survival function of the non-central :math:`\chi^2_d`,
    :math:`\lambda(c) = (\|x_i\|^2 + d - 2\sqrt d\,\|x_i\|\,c)/s^2` with :math:`c` the cosine of
    a uniform direction. One approximation (the memorized points of one other cluster are
    treated as independent given :math:`x_i`): exact for ``K = 1`` and ``M = 1``, otherwise low,
    by at most 2.5% at d = 10, 2% at d >= 20 and about 1% at d >= 30 with :math:`s^2 \ge 1`
    (chapter 6's Monte Carlo). Gauss quadratures with :data:`FINITE_SIZE_NODES` nodes, accurate
    to about :math:`10^{-7}` relative for d >= 10 and :math:`2\cdot10^{-5}` at d = 3 (M <= 1000).
    ``M``: one model size (returns a float) or a 1-D sequence (an array), each 1 <= M <= N;
    d >= 2 and var > 0.
    """
    d = validate.positive_int(d, "d")
    K = validate.positive_int(K, "K")
    N = validate.positive_int(N, "N")
    if d < 2:
        raise ValueError(f"d must be >= 2 for the finite-size formula, got {d}")
    validate.variance(var)
    var = float(var)
    if var <= 0:
        raise ValueError(f"var must be > 0 for the finite-size formula, got {var}")
    sizes = _model_sizes(M, N)
    n_g, n_r, n_c, n_v = FINITE_SIZE_NODES
    # Outer expectation over the non-memorized point: g ~ N(0, 1) and rest ~ chi2_{d-1}.
    g, w_g = special.roots_hermitenorm(n_g)
    rest, w_rest = _chi2_nodes(n_r, d - 1)
    g, rest = np.meshgrid(g, rest, indexing="ij")
    weight = np.outer(w_g / w_g.sum(), w_rest).ravel()
    own = (g * g + rest).ravel()  # ||z_i||^2, the own cluster's non-centrality
    norm2 = d + 2.0 * math.sqrt(var * d) * g.ravel() + var * own  # ||x_i||^2
    lam_hi = own
    if K > 1:
        c, w_c = special.roots_jacobi(n_c, (d - 3) / 2, (d - 3) / 2)
        w_c = w_c / w_c.sum()
        other = (norm2[:, None] + d - 2.0 * math.sqrt(d) * np.sqrt(norm2)[:, None] * c) / var
        lam_hi = other.max(axis=1)
    # Distances (in units of var) up to 12 standard deviations above the largest mean.
    u_max = d + lam_hi + 12.0 * np.sqrt(2.0 * (d + 2.0 * lam_hi))
    v, w_v = special.roots_legendre(n_v)
    v, w_v = (v + 1.0) / 2.0, w_v / 2.0
    u = u_max[:, None] * v**2
    w_u = u_max[:, None] * 2.0 * v * w_v
    survive = (1.0 - special.chndtr(u, d, own[:, None])) / K
    if K > 1:
        cross = 1.0 - special.chndtr(u[:, None, :], d, other[:, :, None])
        survive = survive + (1.0 - 1.0 / K) * np.einsum("c,ncu->nu", w_c, cross)
    log_survive = np.log(np.clip(survive, 1e-300, 1.0))
    chunk = max(1, CHUNK_FLOATS // log_survive.size)
    expected_min = np.concatenate([
        np.einsum("mnu,nu,n->m", np.exp(part[:, None, None] * log_survive), w_u, weight)
        for part in np.split(sizes, range(chunk, sizes.size, chunk))
    ])
    excess = var * (1.0 - sizes / N) * expected_min
    return float(excess[0]) if np.ndim(M) == 0 else excess


def pmem_excess_finite(
    t: float | torch.Tensor, d: int, K: int, var: float, M: int, N: int
) -> torch.Tensor:
    r"""Finite-size Theorem 3.2: the expected :math:`L_{N,t}(\theta_{pmem,M}) - L_{N,t}(\theta_{mem})`.

    :func:`expected_nearest_memorized_excess` (d, K, var, M, N), held constant in ``t`` as
    Theorem 3.2 holds it. Valid while the noise cannot change which memorized point a training
    point is sent to, :math:`\psi_t s^2 \gtrsim 2/3` (:math:`t \lesssim 0.77` at
    :math:`s^2 = 1`; derived and checked on the committed sweep in chapter 6); beyond, the true
    excess falls to 0 at t = 1 and this overestimates it.
    """
    t = _as_times(t)
    excess = expected_nearest_memorized_excess(d, K, var, validate.model_size(M, N), N)
    return torch.full_like(t, excess)


def finite_size_losses(
    t: Any, d: Any, K: Any, N: Any, var: Any, num_sizes: int = 50
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Theorem 3.1 and the finite-size Theorem 3.2 as loss arrays for :func:`crossover`.

    For configurations i (1-D ``d``, ``K``, ``N``, ``var`` of one length C) returns
    ``(sizes, gen, pmem)``: ``sizes`` (C, S) the model sizes :math:`\mathrm{round}(k N_i/S)/N_i`,
    k = 1..S, S = min(``num_sizes``, min N); ``gen`` (C, T) :func:`gen_excess`; ``pmem``
    (C, S, T) :func:`expected_nearest_memorized_excess`, the same at every time. Both are
    excesses over the memorizing loss, which cancels in the crossing. About a third of a
    second per configuration.
    """
    t = _as_times(t).reshape(-1).numpy()
    if t.size == 0:
        raise ValueError("t must hold at least one time")
    cols = [validate.array(x, name).reshape(-1)
            for x, name in ((d, "d"), (K, "K"), (N, "N"), (var, "var"))]
    if len({c.size for c in cols}) != 1 or cols[0].size == 0:
        raise ValueError(f"d, K, N and var must be non-empty 1-D arrays of one length, got sizes "
                         f"{[c.size for c in cols]}")
    d, K, N, v = cols
    num_sizes = validate.positive_int(num_sizes, "num_sizes")
    S = min(num_sizes, int(N.min()))
    if S < 2:
        raise ValueError(f"every N must be >= 2 to give two model sizes, got min N = {N.min()}")
    sizes = np.empty((d.size, S))
    pmem = np.empty((d.size, S, t.size))
    gen = np.empty((d.size, t.size))
    for i in range(d.size):
        dim, k, n = (validate.positive_int(x[i], name) for x, name in ((d, "d"), (K, "K"), (N, "N")))
        M = np.round(np.arange(1, S + 1) * n / S).astype(int)
        sizes[i] = M / n
        pmem[i] = expected_nearest_memorized_excess(dim, k, v[i], M, n)[:, None]
        gen[i] = gen_excess(torch.as_tensor(t), dim, v[i]).numpy()
    return sizes, gen, pmem


def mc_nearest_memorized_excess(
    d: int,
    K: int,
    var: float,
    M: int | Sequence[int] | np.ndarray,
    N: int,
    num_sets: int,
    generator: torch.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Brute-force Monte Carlo of :func:`expected_nearest_memorized_excess`: (mean, stderr).

    Draws ``num_sets`` independent laboratories exactly as the experiments do (means from
    :func:`gmmmem.mixtures.random_iso_gmm`, N training points from its ``sample``, float64)
    and one random ordering of each training set; model size M memorizes the first M points
    of the ordering (a uniform M-subset, nested across sizes). For every set and size it
    computes :func:`nearest_memorized_excess` via a running minimum over the ordering
    (distances from exact differences, no cancellation). Returns two float64 arrays, one
    entry per model size: the mean over sets and its standard error (standard deviation
    over sets / sqrt(num_sets); NaN for one set).
    """
    d = validate.positive_int(d, "d")
    K = validate.positive_int(K, "K")
    N = validate.positive_int(N, "N")
    num_sets = validate.positive_int(num_sets, "num_sets")
    validate.variance(var)
    columns = torch.as_tensor(_model_sizes(M, N), dtype=torch.long) - 1  # size M: first M points
    per_set = torch.empty(num_sets, columns.numel(), dtype=torch.float64)
    for s in range(num_sets):
        gmm = random_iso_gmm(d, K, var, generator, dtype=torch.float64)
        X, _ = gmm.sample(N, generator)
        ordered = X[torch.randperm(N, generator=generator)]
        dist = torch.cdist(X, ordered, compute_mode="donot_use_mm_for_euclid_dist") ** 2
        per_set[s] = dist.cummin(dim=1).values[:, columns].mean(0)
    mean = per_set.mean(0).numpy()
    if num_sets == 1:
        return mean, np.full_like(mean, np.nan)
    return mean, per_set.std(0).numpy() / math.sqrt(num_sets)
