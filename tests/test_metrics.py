import math

import pytest
import torch

from gmmmem import metrics

F64 = torch.float64


def _brute_force(samples, X, threshold=1 / 3):
    """Nearest and second-nearest distances, nearest index and memorized flag, by loops."""
    out = []
    for x in samples.tolist():
        dist = sorted((math.dist(x, y), i) for i, y in enumerate(X.tolist()))
        (d1, i1), (d2, _) = dist[0], dist[1]
        out.append((d1, d2, i1, d1 < threshold * d2))
    return out


def test_matches_a_python_loop():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(7, 3, generator=g, dtype=F64)
    samples = torch.cat(
        [
            torch.randn(20, 3, generator=g, dtype=F64),
            X[:3] + 0.05 * torch.randn(3, 3, generator=g, dtype=F64),  # close to a training point
            X[3:5],  # exactly on one
        ]
    )
    want = _brute_force(samples, X)
    d1, d2, idx = metrics.nearest_two(samples, X)
    assert torch.allclose(d1, torch.tensor([w[0] for w in want], dtype=F64), rtol=1e-12, atol=0)
    assert torch.allclose(d2, torch.tensor([w[1] for w in want], dtype=F64), rtol=1e-12)
    assert idx.tolist() == [w[2] for w in want]
    flags = [w[3] for w in want]
    assert metrics.memorized(samples, X).tolist() == flags
    assert metrics.memorization_ratio(samples, X) == pytest.approx(sum(flags) / len(flags))
    assert 0 < sum(flags) < len(flags)  # the example exercises both outcomes
    for tau in (0.1, 0.9):
        flags = [w[3] for w in _brute_force(samples, X, tau)]
        assert metrics.memorization_ratio(samples, X, tau) == pytest.approx(sum(flags) / len(flags))


def test_on_a_training_point_memorized_at_a_midpoint_not():
    X = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 10.0]], dtype=F64)
    samples = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.99, 0.0]], dtype=F64)
    # [1, 0]: d1 = 1 = d2 / 3 exactly; the criterion is strict.
    assert metrics.memorized(samples, X).tolist() == [True, False, False, True]
    assert metrics.memorization_ratio(samples, X) == 0.5


def test_exact_distances_for_far_points_in_float32():
    # ||x||^2 ~ 1e8: the matrix-product form |x|^2 - 2<x,y> + |y|^2 would lose every digit
    # of a distance below ~1 in float32; the exact differences keep it.
    g = torch.Generator().manual_seed(1)
    X = 1e4 + torch.randn(10, 30, generator=g)
    samples = torch.cat([X[:4], X[4:6] + 1e-2])
    d1, _, idx = metrics.nearest_two(samples, X)
    assert torch.equal(d1[:4], torch.zeros(4))
    assert torch.allclose(d1[4:], torch.full((2,), 1e-2 * math.sqrt(30)), rtol=0.05)
    assert idx.tolist() == [0, 1, 2, 3, 4, 5]
    assert metrics.memorization_ratio(samples, X) == 1.0


def test_mixed_dtypes():
    X = torch.tensor([[0.0], [1.0]], dtype=F64)
    assert metrics.memorization_ratio(torch.tensor([[0.1]], dtype=torch.float32), X) == 1.0


def _cluster_example():
    """d = 50, three orthogonal true means at distance sqrt(d) from 0, 10 points each."""
    d = 50
    g = torch.Generator().manual_seed(2)
    true_means = math.sqrt(d) * torch.eye(3, d, dtype=F64)
    X = true_means.repeat_interleave(10, 0) + torch.randn(30, d, generator=g, dtype=F64)
    means = torch.cat(
        [
            true_means[:1],  # at a true mean
            true_means[:1] + 0.3 * torch.randn(1, d, generator=g, dtype=F64),  # close to it
            X[10:20].mean(0, keepdim=True),  # average of cluster 1: d/10 from its mean
            X[[0, 12, 25]],  # on training points
            X[[3]] + 0.01 * torch.randn(1, d, generator=g, dtype=F64),  # very close to one
            -true_means[:1],  # far from everything
        ]
    )
    return means, true_means, X


def test_means_statistics_counts_and_distances():
    means, true_means, X = _cluster_example()
    stats = metrics.means_statistics(means, true_means, X)
    # Default radius: half the rms distance of a training point to its true mean ~ sqrt(d) / 2.
    assert stats.radius == pytest.approx(0.5 * math.sqrt(50), rel=0.1)
    assert stats.M == 8
    assert stats.near_true_mean == 3  # the two at/near mean 0 and the cluster-1 average
    assert stats.true_means_found == 2
    assert stats.near_training_point == 4
    a = [min(math.dist(m, mu) for mu in true_means.tolist()) for m in means.tolist()]
    b = [w[0] for w in _brute_force(means, X)]
    assert stats.mean_dist_true_mean == pytest.approx(sum(a) / 8, rel=1e-12)
    assert stats.mean_dist_training_point == pytest.approx(sum(b) / 8, rel=1e-12)


def test_means_statistics_radius_override():
    means, true_means, X = _cluster_example()
    assert metrics.means_statistics(means, true_means, X, radius=1e-9).near_true_mean == 1
    big = metrics.means_statistics(means, true_means, X, radius=100.0)
    assert big.near_true_mean == 8 and big.true_means_found == 3 and big.radius == 100.0


def test_means_statistics_of_the_true_and_the_memorizing_models():
    means, true_means, X = _cluster_example()
    true = metrics.means_statistics(true_means, true_means, X)
    assert (true.near_true_mean, true.near_training_point, true.true_means_found) == (3, 0, 3)
    assert true.mean_dist_true_mean == 0.0
    mem = metrics.means_statistics(X, true_means, X)
    assert (mem.near_true_mean, mem.near_training_point, mem.mean_dist_training_point) == (0, 30, 0.0)


X2 = torch.zeros(2, 3)


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda: metrics.memorization_ratio(torch.zeros(4, 3), torch.zeros(1, 3)), "X"),
        (lambda: metrics.memorization_ratio(torch.zeros(4, 2), X2), "X"),
        (lambda: metrics.memorization_ratio(torch.zeros(4), X2), "samples"),
        (lambda: metrics.memorization_ratio(torch.full((4, 3), math.nan), X2), "samples"),
        (lambda: metrics.memorization_ratio(torch.zeros(0, 3), X2), "samples"),
        (lambda: metrics.memorization_ratio(torch.zeros(4, 3), X2, threshold=0.0), "threshold"),
        (lambda: metrics.memorization_ratio(torch.zeros(4, 3), X2, threshold=1.5), "threshold"),
        (lambda: metrics.means_statistics(torch.zeros(4, 3), torch.zeros(2, 2), X2), "true_means"),
        (lambda: metrics.means_statistics(torch.zeros(4, 3), X2, X2, radius=-1.0), "radius"),
        (lambda: metrics.means_statistics(torch.zeros(4, 3), X2, X2, radius=math.inf), "radius"),
        (lambda: metrics.means_statistics(torch.ones(4, 3, dtype=torch.int64), X2, X2), "means"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()
