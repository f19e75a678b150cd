r"""Solvers for simplex time weights :math:`\lambda_t` (Figure 3): the two fits of chapter 4.

Only the normalized weights :math:`w = \bar\lambda` matter, so both fits run over the simplex
:math:`\Delta = \{w \ge 0, \sum_t w_t = 1\}`. :func:`simplex_lstsq` is exact for a predictor
linear in :math:`w` (the closed form); :func:`crossing_weights` is a multi-start local fit of
the loss crossings (Monte Carlo or finite-size losses). The predictors built on them are in
:mod:`gmmmem.predictors`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize, nnls

from . import validate
from .diffusion import snr
from .losses import _crossings

#: A weight counts as active (non-zero) above this value.
ACTIVE_TOL = 1e-10


def design_matrix(t: np.ndarray, var: np.ndarray, c: float = 2.0) -> np.ndarray:
    r"""The closed-form crossover is :math:`F w` (Theorems 3.1/3.2): :math:`F_{it} = 1 - 1/(c(1+\psi_t s_i^2))`.

    Shape ``var.shape + (T,)``; a weight vector on the simplex gives :math:`M^\star/N = Fw`.
    """
    t = validate.array(t, "t")
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"t must be a non-empty 1-D array of times, got shape {t.shape}")
    validate.times(torch.as_tensor(t))
    v = validate.variances(var)
    c = validate.positive(c, "c")
    return 1.0 - 1.0 / (c * (1.0 + snr(t) * v[..., None]))


def simplex_lstsq(G: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
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


def sensitivities(J: np.ndarray) -> np.ndarray:
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


def clamped(r: np.ndarray, status: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Crossings with the no-crossing cases replaced by the nearest end of each row's size grid."""
    return np.where(status == -1, sizes[:, 0], np.where(status == 1, sizes[:, -1], r))


def _linearized_start(sizes: np.ndarray, gaps: np.ndarray, y: np.ndarray) -> np.ndarray:
    r"""Weights that zero the weighted gap at the measured ratios, to first order.

    :math:`\hat y_i = y_i` iff :math:`\sum_t w_t\, a_{it}(y_i) = 0`, :math:`a_{it}(r)` the gap
    interpolated at :math:`r` — a *linear* condition on :math:`w`. Dividing by the slope
    :math:`\partial_r \sum_t \bar u_t a_{it}` (uniform weights :math:`\bar u`) turns the
    residual into a first-order estimate of :math:`\hat y_i - y_i`, and
    :func:`simplex_lstsq` minimizes its squares exactly. When the gap is linear in
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
    return simplex_lstsq(rows)


def crossing_weights(
    sizes: np.ndarray, gaps: np.ndarray, y: np.ndarray, *, n_starts: int = 8,
    linearized_start: bool = True, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Simplex weights whose loss crossings match ``y``: ``(weights, objective of each start)``.

    Minimizes :math:`\frac1n \sum_i (\tilde r_i(w) - y_i)^2`, :math:`\tilde r_i` the crossing
    of :func:`gmmmem.losses.crossover` with a missing one replaced by the nearest end of the size
    grid (:func:`clamped`), over the simplex by SLSQP with the analytic gradient, from the
    linearized solution (:func:`_linearized_start`, when ``linearized_start``), uniform
    weights and ``n_starts`` flat-Dirichlet draws (``seed``); the best end point is kept. The
    objective is piecewise smooth and not convex: a small value certifies a good fit, a
    large one proves nothing about the global minimum. ``sizes`` (n, S) as M/N, ``gaps``
    (n, S, T) generalizing minus partially memorizing losses, ``y`` (n,).
    """
    n, S, T = gaps.shape
    n_starts = int(n_starts)
    if n_starts < 0:
        raise ValueError(f"n_starts must be >= 0, got {n_starts}")

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        w = np.clip(w, 0.0, None)
        if w.sum() <= 0:
            return float("inf"), np.zeros(T)
        r, status, dr = _crossings(sizes, gaps, w / w.sum(), grad=True)
        res = clamped(r, status, sizes) - y
        # r is invariant to rescaling w, so dr is also the gradient with respect to the
        # unnormalized w up to a factor 1/sum(w) = 1 on the simplex.
        return float(np.mean(res**2)), 2.0 / n * res @ dr / w.sum()

    starts: list[np.ndarray] = []
    if linearized_start:
        starts.append(_linearized_start(sizes, gaps, y))
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
    return best_w, np.array(values)
