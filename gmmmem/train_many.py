r"""Training the mixture denoisers of several configurations at once, in one program.

:func:`train_many` trains, for each of several training sets (each its own dimension d,
size N and seed), every model size asked for, all in one batched step: what a GPU needs, where
one small configuration at a time leaves the device idle. Each configuration keeps

* its own random stream: each step draws its times and noise from its own generator, seeded
  with its seed, with exactly the calls of :class:`gmmmem.train.RowDraws`, so the draws are
  bitwise those of a run alone;
* its own start (the partially memorizing one, :func:`gmmmem.train.pmem_init_order` of its N
  and seed), and Adam state; the learning-rate schedule is the shared recipe's;

so it follows the trajectory :func:`gmmmem.train.train_gmm` gives it alone, to rounding: the
padded sums below are added in another order. In float64, 40 steps agree to ~1e-10; the
training amplifies rounding, and in float32 the same 40 steps of a tiny configuration at the
``ci`` learning rate moved some sizes' learned variance by tens of percent (as runs on two
devices would differ).

The (configuration, model size) pairs are grouped (:class:`gmmmem.train.SizeGroups`, the cost of
a group its count times its padded dimension x rows x components) and each group padded:

* components beyond a size's M are masked out of the softmax (:func:`gmmmem.train.padding_bias`);
* rows beyond a configuration's N R are clean point 0, noise 0 at time t = 1, where the loss
  weight :math:`\psi_1 = \alpha_1^2/\sigma_1^2 = 0`: they add exactly 0 to loss and gradients;
* coordinates beyond a configuration's d are 0 in the clean points, the noise and the means: the
  denoiser's output there is 0 (a mixture of means with a 0 coordinate), so is the error; the
  means' gradient there is exactly 0, Adam leaves them at 0, and the variance's gradient sees
  only the real coordinates.

The loss of each pair is its own mean over its own N R rows.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import NamedTuple, Sequence

import torch

from . import validate
from .device import for_training
from .train import (CHUNK_FLOATS, GROUP_OVERHEAD, RowDraws, SizeGroups, TrainConfig,
                    TrainedMixtures, _loss_and_grad, checkpoint_key, fit_draws, padding_bias,
                    pmem_init_order)

#: The dimension at which :data:`gmmmem.train.GROUP_OVERHEAD` (in noisy point x component
#: pairs) was measured: a group's fixed cost in (row x component x coordinate) units is that
#: many times larger.
OVERHEAD_DIM = 30


class Item(NamedTuple):
    """One model to train: the padded extents it needs (dimension, rows, components) and its
    configuration's index; sorted, items of one dimension and size of training set lie together."""

    d: int
    rows: int
    M: int
    config: int


def _extents(item: Item) -> tuple[int, int, int]:
    return item.d, item.rows, item.M


class ManyDraws:
    """The rows of each step for several training sets, one :class:`gmmmem.train.RowDraws`
    each (its own generator), padded into one (C, rows, D) buffer: padded rows at t = 1 with
    clean point and noise 0, padded coordinates 0."""

    def __init__(self, Xs: Sequence[torch.Tensor], num_draws: int, seeds: Sequence[int]) -> None:
        self.each = [RowDraws(X, num_draws, seed) for X, seed in zip(Xs, seeds)]
        self.device, self.dtype = Xs[0].device, Xs[0].dtype
        C = len(Xs)
        rows, D = max(d.x0.shape[0] for d in self.each), max(X.shape[1] for X in Xs)
        kw = dict(device=self.device, dtype=self.dtype)
        self.x0 = torch.zeros(C, rows, D, **kw)
        self.t = torch.ones(C, rows, 1, **kw)
        self.eps = torch.zeros(C, rows, D, **kw)
        for c, draw in enumerate(self.each):
            self.x0[c, : draw.x0.shape[0], : draw.x0.shape[1]] = draw.x0

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step's clean points, times and noise of every training set, (C, rows, D)."""
        for c, draw in enumerate(self.each):
            x0, t, eps = draw()
            self.t[c, : len(t)] = t
            self.eps[c, : eps.shape[0], : eps.shape[1]] = eps
        return self.x0, self.t, self.eps

    def state(self) -> list[torch.Tensor]:
        """Every generator's state, for a checkpoint."""
        return [d.state() for d in self.each]

    def load(self, state: list[torch.Tensor]) -> None:
        """Restore a state made by :meth:`state`."""
        if len(state) != len(self.each):
            raise ValueError(f"a state of {len(state)} generators, need {len(self.each)}")
        for d, s in zip(self.each, state):
            d.load(s)


class _Group:
    """One group of (configuration, size) pairs: means (S, Mmax, D) padded with zeros (masked
    components, zero coordinates), one log standard deviation per pair (S,); each pair's rows
    picked from the configurations' buffers."""

    def __init__(self, items: Sequence[Item], starts: Sequence[torch.Tensor], init_var: float) -> None:
        like = starts[0]
        S, Mmax = len(items), max(it.M for it in items)
        self.d, self.rows = max(it.d for it in items), max(it.rows for it in items)
        self.means = torch.zeros(S, Mmax, self.d, device=like.device, dtype=like.dtype)
        for k, it in enumerate(items):
            self.means[k, : it.M, : it.d] = starts[it.config][: it.M]
        self.log_std = torch.full((S,), 0.5 * math.log(init_var), device=like.device, dtype=like.dtype)
        self.bias = padding_bias([it.M for it in items], like)
        self.which = torch.tensor([it.config for it in items], device=like.device)
        self.own_rows = torch.tensor([float(it.rows) for it in items], device=like.device,
                                     dtype=like.dtype)
        self.scale = (1.0 / self.own_rows).view(-1, 1, 1)
        budget = CHUNK_FLOATS if like.device.type == "cpu" else 64 * CHUNK_FLOATS
        self.chunk = max(1, budget // (S * Mmax))
        self.params = [self.means, self.log_std]
        self.items = list(items)

    def loss_and_grad(self, x0, t, eps) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Mean loss per pair (S,) over its own rows, and its gradients, in chunks of rows."""
        total = None  # loss, mean and variance gradients, summed over chunks
        for lo in range(0, self.rows, self.chunk):
            hi = min(self.rows, lo + self.chunk)
            pick = lambda v, width: v[:, lo:hi, :width].index_select(0, self.which)  # noqa: E731
            part = _loss_and_grad(pick(x0, self.d), pick(t, 1), pick(eps, self.d), self.means,
                                  self.log_std, self.bias, self.scale)
            total = list(part) if total is None else [a.add_(b) for a, b in zip(total, part)]
        return total[0] / self.own_rows, total[1:]


class _ManyMixtures(SizeGroups):
    """The trainable state of :func:`train_many`: every (configuration, size) pair in groups."""

    def __init__(self, items: Sequence[Item], starts: Sequence[torch.Tensor], init_var: float) -> None:
        kind = "cpu" if starts[0].device.type == "cpu" else "cuda"
        super().__init__(items, GROUP_OVERHEAD[kind] * OVERHEAD_DIM,
                         lambda g: _Group(g, starts, init_var), shape=_extents)

    def learned(self) -> tuple[list[torch.Tensor], list[float]]:
        """The means (M, d) and the variance of each pair, in the order of the items, on the CPU."""
        means = []  # in sorted order
        for g in self.groups:
            m = g.means.cpu()
            means += [m[k, : it.M, : it.d].clone() for k, it in enumerate(g.items)]
        return self._list_in_order(means), self.variance().cpu().tolist()


def train_many(
    Xs: Sequence[torch.Tensor],
    model_sizes: Sequence[Sequence[int]],
    configs: Sequence[TrainConfig],
    device: str | torch.device | None = None,
    *,
    progress: bool | None = None,
    dtype: torch.dtype = torch.float32,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1000,
) -> list[TrainedMixtures]:
    """:func:`gmmmem.train.train_gmm` for each training set ``Xs[c]`` (N_c, d_c) with its sizes
    ``model_sizes[c]`` and settings ``configs[c]``, all trained in one batched program.

    The settings must differ only in the seed (one recipe). Each configuration starts as
    :func:`~gmmmem.train.train_gmm` starts it and draws its own noise, so its models follow the
    same trajectory as when trained alone. Returns one :class:`~gmmmem.train.TrainedMixtures`
    per configuration (its ``seconds``: the whole batch's training). ``checkpoint`` /
    ``checkpoint_every``: as :func:`~gmmmem.train.train_gmm` (one file for the batch).
    """
    Xs, configs = list(Xs), list(configs)
    model_sizes = [list(s) for s in model_sizes]
    if not Xs:
        raise ValueError("Xs is empty: no configuration to train")
    if not len(Xs) == len(model_sizes) == len(configs):
        raise ValueError(f"need one sizes list and one TrainConfig per training set, got "
                         f"{len(Xs)} sets, {len(model_sizes)} sizes lists, {len(configs)} configs")
    recipe = dataclasses.replace(configs[0], seed=0)
    for c, cfg in enumerate(configs):
        if dataclasses.replace(cfg, seed=0) != recipe:
            raise ValueError(f"configs[{c}] differs from configs[0] in more than the seed: "
                             "the configurations trained together share one recipe")
    dev = for_training(device)
    items, starts, data = [], [], []
    for c, (X, sizes, cfg) in enumerate(zip(Xs, model_sizes, configs)):
        validate.points(X, f"Xs[{c}]")
        N, d = X.shape
        sizes[:] = validate.model_sizes(sizes, N, f"model_sizes[{c}]")
        X = X.to(dev, dtype)
        data.append(X)
        starts.append(X[pmem_init_order(N, cfg.seed)[: max(sizes)].to(dev)])
        items += [Item(d, N * cfg.num_draws, M, c) for M in sizes]
    model = _ManyMixtures(items, starts, recipe.init_var)
    key = {"model": "isotropic-many",
           "runs": [checkpoint_key(X, s, cfg, None, dtype) for X, s, cfg in zip(data, model_sizes, configs)],
           "groups": [[tuple(it) for it in g] for g in model.layout]}
    S, C = len(items), len(Xs)
    run = fit_draws(model, ManyDraws(data, recipe.num_draws, [cfg.seed for cfg in configs]),
                    configs[0], key=key, desc=f"training {S} models of {C} configurations",
                    progress=progress, checkpoint=checkpoint, checkpoint_every=checkpoint_every)
    means, var = model.learned()
    results, lo = [], 0
    for sizes, cfg in zip(model_sizes, configs):
        hi = lo + len(sizes)
        results.append(TrainedMixtures(
            model_sizes=sizes, means=means[lo:hi], var=var[lo:hi],
            loss_history=run.loss_history[:, lo:hi], config=cfg, seconds=run.seconds,
            var_history=run.var_history[:, lo:hi]))
        lo = hi
    return results
