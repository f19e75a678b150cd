import math

import numpy as np
import pytest
import torch

from gmmmem import null_model as nm
from gmmmem.experiments import make_data
from gmmmem.train import pmem_init_order

F64 = torch.float64


def _naive_fraction(X, order, M):
    """Singleton fraction by explicit loops: each unchosen point joins its nearest chosen one."""
    P = X[order].tolist()
    counts = [0] * M
    for i in range(M, len(P)):
        dist = [math.dist(P[i], P[k]) for k in range(M)]
        counts[dist.index(min(dist))] += 1
    return sum(c == 0 for c in counts) / M


# ----------------------------------------------------------------------------- one start


def test_singleton_fraction_matches_loops():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(40, 7, generator=gen, dtype=F64)
    order = torch.randperm(40, generator=gen)
    sizes = [1, 2, 5, 13, 20, 39, 40]
    got = nm.singleton_fraction(X, order, sizes)
    assert got == pytest.approx([_naive_fraction(X, order, M) for M in sizes], abs=1e-15)
    assert got[0] == 0.0 and got[-1] == 1.0  # one mean takes every point; M = N has no unchosen
    assert np.array_equal(nm.singleton_fraction(X.float(), order.int(), sizes), got)


def test_singleton_fraction_on_a_line():
    # Points 0, 1, 2, 10, 11 on a line; start order 0, 10, 1, 2, 11.
    X = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]], dtype=F64)
    order = torch.tensor([0, 3, 1, 2, 4])
    # M = 2 (0 and 10): 1, 2 join 0 and 11 joins 10: none single.
    # M = 3 (0, 10, 1): 2 joins 1, 11 joins 10: only 0 single. M = 4: 11 joins 10: 0, 1, 2 single.
    assert nm.singleton_fraction(X, order, [2, 3, 4]) == pytest.approx([0.0, 1 / 3, 3 / 4])
    assert nm.singleton_cells(X, order, 4).tolist() == [True, False, True, True]


def test_singleton_cells_agree_with_fraction():
    X, order = nm.training_start(10, 3, 30, seed=2)
    for M in (4, 15, 29):
        cells = nm.singleton_cells(X, order, M)
        assert cells.shape == (M,)
        fraction = nm.singleton_fraction(X, order, [M])[0]
        assert cells.double().mean().item() == pytest.approx(fraction)


def test_training_start_rebuilds_the_run():
    X, order = nm.training_start(6, 2, 12, seed=3, var=0.5)
    _, X_run, _ = make_data(6, 2, 12, 3, torch.device("cpu"), 0.5)
    assert torch.equal(X, X_run) and torch.equal(order, pmem_init_order(12, 3))
    assert torch.equal(nm.training_start(6, 2, 12, seed=3, train_seed=5)[1], pmem_init_order(12, 5))


@pytest.mark.parametrize("order", [torch.tensor([0, 1, 1]), torch.tensor([0, 1]),
                                   torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0, 1, 3])])
def test_bad_order_is_refused(order):
    with pytest.raises(ValueError, match="permutation"):
        nm.singleton_fraction(torch.zeros(3, 2, dtype=F64), order, [1])


@pytest.mark.parametrize("sizes", [[0], [4], [], [1.5]])
def test_bad_sizes_are_refused(sizes):
    with pytest.raises(ValueError):
        nm.singleton_fraction(torch.randn(3, 2, dtype=F64), torch.arange(3), sizes)


# ----------------------------------------------------------------------------- expectations


def test_expected_fraction_is_the_mean_over_runs_of_make_data():
    """Monte Carlo over the module's own draws vs singleton fractions of make_data datasets."""
    d, K, N, var, sizes = 8, 3, 24, 0.7, [3, 8, 12, 18]
    mean, se = nm.expected_singleton_fraction(d, K, N, sizes, var, reps=300, seed=1)
    runs = np.array([nm.singleton_fraction(*nm.training_start(d, K, N, s, var), sizes)
                     for s in range(80)])
    other_se = runs.std(0, ddof=1) / math.sqrt(len(runs))
    assert np.all(np.abs(mean - runs.mean(0)) < 4 * np.hypot(se, other_se)), (mean, runs.mean(0))
    assert np.all(se > 0) and np.all(se < 0.02)
    again = nm.expected_singleton_fraction(d, K, N, sizes, var, reps=300, seed=1)[0]
    assert np.array_equal(mean, again)  # seeded


def _simulate_cells(N, K, M, reps, rng, attractive):
    """Brute force of the large-d cell model: labels uniform; unchosen points join a chosen point
    of their own cluster at random (uniformly, or by attractiveness h + N(0,1) utility with
    h ~ N(0, 1/2) shared by every choice); orphans join nobody."""
    lab = rng.integers(K, size=(reps, N))
    h = rng.normal(0.0, math.sqrt(0.5), size=(reps, 1, M)) if attractive else np.zeros((reps, 1, M))
    util = h + (rng.normal(size=(reps, N - M, M)) if attractive else rng.random((reps, N - M, M)))
    same = lab[:, M:, None] == lab[:, None, :M]
    util = np.where(same, util, -np.inf)
    joins = np.where(same.any(-1), util.argmax(-1), -1)  # (reps, N - M), -1: orphan
    F = ~(joins[..., None] == np.arange(M)).any(1)  # (reps, M): singleton cells
    F = F.mean(1)
    return F.mean(), F.std(ddof=1) / math.sqrt(reps)


@pytest.mark.parametrize("N, K, M", [(40, 3, 10), (40, 3, 24), (30, 5, 18), (60, 2, 50)])
def test_uniform_cells_formula_matches_simulation(N, K, M):
    mean, se = _simulate_cells(N, K, M, 3000, np.random.default_rng(M), attractive=False)
    assert nm.uniform_cells_fraction(N, K, [M])[0] == pytest.approx(mean, abs=4 * se + 1e-3)


@pytest.mark.parametrize("N, K, M", [(40, 3, 10), (40, 3, 24), (30, 5, 18)])
def test_mean_field_formula_matches_its_simulation(N, K, M):
    """F_mf is exact for a focal chosen point whose competitors' attractiveness is drawn afresh
    for every unchosen point: simulate that directly."""
    rng = np.random.default_rng(N + M)
    reps = 20000
    j = rng.binomial(M - 1, 1 / K, size=reps)  # other chosen points in the focal one's cluster
    n = rng.binomial(N - M, 1 / K, size=reps)  # unchosen points in it
    h0 = rng.normal(0.0, math.sqrt(0.5), size=(reps, 1))
    focal = h0 + rng.normal(size=(reps, n.max()))
    rivals = rng.normal(0.0, math.sqrt(1.5), size=(reps, n.max(), j.max()))
    rivals = np.where(np.arange(j.max()) < j[:, None, None], rivals, -np.inf)  # j real rivals
    wins = (focal > rivals.max(-1)) & (np.arange(n.max()) < n[:, None])
    p = 1.0 - wins.any(1).mean()
    se = math.sqrt(p * (1 - p) / reps)
    assert nm.large_d_fraction(N, K, [M])[0] == pytest.approx(p, abs=4 * se + 1e-3)


def test_large_d_formula_closed_cases():
    # One cluster holding every point, M = 1: the only chosen point takes everything.
    assert nm.large_d_fraction(10, 1, [1, 10]) == pytest.approx([0.0, 1.0], abs=1e-12)
    # K = 1, M = 2, N = 3: one unchosen point joins one of the two: F = 1/2 exactly.
    assert nm.large_d_fraction(3, 1, [2])[0] == pytest.approx(0.5, abs=1e-9)
    assert nm.uniform_cells_fraction(3, 1, [2])[0] == pytest.approx(0.5, abs=1e-15)


def test_large_d_ordering_and_limit():
    """F_unif <= F_mf <= F(d -> inf); Monte Carlo at d = 2000 approaches the attractive-cell
    model and is far from the uniform one: distances concentrate, but cells stay unequal."""
    N, K, sizes = 40, 2, [10, 20]
    unif = nm.uniform_cells_fraction(N, K, sizes)
    mf = nm.large_d_fraction(N, K, sizes)
    mc, se = nm.expected_singleton_fraction(2000, K, N, sizes, reps=64, seed=0)
    limit = np.array([_simulate_cells(N, K, M, 2000, np.random.default_rng(M), True)[0]
                      for M in sizes])
    assert np.all(unif < mf) and np.all(mf < limit)
    assert np.all(np.abs(mc - limit) < 4 * se + 0.01), (mc, limit)
    assert np.all(mc - unif > 0.1)


# ----------------------------------------------------------------------------- the transition


def test_predicted_transition():
    sizes = list(range(1, 11))
    tr = nm.predicted_transition(sizes, [0.0, 0.05, 0.1, 0.3, 0.4, 0.6, 0.8, 0.9, 1.0, 1.0])
    assert (tr.start, tr.end) == (3, 8) and tr.midpoint == pytest.approx(5.5)
    assert nm.predicted_transition([1, 2], [0.0, 0.2]) == nm.NullTransition(2, None, None)
    with pytest.raises(ValueError, match="one fraction per model size"):
        nm.predicted_transition([1, 2], [0.5])
    with pytest.raises(ValueError, match="increasing"):
        nm.predicted_transition([2, 1], [0.5, 0.6])
