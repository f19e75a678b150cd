r"""Fitting the time weights :math:`\lambda_t` to measured transitions (Figure 3).

For each configuration :math:`i` (dimension :math:`d`, clusters :math:`K`, training-set size
:math:`N`, data variance :math:`s_i^2`) a sweep measures the transition midpoint
:math:`y_i = M_{pt}/N`. The paper fits non-negative time weights over the grid times
:math:`t_1..t_T` so that the crossover predicted from the losses matches :math:`y_i`. Only
the normalized weights :math:`w = \bar\lambda` matter, so every fit here runs over the
simplex :math:`\Delta = \{w \in \mathbb R^T : w \ge 0, \sum_t w_t = 1\}`.

Three predictors:

* **closed form** (Theorems 3.1/3.2): :math:`\hat y_i(w) = \sum_t w_t f_t(s_i^2)` with

  .. math:: f_t(s^2) = 1 - \frac{1}{c\,(1 + \psi_t s^2)}
            \;\overset{c=2}{=}\; \frac{\tfrac12 + \psi_t s^2}{1 + \psi_t s^2},

  linear in :math:`w` (design matrix :math:`F_{it} = f_t(s_i^2)`) and a function of the
  variance alone. When every configuration has the same variance the rows of :math:`F` are
  equal and the whole fit collapses to one number, :math:`M^\star = wN` (the rebuttal's
  point); :attr:`LambdaFit.effective_dof` measures this.
* **Monte Carlo losses**: :math:`\hat y_i(w)` is the crossing in :math:`M/N` of
  :math:`\sum_t w_t [L^{gen}_{it} - L^{pmem}_{it}(M)]`, interpolated linearly between the
  measured model sizes (as :func:`gmmmem.losses.crossover_from_losses`); it depends on
  :math:`d, K, N` through the losses. Non-linear and non-smooth in :math:`w`.
* **finite size**: the same crossing, with the losses replaced by Theorem 3.1 and the
  finite-size Theorem 3.2 (:func:`gmmmem.losses.expected_nearest_memorized_excess`,
  :math:`e(M)`), built by :func:`finite_size_losses` and fitted by the Monte Carlo
  predictor's fit. Since :math:`e` does not depend on :math:`t`, the crossing solves
  :math:`e_i(\hat y_i N_i) = \sum_t w_t\, d s_i^2/(1 + \psi_t s_i^2)`; the closed form
  solves the same equation with the line :math:`e(M) = 2 d s^2 (1 - M/N)`. The curve
  :math:`e_i` depends on :math:`d, K, N` and the variance.

MSEs are :math:`\frac1n\sum_i (\hat y_i - y_i)^2` in units of :math:`(M/N)^2`.
Held-out evaluation: :func:`random_splits`, :func:`group_splits`, :func:`evaluate`.
Masks are *training* masks throughout: ``True`` = used for fitting, ``False`` = held out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from scipy.optimize import minimize, nnls

from . import losses, validate
from .diffusion import snr

ArrayLike = float | Sequence[float] | np.ndarray | torch.Tensor

#: A weight counts as active (non-zero) above this value.
ACTIVE_TOL = 1e-10


# ----------------------------------------------------------------------------- input checks


def _times(t: ArrayLike) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().double().numpy()
    arr = np.asarray(t, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"t must be a non-empty 1-D array of times, got shape {arr.shape}")
    validate.times(torch.as_tensor(arr))
    return arr


def _simplex_weights(weights: ArrayLike, T: int) -> np.ndarray:
    w = validate.array(weights, "weights")
    if w.shape != (T,):
        raise ValueError(f"weights must have shape ({T},) to match t, got {w.shape}")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be >= 0 and not all zero")
    return w / w.sum()


def _measured(measured: ArrayLike, n: int) -> np.ndarray:
    y = validate.array(measured, "measured")
    if y.shape != (n,):
        raise ValueError(
            f"measured must have shape ({n},), one value per configuration, got {y.shape}"
        )
    if (y < 0).any() or (y > 1).any():
        raise ValueError(f"measured ratios M_pt/N must lie in [0, 1], got [{y.min()}, {y.max()}]")
    return y


def _train_mask(train_mask: ArrayLike | None, n: int) -> np.ndarray:
    if train_mask is None:
        return np.ones(n, dtype=bool)
    m = np.asarray(train_mask)
    if m.shape != (n,):
        raise ValueError(f"train_mask must have shape ({n},), got {m.shape}")
    if m.dtype != bool:
        raise ValueError(f"train_mask must be a boolean array, got dtype {m.dtype}")
    if not m.any():
        raise ValueError("train_mask selects no configuration: the training set is empty")
    return m.copy()


# ----------------------------------------------------------------------------- closed form


def design_matrix(t: ArrayLike, var: ArrayLike, c: float = 2.0) -> np.ndarray:
    r""":math:`F_{it} = f_t(s_i^2) = 1 - 1/(c(1+\psi_t s_i^2))`, shape ``var.shape + (T,)``."""
    t = _times(t)
    v = validate.variances(var)
    c = validate.positive(c, "c")
    psi = snr(t)
    return 1.0 - 1.0 / (c * (1.0 + psi * v[..., None]))


def _simplex_lstsq(G: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    r"""Exact :math:`\arg\min_{w \in \Delta} \|G w - y\|^2` (``y = 0`` when ``None``).

    On the simplex :math:`Gw - y = (G - y\mathbf 1^\top) w =: Hw`, so the problem is the
    minimum-norm point of the convex hull of the columns of :math:`H`. It reduces exactly to
    one non-negative least squares problem: for :math:`u \ge 0` write :math:`u = s v` with
    :math:`v \in \Delta`; then

    .. math:: \|H u\|^2 + (\mathbf 1^\top u - 1)^2 = s^2 \|Hv\|^2 + (s - 1)^2
              \ge \frac{\|Hv\|^2}{1 + \|Hv\|^2},

    with equality at :math:`s = 1/(1+\|Hv\|^2)`. The right side increases with
    :math:`\|Hv\|^2`, so the NNLS minimizer :math:`u^\star` of
    :math:`\|[H; \mathbf 1^\top] u - e_{n+1}\|` gives :math:`w = u^\star / \mathbf 1^\top u^\star`
    (never :math:`u^\star = 0`, whose value 1 every :math:`v` beats). Lawson-Hanson (scipy's
    ``nnls``) is an exact active-set method. When :math:`H` is rank deficient the minimizer
    :math:`w` need not be unique; :math:`Hw` is.
    """
    H = G if y is None else G - y[:, None]
    n, T = H.shape
    A = np.vstack([H, np.ones((1, T))])
    b = np.zeros(n + 1)
    b[-1] = 1.0
    u, _ = nnls(A, b, maxiter=50 * (T + 1))
    w = np.clip(u, 0.0, None)
    return w / w.sum()


def _sensitivities(J: np.ndarray) -> np.ndarray:
    r"""Singular values of :math:`J P \sqrt{2/n}`, :math:`P = I - \mathbf 1\mathbf 1^\top/T`.

    :math:`J` (n, T) maps weight changes to prediction changes. Moving :math:`w` within the
    simplex is a sum-zero change of Euclidean length at most :math:`\sqrt2`, so the
    :math:`k`-th value bounds how much the RMS prediction over the n configurations can
    change along the :math:`k`-th independent direction of weight space.
    """
    n, T = J.shape
    if n == 0:
        return np.zeros(0)
    JP = J - J.mean(axis=1, keepdims=True)
    return np.linalg.svd(JP, compute_uv=False) * math.sqrt(2.0 / n)


@dataclass(frozen=True)
class LambdaFit:
    r"""Closed-form fit of simplex time weights to measured transition ratios.

    Attributes
    ----------
    weights : (T,) normalized weights :math:`w \in \Delta` (one minimizer; see below).
    t : (T,) the times; c : the constant of Theorem 3.2.
    train_mask : (C,) bool, the configurations fitted.
    predictions : (C,) :math:`\hat y_i = (Fw)_i` for every configuration given.
    train_mse, test_mse : mean squared error on training / held-out configurations, in
        :math:`(M/N)^2`; ``test_mse`` is ``None`` when nothing is held out.
    effective_dof : how many free numbers the fit really has: the number of
        :attr:`sensitivities` above ``dof_tol``. The training predictions
        :math:`\{F_{train} w : w \in \Delta\}` span an affine set of dimension
        :math:`\mathrm{rank}(F_{train} P)`; this counts only the directions along which the
        RMS training prediction can move by more than ``dof_tol`` (M/N units). When all
        training variances are equal, the rows of :math:`F_{train}` coincide, it is exactly
        **1**: every weight vector acts through the single number
        :math:`\sum_t w_t f_t(s^2)`, i.e. :math:`M^\star = wN`. Since :math:`f_t` is a smooth
        function of :math:`s^2`, it stays small (a handful) even with many distinct
        variances.
    sensitivities : singular values of :math:`F_{train} P \sqrt{2/n_{train}}`, :math:`P` the
        projection onto sum-zero weight changes (see ``effective_dof``).
    optimality_gap : the Frank-Wolfe duality gap :math:`g^\top w - \min_t g_t`,
        :math:`g = \nabla \mathrm{MSE}_{train}(w)`; it bounds ``train_mse`` minus the optimal
        training MSE from above and is 0 exactly at a minimizer (KKT).
    n_active : number of weights above :data:`ACTIVE_TOL`.

    Only :math:`F_{train}w` is determined by the data; when ``effective_dof < T - 1`` (always,
    in practice) many weight vectors share the same predictions, and the one returned is
    whichever the active-set solver reaches. Read predictions, not individual weights.
    """

    weights: np.ndarray
    t: np.ndarray
    c: float
    train_mask: np.ndarray
    predictions: np.ndarray
    train_mse: float
    test_mse: float | None
    effective_dof: int
    sensitivities: np.ndarray
    optimality_gap: float
    dof_tol: float

    @property
    def n_active(self) -> int:
        return int((self.weights > ACTIVE_TOL).sum())

    def predict(self, var: ArrayLike) -> float | np.ndarray:
        """Predicted :math:`M^\\star/N` for variance(s) ``var`` (:func:`gmmmem.losses.crossover`)."""
        return losses.crossover(self.t, self.weights, var, self.c)


def fit_lambda(
    t: ArrayLike,
    var: ArrayLike,
    measured: ArrayLike,
    train_mask: ArrayLike | None = None,
    *,
    c: float = 2.0,
    dof_tol: float = 1e-3,
) -> LambdaFit:
    r"""Fit simplex weights to measured ratios with the closed-form predictor, exactly.

    Solves

    .. math:: \min_{w \in \Delta} \frac{1}{n} \sum_{i \in \text{train}}
              \Big(\sum_t w_t f_t(s_i^2) - y_i\Big)^2

    (``var`` = :math:`s_i^2`, ``measured`` = :math:`y_i = M_{pt}/N \in [0, 1]`, one per
    configuration) by reducing it to one non-negative least squares problem (see
    :func:`_simplex_lstsq`); the result is exact to rounding, certified by
    :attr:`LambdaFit.optimality_gap`. ``dof_tol`` (M/N units) sets
    :attr:`LambdaFit.effective_dof`.
    """
    t = _times(t)
    v = validate.variances(var)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(
            f"var must be a non-empty 1-D array, one variance per configuration, "
            f"got shape {v.shape}"
        )
    y = _measured(measured, v.size)
    mask = _train_mask(train_mask, v.size)
    if not (math.isfinite(dof_tol) and dof_tol > 0):
        raise ValueError(f"dof_tol must be finite and > 0, got {dof_tol}")
    c = validate.positive(c, "c")
    F = design_matrix(t, v, c)
    Ftr, ytr = F[mask], y[mask]
    n = int(mask.sum())
    w = _simplex_lstsq(Ftr / math.sqrt(n), ytr / math.sqrt(n))
    pred = F @ w
    res = pred - y
    grad = 2.0 / n * Ftr.T @ res[mask]
    sens = _sensitivities(Ftr)
    return LambdaFit(
        weights=w,
        t=t,
        c=c,
        train_mask=mask,
        predictions=pred,
        train_mse=float(np.mean(res[mask] ** 2)),
        test_mse=float(np.mean(res[~mask] ** 2)) if (~mask).any() else None,
        effective_dof=int((sens > dof_tol).sum()),
        sensitivities=sens,
        optimality_gap=float(max(grad @ w - grad.min(), 0.0)),
        dof_tol=float(dof_tol),
    )


# ----------------------------------------------------------------------------- Monte Carlo losses


def _loss_arrays(
    model_sizes_ratio: Any, gen_losses: Any, pmem_losses: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return (sizes (C, S), gaps (C, S, T) = gen - pmem)."""
    gen = validate.array(gen_losses, "gen_losses")
    pmem = validate.array(pmem_losses, "pmem_losses")
    if gen.ndim != 2 or gen.shape[0] == 0 or gen.shape[1] == 0:
        raise ValueError(f"gen_losses must have shape (C, T) with C, T >= 1, got {gen.shape}")
    C, T = gen.shape
    if pmem.ndim != 3 or pmem.shape[0] != C or pmem.shape[2] != T:
        raise ValueError(f"pmem_losses must have shape (C, S, T) = ({C}, S, {T}), got {pmem.shape}")
    S = pmem.shape[1]
    sizes = validate.array(model_sizes_ratio, "model_sizes_ratio")
    if sizes.ndim == 1:
        sizes = np.broadcast_to(sizes, (C, sizes.size))
    if sizes.shape != (C, S):
        raise ValueError(
            f"model_sizes_ratio must have shape (S,) = ({S},) or (C, S) = ({C}, {S}), "
            f"got {sizes.shape}"
        )
    if S < 2 or (np.diff(sizes, axis=1) <= 0).any():
        raise ValueError(
            "model_sizes_ratio must hold at least two strictly increasing values per configuration"
        )
    return np.array(sizes), gen[:, None, :] - pmem


def _crossings(
    sizes: np.ndarray, gaps: np.ndarray, w: np.ndarray, *, grad: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    r"""Vectorized :func:`gmmmem.losses.crossover_from_losses` over configurations.

    :math:`f_{is} = \sum_t w_t\, \mathrm{gaps}_{ist}`. For each configuration, the first
    :math:`j` with :math:`f_{i,j-1} < 0 \le f_{ij}` gives
    :math:`r_i = r_{j-1} + (r_j - r_{j-1})\,(-f_{j-1})/(f_j - f_{j-1})`.

    Returns ``(r, status, dr)``: ``r`` (C,) the crossings (NaN where none); ``status`` (C,)
    0 crossed, -1 no crossing because :math:`f_{i0} \ge 0` (the generalizing model already
    loses at the smallest size), +1 because :math:`f_{is} < 0` for every size;
    ``dr`` (C, T) the gradient of :math:`r_i` with respect to :math:`w`,
    :math:`\Delta r\,(f_{j-1} a_j - f_j a_{j-1})/(f_j - f_{j-1})^2` with
    :math:`a_s = \mathrm{gaps}_{is\cdot}` (zero where there is no crossing), when ``grad``.
    """
    C, S, T = gaps.shape
    f = gaps @ w
    nonneg = f >= 0
    below = nonneg[:, 0]
    any_up = nonneg.any(axis=1)
    status = np.where(below, -1, np.where(any_up, 0, 1))
    j = np.argmax(nonneg, axis=1)  # first index with f >= 0
    ok = status == 0
    rows = np.nonzero(ok)[0]
    jj = j[rows]
    f0, f1 = f[rows, jj - 1], f[rows, jj]
    r0, r1 = sizes[rows, jj - 1], sizes[rows, jj]
    r = np.full(C, np.nan)
    r[rows] = r0 + (r1 - r0) * (-f0) / (f1 - f0)
    dr = None
    if grad:
        dr = np.zeros((C, T))
        a0, a1 = gaps[rows, jj - 1], gaps[rows, jj]
        dr[rows] = ((r1 - r0) / (f1 - f0) ** 2)[:, None] * (f0[:, None] * a1 - f1[:, None] * a0)
    return r, status, dr


def loss_crossings(
    model_sizes_ratio: Any, gen_losses: Any, pmem_losses: Any, weights: ArrayLike
) -> np.ndarray:
    r"""Crossings :math:`M^\star/N` of every configuration for one weight vector, NaN where none.

    Same rule as :func:`gmmmem.losses.crossover_from_losses` (first sign change of
    :math:`\sum_t \bar w_t [L^{gen}_t - L^{pmem}_t(M)]` from negative to non-negative,
    linear interpolation), vectorized over configurations and silent.
    Shapes: ``gen_losses`` (C, T), ``pmem_losses`` (C, S, T), ``model_sizes_ratio`` (S,) or (C, S).
    """
    sizes, gaps = _loss_arrays(model_sizes_ratio, gen_losses, pmem_losses)
    w = _simplex_weights(weights, gaps.shape[2])
    return _crossings(sizes, gaps, w)[0]


def _clamped(r: np.ndarray, status: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Crossings with the no-crossing cases replaced by the nearest end of the size grid."""
    return np.where(status == -1, sizes[:, 0], np.where(status == 1, sizes[:, -1], r))


@dataclass(frozen=True)
class LossLambdaFit:
    r"""Fit of simplex time weights with the Monte Carlo (loss-crossing) predictor.

    Attributes
    ----------
    weights : (T,) normalized weights, the best over all starts.
    train_mask : (C,) bool.
    predictions : (C,) crossings for every configuration given; NaN where the weighted
        losses do not cross within the sizes measured.
    train_mse, test_mse : mean squared error in :math:`(M/N)^2`, counting a configuration
        without a crossing as predicting the nearest end of its size grid (the smallest size
        when the generalizing model already loses there, the largest when it wins
        everywhere). Its true error is at least that. ``test_mse`` is ``None`` when nothing
        is held out.
    n_uncrossed_train, n_uncrossed_test : how many configurations had no crossing.
    effective_dof, sensitivities : as in :class:`LambdaFit`, but for the *local*
        linearization: the Jacobian of the training crossings with respect to :math:`w` at
        the fitted weights (configurations without a crossing contribute zero rows).
    start_objectives : training objective reached from each start, in the order tried
        (linearized start first when used, then uniform, then the random ones): a spread
        shows the landscape is not convex.
    n_active : number of weights above :data:`ACTIVE_TOL`.
    """

    weights: np.ndarray
    train_mask: np.ndarray
    predictions: np.ndarray
    train_mse: float
    test_mse: float | None
    n_uncrossed_train: int
    n_uncrossed_test: int
    effective_dof: int
    sensitivities: np.ndarray
    start_objectives: np.ndarray
    dof_tol: float

    @property
    def n_active(self) -> int:
        return int((self.weights > ACTIVE_TOL).sum())

    def predict(self, model_sizes_ratio: Any, gen_losses: Any, pmem_losses: Any) -> np.ndarray:
        """Crossings for (new) configurations' losses, NaN where none (:func:`loss_crossings`)."""
        return loss_crossings(model_sizes_ratio, gen_losses, pmem_losses, self.weights)


def _linearized_start(sizes: np.ndarray, gaps: np.ndarray, y: np.ndarray) -> np.ndarray:
    r"""Weights that zero the weighted gap at the measured ratios, to first order.

    :math:`\hat y_i = y_i` iff :math:`\sum_t w_t\, a_{it}(y_i) = 0`, :math:`a_{it}(r)` the gap
    interpolated at :math:`r` — a *linear* condition on :math:`w`. Dividing by the slope
    :math:`\partial_r \sum_t \bar u_t a_{it}` (uniform weights :math:`\bar u`) turns the
    residual into a first-order estimate of :math:`\hat y_i - y_i`, and
    :func:`_simplex_lstsq` minimizes its squares exactly. When the gap is linear in
    :math:`r` with a slope that does not depend on :math:`t` (Theorem 3.2's form) this is
    the exact answer.
    """
    C, S, T = gaps.shape
    rows = np.empty((C, T))
    for i in range(C):
        for k in range(T):
            rows[i, k] = np.interp(y[i], sizes[i], gaps[i, :, k])
        g_mean = gaps[i].mean(axis=1)
        slope = np.gradient(g_mean, sizes[i])
        s_at = abs(float(np.interp(y[i], sizes[i], slope)))
        rows[i] /= s_at if s_at > 0 else 1.0
    return _simplex_lstsq(rows)


def fit_lambda_from_losses(
    model_sizes_ratio: Any,
    gen_losses: Any,
    pmem_losses: Any,
    measured: ArrayLike,
    train_mask: ArrayLike | None = None,
    *,
    n_starts: int = 8,
    linearized_start: bool = True,
    seed: int = 0,
    dof_tol: float = 1e-3,
) -> LossLambdaFit:
    r"""Fit simplex weights so that the loss crossings match the measured ratios.

    Minimizes over :math:`w \in \Delta`

    .. math:: \frac1n \sum_{i \in \text{train}} \big(\tilde r_i(w) - y_i\big)^2,

    :math:`\tilde r_i` the crossing of :func:`loss_crossings` with a missing crossing
    replaced by the nearest end of the size grid (continuous where a crossing leaves the
    grid, flat beyond it; the first-crossing rule itself jumps where the weighted gap is not
    monotone in M/N). The objective is piecewise smooth and not convex, so it is minimized by SLSQP on the
    simplex (bounds :math:`0 \le w_t \le 1`, :math:`\sum_t w_t = 1`, analytic gradient) from
    several starts: the linearized solution (:func:`_linearized_start`, when
    ``linearized_start``), uniform weights, and ``n_starts`` draws from a flat Dirichlet
    (``seed``). The best end point is kept, clipped to :math:`w \ge 0` and renormalized.
    This is a local method: a small objective certifies a good fit, a large one proves
    nothing about the global minimum.

    Shapes: ``gen_losses`` (C, T) generalizing losses, ``pmem_losses`` (C, S, T) partially
    memorizing losses at S model sizes, ``model_sizes_ratio`` (S,) or (C, S) those sizes
    as M/N (strictly increasing), ``measured`` (C,) in [0, 1].
    """
    sizes, gaps = _loss_arrays(model_sizes_ratio, gen_losses, pmem_losses)
    C, S, T = gaps.shape
    y = _measured(measured, C)
    mask = _train_mask(train_mask, C)
    n_starts = int(n_starts)
    if n_starts < 0:
        raise ValueError(f"n_starts must be >= 0, got {n_starts}")
    if not (math.isfinite(dof_tol) and dof_tol > 0):
        raise ValueError(f"dof_tol must be finite and > 0, got {dof_tol}")
    s_tr, g_tr, y_tr = sizes[mask], gaps[mask], y[mask]
    n = int(mask.sum())

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        w = np.clip(w, 0.0, None)
        if w.sum() <= 0:
            return float("inf"), np.zeros(T)
        r, status, dr = _crossings(s_tr, g_tr, w / w.sum(), grad=True)
        res = _clamped(r, status, s_tr) - y_tr
        # r is invariant to rescaling w, so dr is also the gradient with respect to the
        # unnormalized w up to a factor 1/sum(w) = 1 on the simplex.
        return float(np.mean(res**2)), 2.0 / n * res @ dr / w.sum()

    starts: list[np.ndarray] = []
    if linearized_start:
        starts.append(_linearized_start(s_tr, g_tr, y_tr))
    starts.append(np.full(T, 1.0 / T))
    rng = np.random.default_rng(seed)
    starts.extend(rng.dirichlet(np.ones(T), size=n_starts))

    def normalized(w: np.ndarray) -> np.ndarray:
        w = np.clip(np.asarray(w, dtype=float), 0.0, None)
        return w / w.sum()

    cons = [{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}]
    best_w, best_val, values = normalized(starts[0]), float("inf"), []
    for w0 in starts:
        sol = minimize(
            objective, w0, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * T,
            constraints=cons, options={"maxiter": 500, "ftol": 1e-15},
        )
        # Keep the start itself if SLSQP ended somewhere worse (it can, on a kink).
        end = min((normalized(w0), normalized(sol.x)), key=lambda w: objective(w)[0])
        val = objective(end)[0]
        values.append(val)
        if val < best_val:
            best_w, best_val = end, val

    r, status, dr = _crossings(sizes, gaps, best_w, grad=True)
    res = _clamped(r, status, sizes) - y
    sens = _sensitivities(dr[mask])
    return LossLambdaFit(
        weights=best_w,
        train_mask=mask,
        predictions=r,
        train_mse=float(np.mean(res[mask] ** 2)),
        test_mse=float(np.mean(res[~mask] ** 2)) if (~mask).any() else None,
        n_uncrossed_train=int((status[mask] != 0).sum()),
        n_uncrossed_test=int((status[~mask] != 0).sum()),
        effective_dof=int((sens > dof_tol).sum()),
        sensitivities=sens,
        start_objectives=np.array(values),
        dof_tol=float(dof_tol),
    )


# ----------------------------------------------------------------------------- finite size


def finite_size_losses(
    t: ArrayLike,
    d: ArrayLike,
    K: ArrayLike,
    N: ArrayLike,
    var: ArrayLike,
    num_sizes: int = 50,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The finite-size predictor's losses, for :func:`fit_lambda_from_losses`.

    For configurations :math:`i` (1-D arrays ``d``, ``K``, ``N``, ``var`` of equal length C)
    returns ``(sizes, gen, pmem)``: ``sizes`` (C, S) the model sizes
    :math:`M_{ik} = \mathrm{round}(k N_i / S)`, k = 1..S, as :math:`M/N`, with
    S = min(``num_sizes``, min N); ``gen`` (C, T) Theorem 3.1's excess
    :math:`d s_i^2/(1 + \psi_t s_i^2)` (:func:`gmmmem.losses.gen_excess`); ``pmem`` (C, S, T)
    the finite-size Theorem 3.2 excess :math:`e_i(M_{ik})`, the same at every time. Both are
    excesses over the memorizing model, whose loss cancels in the crossing. Costs about a
    third of a second per configuration.
    """
    t = _times(t)
    cols = [validate.array(x, name).reshape(-1) for x, name in ((d, "d"), (K, "K"), (N, "N"), (var, "var"))]
    if len({c.size for c in cols}) != 1 or cols[0].size == 0:
        raise ValueError(
            f"d, K, N and var must be non-empty 1-D arrays of one length, got sizes "
            f"{[c.size for c in cols]}"
        )
    d, K, N, v = cols
    num_sizes = validate.positive_int(num_sizes, "num_sizes")
    S = min(num_sizes, int(N.min()))
    if S < 2:
        raise ValueError(f"every N must be >= 2 to give two model sizes, got min N = {N.min()}")
    sizes = np.empty((d.size, S))
    pmem = np.empty((d.size, S, t.size))
    gen = np.empty((d.size, t.size))
    for i in range(d.size):
        dim, k, n = (validate.positive_int(x[i], name)
                     for x, name in ((d, "d"), (K, "K"), (N, "N")))
        M = np.round(np.arange(1, S + 1) * n / S).astype(int)
        sizes[i] = M / n
        pmem[i] = losses.expected_nearest_memorized_excess(dim, k, v[i], M, n)[:, None]
        gen[i] = losses.gen_excess(torch.as_tensor(t), dim, v[i]).numpy()
    return sizes, gen, pmem


# ----------------------------------------------------------------------------- held-out evaluation


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
    """Leave-one-group-out training masks: one per distinct value of ``groups`` (sorted),
    holding out exactly the configurations of that group (e.g. ``groups = N`` per config
    gives leave-one-N-out). The held-out sets partition the configurations."""
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


def evaluate(fit_fn: Callable[[np.ndarray], Any], splits: Sequence[np.ndarray]) -> dict[str, Any]:
    """Fit once per training mask and summarize: ``fit_fn(mask)`` must return an object with
    ``train_mse`` and ``test_mse`` (a :class:`LambdaFit` or :class:`LossLambdaFit`).

    Returns ``train_mse`` and ``test_mse`` (arrays, one entry per split; NaN where a split
    held nothing out), their means and standard deviations over splits
    (``train_mse_mean``, ``train_mse_std``, ``test_mse_mean``, ``test_mse_std``; population
    std, ddof = 0, NaNs ignored), ``n_splits`` and the ``fits``. Random splits overlap, so the
    std describes the spread over splits, not the standard error of the mean.
    """
    splits = list(splits)
    if not splits:
        raise ValueError("splits must hold at least one training mask")
    fits = [fit_fn(np.asarray(m, dtype=bool)) for m in splits]
    train = np.array([f.train_mse for f in fits], dtype=float)
    test = np.array([np.nan if f.test_mse is None else f.test_mse for f in fits], dtype=float)
    has_test = np.isfinite(test).any()
    return {
        "n_splits": len(fits),
        "train_mse": train,
        "test_mse": test,
        "train_mse_mean": float(train.mean()),
        "train_mse_std": float(train.std()),
        "test_mse_mean": float(np.nanmean(test)) if has_test else float("nan"),
        "test_mse_std": float(np.nanstd(test)) if has_test else float("nan"),
        "fits": fits,
    }
