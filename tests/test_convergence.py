import math

import numpy as np
import pytest
import torch

from gmmmem import train
from gmmmem.convergence import log_std_gradient
from gmmmem.diffusion import time_grid
from gmmmem.mixtures import gmm_denoise

F64 = torch.float64


def _expected_gradient(X, M, var, draws, seed):
    """d/d log s of the eps-prediction loss averaged over all 26 times and many noise draws,
    by autograd through the mixture denoiser (float64)."""
    means = X[train.pmem_init_order(X.shape[0], seed)[:M]]
    log_std = torch.tensor(0.5 * math.log(var), dtype=F64, requires_grad=True)
    gen = torch.Generator().manual_seed(123)
    total = 0.0
    for t in time_grid(dtype=F64):
        a, s = math.sqrt(1 - t.item() ** 2), t.item()
        x0 = X.repeat(draws, 1)
        xt = a * x0 + s * torch.randn(x0.shape, generator=gen, dtype=F64)
        err = gmm_denoise(xt, t.item(), means, torch.exp(2 * log_std)) - x0
        total = total + (a * a / (s * s)) * (err * err).sum(-1).mean()
    (total / 26).backward()
    return log_std.grad.item()


def test_log_std_gradient_is_unbiased_and_its_spread_is_honest():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(20, 5, generator=gen, dtype=F64)
    stats = log_std_gradient(X, 8, [1e-3, 1e-1], draws=2, steps=400, seed=0)
    for k, var in enumerate([1e-3, 1e-1]):
        expected = _expected_gradient(X, 8, var, draws=400, seed=0)
        se = stats.step_std[k] / np.sqrt(400)
        assert abs(stats.mean[k] - expected) < 4 * se + 0.02 * abs(expected)
    assert np.all(stats.mean < 0)  # the loss falls as s grows from a small start
    assert np.all(stats.snr > 0) and stats.snr.shape == (2,)


def test_log_std_gradient_rejects_bad_input():
    X = torch.randn(10, 3, dtype=F64)
    with pytest.raises(ValueError, match="M"):
        log_std_gradient(X, 11, [1e-3])
    with pytest.raises(ValueError, match="variances"):
        log_std_gradient(X, 3, [0.0])
