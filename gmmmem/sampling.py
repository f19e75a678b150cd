r"""Samplers for the variance-preserving diffusion: deterministic DDIM and ancestral DDPM.

Both run a denoiser :math:`\hat x_0 = D(x_t, t)` down a decreasing grid of times
:math:`t_1 > t_2 > \dots > t_L` (the schedule of :mod:`gmmmem.diffusion`,
:math:`\alpha_t = \sqrt{1 - t^2}`, :math:`\sigma_t = t`).

**Start.** :math:`x_{t_1} \sim N(0, I_d)`, the standard prior. The exact law of
:math:`x_{t_1}` is that of :math:`\alpha_{t_1} x_0 + \sigma_{t_1}\varepsilon`, whose second moment
:math:`\alpha_{t_1}^2 \mathbb{E}[x_0 x_0^\top] + \sigma_{t_1}^2 I` equals :math:`I` when the data
have identity second moment; in general the data enter only through
:math:`\alpha_{t_1}` (0.045 at the paper's :math:`t_1 = 0.999`), so the prior is off by
:math:`O(\alpha_{t_1})` in the mean and :math:`O(\alpha_{t_1}^2)` in the second moment.

**Step** :math:`t \to s` (:math:`s < t`), with :math:`\hat x_0 = D(x_t, t)`:

* DDIM (deterministic, the authors' sampler):
  :math:`\hat\varepsilon = (x_t - \alpha_t \hat x_0)/\sigma_t`,
  :math:`x_s = \alpha_s \hat x_0 + \sigma_s \hat\varepsilon`.
* DDPM (``stochastic=True``): :math:`x_s` is drawn from the forward process's posterior
  :math:`q(x_s \mid x_t, x_0 = \hat x_0)`, see :func:`posterior_coefficients`.

**End.** The output is :math:`\hat x_0 = D(x_{t_L}, t_L)` at the smallest time. This is the
standard last step: both updates taken to :math:`s = 0` (:math:`\alpha_0 = 1`,
:math:`\sigma_0 = 0`) return exactly :math:`\hat x_0`. So ``L`` times cost ``L`` denoiser calls.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from . import validate
from .diffusion import alpha

#: A denoiser: noisy points (n, d) and a time t -> the estimate of x_0, shape (n, d).
Denoiser = Callable[[torch.Tensor, float], torch.Tensor]


def posterior_coefficients(t: float, s: float) -> tuple[float, float, float]:
    r"""Coefficients of the forward-process posterior :math:`q(x_s \mid x_t, x_0)`, :math:`s < t`.

    With :math:`\alpha_{t|s} = \alpha_t/\alpha_s` and
    :math:`\sigma_{t|s}^2 = \sigma_t^2 - \alpha_{t|s}^2 \sigma_s^2` (so that
    :math:`x_t = \alpha_{t|s} x_s + \sigma_{t|s}\varepsilon'`), the posterior is
    :math:`N(c_t x_t + c_0 x_0,\; v I)` with

    .. math:: c_t = \frac{\alpha_{t|s}\sigma_s^2}{\sigma_t^2}, \qquad
              c_0 = \frac{\alpha_s \sigma_{t|s}^2}{\sigma_t^2}, \qquad
              v = \frac{\sigma_{t|s}^2 \sigma_s^2}{\sigma_t^2}.

    Returns ``(c_t, c_0, v)`` as floats (computed in double precision).
    """
    validate.times(t, "t")
    validate.times(s, "s")
    if not s < t:
        raise ValueError(f"s must be smaller than t, got s={s}, t={t}")
    a_t, a_s, s2_t, s2_s = alpha(t), alpha(s), t * t, s * s
    a_ts = a_t / a_s
    s2_ts = max(s2_t - a_ts * a_ts * s2_s, 0.0)
    return a_ts * s2_s / s2_t, a_s * s2_ts / s2_t, s2_ts * s2_s / s2_t


def _check_times(times: Sequence[float] | torch.Tensor) -> list[float]:
    """The times as Python floats, sorted in decreasing order, after validation."""
    t = torch.as_tensor(times, dtype=torch.float64).detach().cpu()
    if t.ndim != 1 or t.numel() < 2:
        raise ValueError(f"times must be a 1-D sequence of at least 2 times, got shape {tuple(t.shape)}")
    validate.times(t, "times")
    t = t.sort(descending=True).values
    if (t[1:] == t[:-1]).any():
        raise ValueError("times must be distinct")
    return t.tolist()


def ddim_sample(
    denoise: Denoiser,
    n: int,
    d: int,
    times: Sequence[float] | torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    stochastic: bool = False,
) -> torch.Tensor:
    r"""``n`` samples in R^d: DDIM (default) or ancestral DDPM (``stochastic=True``).

    ``denoise(x_t, t)`` takes a tensor (n, d) and a float time and returns :math:`\hat x_0`
    (n, d); it is called once per time, on all ``n`` samples at once, under
    ``torch.no_grad()``. ``times`` (any order, distinct, in (0, 1), at least 2) is sorted
    decreasingly. The start :math:`x_{t_1} \sim N(0, I)`, the updates and the final
    :math:`\hat x_0` at the smallest time are those of the module docstring. All randomness
    (the start, and the posterior noise when ``stochastic``) comes from ``generator``, which
    must live on ``device``; ``dtype``/``device`` default to torch's defaults, as in
    :func:`gmmmem.diffusion.time_grid`.
    """
    n = validate.positive_int(n, "n")
    d = validate.positive_int(d, "d")
    ts = _check_times(times)
    dtype = dtype or torch.get_default_dtype()
    kw = dict(generator=generator, dtype=dtype, device=device)

    def call(x: torch.Tensor, t: float) -> torch.Tensor:
        x0 = denoise(x, t)
        if not isinstance(x0, torch.Tensor) or x0.shape != x.shape:
            got = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
            raise ValueError(f"denoise must return a tensor of shape {tuple(x.shape)}, got {got}")
        return x0

    with torch.no_grad():
        x = torch.randn(n, d, **kw)
        for t, s in zip(ts[:-1], ts[1:]):
            x0 = call(x, t)
            if stochastic:
                c_t, c_0, v = posterior_coefficients(t, s)
                x = c_t * x + c_0 * x0 + math.sqrt(v) * torch.randn(n, d, **kw)
            else:
                eps = (x - alpha(t) * x0) / t
                x = alpha(s) * x0 + s * eps
        return call(x, ts[-1])
