r"""Predictors of the transition midpoint :math:`M_{pt}/N` (chapter 4): fit on a sweep, predict any.

A predictor has a ``name`` and ``fit(table) -> fitted``; a fitted predictor has ``train_mse``,
``effective_dof`` and ``predict(table)``, the predicted :math:`M^\star/N` of every row of a
:class:`gmmmem.sweep.SweepTable`. :func:`gmmmem.heldout.heldout` evaluates any of them on
configurations they were not fitted on. Mean squared errors are in units of :math:`(M/N)^2`.

* :class:`ClosedForm`: Theorems 3.1/3.2, :math:`M^\star/N = \sum_t w_t f_t(s^2)`, a function of
  the data variance alone, fitted exactly (:func:`gmmmem.weights.simplex_lstsq`).
* :class:`MonteCarlo`: the crossover of the table's Monte Carlo losses;
  :class:`FiniteSize`: of Theorem 3.1 and the finite-size Theorem 3.2
  (:func:`gmmmem.losses.finite_size_losses`). Both fitted by :func:`gmmmem.weights.crossing_weights`.
* :class:`Constant`: the mean measured :math:`M_{pt}/N` of the training rows;
  :class:`PerVariance`: that mean per data variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from . import losses, validate, weights

if TYPE_CHECKING:
    from .sweep import SweepTable


class Fitted(Protocol):
    """A fitted predictor: its training error, free parameters and predictions."""

    train_mse: float
    effective_dof: int

    def predict(self, table: SweepTable) -> np.ndarray:
        """Predicted M*/N of every row of ``table``."""


class Predictor(Protocol):
    """A way to predict M_pt/N, fitted on the rows of a sweep table."""

    name: ClassVar[str]

    def fit(self, table: SweepTable) -> Fitted:
        """Fit on every row of ``table``."""


def _measured(table: SweepTable) -> np.ndarray:
    y = np.asarray(table.measured, dtype=float)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"the table must have at least one row to fit on, got {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError(f"every row fitted on needs a measured M_pt/N; "
                         f"{int((~np.isfinite(y)).sum())} have none")
    if (y < 0).any() or (y > 1).any():
        raise ValueError(f"measured ratios M_pt/N must lie in [0, 1], got [{y.min()}, {y.max()}]")
    return y


def _times(times: Any, table: SweepTable) -> np.ndarray:
    return np.asarray(table.times if times is None else times, dtype=float)


def _dof_tol(dof_tol: float) -> float:
    if not (math.isfinite(dof_tol) and dof_tol > 0):
        raise ValueError(f"dof_tol must be finite and > 0, got {dof_tol}")
    return float(dof_tol)


# ----------------------------------------------------------------------------- closed form


@dataclass(frozen=True, eq=False)
class ClosedFormFit:
    r"""Fitted :class:`ClosedForm`: simplex ``weights`` (T,) at ``times``, constant ``c``.

    ``effective_dof`` counts the :attr:`sensitivities` above ``dof_tol`` (M/N units): the
    directions of weight space along which the RMS training prediction moves; it is exactly 1
    when every training variance is the same (:math:`M^\star = wN`, the rebuttal's point).
    ``optimality_gap`` is the Frank-Wolfe gap :math:`g^\top w - \min_t g_t`,
    :math:`g = \nabla\mathrm{MSE}_{train}`, 0 exactly at a minimizer. Many weight vectors
    share the same training predictions when ``effective_dof < T - 1``: read predictions,
    not individual weights.
    """

    weights: np.ndarray
    times: np.ndarray
    c: float
    train_mse: float
    effective_dof: int
    sensitivities: np.ndarray
    optimality_gap: float

    @property
    def n_active(self) -> int:
        """Number of weights above :data:`gmmmem.weights.ACTIVE_TOL`."""
        return int((self.weights > weights.ACTIVE_TOL).sum())

    def at(self, var: Any) -> float | np.ndarray:
        """M*/N at data variance(s) ``var``: :func:`gmmmem.losses.crossover` of the closed forms."""
        return losses.crossover(*losses.closed_form_losses(self.times, var, self.c), self.weights)

    def predict(self, table: SweepTable) -> np.ndarray:
        """M*/N of every row: :meth:`at` its data variance."""
        return np.asarray(self.at(np.asarray(table.var, dtype=float)))


@dataclass(frozen=True, eq=False)
class ClosedForm:
    r"""Theorems 3.1/3.2 with constant ``c``: :math:`M^\star/N = \sum_t w_t (1 - 1/(c(1+\psi_t s^2)))`.

    Fitted exactly: :math:`\min_{w\in\Delta} \frac1n\|Fw - y\|^2` with
    :func:`gmmmem.weights.design_matrix` and :func:`gmmmem.weights.simplex_lstsq`. ``times``:
    the time grid of the weights (None: the table's).
    """

    times: Any = None
    c: float = 2.0
    dof_tol: float = 1e-3
    name: ClassVar[str] = "closed form"

    def fit(self, table: SweepTable) -> ClosedFormFit:
        """Fit the weights on every row of ``table``."""
        t = _times(self.times, table)
        y = _measured(table)
        c = validate.positive(self.c, "c")
        dof_tol = _dof_tol(self.dof_tol)
        F = weights.design_matrix(t, table.var, c)
        n = y.size
        w = weights.simplex_lstsq(F / math.sqrt(n), y / math.sqrt(n))
        grad = 2.0 / n * F.T @ (F @ w - y)
        sens = weights.sensitivities(F)
        pred = losses.crossover(*losses.closed_form_losses(t, table.var, c), w)
        return ClosedFormFit(
            weights=w, times=t, c=c, train_mse=float(np.mean((pred - y) ** 2)),
            effective_dof=int((sens > dof_tol).sum()), sensitivities=sens,
            optimality_gap=float(max(grad @ w - grad.min(), 0.0)),
        )


# ----------------------------------------------------------------------------- loss crossings


def _gaps(sizes: Any, gen: Any, pmem: Any) -> tuple[np.ndarray, np.ndarray]:
    """Checked (sizes (C, S), gaps (C, S, T) = gen - pmem) of a table's losses."""
    gen = validate.array(gen, "gen")
    pmem = validate.array(pmem, "pmem")
    if gen.ndim != 2 or 0 in gen.shape:
        raise ValueError(f"gen must have shape (C, T) with C, T >= 1, got {gen.shape}")
    C, T = gen.shape
    if pmem.ndim != 3 or pmem.shape[0] != C or pmem.shape[2] != T:
        raise ValueError(f"pmem must have shape (C, S, T) = ({C}, S, {T}), got {pmem.shape}")
    S = pmem.shape[1]
    sizes = validate.array(sizes, "sizes")
    if sizes.shape == (S,):
        sizes = np.broadcast_to(sizes, (C, S))
    if sizes.shape != (C, S):
        raise ValueError(f"sizes must have shape ({S},) or ({C}, {S}), got {sizes.shape}")
    if S < 2 or (np.diff(sizes, axis=1) <= 0).any():
        raise ValueError("sizes must hold at least two strictly increasing values per configuration")
    return np.array(sizes), gen[:, None, :] - pmem


@dataclass(frozen=True, eq=False)
class CrossingFit:
    r"""Fitted :class:`MonteCarlo` or :class:`FiniteSize`: simplex ``weights`` (T,).

    A row whose weighted losses do not cross within its size grid is predicted at the nearest
    end of that grid (the smallest size when the generalizing model already loses there, the
    largest when it wins everywhere); its true error is at least that. ``n_uncrossed`` counts
    such training rows. ``effective_dof``, ``sensitivities``: as in :class:`ClosedFormFit`
    for the local linearization (the Jacobian of the training crossings at the fitted weights).
    ``start_objectives``: the training MSE reached from each start (a spread shows the
    landscape is not convex).
    """

    predictor: MonteCarlo
    weights: np.ndarray
    train_mse: float
    n_uncrossed: int
    effective_dof: int
    sensitivities: np.ndarray
    start_objectives: np.ndarray

    @property
    def n_active(self) -> int:
        """Number of weights above :data:`gmmmem.weights.ACTIVE_TOL`."""
        return int((self.weights > weights.ACTIVE_TOL).sum())

    def predict(self, table: SweepTable) -> np.ndarray:
        """The crossover of every row's losses (the nearest end of its size grid where none)."""
        sizes, gaps = _gaps(*self.predictor.losses(table))
        r, status, _ = losses._crossings(sizes, gaps, self.weights)
        return weights.clamped(r, status, sizes)


@dataclass(frozen=True, eq=False, kw_only=True)
class MonteCarlo:
    """The crossover of the table's Monte Carlo losses (``sizes``, ``gen``, ``pmem`` columns).

    Fitted by :func:`gmmmem.weights.crossing_weights` (``n_starts``, ``linearized_start``,
    ``seed``); a table with other losses (:meth:`gmmmem.sweep.SweepTable.with_losses`) is
    fitted the same way.
    """

    n_starts: int = 8
    linearized_start: bool = True
    seed: int = 0
    dof_tol: float = 1e-3
    name: ClassVar[str] = "Monte Carlo losses"

    def losses(self, table: SweepTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sizes (C, S) as M/N, generalizing (C, T), partially memorizing (C, S, T) losses)."""
        return table.sizes, table.gen, table.pmem

    def fit(self, table: SweepTable) -> CrossingFit:
        """Fit the weights on every row of ``table``."""
        sizes, gaps = _gaps(*self.losses(table))
        y = _measured(table)
        dof_tol = _dof_tol(self.dof_tol)
        w, starts = weights.crossing_weights(sizes, gaps, y, n_starts=self.n_starts,
                                             linearized_start=self.linearized_start, seed=self.seed)
        r, status, dr = losses._crossings(sizes, gaps, w, grad=True)
        sens = weights.sensitivities(dr)
        return CrossingFit(
            predictor=self, weights=w,
            train_mse=float(np.mean((weights.clamped(r, status, sizes) - y) ** 2)),
            n_uncrossed=int((status != 0).sum()), effective_dof=int((sens > dof_tol).sum()),
            sensitivities=sens, start_objectives=starts,
        )


@dataclass(frozen=True, eq=False)
class FiniteSize(MonteCarlo):
    """The crossover of Theorem 3.1 and the finite-size Theorem 3.2 (:func:`gmmmem.losses.finite_size_losses`).

    ``times``: the time grid (None: the table's); ``num_sizes``: model sizes per row, at most
    the smallest N of the table given. The losses of each configuration are computed once per
    predictor (about a third of a second).
    """

    times: Any = None
    num_sizes: int = 50
    name: ClassVar[str] = "finite size"
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    def losses(self, table: SweepTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sizes (C, S) as M/N, Theorem 3.1 (C, T), finite-size Theorem 3.2 (C, S, T))."""
        t = _times(self.times, table)
        S = min(self.num_sizes, int(np.min(table.N)))
        keys = [(int(d), int(k), int(n), float(v), S, t.tobytes())
                for d, k, n, v in zip(table.d, table.K, table.N, table.var)]
        todo = sorted({i for i, key in enumerate(keys) if key not in self._cache})
        if todo:
            new = losses.finite_size_losses(t, table.d[todo], table.K[todo], table.N[todo],
                                            table.var[todo], num_sizes=S)
            for j, i in enumerate(todo):
                self._cache[keys[i]] = tuple(a[j] for a in new)
        return tuple(np.stack([self._cache[key][a] for key in keys]) for a in range(3))


# ----------------------------------------------------------------------------- baselines


@dataclass(frozen=True)
class ConstantFit:
    """Fitted :class:`Constant`: one ``value`` of M*/N for every configuration."""

    value: float
    train_mse: float
    effective_dof: int = 1

    def predict(self, table: SweepTable) -> np.ndarray:
        """``value`` for every row."""
        return np.full(len(table.measured), self.value)


@dataclass(frozen=True)
class Constant:
    """Baseline: the mean measured M_pt/N of the training rows, for every configuration."""

    name: ClassVar[str] = "constant (baseline)"

    def fit(self, table: SweepTable) -> ConstantFit:
        """The mean of ``table.measured``."""
        y = _measured(table)
        mean = y.mean()
        return ConstantFit(value=float(mean), train_mse=float(np.mean((y - mean) ** 2)))


@dataclass(frozen=True)
class PerVarianceFit:
    """Fitted :class:`PerVariance`: the mean M_pt/N per data variance, and over all rows."""

    means: dict
    overall: float
    train_mse: float

    @property
    def effective_dof(self) -> int:
        """One number per variance."""
        return len(self.means)

    def predict(self, table: SweepTable) -> np.ndarray:
        """The mean of each row's variance (the overall mean for a variance not fitted on)."""
        return np.array([self.means.get(float(v), self.overall) for v in table.var])


@dataclass(frozen=True)
class PerVariance:
    """Baseline: the mean measured M_pt/N of the training rows of the same data variance."""

    name: ClassVar[str] = "mean per variance (baseline)"

    def fit(self, table: SweepTable) -> PerVarianceFit:
        """The mean of ``table.measured`` per value of ``table.var``."""
        y = _measured(table)
        var = np.asarray(table.var, dtype=float)
        means = {float(v): float(y[var == v].mean()) for v in np.unique(var)}
        pred = np.array([means[float(v)] for v in var])
        return PerVarianceFit(means=means, overall=float(y.mean()),
                              train_mse=float(np.mean((y - pred) ** 2)))
