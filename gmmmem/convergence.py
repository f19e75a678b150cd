r"""Why the learned variance grows slowly: the gradient on :math:`\log s` at the start.

Training starts "partially memorizing" (:func:`gmmmem.train.train_gmm`): the means on
training points and the variance :math:`s^2 = 10^{-6}`. The paper's models only generalize once
:math:`s^2` has grown to about the data's variance, so the speed of that growth sets the
length of training. :func:`log_std_gradient` measures, at the start's means and a range of
variances, the gradient a training step sees on :math:`\log s`: its expectation, and its spread
from one step to the next (one random time per training point, ``draws`` noise draws).
Chapter 3 uses it to explain why Adam with :math:`\beta_2 = 0.999` stalls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from . import validate
from .diffusion import time_grid
from .train import _loss_and_grad, pmem_init_order


@dataclass(frozen=True)
class GradientStats:
    """The gradient on log s at fixed means, per variance: mean over steps and its step spread."""

    variances: np.ndarray
    mean: np.ndarray
    step_std: np.ndarray

    @property
    def snr(self) -> np.ndarray:
        """Signal-to-noise ratio of one step's gradient, |mean| / step_std."""
        return np.abs(self.mean) / self.step_std


def log_std_gradient(
    X: torch.Tensor,
    M: int,
    variances: Sequence[float],
    *,
    draws: int = 2,
    steps: int = 200,
    seed: int = 0,
) -> GradientStats:
    """The training step's gradient on log s, means at the first M start points (float64).

    For each variance, ``steps`` independent steps of :func:`gmmmem.train.fit`'s sampling (one
    time of the 26 per training point, ``draws`` noise vectors) give the gradient of the mean
    eps-prediction loss; returns their mean and standard deviation.
    """
    validate.points(X, "X")
    N = X.shape[0]
    M = validate.model_size(M, N, "M")
    validate.positive_int(draws, "draws")
    validate.positive_int(steps, "steps")
    X = X.to(torch.float64)
    means = X[pmem_init_order(N, seed)[:M]][None]
    bias = torch.zeros(1, 1, M, dtype=X.dtype)
    grid = time_grid(dtype=X.dtype)
    gen = torch.Generator().manual_seed(seed)
    x0 = X.repeat_interleave(draws, dim=0)
    mean, std = [], []
    for var in variances:
        if not var > 0:
            raise ValueError(f"variances must be > 0, got {var}")
        log_std = torch.tensor([0.5 * math.log(var)], dtype=X.dtype)
        g = []
        for _ in range(steps):
            t = grid[torch.randint(len(grid), (N,), generator=gen)].repeat_interleave(draws)[:, None]
            eps = torch.randn(x0.shape, generator=gen, dtype=X.dtype)
            g.append(_loss_and_grad(x0, t, eps, means, log_std, bias, 1.0 / x0.shape[0])[2].item())
        mean.append(np.mean(g))
        std.append(np.std(g, ddof=1))
    return GradientStats(np.asarray(variances, dtype=float), np.asarray(mean), np.asarray(std))
