import numpy as np
import pytest
import torch

from gmmmem import diffusion, losses
from gmmmem.heldout import HeldOut, group_splits, heldout, random_splits
from gmmmem.predictors import ClosedForm, Constant, FiniteSize, MonteCarlo, PerVariance
from gmmmem.sweep import SweepTable

T_GRID = diffusion.time_grid(dtype=torch.float64).numpy()


def tiny(measured, var):
    return SweepTable.from_columns(measured=measured, var=var, times=T_GRID)


# ----------------------------------------------------------------------------- splits


def test_random_splits_partition_and_are_reproducible():
    a = random_splits(64, 10, 0.25, seed=1)
    b = random_splits(64, 10, 0.25, seed=1)
    c = random_splits(64, 10, 0.25, seed=2)
    assert len(a) == 10
    for m in a:
        assert m.dtype == bool and m.shape == (64,)
        assert (~m).sum() == 16 and m.sum() == 48
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert len({tuple(m) for m in a}) > 1  # the splits differ from each other
    assert (~random_splits(5, 1, 0.01)[0]).sum() == 1  # at least one held out
    assert random_splits(5, 1, 0.99)[0].sum() == 1  # at least one kept


def test_group_splits_leave_one_group_out():
    N = np.repeat([50, 100, 150, 200], 16)[np.random.default_rng(13).permutation(64)]
    masks = group_splits(N)
    assert len(masks) == 4
    held = np.stack([~m for m in masks])
    assert np.array_equal(held.sum(0), np.ones(64))  # every config held out exactly once
    for m, n_out in zip(masks, [50, 100, 150, 200]):
        assert set(N[~m]) == {n_out} and n_out not in set(N[m])
    assert all(np.array_equal(x, y) for x, y in zip(masks, group_splits(N)))


# ----------------------------------------------------------------------------- held-out errors


def test_constant_held_out_error_is_the_hand_computation():
    y = np.array([0.70, 0.80, 0.90, 0.75, 0.85])
    tab = tiny(y, np.ones(5))
    splits = [np.array([True, True, False, True, False]), np.array([False, True, True, True, True])]
    ev = heldout(Constant(), tab, splits)
    # split 0: mean of 0.70, 0.80, 0.75 = 0.75; held out 0.90 and 0.85
    # split 1: mean of 0.80, 0.90, 0.75, 0.85 = 0.825; held out 0.70
    test = [((0.90 - 0.75) ** 2 + (0.85 - 0.75) ** 2) / 2, (0.70 - 0.825) ** 2]
    train = [((0.70 - 0.75) ** 2 + (0.05) ** 2 + 0.0) / 3,
             ((0.80 - 0.825) ** 2 + (0.90 - 0.825) ** 2 + (0.75 - 0.825) ** 2 + (0.85 - 0.825) ** 2) / 4]
    np.testing.assert_allclose(ev.test_mse, test, rtol=1e-12)
    np.testing.assert_allclose(ev.train_mse, train, rtol=1e-12)
    assert ev.test_mse_mean == pytest.approx(np.mean(test)) and ev.test_mse_std == pytest.approx(np.std(test))
    assert ev.n_splits == 2 and list(ev.effective_dof) == [1, 1]
    assert ev.fits[0].value == pytest.approx(0.75) and ev.fits[1].value == pytest.approx(0.825)
    assert ev.summary() == {"n_splits": 2, "train_mse_mean": ev.train_mse_mean, "train_mse_std": ev.train_mse_std,
                            "test_mse_mean": ev.test_mse_mean, "test_mse_std": ev.test_mse_std}


def test_per_variance_mean_by_hand():
    y = np.array([0.70, 0.72, 0.80, 0.84, 0.90])
    var = np.array([0.5, 0.5, 1.0, 1.0, 2.0])
    mask = np.array([True, False, True, True, False])  # variance 2 is not trained on
    ev = heldout(PerVariance(), tiny(y, var), [mask])
    fit = ev.fits[0]
    assert fit.means == {0.5: 0.70, 1.0: pytest.approx(0.82)} and fit.effective_dof == 2
    overall = (0.70 + 0.80 + 0.84) / 3
    assert ev.test_mse[0] == pytest.approx(((0.72 - 0.70) ** 2 + (0.90 - overall) ** 2) / 2, rel=1e-12)
    assert ev.train_mse[0] == pytest.approx((0.02 ** 2 + 0.02 ** 2) / 3, rel=1e-12)


def test_heldout_refits_on_each_split_and_scores_the_rest():
    rng = np.random.default_rng(14)
    var = np.repeat([0.25, 0.5, 1.0, 2.0, 4.0, 8.0], 6)
    w = rng.dirichlet(np.ones(26))
    measured = losses.crossover(*losses.closed_form_losses(T_GRID, var), w) + 1e-3 * rng.normal(size=36)
    tab = tiny(measured, var)
    splits = group_splits(var)
    ev = heldout(ClosedForm(), tab, splits)
    assert ev.n_splits == 6 and ev.train_mse.shape == (6,)
    for m, fit, test in zip(splits, ev.fits, ev.test_mse):
        alone = ClosedForm().fit(tab.rows(m))
        np.testing.assert_array_equal(alone.weights, fit.weights)
        assert test == pytest.approx(np.mean((alone.at(var[~m]) - measured[~m]) ** 2), rel=1e-12)
    assert ev.train_mse_mean < 2e-6
    # No held-out configurations: the test error is NaN, not an exception.
    assert np.isnan(heldout(ClosedForm(), tab, [np.ones(36, bool)]).test_mse_mean)


def test_finite_size_predictor_is_the_monte_carlo_fit_of_the_finite_size_losses():
    t = diffusion.time_grid().numpy()
    rng = np.random.default_rng(0)
    C = 6  # one cluster keeps the formula cheap
    d, K, N, var = rng.choice([10, 20], C), np.ones(C, dtype=int), rng.choice([20, 40], C), rng.choice([0.5, 2.0], C)
    tab = SweepTable.from_columns(measured=np.full(C, 0.8), var=var, times=t, d=d, K=K, N=N)
    finite = FiniteSize(t, num_sizes=10)
    sizes, gen, pmem = finite.losses(tab)
    want = losses.finite_size_losses(t, d, K, N, var, num_sizes=10)
    for a, b in zip((sizes, gen, pmem), want):
        np.testing.assert_array_equal(a, b)
    measured = losses.crossover(sizes, gen, pmem, rng.dirichlet(np.ones(26)))
    tab = SweepTable.from_columns(measured=measured, var=var, times=t, d=d, K=K, N=N)
    a, b = finite.fit(tab.rows(np.arange(C) < 4)), MonteCarlo().fit(tab.with_losses(sizes, gen, pmem).rows(np.arange(C) < 4))
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.predict(tab), b.predict(tab.with_losses(sizes, gen, pmem)))


def test_sweep_table_rows_and_losses():
    tab = SweepTable.from_columns(measured=[0.7, 0.8, 0.9], var=[0.5, 1.0, 2.0], times=T_GRID[:3],
                                  sizes=np.tile([0.5, 1.0], (3, 1)), gen=np.zeros((3, 3)), pmem=np.ones((3, 2, 3)))
    sub = tab.rows(np.array([True, False, True]))
    assert list(sub.measured) == [0.7, 0.9] and list(sub.var) == [0.5, 2.0] and sub.pmem.shape == (2, 2, 3)
    assert list(tab.rows([2, 0]).measured) == [0.9, 0.7]
    other = tab.with_losses(np.tile([0.2, 0.4, 1.0], (3, 1)), np.ones((3, 3)), np.zeros((3, 3, 3)))
    assert other.sizes.shape == (3, 3) and list(other.measured) == list(tab.measured)
    with pytest.raises(ValueError, match="shapes"):
        tab.with_losses(np.ones((3, 2)), np.ones((3, 4)), np.ones((3, 2, 4)))


def test_the_committed_held_out_evaluation_reads_back():
    """HeldOut from per-split errors, as chapter 6 reads data/finite_size/heldout.json."""
    ev = HeldOut(train_mse=np.array([1.0, 3.0]), test_mse=np.array([2.0, np.nan]))
    assert ev.test_mse_mean == 2.0 and ev.test_mse_std == 0.0 and ev.train_mse_std == 1.0


@pytest.mark.parametrize(
    "call,word",
    [
        (lambda: random_splits(10, 2, 1.0), "test_fraction"),
        (lambda: random_splits(1, 2, 0.5), "n_configs"),
        (lambda: random_splits(10, 0, 0.5), "n_splits"),
        (lambda: group_splits([1, 1, 1]), "groups"),
        (lambda: heldout(Constant(), tiny([0.5, 0.6], [1.0, 1.0]), []), "splits"),
        (lambda: heldout(Constant(), tiny([0.5, 0.6], [1.0, 1.0]), [[False, False]]), "empty"),
        (lambda: heldout(Constant(), tiny([0.5, 0.6], [1.0, 1.0]), [[True]]), "shape"),
        (lambda: heldout(Constant(), tiny([0.5, 0.6], [1.0, 1.0]), [[1, 0]]), "boolean"),
        (lambda: heldout(Constant(), tiny([0.5, np.nan], [1.0, 1.0]), [[True, False]]), "measured"),
    ],
)
def test_bad_input_gives_clear_errors(call, word):
    with pytest.raises(ValueError, match=word):
        call()


def test_sweep_table_reads_per_size_fields_of_its_records():
    from gmmmem import config

    tab = SweepTable.load(config.data_dir() / "sweeps" / "default.jsonl")
    r = tab.records[3]
    M, ratio = tab.curve(3, "memorization_ratio")
    assert list(M) == r["model_sizes"] and list(ratio) == r["memorization_ratio"]
    M, pmem = tab.curve(3, "reference.pmem_train")
    assert pmem.shape == (len(M), len(tab.times))
    np.testing.assert_array_equal(tab.mem[3], r["reference"]["mem_train"])
    at = tab.at_size("memorization_ratio", (0.8 * tab.N).round())
    k = r["model_sizes"].index(round(0.8 * r["config"]["N"]))
    assert at[3] == r["memorization_ratio"][k]
    sub = tab.rows(tab.var == 1.0)
    assert len(sub) == len(sub.records) == int((tab.var == 1.0).sum())
    assert all(rec["config"]["var"] == 1.0 for rec in sub.records)
    with pytest.raises(KeyError, match="no model size"):
        tab.at_size("memorization_ratio", 7)
