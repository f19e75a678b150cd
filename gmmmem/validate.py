"""Checks of user input, each raising a ``ValueError`` that names the argument."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch


def points(x: torch.Tensor, name: str, *, dim: int | None = None) -> torch.Tensor:
    """A non-empty, finite float tensor of shape (n, d) (d == ``dim`` when given)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has dimension {x.shape[1]}, expected {dim}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def variance(var: float | torch.Tensor, name: str = "var") -> float | torch.Tensor:
    """A finite, non-negative scalar."""
    if isinstance(var, torch.Tensor):
        if var.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(var.shape)}")
        value = float(var.detach())
    else:
        value = float(var)
    if not value >= 0.0 or value == float("inf"):
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return var


def array(x: Any, name: str) -> np.ndarray:
    """A scalar or array of finite numbers (a tensor too), as a float64 NumPy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def variances(var: Any, name: str = "var") -> np.ndarray:
    """A scalar or array of finite, non-negative numbers (a tensor too), as a float64 array."""
    arr = array(var, name)
    if (arr < 0).any():
        raise ValueError(f"{name} must be >= 0, got minimum {arr.min()}")
    return arr


def positive(x: Any, name: str) -> float:
    """A finite number > 0."""
    if not (isinstance(x, (int, float)) and math.isfinite(x) and x > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {x}")
    return float(x)


def times(t: float | torch.Tensor, name: str = "t") -> float | torch.Tensor:
    """Times strictly inside (0, 1), where alpha_t and sigma_t are both positive."""
    bad = ~((torch.as_tensor(t) > 0) & (torch.as_tensor(t) < 1))
    if bad.any():
        raise ValueError(f"{name} must lie in the open interval (0, 1), got {t}")
    return t


def model_size(M: int, N: int, name: str = "M") -> int:
    """A model size 1 <= M <= N."""
    if int(M) != M or not 1 <= M <= N:
        raise ValueError(f"{name} must be an integer with 1 <= {name} <= N = {N}, got {M}")
    return int(M)


def positive_int(n: int, name: str) -> int:
    """An integer >= 1."""
    if int(n) != n or n < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {n}")
    return int(n)


def integer(n: Any, name: str, low: int = 1) -> int:
    """An integer >= ``low`` of any integral type (numpy included), as a Python ``int``;
    floats and booleans are refused."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {low}, got {n!r} ({type(n).__name__})")
    if n < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {n}")
    return int(n)


def seed(value: Any, name: str = "seed") -> int:
    """A random seed: an integer >= 0."""
    return integer(value, name, low=0)


def training_set(N: Any, name: str = "N") -> int:
    """A training-set size: an integer >= 2 (the memorization criterion needs two points)."""
    N = integer(N, name)
    if N < 2:
        raise ValueError(f"{name} must be >= 2 (the memorization criterion needs two training points), got {N}")
    return N


def data_variance(var: Any, name: str = "var") -> float:
    """The true mixture's variance s_star^2: a finite real number > 0, as a float."""
    if isinstance(var, bool) or not isinstance(var, numbers.Real) or not 0.0 < float(var) < math.inf:
        raise ValueError(f"{name} (the data variance) must be finite and > 0, got {var}")
    return float(var)


def model_sizes(sizes: Any, N: int, name: str = "model_sizes") -> list[int]:
    """A non-empty list of model sizes, each an integer in 1..N (:func:`model_size`)."""
    checked = [model_size(M, N, f"model size in {name}") for M in sizes]
    if not checked:
        raise ValueError(f"{name} is empty")
    return checked
