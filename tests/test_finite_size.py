"""Finite-size Theorem 3.2: the expected nearest-memorized-point excess and its predictor."""

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from gmmmem import diffusion, losses, mixtures
from gmmmem.heldout import heldout
from gmmmem.predictors import FiniteSize
from gmmmem.sweep import SweepTable

F64 = torch.float64


def seeded(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch and one BLAS thread: the small problems here only lose to thread overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


def test_one_memorized_point_gives_the_mean_squared_distance_exactly():
    # M = 1: no minimum is taken, so E||x_i - m||^2 = 2 d s^2 within a cluster plus, with
    # probability 1 - 1/K, the squared distance between two means, E||mu_k - mu_l||^2 = 2 d.
    # This also checks the geometry of the other-cluster term (the formula is exact at M = 1).
    for d, K, var, N in [(20, 1, 1.0, 30), (10, 3, 0.5, 40), (50, 12, 2.0, 100)]:
        exact = (1 - 1 / N) * (2 * d * var + (1 - 1 / K) * 2 * d)
        formula = losses.expected_nearest_memorized_excess(d, K, var, 1, N)
        assert formula == pytest.approx(exact, rel=1e-6)


def test_single_cluster_matches_brute_force_monte_carlo():
    d, K, var, N = 20, 1, 1.5, 40
    M = [1, 2, 5, 10, 20, 30, 39]
    mean, err = losses.mc_nearest_memorized_excess(d, K, var, M, N, 1500, seeded(0))
    formula = losses.expected_nearest_memorized_excess(d, K, var, M, N)
    assert np.all(np.abs(formula - mean) < 4 * err)
    assert np.all(err < 0.01 * mean)  # precise enough for the check to bite


def test_several_clusters_match_monte_carlo_within_the_shared_mean_approximation():
    # With K > 1 the memorized points of one other cluster share its mean; the formula treats
    # them as independent and is slightly low (documented: at most about 2% for d >= 20).
    d, K, var, N = 20, 3, 0.5, 40
    M = [1, 2, 4, 10, 20, 36]
    mean, err = losses.mc_nearest_memorized_excess(d, K, var, M, N, 1500, seeded(1))
    formula = losses.expected_nearest_memorized_excess(d, K, var, M, N)
    assert np.all(np.abs(formula - mean) < 0.02 * mean + 4 * err)
    assert abs(formula[0] - mean[0]) < 4 * err[0]  # exact at M = 1
    # Theorem 3.2's constant: above 2 when clusters keep no memorized point, below 2 later.
    c = formula / (d * var * (1 - np.array(M) / N))
    assert c[1] > 2.5 and c[-1] < 1.7 and np.all(np.diff(c) < 0)


def test_the_formula_is_decreasing_in_M_and_vanishes_at_M_equal_N():
    N = 25
    e = losses.expected_nearest_memorized_excess(30, 4, 1.0, np.arange(1, N + 1), N)
    assert e[-1] == 0.0 and np.all(np.diff(e) < 0)
    one = losses.expected_nearest_memorized_excess(30, 4, 1.0, 7, N)
    assert one == pytest.approx(e[6], rel=1e-12)


def test_the_constant_tends_to_two_in_high_dimension():
    d, N = 2000, 50
    M = np.array([2, 10, 40])
    c = losses.expected_nearest_memorized_excess(d, 1, 1.0, M, N) / (d * (1 - M / N))
    # The Gaussian approximation of chapter 2, accurate at large d and one cluster.
    approx = np.array([losses.pmem_constant_approx(d, n) for n in (2, 10, 40)])
    assert np.allclose(c, approx, atol=3e-3) and np.all((1.8 < c) & (c < 2))


@pytest.mark.parametrize("d, rtol", [(3, 5e-5), (30, 1e-6)])
def test_the_quadrature_has_converged(monkeypatch, d, rtol):
    M, N = [1, 3, 30, 200, 1000], 2000
    base = losses.expected_nearest_memorized_excess(d, 3, 1.0, M, N)
    monkeypatch.setattr(losses, "FINITE_SIZE_NODES", (14, 14, 16, 300))
    fine = losses.expected_nearest_memorized_excess(d, 3, 1.0, M, N)
    assert np.allclose(base, fine, rtol=rtol)


def test_pmem_excess_finite_is_the_expected_excess_held_constant_in_t():
    t = diffusion.time_grid(dtype=F64)
    out = losses.pmem_excess_finite(t, 30, 2, 1.0, 20, 50)
    assert out.shape == t.shape and out.dtype == F64
    assert torch.all(out == losses.expected_nearest_memorized_excess(30, 2, 1.0, 20, 50))
    assert losses.pmem_excess_finite(0.3, 30, 2, 1.0, 20, 50).shape == ()


@pytest.mark.parametrize("kwargs, match", [
    (dict(M=0), "M must be"), (dict(M=51), "M must be"), (dict(M=2.5), "M must be"),
    (dict(M=[[1, 2]]), "1-D"), (dict(M=[]), "1-D"), (dict(d=1), "d must be >= 2"),
    (dict(var=0.0), "var must be > 0"), (dict(var=-1.0), "var must be"), (dict(K=0), "K must be"),
])
def test_bad_input_is_refused(kwargs, match):
    args = dict(d=30, K=3, var=1.0, M=10, N=50) | kwargs
    with pytest.raises(ValueError, match=match):
        losses.expected_nearest_memorized_excess(**args)


def test_monte_carlo_estimator_is_nearest_memorized_excess_on_the_same_draws():
    d, K, var, N, M = 8, 3, 0.7, 30, [1, 4, 17, 30]
    mean, err = losses.mc_nearest_memorized_excess(d, K, var, M, N, 2, seeded(5))
    g = torch.Generator().manual_seed(5)
    want = []
    for _ in range(2):
        gmm = mixtures.random_iso_gmm(d, K, var, g, dtype=F64)
        X, _ = gmm.sample(N, g)
        order = torch.randperm(N, generator=g)
        want.append([losses.nearest_memorized_excess(X, X[order[:m]]) for m in M])
    assert np.allclose(mean, np.mean(want, axis=0), rtol=1e-12)
    assert mean[-1] == 0.0 and np.all(err >= 0)


def test_finite_size_losses_hold_theorem_3_1_and_the_finite_size_curve():
    t = diffusion.time_grid().numpy()
    d, K, N, var = [30, 40], [3, 6], [50, 100], [0.5, 2.0]
    sizes, gen, pmem = losses.finite_size_losses(t, d, K, N, var, num_sizes=20)
    assert sizes.shape == (2, 20) and gen.shape == (2, 26) and pmem.shape == (2, 20, 26)
    M50 = np.round(np.arange(1, 21) * 50 / 20).astype(int)  # whole model sizes of N = 50
    assert np.allclose(sizes[0], M50 / 50) and np.allclose(sizes[1], np.arange(1, 21) / 20)
    assert np.all(np.diff(sizes, axis=1) > 0)
    assert np.allclose(gen[1], losses.gen_excess(torch.as_tensor(t), 40, 2.0).numpy())
    assert np.all(pmem == pmem[:, :, :1])  # constant in t
    want = losses.expected_nearest_memorized_excess(30, 3, 0.5, M50, 50)
    assert np.allclose(pmem[0, :, 0], want)
    with pytest.raises(ValueError, match="one length"):
        losses.finite_size_losses(t, [30, 40], [3], [50, 50], [1.0, 1.0])


def test_the_finite_size_crossing_solves_the_crossover_equation():
    # With uniform weights the crossing M*/N solves e(M*) = mean_t d s^2 / (1 + psi_t s^2).
    t = diffusion.time_grid().numpy()
    sizes, gen, pmem = losses.finite_size_losses(t, [30], [3], [50], [1.0], num_sizes=50)
    r = losses.crossover(sizes, gen, pmem, np.ones(26))[0]
    target = gen[0].mean()
    e = pmem[0, :, 0]
    assert np.interp(r, sizes[0], e) == pytest.approx(target, rel=1e-9)
    assert 0.6 < r < 0.95


def test_the_finite_size_fit_recovers_transitions_made_by_known_weights():
    t = diffusion.time_grid().numpy()
    rng = np.random.default_rng(0)
    C = 10  # one cluster keeps the formula cheap; d, N and the variance vary
    d, K = rng.choice([10, 20, 40], C), np.ones(C, dtype=int)
    N, var = rng.choice([20, 40], C), rng.choice([0.5, 1.0, 2.0], C)
    sizes, gen, pmem = losses.finite_size_losses(t, d, K, N, var)
    true_w = rng.dirichlet(np.full(26, 0.5))
    y = losses.crossover(sizes, gen, pmem, true_w)
    mask = np.arange(C) < 7
    table = SweepTable.from_columns(measured=y, var=var, times=t, d=d, K=K, N=N)
    ev = heldout(FiniteSize(t, n_starts=0), table, [mask])
    assert ev.train_mse[0] < 1e-6 and ev.test_mse[0] < 1e-4
