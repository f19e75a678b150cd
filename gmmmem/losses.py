r"""Denoising losses: Monte Carlo estimates and the paper's closed forms.

The training loss of a denoiser :math:`D` at time :math:`t`, in :math:`x_0` units, is

.. math:: L_{N,t}(D) = \frac1N \sum_{i=1}^N \mathbb{E}_\varepsilon
          \big\|D(\alpha_t x_i + \sigma_t \varepsilon, t) - x_i\big\|^2 ;

the :math:`\varepsilon`-prediction loss is :math:`\psi_t L_{N,t}` with
:math:`\psi_t = \alpha_t^2/\sigma_t^2`. The closed forms compare three denoisers: the true
mixture (generalizing), the memorizing one (all N training points, variance 0) and the
partially memorizing one (M of them).
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import integrate, stats

from . import validate
from .diffusion import alpha, sigma, snr

Denoiser = Callable[[torch.Tensor, float], torch.Tensor]

#: Upper bound on the floats in one chunk of noisy points (keeps memory bounded).
CHUNK_FLOATS = 2**22


class CrossoverWarning(UserWarning):
    """The weighted losses given to :func:`crossover_from_losses` do not cross."""


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


def _normalized(weights: torch.Tensor | Sequence[float], n: int) -> torch.Tensor:
    w = torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},) to match t, got {tuple(w.shape)}")
    if (w < 0).any() or not torch.isfinite(w).all() or w.sum() <= 0:
        raise ValueError("weights must be finite, >= 0 and not all zero")
    return w / w.sum()


def crossover(
    t: torch.Tensor | Sequence[float],
    weights: torch.Tensor | Sequence[float],
    var: float = 1.0,
    c: float = 2.0,
) -> float:
    r"""Closed-form crossover ratio :math:`M^\star/N` for time weights :math:`\lambda_t \ge 0`.

    Solving :math:`\sum_t \lambda_t\,[\text{gen\_excess}_t - \text{pmem\_excess}_t(M)] = 0`
    with the closed forms gives

    .. math:: \frac{M^\star}{N} = 1 - \frac1c \sum_t \bar\lambda_t \frac{1}{1+\psi_t s^2},

    which for ``c = 2`` is the rebuttal's
    :math:`\sum_t \bar\lambda_t (\tfrac12 + \psi_t s^2)/(1 + \psi_t s^2)`;
    :math:`\bar\lambda` are the weights normalized to sum to one. The result does not
    depend on ``d`` or ``N``.
    """
    validate.variance(var)
    t = _as_times(t).reshape(-1)
    w = _normalized(weights, t.numel())
    return float(1.0 - (w / (1.0 + snr(t) * var)).sum() / c)


def crossover_from_losses(
    model_sizes: Sequence[float] | np.ndarray | torch.Tensor,
    gen_losses: Sequence[float] | np.ndarray | torch.Tensor,
    pmem_losses: Sequence[Sequence[float]] | np.ndarray | torch.Tensor,
    weights: Sequence[float] | np.ndarray | torch.Tensor,
) -> float | None:
    r"""The crossover found from measured losses, by linear interpolation in model size.

    ``gen_losses`` (T,) are the generalizing model's losses at T times, ``pmem_losses``
    (S, T) the partially memorizing losses at S increasing ``model_sizes``, ``weights`` (T,)
    the time weights. With :math:`f(M) = \sum_t \bar\lambda_t [L^{gen}_t - L^{pmem}_t(M)]`,
    returns the first model size where :math:`f` changes sign from negative to non-negative,
    interpolated linearly, in the units of ``model_sizes`` (pass M/N to get M*/N).
    Returns ``None`` and emits a :class:`CrossoverWarning` saying why when there is no
    such crossing within the sizes given.
    """
    sizes = np.asarray(model_sizes, dtype=float).reshape(-1)
    gen = np.asarray(gen_losses, dtype=float).reshape(-1)
    pmem = np.atleast_2d(np.asarray(pmem_losses, dtype=float))
    if pmem.shape != (sizes.size, gen.size):
        raise ValueError(
            f"pmem_losses must have shape (len(model_sizes), len(gen_losses)) = "
            f"({sizes.size}, {gen.size}), got {pmem.shape}"
        )
    if sizes.size < 2 or np.any(np.diff(sizes) <= 0):
        raise ValueError("model_sizes must hold at least two strictly increasing values")
    if not (np.isfinite(gen).all() and np.isfinite(pmem).all()):
        raise ValueError("losses must be finite")
    w = _normalized(weights, gen.size).numpy()
    f = (gen[None, :] - pmem) @ w
    if f[0] >= 0:
        warnings.warn(
            f"no crossover: the generalizing model already loses to the partially memorizing "
            f"one at the smallest size {sizes[0]:g} (weighted gap {f[0]:.4g} >= 0)",
            CrossoverWarning,
            stacklevel=2,
        )
        return None
    up = np.nonzero(f >= 0)[0]
    if up.size == 0:
        warnings.warn(
            f"no crossover: the generalizing model wins at every size up to {sizes[-1]:g} "
            f"(weighted gap there {f[-1]:.4g} < 0)",
            CrossoverWarning,
            stacklevel=2,
        )
        return None
    j = up[0]
    frac = -f[j - 1] / (f[j] - f[j - 1])
    return float(sizes[j - 1] + frac * (sizes[j] - sizes[j - 1]))


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
