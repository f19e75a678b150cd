r"""A null model of memorization: the singleton cells of the partially memorizing start.

Every trained model of size :math:`M` starts at :math:`M` distinct training points with a tiny
variance (:func:`gmmmem.train.pmem_init_order`: size :math:`M` starts at the first :math:`M`
points of one random order). Call those points *chosen* and the other :math:`N - M`
*unchosen*. The **cell** of a chosen point is the set of unchosen points nearer to it than to
any other chosen point (its Voronoi cell among the chosen points). While the variance is tiny
an unchosen training point pulls only on the mean nearest to it, so a starting mean whose
cell is empty — a **singleton** cell — has nothing pulling it off its training point, and a
mean whose cell holds others drifts to their centroid. The **singleton fraction**

.. math:: F(M) = \frac1M\,\#\{\text{chosen points whose cell holds no unchosen point}\}

is a parameter-free geometric quantity of the initialization. This module computes it
exactly for a given start (:func:`singleton_fraction`), its expectation under the data
distribution of :func:`gmmmem.experiments.make_data` by Monte Carlo
(:func:`expected_singleton_fraction`), two large-:math:`d` approximations in closed form
(:func:`uniform_cells_fraction`, :func:`large_d_fraction`), and the transition the null model
predicts (:func:`predicted_transition`).

**The data law.** Means :math:`\mu_c = \sqrt d\, u_c`, :math:`u_c` uniform on the sphere;
labels :math:`c_i` i.i.d. uniform on :math:`K` clusters; :math:`x_i = \mu_{c_i} + s z_i`,
:math:`z_i \sim N(0, I_d)`, :math:`s^2` the data variance. The points are i.i.d. and the
start order is drawn independently of them, so the chosen points are a uniform
:math:`M`-subset and, by exchangeability, :math:`\mathbb E F(M)` is the probability that one
given chosen point is a singleton. The chosen points of a cluster and its unchosen points
have independent counts :math:`j + 1 \sim 1 + \mathrm{Bin}(M - 1, 1/K)` (the given point and
the others) and :math:`n \sim \mathrm{Bin}(N - M, 1/K)`.

**Large d, between clusters.** :math:`\|x_i - x_k\|^2 = \|\mu_c - \mu_{c'}\|^2
+ s^2\|z_i - z_k\|^2 + O(\sqrt d)` with :math:`\|\mu_c - \mu_{c'}\|^2 = 2d + O(\sqrt d)` for
:math:`c \ne c'`, against :math:`2 d s^2 + O(\sqrt d)` within a cluster: an unchosen point's
nearest chosen point is in its own cluster whenever that cluster has one. When it has none
the point is an *orphan* and fills a cell of another cluster. The formulas below ignore
orphans; an orphan can only fill a cell, so each formula overestimates :math:`F` by at most
the expected number of orphans per chosen point, :math:`(N - M)(1 - 1/K)^M / M` (about 0.01
at :math:`M = N/2`, :math:`K = 6`, :math:`N = 50`, and negligible beyond).

**Large d, within a cluster.** :math:`\|x_i - x_k\|^2 = s^2(\|z_i\|^2 + \|z_k\|^2
- 2\langle z_i, z_k\rangle)`. Unchosen point :math:`i` joins the chosen :math:`k` that minimizes
:math:`\|z_k\|^2 - 2\langle z_i, z_k\rangle = d + \sqrt{2d}\,a_k - 2\sqrt d\, b_{ik}`, with
:math:`a_k = (\|z_k\|^2 - d)/\sqrt{2d}` and :math:`b_{ik} = \langle z_i, z_k\rangle/\sqrt d`
tending, for a fixed number of points, to independent standard normals. So :math:`i` joins

.. math:: \arg\max_k\; (h_k + b_{ik}), \qquad h_k = -a_k/\sqrt2 \sim N(0, \tfrac12):

a random choice in which every chosen point carries its own fixed *attractiveness*
:math:`h_k` (a point whose noise is short lies near its cluster mean and attracts many: a
"hub"). Both terms are of order :math:`\sqrt d`, so concentration of distances does **not**
make the choice uniform in high dimension. Given the attractiveness of the :math:`j + 1`
chosen points of its cluster, each unchosen point of the cluster joins the given point with
probability :math:`\pi = \int \varphi(g)\prod_{k=1}^{j}\Phi(g + h_0 - h_k)\,dg`,
independently of the others, so (with the binomial generating function)

.. math:: P(\text{singleton} \mid j, h) = \mathbb E_n (1 - \pi)^n = (1 - \pi/K)^{N - M},
          \qquad \mathbb E F(M) = \sum_{j=0}^{M-1} \mathrm{Bin}(j; M - 1, \tfrac1K)\,
          \mathbb E_h\big(1 - \pi/K\big)^{N - M}.

* **Uniform cells** (:func:`uniform_cells_fraction`): ignore the attractiveness,
  :math:`h \equiv 0`, so :math:`\pi = 1/(j + 1)` and
  :math:`F_{\mathrm{unif}}(M) = \sum_j \mathrm{Bin}(j; M-1, \tfrac1K)
  (1 - \tfrac{1}{K(j+1)})^{N-M}`.
  For many chosen points per cluster this tends to :math:`e^{-(N - M)/M}`, whose 0.5 crossing
  is :math:`M/N = 1/(1 + \ln 2) \approx 0.59` whatever :math:`d, K, N`.
* **Attractive cells** (:func:`large_d_fraction`): keep the given point's attractiveness
  :math:`h_0` and average the others' into :math:`\pi` (mean field):
  :math:`\bar\pi_j(h) = \int\varphi(g)\,\Phi\big((g + h)/\sqrt{3/2}\big)^{j}\,dg`, since
  :math:`\mathbb E_{h_k}\Phi(g + h - h_k) = \Phi((g + h)/\sqrt{1 + 1/2})`; then
  :math:`F_{\mathrm{mf}}(M) = \sum_j \mathrm{Bin}(j; M-1, \tfrac1K)\,
  \mathbb E_{h \sim N(0, 1/2)}(1 - \bar\pi_j(h)/K)^{N - M}`.

Both are lower bounds of the large-:math:`d` limit, in order: :math:`x \mapsto (1 - x/K)^n`
is convex, :math:`\bar\pi_j(h_0) = \mathbb E[\pi \mid h_0]` and
:math:`\mathbb E\,\bar\pi_j(h_0) = 1/(j + 1)`, so Jensen's inequality twice gives
:math:`F_{\mathrm{unif}} \le F_{\mathrm{mf}} \le \lim_{d\to\infty} \mathbb E F` (up to the
orphans). ``tests/test_null_model.py`` checks every formula against a brute-force simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.special import log_ndtr
from scipy.stats import binom

from . import validate
from .experiments import make_data, midpoint, transition
from .train import pmem_init_order

#: Datasets drawn at once by :func:`expected_singleton_fraction` (bounds its memory).
CHUNK_REPS = 32

#: Quadrature of :func:`large_d_fraction`: Gauss-Hermite nodes for the attractiveness h and a
#: uniform grid (trapezoid rule) on [-G_MAX, G_MAX] for the utility g.
H_NODES = 64
G_MAX = 10.0
G_POINTS = 2001


# ----------------------------------------------------------------------------- input checks


def _sizes(model_sizes: Sequence[int], N: int) -> torch.Tensor:
    sizes = validate.model_sizes(model_sizes, N)
    return torch.tensor(sizes, dtype=torch.long)


def _order(order: torch.Tensor, N: int) -> torch.Tensor:
    order = torch.as_tensor(order)
    if order.shape != (N,) or order.is_floating_point() or order.dtype == torch.bool or not bool(
        (torch.sort(order).values.cpu() == torch.arange(N)).all()
    ):
        raise ValueError(f"order must be a permutation of 0..{N - 1}, got {order}")
    return order


def _clusters(K: int, N: int) -> None:
    validate.positive_int(K, "K")
    validate.positive_int(N, "N")


# ----------------------------------------------------------------------------- one start


def _cell_counts(P: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """How many unchosen points each chosen point's cell holds, for every size at once.

    ``P`` (R, N, d): R datasets, each in start order (point k is chosen at size M iff k < M).
    Returns counts (R, S, N): ``counts[r, s, k]`` for k < sizes[s] (entries k >= sizes[s] are
    unchosen points and hold 0). The running minimum of each row of the distance matrix gives,
    for every prefix length M at once, the nearest of the first M points.
    """
    R, N, _ = P.shape
    dist = torch.cdist(P, P, compute_mode="donot_use_mm_for_euclid_dist")
    nearest = torch.cummin(dist, dim=-1).indices  # [r, i, M - 1]: nearest of the first M to i
    owner = nearest[:, :, sizes - 1].transpose(1, 2)  # (R, S, N)
    unchosen = torch.arange(N)[None, :] >= sizes[:, None]  # (S, N)
    owner = torch.where(unchosen, owner, N)  # chosen points count in a spare column N
    counts = torch.zeros(R, len(sizes), N + 1, dtype=torch.long)
    counts.scatter_add_(2, owner, torch.ones_like(owner))
    return counts[..., :N]


def _fractions(counts: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Singleton fractions (R, S) from the cell counts of :func:`_cell_counts`."""
    N = counts.shape[-1]
    chosen = torch.arange(N)[None, :] < sizes[:, None]
    return ((counts == 0) & chosen).sum(-1).double() / sizes.double()


def singleton_cells(X: torch.Tensor, order: torch.Tensor, M: int) -> torch.Tensor:
    """Boolean (M,): whether the cell of each of the first ``M`` points of ``order`` (in that
    order) holds no other training point of ``X`` (N, d)."""
    validate.points(X, "X")
    N = X.shape[0]
    order = _order(order, N)
    sizes = _sizes([M], N)
    counts = _cell_counts(X.detach().cpu().double()[order.cpu()][None], sizes)
    return counts[0, 0, :M] == 0


def singleton_fraction(
    X: torch.Tensor, order: torch.Tensor, model_sizes: Sequence[int]
) -> np.ndarray:
    """The exact singleton fraction F(M) of the start of every size in ``model_sizes``.

    ``X`` (N, d) the training points, ``order`` (N,) the start order (size M starts at
    ``X[order[:M]]``, as :func:`gmmmem.train.pmem_init_order`). Distances are exact
    (float64 on the CPU, no matrix-product shortcut); one N x N distance matrix serves every
    size. Returns an array (S,).
    """
    validate.points(X, "X")
    N = X.shape[0]
    order = _order(order, N)
    sizes = _sizes(model_sizes, N)
    counts = _cell_counts(X.detach().cpu().double()[order.cpu()][None], sizes)
    return _fractions(counts, sizes)[0].numpy()


def training_start(
    d: int, K: int, N: int, seed: int, var: float = 1.0, train_seed: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training points and start order of a run, rebuilt as the run built them.

    ``make_data(d, K, N, seed, cpu, var)`` gives the points and
    ``pmem_init_order(N, train_seed)`` the order (``train_seed`` defaults to ``seed``: a
    phase-transition run and every sweep configuration train with the data's seed).
    Returns ``(X, order)``, X (N, d) float64 on the CPU.
    """
    _, X, _ = make_data(d, K, N, seed, torch.device("cpu"), var)
    return X, pmem_init_order(N, seed if train_seed is None else train_seed)


# ----------------------------------------------------------------------------- expectations


def _draw(R: int, N: int, d: int, K: int, var: float, gen: torch.Generator) -> torch.Tensor:
    """R datasets (R, N, d) of the law of :func:`gmmmem.experiments.make_data`."""
    u = torch.randn(R, K, d, generator=gen, dtype=torch.float64)
    means = math.sqrt(d) * u / u.norm(dim=-1, keepdim=True)
    labels = torch.randint(K, (R, N), generator=gen)
    noise = torch.randn(R, N, d, generator=gen, dtype=torch.float64)
    return torch.gather(means, 1, labels[..., None].expand(R, N, d)) + math.sqrt(var) * noise


def expected_singleton_fraction(
    d: int,
    K: int,
    N: int,
    model_sizes: Sequence[int],
    var: float = 1.0,
    reps: int = 256,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo estimate of E F(M) over datasets and starts, and its standard error.

    Draws ``reps`` independent datasets of the law of :func:`gmmmem.experiments.make_data`
    (dimension ``d``, ``K`` clusters, ``N`` points, data variance ``var``) from ``seed`` and
    takes the first M points of each as the start (a uniform M-subset: the points are
    i.i.d.). Returns ``(mean, standard error)``, arrays (S,).
    """
    for name, value in (("d", d), ("K", K), ("N", N), ("reps", reps)):
        validate.positive_int(value, name)
    if not 0.0 < float(var) < math.inf:
        raise ValueError(f"var must be finite and > 0, got {var}")
    if reps < 2:
        raise ValueError(f"reps must be >= 2 for a standard error, got {reps}")
    sizes = _sizes(model_sizes, N)
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for lo in range(0, reps, CHUNK_REPS):
        P = _draw(min(CHUNK_REPS, reps - lo), N, d, K, float(var), gen)
        parts.append(_fractions(_cell_counts(P, sizes), sizes))
    F = torch.cat(parts).numpy()
    return F.mean(0), F.std(0, ddof=1) / math.sqrt(reps)


def _binomial_weights(sizes: np.ndarray, K: int) -> np.ndarray:
    """Bin(j; M - 1, 1/K) for j = 0..max(M) - 1, one row per size (S, J)."""
    j = np.arange(sizes.max())
    return binom.pmf(j[None, :], sizes[:, None] - 1, 1.0 / K)


def uniform_cells_fraction(N: int, K: int, model_sizes: Sequence[int]) -> np.ndarray:
    r"""E F(M) if every unchosen point joined a uniform chosen point of its own cluster.

    :math:`F_{\mathrm{unif}}(M) = \sum_{j=0}^{M-1} \mathrm{Bin}(j; M-1, \tfrac1K)\,
    (1 - \tfrac{1}{K(j+1)})^{N-M}` (module docstring); a lower bound of the large-d limit.
    Returns an array (S,).
    """
    _clusters(K, N)
    sizes = _sizes(model_sizes, N).numpy()
    j = np.arange(sizes.max())
    stay = (1.0 - 1.0 / (K * (j[None, :] + 1))) ** (N - sizes[:, None])
    return (_binomial_weights(sizes, K) * stay).sum(1)


def large_d_fraction(N: int, K: int, model_sizes: Sequence[int]) -> np.ndarray:
    r"""E F(M) at large d with attractive cells, in the mean-field closed form.

    :math:`F_{\mathrm{mf}}(M) = \sum_j \mathrm{Bin}(j; M-1, \tfrac1K)\,
    \mathbb E_{h \sim N(0,1/2)}(1 - \bar\pi_j(h)/K)^{N-M}` with
    :math:`\bar\pi_j(h) = \int\varphi(g)\Phi((g + h)/\sqrt{3/2})^j dg` (module docstring).
    The expectation over h uses :data:`H_NODES` Gauss-Hermite nodes, the integral over g the
    trapezoid rule on :data:`G_POINTS` points of [-:data:`G_MAX`, :data:`G_MAX`].
    Returns an array (S,); memory O(S x max(M) x H_NODES).
    """
    _clusters(K, N)
    sizes = _sizes(model_sizes, N).numpy()
    x, wh = np.polynomial.hermite_e.hermegauss(H_NODES)
    h, wh = x * math.sqrt(0.5), wh / wh.sum()
    g = np.linspace(-G_MAX, G_MAX, G_POINTS)
    wg = np.exp(-0.5 * g * g) / math.sqrt(2.0 * math.pi) * (g[1] - g[0])
    wg[[0, -1]] *= 0.5
    log_cdf = log_ndtr((g[None, :] + h[:, None]) / math.sqrt(1.5))  # (H, G)
    j = np.arange(sizes.max())
    pi = np.stack([np.exp(k * log_cdf) @ wg for k in j])  # (J, H): loop over at most N values
    stay = (1.0 - pi[None, :, :] / K) ** (N - sizes)[:, None, None]  # (S, J, H)
    return (_binomial_weights(sizes, K) * (stay @ wh)).sum(1)


# ----------------------------------------------------------------------------- the transition


@dataclass(frozen=True)
class NullTransition:
    """Where a fraction curve reaches 0.1 (``start``), 0.9 (``end``) and 0.5 (``midpoint``,
    linearly interpolated), as :func:`gmmmem.experiments.transition` and
    :func:`~gmmmem.experiments.midpoint` locate a measured one; None: never."""

    start: int | None
    end: int | None
    midpoint: float | None


def predicted_transition(model_sizes: Sequence[int], fraction: Sequence[float]) -> NullTransition:
    """The null model's transition: where the singleton fraction ``fraction`` (one value per
    size of ``model_sizes``, increasing sizes) crosses 0.1, 0.9 and 0.5. Pass every size
    1..N for the finest answer."""
    sizes, F = list(model_sizes), [float(f) for f in fraction]
    if len(sizes) != len(F) or not sizes:
        raise ValueError(f"need one fraction per model size, got {len(F)} for {len(sizes)} sizes")
    if any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise ValueError(f"model_sizes must be strictly increasing, got {sizes}")
    start, end = transition(sizes, F)
    return NullTransition(start, end, midpoint(sizes, F))
