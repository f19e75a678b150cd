import math
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from gmmmem import diffusion, losses, weights

F64 = torch.float64
T_GRID = diffusion.time_grid(dtype=F64).numpy()


def _closed_form_losses(sizes, t, d, var, c=2.0):
    """Theorem 3.1/3.2 losses relative to the memorizing one: gen (T,), pmem (S, T)."""
    psi = diffusion.snr(t)
    gen = d * var / (1.0 + psi * var)
    pmem = np.broadcast_to(c * d * var * (1.0 - sizes)[:, None], (sizes.size, t.size))
    return gen, np.array(pmem)


# ----------------------------------------------------------------------------- the crossover


@pytest.mark.parametrize("c", [1.0, 2.0])
@pytest.mark.parametrize("var", [0.0, 0.3, 1.0, 4.0])
def test_crossover_is_the_fit_s_design_matrix_times_the_weights(var, c):
    """losses.crossover against the fit's own path (design_matrix @ normalized weights) and a
    plain loop over the times."""
    w = np.random.default_rng(0).random(26)
    got = losses.crossover(T_GRID, w, var, c)
    assert isinstance(got, float)
    assert got == pytest.approx(float(weights.design_matrix(T_GRID, var, c) @ (w / w.sum())), rel=1e-13)
    psi = [a * a / (s * s) for a, s in ((math.sqrt(1 - t * t), t) for t in T_GRID)]
    loop = sum(wi * (1 - 1 / (c * (1 + p * var))) for wi, p in zip(w / w.sum(), psi))
    assert got == pytest.approx(loop, rel=1e-12)
    # the same from tensors
    assert losses.crossover(diffusion.time_grid(dtype=F64), torch.as_tensor(w), var, c) == pytest.approx(got, rel=1e-14)


def test_crossover_is_vectorized_over_variances():
    w = np.random.default_rng(1).random(26)
    var = np.array([[0.25, 0.5, 1.0], [2.0, 4.0, 0.0]])
    got = losses.crossover(T_GRID, w, var)
    assert got.shape == var.shape
    for idx in np.ndindex(var.shape):
        assert got[idx] == pytest.approx(losses.crossover(T_GRID, w, float(var[idx])), rel=1e-13)
    # Uniform weights at var = 1: the rebuttal's formula, and NOTES §5's 0.830.
    assert losses.crossover(T_GRID, np.ones(26), 1.0) == pytest.approx(0.830, abs=5e-4)


# ----------------------------------------------------------------------------- fit_lambda


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


def test_fit_lambda_reproduces_predictions_at_the_noise_level():
    rng = np.random.default_rng(2)
    base = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
    var = np.repeat(base, 12) * np.exp(rng.uniform(-0.3, 0.3, 60))  # 60 configs, varied var
    w_true = rng.dirichlet(np.full(26, 0.3))
    clean = losses.crossover(T_GRID, w_true, var)
    noise = 2e-4
    measured = clean + noise * rng.normal(size=60)
    # The test can bite: the uniform weights (a wrong answer) are far off at this noise level.
    assert np.mean((losses.crossover(T_GRID, np.ones(26), var) - clean) ** 2) > 100 * noise**2
    mask = weights.random_splits(60, 1, 0.25, seed=3)[0]
    fit = weights.fit_lambda(T_GRID, var, measured, mask)
    assert fit.weights.shape == (26,) and np.all(fit.weights >= 0)
    assert fit.weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert fit.train_mse < 1.5 * noise**2
    assert fit.test_mse < 3.0 * noise**2
    assert np.sqrt(np.mean((fit.predictions - clean) ** 2)) < noise  # the truth, not the noise
    np.testing.assert_allclose(fit.predict(var), fit.predictions, rtol=1e-13)
    # The fit cannot beat the truth by much on training data, nor the truth beat it.
    true_train = np.mean((clean[mask] - measured[mask]) ** 2)
    assert fit.train_mse <= true_train + 1e-15
    assert 1 <= fit.effective_dof <= 8  # smooth in var: a handful, far fewer than 25
    assert fit.optimality_gap < 1e-12


def test_fit_lambda_recovers_sparse_weights_where_identifiable():
    # Four well-separated times (psi from ~400 to ~0.06) and 15 variances over four decades:
    # the sum-zero part of F has full rank 3 with sensitivities >= 0.05, so w is determined.
    t = np.array([0.05, 0.4, 0.8, 0.97])
    var = np.logspace(-2, 2, 15)
    F = weights.design_matrix(t, var)
    w_true = np.array([0.1, 0.5, 0.0, 0.4])
    fit = weights.fit_lambda(t, var, F @ w_true)
    assert fit.effective_dof == 3
    np.testing.assert_allclose(fit.weights, w_true, atol=1e-8)
    assert fit.n_active == 3
    rng = np.random.default_rng(4)
    noisy = weights.fit_lambda(t, var, F @ w_true + 1e-6 * rng.normal(size=15))
    np.testing.assert_allclose(noisy.weights, w_true, atol=1e-3)


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_fit_lambda_satisfies_kkt_and_beats_slsqp(seed):
    rng = np.random.default_rng(seed)
    var = rng.choice([0.25, 0.5, 1.0, 2.0, 4.0], 40) * np.exp(rng.normal(0, 0.3, 40))
    measured = rng.uniform(0.55, 0.98, 40)  # not generated by the model: large residuals
    fit = weights.fit_lambda(T_GRID, var, measured)
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
    fit = weights.fit_lambda(T_GRID, var, measured)
    assert fit.effective_dof == 1
    assert fit.sensitivities[1:].max() < 1e-12
    # The best it can do is one number for everybody: the mean of the measurements.
    np.testing.assert_allclose(fit.predictions, measured.mean(), atol=1e-12)
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
    np.testing.assert_allclose(losses.crossover(T_GRID, other, var), fit.predictions, atol=1e-12)
    # A second variance adds directions.
    assert weights.fit_lambda(T_GRID, np.r_[var, 4.0], np.r_[measured, 0.9]).effective_dof >= 2


# ----------------------------------------------------------------------------- Monte Carlo losses


def _mixed_losses(rng, C, S, T):
    """Random losses whose weighted gaps sometimes cross, sometimes not."""
    sizes = np.linspace(0.1, 1.0, S)
    slope = rng.uniform(-0.5, 3.0, (C, 1, T))
    gaps = slope * (sizes[None, :, None] - rng.uniform(-0.5, 1.6, (C, 1, T)))
    gaps += 0.2 * rng.normal(size=(C, S, T))  # non-monotone in places
    gen = rng.normal(size=(C, T))
    return sizes, gen, gen[:, None, :] - gaps


def test_loss_crossings_match_crossover_from_losses():
    rng = np.random.default_rng(9)
    C, S, T = 200, 9, 5
    sizes, gen, pmem = _mixed_losses(rng, C, S, T)
    w = rng.dirichlet(np.ones(T))
    got = weights.loss_crossings(sizes, gen, pmem, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", losses.CrossoverWarning)
        ref = [losses.crossover_from_losses(sizes, gen[i], pmem[i], w) for i in range(C)]
    ref = np.array([np.nan if r is None else r for r in ref])
    _, status, _ = weights._crossings(np.tile(sizes, (C, 1)), gen[:, None, :] - pmem, w)
    assert min(np.bincount(status + 1)) > 20  # crossed, and both kinds of no crossing, occur
    np.testing.assert_allclose(got, ref, rtol=1e-12, equal_nan=True)
    # Per-configuration size grids give the same answer.
    np.testing.assert_allclose(
        weights.loss_crossings(np.tile(sizes, (C, 1)), gen, pmem, w), got, equal_nan=True
    )


def test_crossing_gradient_matches_finite_differences():
    rng = np.random.default_rng(10)
    sizes, gen, pmem = _mixed_losses(rng, 60, 9, 5)
    w = rng.dirichlet(np.ones(5))
    gaps = gen[:, None, :] - pmem
    r, status, dr = weights._crossings(np.tile(sizes, (60, 1)), gaps, w, grad=True)
    h = 1e-7
    for k in range(5):
        e = np.zeros(5)
        e[k] = h
        rp = weights._crossings(np.tile(sizes, (60, 1)), gaps, w + e)[0]
        rm = weights._crossings(np.tile(sizes, (60, 1)), gaps, w - e)[0]
        ok = (status == 0) & np.isfinite(rp) & np.isfinite(rm)
        fd = (rp - rm) / (2 * h)
        smooth = ok & (np.abs(fd) < 1e3)  # skip the few that jump to another crossing
        np.testing.assert_allclose(dr[smooth, k], fd[smooth], rtol=1e-4, atol=1e-6)
        assert smooth.sum() > 20


def test_closed_form_losses_give_the_closed_form_crossover():
    sizes = np.linspace(0.05, 1.0, 20)
    w = np.random.default_rng(11).random(26)
    rows = [(30, 1.0), (60, 1.0), (50, 0.5), (40, 2.0)]
    gen, pmem = zip(*(_closed_form_losses(sizes, T_GRID, d, v) for d, v in rows))
    got = weights.loss_crossings(sizes, np.array(gen), np.array(pmem), w)
    expected = losses.crossover(T_GRID, w, np.array([v for _, v in rows]))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("linearized_start", [True, False])
def test_fit_lambda_from_losses_recovers_known_crossings(linearized_start):
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
    np.testing.assert_allclose(weights.loss_crossings(sizes, gen, pmem, w_true), measured, rtol=1e-12)
    # Uniform weights would be wrong by far more than the tolerances below.
    assert np.mean((weights.loss_crossings(sizes, gen, pmem, np.ones(T)) - measured) ** 2) > 1e-3
    mask = np.arange(C) < 30
    fit = weights.fit_lambda_from_losses(
        sizes, gen, pmem, measured, mask, linearized_start=linearized_start, n_starts=4, seed=0
    )
    assert fit.train_mse < 1e-12 and fit.test_mse < 1e-10
    np.testing.assert_allclose(fit.predictions, measured, atol=1e-5)
    np.testing.assert_allclose(fit.predict(sizes, gen, pmem), fit.predictions)
    assert fit.n_uncrossed_train == fit.n_uncrossed_test == 0
    assert len(fit.start_objectives) == 4 + 1 + int(linearized_start)
    assert fit.weights.sum() == pytest.approx(1.0) and np.all(fit.weights >= 0)


def test_uncrossed_configurations_are_nan_and_count_as_the_nearest_end():
    sizes = np.array([0.2, 0.5, 0.8])
    gen = np.array([[0.0], [9.0], [3.0]])
    pmem = np.array([[[5.0], [4.0], [3.0]], [[5.0], [4.0], [3.0]], [[5.0], [3.5], [2.0]]])
    # config 0: gen wins everywhere (+1), config 1: gen loses at the smallest size (-1),
    # config 2: crosses at r = 0.5 + 0.3 * 0.5/1.5.
    measured = np.array([0.6, 0.4, 0.55])
    fit = weights.fit_lambda_from_losses(sizes, gen, pmem, measured, n_starts=0)
    assert np.isnan(fit.predictions[:2]).all()
    assert fit.predictions[2] == pytest.approx(0.6)
    assert fit.n_uncrossed_train == 2 and fit.test_mse is None
    expected = ((0.8 - 0.6) ** 2 + (0.2 - 0.4) ** 2 + (0.6 - 0.55) ** 2) / 3
    assert fit.train_mse == pytest.approx(expected)


# ----------------------------------------------------------------------------- splits


def test_random_splits_partition_and_are_reproducible():
    a = weights.random_splits(64, 10, 0.25, seed=1)
    b = weights.random_splits(64, 10, 0.25, seed=1)
    c = weights.random_splits(64, 10, 0.25, seed=2)
    assert len(a) == 10
    for m in a:
        assert m.dtype == bool and m.shape == (64,)
        assert (~m).sum() == 16 and m.sum() == 48
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert len({tuple(m) for m in a}) > 1  # the splits differ from each other
    assert (~weights.random_splits(5, 1, 0.01)[0]).sum() == 1  # at least one held out
    assert weights.random_splits(5, 1, 0.99)[0].sum() == 1  # at least one kept


def test_group_splits_leave_one_group_out():
    N = np.repeat([50, 100, 150, 200], 16)[np.random.default_rng(13).permutation(64)]
    masks = weights.group_splits(N)
    assert len(masks) == 4
    held = np.stack([~m for m in masks])
    assert np.array_equal(held.sum(0), np.ones(64))  # every config held out exactly once
    for m, n_out in zip(masks, [50, 100, 150, 200]):
        assert set(N[~m]) == {n_out} and n_out not in set(N[m])
    assert all(np.array_equal(x, y) for x, y in zip(masks, weights.group_splits(N)))


def test_evaluate_summarizes_train_and_test_error():
    rng = np.random.default_rng(14)
    var = np.repeat([0.25, 0.5, 1.0, 2.0, 4.0, 8.0], 6)
    measured = losses.crossover(T_GRID, rng.dirichlet(np.ones(26)), var) + 1e-3 * rng.normal(size=36)
    splits = weights.group_splits(var)
    out = weights.evaluate(lambda m: weights.fit_lambda(T_GRID, var, measured, m), splits)
    assert out["n_splits"] == 6 and out["train_mse"].shape == (6,)
    assert out["test_mse_mean"] == pytest.approx(np.mean([f.test_mse for f in out["fits"]]))
    assert out["test_mse_std"] == pytest.approx(np.std([f.test_mse for f in out["fits"]]))
    assert out["train_mse_mean"] == pytest.approx(np.mean([f.train_mse for f in out["fits"]]))
    assert out["train_mse_mean"] < 2e-6
    # No held-out configurations: test error is NaN, not an exception.
    out = weights.evaluate(lambda m: weights.fit_lambda(T_GRID, var, measured, m), [np.ones(36, bool)])
    assert np.isnan(out["test_mse_mean"])


# ----------------------------------------------------------------------------- bad inputs

_S = np.array([0.2, 0.6, 1.0])
_G = np.zeros((2, 4))
_P = np.zeros((2, 3, 4))


@pytest.mark.parametrize(
    "call,word",
    [
        (lambda: losses.crossover(T_GRID, np.ones(26), -1.0), "var"),
        (lambda: losses.crossover(T_GRID, np.ones(26), [1.0, np.nan]), "var"),
        (lambda: losses.crossover(T_GRID, np.ones(25), 1.0), "weights"),
        (lambda: losses.crossover(T_GRID, -np.ones(26), 1.0), "weights"),
        (lambda: losses.crossover([0.0, 0.5], np.ones(2), 1.0), "t"),
        (lambda: losses.crossover(T_GRID, np.ones(26), 1.0, c=0.0), "c"),
        (lambda: weights.fit_lambda(T_GRID, [1.0, 2.0], [0.5]), "measured"),
        (lambda: weights.fit_lambda(T_GRID, [1.0, 2.0], [0.5, 1.5]), "measured"),
        (lambda: weights.fit_lambda(T_GRID, [1.0, -2.0], [0.5, 0.5]), "var"),
        (lambda: weights.fit_lambda(T_GRID, [], []), "var"),
        (lambda: weights.fit_lambda(T_GRID, [1.0, 2.0], [0.5, 0.6], [False, False]), "empty"),
        (lambda: weights.fit_lambda(T_GRID, [1.0, 2.0], [0.5, 0.6], [True]), "train_mask"),
        (lambda: weights.fit_lambda(T_GRID, [1.0, 2.0], [0.5, 0.6], [1, 0]), "train_mask"),
        (lambda: weights.fit_lambda_from_losses(_S, _G, _P[:, :, :3], [0.5, 0.5]), "pmem_losses"),
        (lambda: weights.fit_lambda_from_losses(_S[:2], _G, _P, [0.5, 0.5]), "model_sizes_ratio"),
        (lambda: weights.fit_lambda_from_losses(_S[::-1], _G, _P, [0.5, 0.5]), "model_sizes_ratio"),
        (lambda: weights.fit_lambda_from_losses(_S, _G[0], _P, [0.5, 0.5]), "gen_losses"),
        (lambda: weights.fit_lambda_from_losses(_S, _G, _P, [0.5, -0.1]), "measured"),
        (lambda: weights.fit_lambda_from_losses(_S, _G, _P, [0.5, 0.5], [False, False]), "empty"),
        (lambda: weights.random_splits(10, 2, 1.0), "test_fraction"),
        (lambda: weights.random_splits(1, 2, 0.5), "n_configs"),
        (lambda: weights.random_splits(10, 0, 0.5), "n_splits"),
        (lambda: weights.group_splits([1, 1, 1]), "groups"),
        (lambda: weights.evaluate(lambda m: None, []), "splits"),
    ],
)
def test_bad_input_gives_clear_errors(call, word):
    with pytest.raises(ValueError, match=word):
        call()


def test_both_predictors_agree_on_closed_form_losses_with_equal_variances():
    # Closed-form losses at var = 1 for several d: the crossing does not depend on d, so the
    # loss-based fit also has one local degree of freedom and predicts the mean measurement.
    sizes = np.linspace(0.05, 1.0, 20)
    ds = [30, 40, 50, 60, 30, 40]
    gen, pmem = map(np.array, zip(*(_closed_form_losses(sizes, T_GRID, d, 1.0) for d in ds)))
    measured = np.array([0.78, 0.80, 0.83, 0.79, 0.81, 0.82])
    fit = weights.fit_lambda_from_losses(sizes, gen, pmem, measured, n_starts=2)
    closed = weights.fit_lambda(T_GRID, np.ones(6), measured)
    assert fit.effective_dof == closed.effective_dof == 1
    np.testing.assert_allclose(fit.predictions, measured.mean(), atol=1e-9)
    np.testing.assert_allclose(fit.predictions, closed.predictions, atol=1e-9)
    assert fit.train_mse == pytest.approx(closed.train_mse, rel=1e-6)
