import math
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from gmmmem import diffusion, losses, weights
from gmmmem.heldout import heldout, random_splits
from gmmmem.predictors import ClosedForm, MonteCarlo
from gmmmem.sweep import SweepTable

F64 = torch.float64
T_GRID = diffusion.time_grid(dtype=F64).numpy()


def closed_crossover(t, w, var, c=2.0):
    """The closed-form crossover, through the one crossover function."""
    return losses.crossover(*losses.closed_form_losses(t, var, c), w)


def table(measured, var=None, sizes=None, gen=None, pmem=None, t=T_GRID):
    measured = np.asarray(measured, dtype=float)
    var = np.ones(len(measured)) if var is None else var
    return SweepTable.from_columns(measured=measured, var=var, times=t, sizes=sizes, gen=gen, pmem=pmem)


def fit_closed(t, var, measured, mask=None):
    """(fitted on the rows of mask, predictions of every row, train MSE, held-out MSE or None)."""
    mask = np.ones(len(measured), bool) if mask is None else mask
    tab = table(measured, var, t=t)
    fit = ClosedForm(t).fit(tab.rows(mask))
    pred = fit.predict(tab)
    test = float(np.mean((pred[~mask] - measured[~mask]) ** 2)) if (~mask).any() else None
    return fit, pred, test


def _closed_form_losses(sizes, t, d, var, c=2.0):
    """Theorem 3.1/3.2 losses relative to the memorizing one: gen (T,), pmem (S, T)."""
    psi = diffusion.snr(t)
    gen = d * var / (1.0 + psi * var)
    pmem = np.broadcast_to(c * d * var * (1.0 - sizes)[:, None], (sizes.size, t.size))
    return gen, np.array(pmem)


# ----------------------------------------------------------------------------- the crossover


@pytest.mark.parametrize("c", [1.0, 2.0])
@pytest.mark.parametrize("var", [0.0, 0.3, 1.0, 4.0])
def test_closed_form_crossover_is_the_fit_s_design_matrix_times_the_weights(var, c):
    """The crossover of the closed-form losses against the fit's own path (design_matrix @
    normalized weights) and a plain loop over the times."""
    w = np.random.default_rng(0).random(26)
    got = closed_crossover(T_GRID, w, var, c)
    assert isinstance(got, float)
    assert got == pytest.approx(float(weights.design_matrix(T_GRID, var, c) @ (w / w.sum())), rel=1e-13, abs=1e-15)
    psi = [a * a / (s * s) for a, s in ((math.sqrt(1 - t * t), t) for t in T_GRID)]
    loop = sum(wi * (1 - 1 / (c * (1 + p * var))) for wi, p in zip(w / w.sum(), psi))
    assert got == pytest.approx(loop, rel=1e-12, abs=1e-15)
    # the same from tensors
    assert closed_crossover(diffusion.time_grid(dtype=F64), torch.as_tensor(w), var, c) == pytest.approx(got, rel=1e-14)


def test_closed_form_crossover_is_vectorized_over_variances():
    w = np.random.default_rng(1).random(26)
    var = np.array([[0.25, 0.5, 1.0], [2.0, 4.0, 0.0]])
    got = closed_crossover(T_GRID, w, var)
    assert got.shape == var.shape
    for idx in np.ndindex(var.shape):
        assert got[idx] == pytest.approx(closed_crossover(T_GRID, w, float(var[idx])), rel=1e-13)
    # Uniform weights at var = 1: the rebuttal's formula gives 0.830.
    assert closed_crossover(T_GRID, np.ones(26), 1.0) == pytest.approx(0.830, abs=5e-4)


def test_closed_form_losses_give_the_closed_form_crossover():
    sizes = np.linspace(0.05, 1.0, 20)
    w = np.random.default_rng(11).random(26)
    rows = [(30, 1.0), (60, 1.0), (50, 0.5), (40, 2.0)]
    gen, pmem = zip(*(_closed_form_losses(sizes, T_GRID, d, v) for d, v in rows))
    got = losses.crossover(sizes, np.array(gen), np.array(pmem), w)
    expected = closed_crossover(T_GRID, w, np.array([v for _, v in rows]))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def _mixed_losses(rng, C, S, T):
    """Random losses whose weighted gaps sometimes cross, sometimes not."""
    sizes = np.linspace(0.1, 1.0, S)
    slope = rng.uniform(-0.5, 3.0, (C, 1, T))
    gaps = slope * (sizes[None, :, None] - rng.uniform(-0.5, 1.6, (C, 1, T)))
    gaps += 0.2 * rng.normal(size=(C, S, T))  # non-monotone in places
    gen = rng.normal(size=(C, T))
    return sizes, gen, gen[:, None, :] - gaps


def test_crossover_is_vectorized_over_configurations():
    rng = np.random.default_rng(9)
    C, S, T = 200, 9, 5
    sizes, gen, pmem = _mixed_losses(rng, C, S, T)
    w = rng.dirichlet(np.ones(T))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", losses.CrossoverWarning)
        got = losses.crossover(sizes, gen, pmem, w)
        one = np.array([losses.crossover(sizes, gen[i], pmem[i], w) for i in range(C)])
        per_row = losses.crossover(np.tile(sizes, (C, 1)), gen, pmem, w)  # one size grid per row
    _, status, _ = losses._crossings(np.tile(sizes, (C, 1)), gen[:, None, :] - pmem, w)
    assert min(np.bincount(status + 1)) > 20  # crossed, and both kinds of no crossing, occur
    np.testing.assert_array_equal(np.isnan(got), status != 0)
    np.testing.assert_allclose(got, one, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(per_row, got, equal_nan=True)


def test_crossover_matches_a_brute_force_scan_of_the_weighted_losses():
    """The first sign change of the weighted gap, found on a grid of 100,001 sizes where the
    piecewise-linear losses are evaluated directly (np.interp per time), against the crossover."""
    rng = np.random.default_rng(21)
    S, T = 7, 4
    sizes = np.sort(rng.uniform(0.05, 1.0, S))
    fine = np.linspace(sizes[0], sizes[-1], 100_001)
    checked = 0
    for _ in range(40):
        gen = rng.normal(size=T)
        pmem = gen[None, :] - (sizes[:, None] - rng.uniform(0.2, 0.9, T)) * rng.uniform(0.5, 2.0, T)
        pmem += 0.05 * rng.normal(size=(S, T))
        w = rng.dirichlet(np.ones(T))
        f = sum(w[k] / w.sum() * (gen[k] - np.interp(fine, sizes, pmem[:, k])) for k in range(T))
        up = np.flatnonzero(f >= 0)
        if f[0] >= 0 or up.size == 0:
            continue
        checked += 1
        assert losses.crossover(sizes, gen, pmem, w) == pytest.approx(fine[up[0]], abs=2 * (fine[1] - fine[0]))
    assert checked > 20


def test_crossover_interpolates_a_known_crossing():
    sizes = np.linspace(0.1, 1.0, 10)
    gen = np.array([3.0, 1.0])
    slope = np.array([4.0, 2.0])
    pmem = slope[None, :] * (1.0 - sizes[:, None]) + 0.5  # weighted gap is linear in M
    w = np.array([1.0, 3.0])
    # f(M) = sum w (gen - pmem) / 4 = (3 - 4(1-M) - .5 + 3 (1 - 2(1-M) - .5)) / 4 = 0 at M = 0.6
    assert losses.crossover(sizes, gen, pmem, w) == pytest.approx(0.6)


def test_crossover_says_why_when_nothing_crosses():
    sizes = [1.0, 2.0, 3.0]
    with pytest.warns(losses.CrossoverWarning, match="wins at every size"):
        assert math.isnan(losses.crossover(sizes, [0.0], [[5.0], [4.0], [3.0]], [1.0]))
    with pytest.warns(losses.CrossoverWarning, match="smallest size"):
        assert math.isnan(losses.crossover(sizes, [9.0], [[5.0], [4.0], [3.0]], [1.0]))
    # Equal losses at the smallest size: the crossing is that size.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert losses.crossover(sizes, [5.0], [[5.0], [4.0], [3.0]], [1.0]) == 1.0


def test_crossing_gradient_matches_finite_differences():
    rng = np.random.default_rng(10)
    sizes, gen, pmem = _mixed_losses(rng, 60, 9, 5)
    w = rng.dirichlet(np.ones(5))
    gaps = gen[:, None, :] - pmem
    r, status, dr = losses._crossings(np.tile(sizes, (60, 1)), gaps, w, grad=True)
    h = 1e-7
    for k in range(5):
        e = np.zeros(5)
        e[k] = h
        rp = losses._crossings(np.tile(sizes, (60, 1)), gaps, w + e)[0]
        rm = losses._crossings(np.tile(sizes, (60, 1)), gaps, w - e)[0]
        ok = (status == 0) & np.isfinite(rp) & np.isfinite(rm)
        fd = (rp - rm) / (2 * h)
        smooth = ok & (np.abs(fd) < 1e3)  # skip the few that jump to another crossing
        np.testing.assert_allclose(dr[smooth, k], fd[smooth], rtol=1e-4, atol=1e-6)
        assert smooth.sum() > 20


# ----------------------------------------------------------------------------- the closed-form fit


def _kkt_violation(F, y, w):
    """Max violation of the simplex KKT conditions of min (1/n)||Fw - y||^2, relative to |g|."""
    n = len(y)
    g = 2.0 / n * F.T @ (F @ w - y)
    active = w > 1e-12
    nu = g[active].mean()
    scale = np.abs(g).max()
    on_active = np.abs(g[active] - nu).max()  # equal on the support
    off_active = max(0.0, (nu - g[~active]).max()) if (~active).any() else 0.0  # >= nu elsewhere
    return max(on_active, off_active) / scale


def test_closed_form_fit_reproduces_predictions_at_the_noise_level():
    rng = np.random.default_rng(2)
    base = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
    var = np.repeat(base, 12) * np.exp(rng.uniform(-0.3, 0.3, 60))  # 60 configs, varied var
    w_true = rng.dirichlet(np.full(26, 0.3))
    clean = closed_crossover(T_GRID, w_true, var)
    noise = 2e-4
    measured = clean + noise * rng.normal(size=60)
    # The test can bite: the uniform weights (a wrong answer) are far off at this noise level.
    assert np.mean((closed_crossover(T_GRID, np.ones(26), var) - clean) ** 2) > 100 * noise**2
    mask = random_splits(60, 1, 0.25, seed=3)[0]
    fit, pred, test_mse = fit_closed(T_GRID, var, measured, mask)
    assert fit.weights.shape == (26,) and np.all(fit.weights >= 0)
    assert fit.weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert fit.train_mse < 1.5 * noise**2
    assert test_mse < 3.0 * noise**2
    assert np.sqrt(np.mean((pred - clean) ** 2)) < noise  # the truth, not the noise
    np.testing.assert_allclose(fit.at(var), pred, rtol=1e-13)
    np.testing.assert_allclose(weights.design_matrix(T_GRID, var) @ fit.weights, pred, rtol=1e-13)
    # The fit cannot beat the truth by much on training data, nor the truth beat it.
    true_train = np.mean((clean[mask] - measured[mask]) ** 2)
    assert fit.train_mse <= true_train + 1e-15
    assert 1 <= fit.effective_dof <= 8  # smooth in var: a handful, far fewer than 25
    assert fit.optimality_gap < 1e-12


def test_closed_form_fit_recovers_sparse_weights_where_identifiable():
    # Four well-separated times (psi from ~400 to ~0.06) and 15 variances over four decades:
    # the sum-zero part of F has full rank 3 with sensitivities >= 0.05, so w is determined.
    t = np.array([0.05, 0.4, 0.8, 0.97])
    var = np.logspace(-2, 2, 15)
    F = weights.design_matrix(t, var)
    w_true = np.array([0.1, 0.5, 0.0, 0.4])
    fit = fit_closed(t, var, F @ w_true)[0]
    assert fit.effective_dof == 3
    np.testing.assert_allclose(fit.weights, w_true, atol=1e-8)
    assert fit.n_active == 3
    rng = np.random.default_rng(4)
    noisy = fit_closed(t, var, F @ w_true + 1e-6 * rng.normal(size=15))[0]
    np.testing.assert_allclose(noisy.weights, w_true, atol=1e-3)


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_closed_form_fit_satisfies_kkt_and_beats_slsqp(seed):
    rng = np.random.default_rng(seed)
    var = rng.choice([0.25, 0.5, 1.0, 2.0, 4.0], 40) * np.exp(rng.normal(0, 0.3, 40))
    measured = rng.uniform(0.55, 0.98, 40)  # not generated by the model: large residuals
    fit = fit_closed(T_GRID, var, measured)[0]
    F = weights.design_matrix(T_GRID, var)
    assert _kkt_violation(F, measured, fit.weights) < 1e-8
    assert fit.optimality_gap < 1e-12 * max(fit.train_mse, 1.0)
    assert fit.n_active < 26  # a genuine boundary solution: the inactive conditions are tested
    # An independent solver cannot do better.
    obj = lambda w: np.mean((F @ w - measured) ** 2)  # noqa: E731
    sol = minimize(
        obj, np.full(26, 1 / 26), jac=lambda w: 2 / 40 * F.T @ (F @ w - measured), method="SLSQP",
        bounds=[(0, 1)] * 26, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    assert fit.train_mse <= obj(np.clip(sol.x, 0, None) / np.clip(sol.x, 0, None).sum()) + 1e-14
    # And every vertex of the simplex (single-time weights) is no better.
    assert fit.train_mse <= min(np.mean((F[:, k] - measured) ** 2) for k in range(26)) + 1e-15


def test_with_equal_variances_the_fit_has_one_degree_of_freedom():
    rng = np.random.default_rng(8)
    var = np.ones(16)
    measured = rng.uniform(0.75, 0.85, 16)
    fit, pred, _ = fit_closed(T_GRID, var, measured)
    assert fit.effective_dof == 1
    assert fit.sensitivities[1:].max() < 1e-12
    # The best it can do is one number for everybody: the mean of the measurements.
    np.testing.assert_allclose(pred, measured.mean(), atol=1e-12)
    assert fit.train_mse == pytest.approx(measured.var(), rel=1e-9)
    # Any simplex weights with the same sum_t w_t f_t predict exactly the same (M* = w N).
    f = weights.design_matrix(T_GRID, 1.0)
    target = float(f @ fit.weights)
    order = np.argsort(f)
    lo, hi = order[1], order[-2]  # not the two extremes, which the solver may pick
    assert f[lo] < target < f[hi]
    other = np.zeros(26)
    other[lo], other[hi] = (f[hi] - target) / (f[hi] - f[lo]), (target - f[lo]) / (f[hi] - f[lo])
    assert not np.allclose(other, fit.weights)
    np.testing.assert_allclose(closed_crossover(T_GRID, other, var), pred, atol=1e-12)
    # A second variance adds directions.
    assert fit_closed(T_GRID, np.r_[var, 4.0], np.r_[measured, 0.9])[0].effective_dof >= 2


# ----------------------------------------------------------------------------- the loss-crossing fit


@pytest.mark.parametrize("linearized_start", [True, False])
def test_monte_carlo_fit_recovers_known_crossings(linearized_start):
    # Gap linear in r = M/N with a time-dependent slope: gen_t - pmem_t(r) = k_t (r - q_t), so
    # the crossing under w is sum_t w_t k_t q_t / sum_t w_t k_t (known exactly).
    rng = np.random.default_rng(12)
    C, S, T = 40, 12, 26
    sizes = np.linspace(0.1, 1.0, S)
    k = rng.uniform(0.5, 3.0, (C, T))
    q = rng.uniform(0.3, 0.95, (C, T))
    gen = rng.normal(size=(C, T))
    pmem = gen[:, None, :] - k[:, None, :] * (sizes[None, :, None] - q[:, None, :])
    w_true = np.zeros(T)
    w_true[[2, 10, 20]] = [0.3, 0.5, 0.2]
    measured = (k * q) @ w_true / (k @ w_true)
    np.testing.assert_allclose(losses.crossover(sizes, gen, pmem, w_true), measured, rtol=1e-12)
    # Uniform weights would be wrong by far more than the tolerances below.
    assert np.mean((losses.crossover(sizes, gen, pmem, np.ones(T)) - measured) ** 2) > 1e-3
    tab = table(measured, sizes=np.tile(sizes, (C, 1)), gen=gen, pmem=pmem)
    mask = np.arange(C) < 30
    mc = MonteCarlo(linearized_start=linearized_start, n_starts=4, seed=0)
    ev = heldout(mc, tab, [mask])
    fit = ev.fits[0]
    assert fit.train_mse < 1e-12 and ev.test_mse[0] < 1e-10
    np.testing.assert_allclose(fit.predict(tab), measured, atol=1e-5)
    np.testing.assert_allclose(fit.predict(tab), losses.crossover(sizes, gen, pmem, fit.weights))
    assert fit.n_uncrossed == 0
    assert len(fit.start_objectives) == 4 + 1 + int(linearized_start)
    assert fit.weights.sum() == pytest.approx(1.0) and np.all(fit.weights >= 0)


def test_uncrossed_configurations_count_as_the_nearest_end():
    sizes = np.array([0.2, 0.5, 0.8])
    gen = np.array([[0.0], [9.0], [3.0]])
    pmem = np.array([[[5.0], [4.0], [3.0]], [[5.0], [4.0], [3.0]], [[5.0], [3.5], [2.0]]])
    # config 0: gen wins everywhere, config 1: gen loses at the smallest size,
    # config 2: crosses at r = 0.5 + 0.3 * 0.5/1.5.
    measured = np.array([0.6, 0.4, 0.55])
    tab = table(measured, sizes=np.tile(sizes, (3, 1)), gen=gen, pmem=pmem)
    fit = MonteCarlo(n_starts=0).fit(tab)
    with pytest.warns(losses.CrossoverWarning, match=r"smallest size \(1 of 3.*largest \(1 of 3"):
        raw = losses.crossover(sizes, gen, pmem, fit.weights)
    assert np.isnan(raw[:2]).all() and raw[2] == pytest.approx(0.6)
    np.testing.assert_allclose(fit.predict(tab), [0.8, 0.2, 0.6])
    assert fit.n_uncrossed == 2
    expected = ((0.8 - 0.6) ** 2 + (0.2 - 0.4) ** 2 + (0.6 - 0.55) ** 2) / 3
    assert fit.train_mse == pytest.approx(expected)


def test_both_predictors_agree_on_closed_form_losses_with_equal_variances():
    # Closed-form losses at var = 1 for several d: the crossing does not depend on d, so the
    # loss-based fit also has one local degree of freedom and predicts the mean measurement.
    sizes = np.linspace(0.05, 1.0, 20)
    ds = [30, 40, 50, 60, 30, 40]
    gen, pmem = map(np.array, zip(*(_closed_form_losses(sizes, T_GRID, d, 1.0) for d in ds)))
    measured = np.array([0.78, 0.80, 0.83, 0.79, 0.81, 0.82])
    tab = table(measured, sizes=np.tile(sizes, (6, 1)), gen=gen, pmem=pmem)
    fit = MonteCarlo(n_starts=2).fit(tab)
    closed = ClosedForm().fit(tab)
    assert fit.effective_dof == closed.effective_dof == 1
    np.testing.assert_allclose(fit.predict(tab), measured.mean(), atol=1e-9)
    np.testing.assert_allclose(fit.predict(tab), closed.predict(tab), atol=1e-9)
    assert fit.train_mse == pytest.approx(closed.train_mse, rel=1e-6)


# ----------------------------------------------------------------------------- bad inputs

_S = np.array([0.2, 0.6, 1.0])
_G = np.zeros((2, 4))
_P = np.zeros((2, 3, 4))


def _losses_table(sizes=_S, gen=_G, pmem=_P, measured=(0.5, 0.5)):
    return SweepTable.from_columns(measured=measured, var=np.ones(len(measured)), times=T_GRID[:4],
                                   sizes=np.broadcast_to(sizes, (2, len(sizes))) if np.ndim(sizes) == 1 else sizes,
                                   gen=gen, pmem=pmem)


@pytest.mark.parametrize(
    "call,word",
    [
        (lambda: closed_crossover(T_GRID, np.ones(26), -1.0), "var"),
        (lambda: closed_crossover(T_GRID, np.ones(26), [1.0, np.nan]), "var"),
        (lambda: closed_crossover(T_GRID, np.ones(25), 1.0), "weights"),
        (lambda: closed_crossover(T_GRID, -np.ones(26), 1.0), "weights"),
        (lambda: closed_crossover([0.0, 0.5], np.ones(2), 1.0), "t"),
        (lambda: closed_crossover(T_GRID, np.ones(26), 1.0, c=0.0), "c"),
        (lambda: losses.crossover([1, 2], [1.0], [[1.0]], [1.0]), "sizes"),
        (lambda: losses.crossover([2, 1], [1.0], [[1.0], [2.0]], [1.0]), "sizes"),
        (lambda: losses.crossover([1, 2, 3], [1.0], [[1.0], [2.0]], [1.0]), "sizes"),
        (lambda: losses.crossover([1, 2], [[1.0, np.nan]], [[[1.0, 1.0], [2.0, 2.0]]], [1.0, 1.0]), "gen"),
        (lambda: ClosedForm(T_GRID).fit(table([0.5, 1.5], [1.0, 2.0])), "measured"),
        (lambda: ClosedForm(T_GRID).fit(table([0.5, np.nan], [1.0, 2.0])), "measured"),
        (lambda: ClosedForm(T_GRID).fit(table([0.5, 0.5], [1.0, -2.0])), "var"),
        (lambda: ClosedForm(T_GRID).fit(table([], [])), "at least one row"),
        (lambda: ClosedForm(T_GRID, dof_tol=0.0).fit(table([0.5], [1.0])), "dof_tol"),
        (lambda: MonteCarlo().fit(_losses_table(pmem=_P[:, :, :3])), "pmem"),
        (lambda: MonteCarlo().fit(_losses_table(sizes=_S[:2])), "sizes"),
        (lambda: MonteCarlo().fit(_losses_table(sizes=_S[::-1])), "sizes"),
        (lambda: MonteCarlo().fit(_losses_table(measured=(0.5, -0.1))), "measured"),
        (lambda: MonteCarlo(n_starts=-1).fit(_losses_table()), "n_starts"),
    ],
)
def test_bad_input_gives_clear_errors(call, word):
    with pytest.raises(ValueError, match=word):
        call()
