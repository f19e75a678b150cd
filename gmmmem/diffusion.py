r"""The variance-preserving diffusion of the paper.

A clean point :math:`x_0` is noised as

.. math:: x_t = \alpha_t x_0 + \sigma_t \varepsilon, \qquad
          \alpha_t = \sqrt{1 - t^2}, \quad \sigma_t = t, \quad \varepsilon \sim N(0, I_d),

for times :math:`t \in (0, 1)`, so that :math:`\alpha_t^2 + \sigma_t^2 = 1`.
The signal-to-noise ratio is :math:`\psi_t = \alpha_t^2 / \sigma_t^2`.
Every function accepts a Python float (returning a float) or a tensor.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch

Time = TypeVar("Time", float, torch.Tensor)


def alpha(t: Time) -> Time:
    """Signal scale alpha_t = sqrt(1 - t^2)."""
    if isinstance(t, torch.Tensor):
        return torch.sqrt(1.0 - t * t)
    return math.sqrt(1.0 - t * t)


def sigma(t: Time) -> Time:
    """Noise scale sigma_t = t."""
    return t.clone() if isinstance(t, torch.Tensor) else float(t)


def snr(t: Time) -> Time:
    """Signal-to-noise ratio psi_t = alpha_t^2 / sigma_t^2 = (1 - t^2) / t^2."""
    return (1.0 - t * t) / (t * t)


def time_grid(
    num: int = 26,
    t_min: float = 0.001,
    t_max: float = 0.999,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``num`` times spaced uniformly on [t_min, t_max] (the paper's 26-point grid)."""
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if not 0.0 < t_min <= t_max < 1.0:
        raise ValueError(f"need 0 < t_min <= t_max < 1, got t_min={t_min}, t_max={t_max}")
    return torch.linspace(t_min, t_max, num, dtype=dtype, device=device)
