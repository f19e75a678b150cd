"""Held-out evaluation of the predictors (chapter 4): splits of a sweep table and the errors on them.

A split is a *training* mask over the rows: ``True`` = fitted on, ``False`` = held out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import validate

if TYPE_CHECKING:
    from .predictors import Predictor
    from .sweep import SweepTable


def random_splits(
    n_configs: int, n_splits: int, test_fraction: float = 0.25, seed: int = 0
) -> list[np.ndarray]:
    """``n_splits`` random training masks, each holding out ``round(test_fraction * n_configs)``
    configurations (at least 1, at most ``n_configs - 1``). Reproducible under ``seed``."""
    n_configs = validate.positive_int(n_configs, "n_configs")
    n_splits = validate.positive_int(n_splits, "n_splits")
    if n_configs < 2:
        raise ValueError(f"n_configs must be >= 2 to hold anything out, got {n_configs}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    n_test = min(max(int(round(test_fraction * n_configs)), 1), n_configs - 1)
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n_splits):
        mask = np.ones(n_configs, dtype=bool)
        mask[rng.choice(n_configs, size=n_test, replace=False)] = False
        masks.append(mask)
    return masks


def group_splits(groups: Sequence[Any] | np.ndarray) -> list[np.ndarray]:
    """Leave-one-group-out training masks, one per distinct value of ``groups`` (sorted):
    ``groups = N`` per configuration gives leave one N out. The held-out sets partition the rows."""
    g = np.asarray(groups)
    if g.ndim != 1 or g.size == 0:
        raise ValueError(
            f"groups must be a non-empty 1-D array, one label per configuration, got shape {g.shape}"
        )
    labels = np.unique(g)
    if labels.size < 2:
        raise ValueError(
            f"groups must hold at least two distinct values to hold one out, got {labels.tolist()}"
        )
    return [g != lab for lab in labels]


@dataclass(frozen=True, eq=False)
class HeldOut:
    """Errors of one predictor over splits: ``train_mse``, ``test_mse`` and ``effective_dof``,
    one entry per split (``test_mse`` NaN where a split holds nothing out), and the ``fits``
    (``effective_dof`` and ``fits`` absent for an evaluation read back from a file).

    Means and spreads are over splits (population std, NaNs ignored); random splits overlap,
    so the spread describes the splits, not the standard error of the mean.
    """

    train_mse: np.ndarray
    test_mse: np.ndarray
    effective_dof: np.ndarray | None = None
    fits: tuple = field(default=(), repr=False)

    @property
    def n_splits(self) -> int:
        return len(self.train_mse)

    @property
    def train_mse_mean(self) -> float:
        return float(self.train_mse.mean())

    @property
    def train_mse_std(self) -> float:
        return float(self.train_mse.std())

    @property
    def test_mse_mean(self) -> float:
        return float(np.nanmean(self.test_mse)) if np.isfinite(self.test_mse).any() else float("nan")

    @property
    def test_mse_std(self) -> float:
        return float(np.nanstd(self.test_mse)) if np.isfinite(self.test_mse).any() else float("nan")

    def summary(self) -> dict[str, float]:
        """The number of splits and the means and spreads, JSON-ready."""
        return {"n_splits": self.n_splits, "train_mse_mean": self.train_mse_mean,
                "train_mse_std": self.train_mse_std, "test_mse_mean": self.test_mse_mean,
                "test_mse_std": self.test_mse_std}


def _mask(mask: Any, n: int) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != (n,):
        raise ValueError(f"a training mask must have shape ({n},), one entry per row, got {m.shape}")
    if m.dtype != bool:
        raise ValueError(f"a training mask must be a boolean array, got dtype {m.dtype}")
    if not m.any():
        raise ValueError("a training mask selects no configuration: the training set is empty")
    return m


def heldout(predictor: Predictor, table: SweepTable, splits: Sequence[Any]) -> HeldOut:
    """Fit ``predictor`` on the rows each training mask of ``splits`` keeps, and score it on the
    rows it holds out: the mean squared error of the predicted M*/N against ``table.measured``."""
    splits = list(splits)
    if not splits:
        raise ValueError("splits must hold at least one training mask")
    fits, test = [], []
    for mask in splits:
        m = _mask(mask, len(table))
        fitted = predictor.fit(table.rows(m))
        fits.append(fitted)
        if m.all():
            test.append(np.nan)
            continue
        held = table.rows(~m)
        if not np.isfinite(held.measured).all():
            raise ValueError("every held-out row needs a measured M_pt/N")
        test.append(float(np.mean((fitted.predict(held) - held.measured) ** 2)))
    return HeldOut(train_mse=np.array([f.train_mse for f in fits], dtype=float),
                   test_mse=np.array(test, dtype=float),
                   effective_dof=np.array([f.effective_dof for f in fits]), fits=tuple(fits))
