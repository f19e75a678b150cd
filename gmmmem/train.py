r"""Training mixture denoisers by gradient descent, all model sizes at once.

The model of size :math:`M` is the uniform isotropic mixture denoiser of
:mod:`gmmmem.mixtures` with trainable means :math:`m_1..m_M` and one shared log standard
deviation :math:`\log s`. It is trained, as the paper's authors do, on the
:math:`\varepsilon`-prediction loss

.. math:: \ell(\theta) = \frac{1}{N R}\sum_{i=1}^N \sum_{r=1}^R
          \psi_{t_i}\,\big\|D_\theta(\alpha_{t_i} x_i + \sigma_{t_i}\varepsilon_{ir}) - x_i\big\|^2,

where every step draws for each training point :math:`x_i` one time :math:`t_i` uniformly
from the 26-point grid and :math:`R` fresh noise vectors (full batch). The optimizer is Adam
with a linear warm-up then linear decay of the learning rate and, optionally, an
exponential moving average of the updates (the authors' ``optax.ema(0.99)``).
The start is "partially memorizing": the means at :math:`M` distinct training points, the
variance :math:`10^{-6}`.

Every model size trains in one program. The sizes are packed into a few groups of similar
size (:func:`size_groups`); within a group the means are stacked and padded to the group's
largest size, the padded components masked out of the softmax, so little work is spent on
padding. Sizes share the times and noise of each step, and their parameters are disjoint, so
each size follows exactly the trajectory it would follow alone with the same seed.

The loop itself (:func:`fit`: time and noise draws, Adam with the update EMA, checkpoints) does
not know the model: the coloured-template mixtures (:mod:`gmmmem.train_templates`) and the MLP
(:mod:`gmmmem.networks`) train through it too, each supplying its parameters and its
``loss_and_grad`` (:class:`Trainable`); so does :mod:`gmmmem.train_many`, several
configurations at once, each with its own draws (:func:`fit_draws`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from tqdm import tqdm

from . import files, presets, validate
from .config import check_scale
from .device import for_training
from .diffusion import time_grid
from .mixtures import gmm_denoise

#: Floats in one chunk of the (sizes x noisy points x components) work on a CPU: chunks of a
#: few MiB bound the memory of a step (on a GPU the budget is 64 times larger).
CHUNK_FLOATS = 2**20

#: The fixed cost of one more group of sizes in a step (operator launches), in units of the
#: work of one (noisy point x component) pair: :func:`size_groups` splits a group only where
#: the padding it saves outweighs this. CPU: measured on one thread at d = 30, N = 100, 2 draws
#: (a group costs ~0.6 ms, the work of ~23,000 pairs). CUDA: not measured; kernel launches
#: cost more relative to the work there, so sizes are split far less.
GROUP_OVERHEAD = {"cpu": 20_000, "cuda": 500_000}

ADAM_BETA1 = 0.9
ADAM_EPS = 1e-8

#: Steps between checks that the loss and parameters are finite (and at every checkpoint).
DIVERGENCE_CHECK_EVERY = 200


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (shared by every model size of a sweep)."""

    steps: int
    peak_lr: float
    final_lr: float
    warmup_frac: float = 0.05
    num_draws: int = 100
    update_ema: float = 0.0
    init_var: float = 1e-6
    seed: int = 0
    adam_beta2: float = 0.999  # Adam's second-moment decay (the authors' 0.999)

    def __post_init__(self) -> None:
        for name in ("steps", "num_draws"):
            object.__setattr__(self, name, validate.integer(getattr(self, name), name))
        object.__setattr__(self, "seed", validate.seed(self.seed))
        if not self.peak_lr > 0 or not self.final_lr >= 0:
            raise ValueError(
                f"need peak_lr > 0 and final_lr >= 0, got {self.peak_lr}, {self.final_lr}"
            )
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ValueError(f"warmup_frac must lie in [0, 1), got {self.warmup_frac}")
        if not 0.0 <= self.update_ema < 1.0:
            raise ValueError(f"update_ema must lie in [0, 1), got {self.update_ema}")
        if not self.init_var > 0:
            raise ValueError(f"init_var must be > 0, got {self.init_var}")
        if not 0.0 < self.adam_beta2 < 1.0:
            raise ValueError(f"adam_beta2 must lie in (0, 1), got {self.adam_beta2}")

    @classmethod
    def preset(cls, scale: str, **overrides) -> "TrainConfig":
        """The settings of a scale (``ci``, ``default``, ``paper``), fields overridable."""
        return dataclasses.replace(PRESETS[check_scale(scale)], **overrides)

    def lr(self, step: int) -> float:
        """Learning rate at ``step`` (0-based): linear 0 -> peak, then linear peak -> final."""
        warmup = int(self.warmup_frac * self.steps)
        if step < warmup:
            return self.peak_lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, self.steps - 1 - warmup)
        return self.peak_lr + (self.final_lr - self.peak_lr) * frac


#: The training recipe of each scale (the values and why: :data:`gmmmem.presets.TRAIN`).
PRESETS = {scale: TrainConfig(**fields) for scale, fields in presets.TRAIN.items()}


class _Adam:
    """Adam (Kingma & Ba) on a list of tensors, optionally followed by an EMA of the updates.

    update u = lr * mhat / (sqrt(vhat) + eps); with ``ema`` = beta > 0 the applied update is
    the bias-corrected moving average of u with coefficient beta (``optax.ema``).
    """

    def __init__(self, params: list[torch.Tensor], ema: float, beta2: float = 0.999) -> None:
        self.params = params
        self.beta2 = beta2
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.u = [torch.zeros_like(p) for p in params] if ema > 0 else None
        self.ema = ema
        self.count = 0

    def state(self) -> dict:
        """The optimizer's state, for a checkpoint."""
        return {"m": self.m, "v": self.v, "u": self.u, "count": self.count}

    def load(self, state: dict) -> None:
        """Restore a state made by :meth:`state` (in place, keeping devices)."""
        for mine, saved in ((self.m, state["m"]), (self.v, state["v"]), (self.u, state["u"])):
            for a, b in zip(mine or [], saved or []):
                a.copy_(b)
        self.count = state["count"]

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], lr: float) -> None:
        # multi-tensor (foreach) kernels: one launch per operation for all tensors, not one per
        # tensor (a GPU step of many small tensors is bound by launches); the same arithmetic
        self.count += 1
        b1, b2 = ADAM_BETA1, self.beta2
        c1, c2 = 1 - b1**self.count, 1 - b2**self.count
        grads = list(grads)
        torch._foreach_mul_(self.m, b1)
        torch._foreach_add_(self.m, grads, alpha=1 - b1)
        torch._foreach_mul_(self.v, b2)
        torch._foreach_addcmul_(self.v, grads, grads, value=1 - b2)
        denom = torch._foreach_div(self.v, c2)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, ADAM_EPS)
        update = torch._foreach_div(self.m, c1)
        torch._foreach_div_(update, denom)
        torch._foreach_mul_(update, lr)
        if self.u is not None:
            torch._foreach_mul_(self.u, self.ema)
            torch._foreach_add_(self.u, update, alpha=1 - self.ema)
            update = torch._foreach_div(self.u, 1 - self.ema**self.count)
        torch._foreach_sub_(self.params, update)


@dataclass
class TrainedMixtures:
    """Result of :func:`train_gmm`: one trained mixture per model size."""

    model_sizes: list[int]
    means: list[torch.Tensor]
    var: list[float]
    loss_history: np.ndarray
    config: TrainConfig
    seconds: float
    var_history: np.ndarray | None = None  # (steps, sizes): the variance after each step

    def denoiser(self, i: int) -> Callable[[torch.Tensor, float | torch.Tensor], torch.Tensor]:
        """The trained denoiser of the ``i``-th model size, a callable (x_t, t) -> x0_hat."""
        means, var = self.means[i], self.var[i]
        return lambda x_t, t: gmm_denoise(x_t, t, means.to(x_t.device, x_t.dtype), var)


def pmem_init_order(N: int, seed: int) -> torch.Tensor:
    """The order in which training points become initial means: size M starts at the first M.

    The starts are nested (a larger model's start contains every smaller one's) and depend
    only on ``N`` and ``seed``, so a size trained alone or in a batch starts the same.
    """
    return torch.randperm(N, generator=torch.Generator().manual_seed(seed))


#: The starts of :func:`gmmmem.experiments.phase_transition`: ``pmem`` (the paper's, means on
#: training points) or ``random`` (:func:`random_start`, the control of chapter 7).
STARTS = ("pmem", "random")


def random_start(X: torch.Tensor, M: int, seed: int) -> torch.Tensor:
    """M random means (M, d) that are not training points: independent Gaussian draws with
    the training points' per-coordinate mean and standard deviation (a start as uninformed as
    a network's random weights, on the data's scale)."""
    g = torch.Generator().manual_seed(seed + 7919)  # not the data's, training's or sampler's stream
    noise = torch.randn(M, X.shape[1], generator=g, dtype=torch.float64).to(X.device, X.dtype)
    return X.mean(0) + X.std(0) * noise


def _loss_and_grad(
    x0: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    means: torch.Tensor,
    log_std: torch.Tensor,
    bias: torch.Tensor,
    scale: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Per-size eps-prediction loss of one chunk of rows, and ``scale`` times its gradient.

    Shapes: ``x0`` (n, d) clean points, ``t`` (n, 1) times, ``eps`` (n, d) noise, shared by
    every size, or (S, n, d), (S, n, 1), (S, n, d), each size its own; ``means`` (S, Mmax, d),
    ``log_std`` (S,), ``bias`` (S, 1, Mmax) with -inf on padded components; ``scale`` a number
    or one per size (S, 1, 1). Returns the loss summed over rows (S,), and the gradients of
    ``scale`` x its sum with respect to ``means`` and ``log_std``. A row at ``t`` = 1 with
    ``x0`` = ``eps`` = 0 adds exactly 0 to both (its weight :math:`\psi_1 = 0`), and so do
    coordinates where ``x0``, ``eps`` and the means are all 0: padding.

    The gradient is written out by hand (autograd keeps several more (S, n, Mmax) buffers;
    this runs 2-3x faster on a CPU). With the notation of
    :func:`gmmmem.mixtures.posterior_mean`, per row: numerators
    :math:`u_j = a\langle x, m_j\rangle - \tfrac{a^2}{2}\|m_j\|^2`, weights
    :math:`w = \mathrm{softmax}(u / v)`, :math:`\bar m = \sum_j w_j m_j`,
    output :math:`\bar m (1 - a r) + r x` with :math:`r = a s^2/v`, error :math:`e`, loss
    :math:`\psi\|e\|^2`. Back-propagating :math:`g = 2\psi e`:
    :math:`\partial/\partial w_j = (1 - a r)\langle g, m_j\rangle`,
    :math:`\partial/\partial z_j = w_j(\partial_{w_j} - \langle (1-ar) g, \bar m\rangle)`,
    and through :math:`u_j`, :math:`\bar m`, :math:`r` and :math:`v = a^2 s^2 + \sigma^2`
    to the means and the variance. ``tests/test_train.py`` checks it against autograd.
    """
    a = torch.sqrt(1.0 - t * t)
    s2 = t * t
    x = a * x0 + t * eps
    var = torch.exp(2.0 * log_std)[:, None, None]
    iv = 1.0 / (a * a * var + s2)  # 1 / v, (S, n, 1)
    num = torch.matmul(x, means.mT)  # (S, n, Mmax), becomes u
    num.mul_(a).addcmul_(a * a, (means * means).sum(-1).unsqueeze(-2), value=-0.5)
    w = torch.softmax(torch.addcmul(bias, num, iv), dim=-1)
    mbar = w @ means
    r = a * var * iv
    q = 1.0 - a * r
    err = mbar * q + r * x - x0
    psi = a * a / s2
    loss = (psi * (err * err).sum(-1, keepdim=True)).sum((-2, -1))

    g = err.mul_(psi * (2.0 * scale))  # d loss / d output
    g_r = (g * (x - a * mbar)).sum(-1, keepdim=True)
    g_mbar = g.mul_(q)
    g_z = torch.matmul(g_mbar, means.mT)
    g_z.sub_((g_mbar * mbar).sum(-1, keepdim=True)).mul_(w)  # softmax backward
    g_v = -(iv * iv) * ((g_z * num).sum(-1, keepdim=True) + g_r * a * var)
    g_var = (g_r * a * iv + a * a * g_v).sum((-2, -1))
    g_u = g_z.mul_(a * iv)  # a x d loss / d u
    g_means = g_u.mT @ x - means * (g_u.mT @ a) + w.mT @ g_mbar
    return loss, g_means, g_var * 2.0 * var.view(-1)


def size_groups(sizes: Sequence, overhead: float,
                shape: Callable[[object], tuple] | None = None) -> list[list]:
    """Split the increasing ``sizes`` into runs that minimize the padded work of a step.

    A group padded to its largest size costs ``len(group) * max(group) + overhead``
    (components per noisy point); dynamic programming over the split points finds the cheapest
    split (one group when ``overhead`` is large, one size a group when it is 0). With ``shape``
    the items are anything sortable and ``shape(item)`` gives its extents (e.g. dimension,
    rows, components): a group is padded to the largest of each, and costs ``len(group)``
    times their product.
    """
    sizes = list(sizes)
    if sizes != sorted(sizes):
        raise ValueError(f"sizes must be increasing, got {sizes}")
    extents = [(M,) for M in sizes] if shape is None else [tuple(shape(M)) for M in sizes]
    best, cut = [0.0] + [math.inf] * len(sizes), [0] * (len(sizes) + 1)
    for j in range(1, len(sizes) + 1):
        widest = extents[j - 1]
        for i in range(j - 1, -1, -1):  # the run i..j-1, its padded extents grown leftwards
            widest = tuple(map(max, widest, extents[i]))
            cost = best[i] + (j - i) * math.prod(widest) + overhead
            if cost <= best[j]:  # ties: the smallest i, as a left-to-right scan keeps
                best[j], cut[j] = cost, i
    groups, j = [], len(sizes)
    while j > 0:
        groups.append(sizes[cut[j]:j])
        j = cut[j]
    return groups[::-1]


def padding_bias(sizes: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """(S, 1, Mmax), added to the logits of a group padded to its largest size: 0 on each
    size's own components, -inf on its padding (softmax weight 0, so no gradient either)."""
    bias = torch.zeros(len(sizes), 1, max(sizes), dtype=like.dtype, device=like.device)
    for k, M in enumerate(sizes):
        bias[k, 0, M:] = -math.inf
    return bias


class SizeGroups:
    """Model sizes trained side by side in groups (:func:`size_groups` with ``overhead`` and
    ``shape``), each group padded to its largest size and made by ``make_group(sizes)``: an
    object with ``params``, ``log_std`` (S,) and ``loss_and_grad(x0, t, eps)`` returning the
    mean loss of its sizes and their gradients. Losses and variances come back in the order of
    ``sizes``."""

    def __init__(self, sizes: Sequence, overhead: float, make_group: Callable,
                 shape: Callable[[object], tuple] | None = None) -> None:
        self.order = sorted(range(len(sizes)), key=lambda k: sizes[k])
        self.layout = size_groups([sizes[k] for k in self.order], overhead, shape)
        self.groups = [make_group(g) for g in self.layout]
        self.params = [p for g in self.groups for p in g.params]
        self.num_models = len(sizes)

    def _in_order(self, values: torch.Tensor) -> torch.Tensor:
        """Values of every size, given in increasing size, in the order of ``sizes``."""
        out = torch.empty_like(values)
        out[self.order] = values
        return out

    def _list_in_order(self, values: list) -> list:
        """The same for a list."""
        inverse = sorted(range(self.num_models), key=lambda k: self.order[k])
        return [values[k] for k in inverse]

    def loss_and_grad(self, x0, t, eps) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Mean loss per size (S,) in the order of ``sizes``, and the gradients of every group."""
        losses, grads = [], []
        for g in self.groups:
            loss, grad = g.loss_and_grad(x0, t, eps)
            losses.append(loss)
            grads.extend(grad)
        return self._in_order(torch.cat(losses)), grads

    def variance(self) -> torch.Tensor:
        """The learned variance of each size (S,), in the order of ``sizes``."""
        return self._in_order(torch.cat([torch.exp(2 * g.log_std) for g in self.groups]))


class _IsotropicMixtures:
    """One group of sizes of :func:`train_gmm`: means (S, Mmax, d) padded to the group's
    largest size (masked by ``bias``) and one log standard deviation per size (S,)."""

    def __init__(self, start: torch.Tensor, sizes: list[int], init_var: float) -> None:
        S, Mmax, d = len(sizes), max(sizes), start.shape[1]
        self.means = start[:Mmax].expand(S, Mmax, d).clone()
        self.log_std = torch.full((S,), 0.5 * math.log(init_var), device=start.device,
                                  dtype=start.dtype)
        self.bias = padding_bias(sizes, start)
        budget = CHUNK_FLOATS if start.device.type == "cpu" else 64 * CHUNK_FLOATS
        self.chunk = max(1, budget // (S * Mmax))
        self.params = [self.means, self.log_std]
        self.sizes = list(sizes)

    def loss_and_grad(self, x0, t, eps) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Mean loss per size (S,) over the rows and its gradients, in chunks of rows."""
        rows = x0.shape[0]
        loss = torch.zeros_like(self.log_std)
        grads = [torch.zeros_like(self.means), torch.zeros_like(self.log_std)]
        for lo in range(0, rows, self.chunk):
            hi = min(rows, lo + self.chunk)
            part, gm, gs = _loss_and_grad(x0[lo:hi], t[lo:hi], eps[lo:hi], self.means,
                                          self.log_std, self.bias, 1.0 / rows)
            loss += part
            grads[0] += gm
            grads[1] += gs
        return loss / rows, grads


class _PackedMixtures(SizeGroups):
    """The trainable state of :func:`train_gmm`: the sizes in groups, each an
    :class:`_IsotropicMixtures` (the split weighs padding against ``GROUP_OVERHEAD``)."""

    def __init__(self, start: torch.Tensor, sizes: list[int], init_var: float, rows: int) -> None:
        overhead = GROUP_OVERHEAD["cpu" if start.device.type == "cpu" else "cuda"] / rows
        super().__init__(sizes, overhead, lambda g: _IsotropicMixtures(start, g, init_var))

    def learned(self) -> tuple[list[torch.Tensor], list[float]]:
        """The means (M, d) and the variance of each size, in the order of ``sizes``, on the CPU."""
        means = []  # in increasing size
        for g in self.groups:
            m = g.means.cpu()
            means += [m[k, :M].clone() for k, M in enumerate(g.sizes)]
        return self._list_in_order(means), self.variance().cpu().tolist()


class RowDraws:
    """The noisy rows of each step of :func:`fit_draws` on the training points ``X`` (N, D):
    every point repeated ``num_draws`` times, one time per point drawn uniformly from the
    26-point grid and a noise vector per row, from a generator seeded with ``seed`` on X's
    device."""

    def __init__(self, X: torch.Tensor, num_draws: int, seed: int) -> None:
        self.device, self.dtype = X.device, X.dtype
        self.gen = torch.Generator(device=X.device).manual_seed(seed)
        self.grid = time_grid(dtype=X.dtype, device=X.device)
        self.x0 = X.repeat_interleave(num_draws, dim=0)
        self.num_points, self.num_draws = X.shape[0], num_draws

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step's clean points (N R, D), times (N R, 1) and noise (N R, D)."""
        pick = torch.randint(len(self.grid), (self.num_points,), generator=self.gen, device=self.device)
        t_rows = self.grid[pick].repeat_interleave(self.num_draws)[:, None]
        eps = torch.randn(self.x0.shape, generator=self.gen, device=self.device, dtype=self.dtype)
        return self.x0, t_rows, eps

    def state(self) -> torch.Tensor:
        """The generator's state, for a checkpoint."""
        return self.gen.get_state()

    def load(self, state: torch.Tensor) -> None:
        """Restore a state made by :meth:`state`."""
        self.gen.set_state(state)


class Draws(Protocol):
    """What :func:`fit_draws` draws each step from: a call giving the rows (clean points,
    times, noise) handed to ``loss_and_grad``, ``state()`` / ``load(state)`` for checkpoints,
    and the ``device`` and ``dtype`` of the rows."""

    device: torch.device
    dtype: torch.dtype

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def state(self) -> object: ...

    def load(self, state: object) -> None: ...


class Trainable(Protocol):
    """What :func:`fit` trains: a list of parameter tensors (updated in place) and the
    eps-prediction loss of every model size with its gradients for a batch of rows
    (clean points ``x0`` (n, D), times ``t`` (n, 1), noise ``eps`` (n, D)). A model with a
    learned variance may also define ``variance()`` (num_models,): :func:`fit` records it
    after every step."""

    params: list[torch.Tensor]
    num_models: int

    def loss_and_grad(
        self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]: ...


@dataclass
class FitResult:
    """What :func:`fit` returns: per step and model, the loss and (where the model has one) the
    learned variance after the step; and the seconds spent training."""

    loss_history: np.ndarray
    var_history: np.ndarray | None
    seconds: float
    snapshots: dict[int, list[torch.Tensor]] = dataclasses.field(default_factory=dict)


def fit(
    model: Trainable,
    X: torch.Tensor,
    config: TrainConfig,
    *,
    key: dict,
    desc: str,
    progress: bool | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1000,
    snapshots: Sequence[int] = (),
) -> FitResult:
    """Full-batch training of ``model`` on the flattened training points ``X`` (N, D).

    Every step draws for each training point one time uniformly from the 26-point grid and
    ``config.num_draws`` noise vectors (generator seeded with ``config.seed``, on X's device:
    :class:`RowDraws`), then takes one Adam (+ update EMA) step with the learning rate
    ``config.lr(step)`` (:func:`fit_draws`). ``key`` identifies the run for checkpoints (data,
    sizes, settings, start, dtype): see :func:`train_gmm`. Returns the loss (and variance)
    history (steps, sizes) and the seconds. ``snapshots``: steps (1..steps) after which a copy
    of the parameters is kept (on the CPU, in ``FitResult.snapshots``, and in the checkpoint),
    to measure the model during training.
    """
    return fit_draws(model, RowDraws(X, config.num_draws, config.seed), config, key=key,
                     desc=desc, progress=progress, checkpoint=checkpoint,
                     checkpoint_every=checkpoint_every, snapshots=snapshots)


def fit_draws(
    model: Trainable,
    draws: Draws,
    config: TrainConfig,
    *,
    key: dict,
    desc: str,
    progress: bool | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1000,
    snapshots: Sequence[int] = (),
) -> FitResult:
    """:func:`fit` with the rows of each step from ``draws`` (:class:`RowDraws` for one
    training set; :mod:`gmmmem.train_many` draws for several): ``config.steps`` Adam (+ update
    EMA) steps with the learning rate ``config.lr(step)``, checkpoints as :func:`fit`'s."""
    validate.positive_int(checkpoint_every, "checkpoint_every")
    wanted = sorted({validate.positive_int(s, "snapshot step") for s in snapshots})
    if wanted and wanted[-1] > config.steps:
        raise ValueError(f"snapshot steps must lie in 1..{config.steps}, got {wanted[-1]}")
    dev = draws.device
    opt = _Adam(model.params, config.update_ema, config.adam_beta2)
    variance = getattr(model, "variance", None)
    # rows: the loss of each model, then (if the model has one) its variance after the step
    history = torch.empty(config.steps, (2 if variance else 1) * model.num_models, device=dev,
                          dtype=draws.dtype)

    first, kept = 0, {}
    if checkpoint is not None and Path(checkpoint).exists():
        first, done, kept = _resume(checkpoint, key, model.params, opt, draws)
        if first:
            history[:first] = done
        lost = [s for s in wanted if s <= first and s not in kept]
        if lost:
            raise ValueError(f"checkpoint {checkpoint} is past snapshot steps {lost} it did not "
                             "keep; delete it or ask for later snapshots")
    checked = first

    def save(step: int) -> None:
        nonlocal checked
        checked = _check_finite(history, model.params, checked, step, config, checkpoint)
        if checkpoint is not None:
            state = {"key": key, "step": step, "params": model.params, "adam": opt.state(),
                     "generator": draws.state(), "history": history[:step], "snapshots": kept}
            _save_atomic(state, checkpoint)

    t_start = time.perf_counter()
    bar = tqdm(range(first, config.steps), initial=first, total=config.steps, desc=desc,
               disable=None if progress is None else not progress, leave=False, mininterval=1.0)
    for step in bar:
        loss, grads = model.loss_and_grad(*draws())
        history[step, : model.num_models] = loss
        opt.step(grads, config.lr(step))
        if variance:
            history[step, model.num_models :] = variance()
        if step + 1 in wanted:
            kept[step + 1] = [p.detach().cpu().clone() for p in model.params]
        if (step + 1) % checkpoint_every == 0:
            save(step + 1)
        elif (step + 1) % DIVERGENCE_CHECK_EVERY == 0:
            checked = _check_finite(history, model.params, checked, step + 1, config, checkpoint)
    save(config.steps)
    seconds = time.perf_counter() - t_start
    history = history.cpu().numpy()
    S = model.num_models
    return FitResult(history[:, :S], history[:, S:] if variance else None, seconds,
                     {s: kept[s] for s in wanted})


def frozen_adam(model: Trainable, draws: Draws, config: TrainConfig, batches: int
                ) -> Iterator[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """Where training would take ``model`` from where it stands: for each of ``batches``
    training batches from ``draws``, the gradients of its parameters and the change that
    :func:`fit`'s optimizer (Adam with ``config``'s second-moment decay and update EMA, state
    starting at zero) would make to them at learning rate 1; the model itself is not moved."""
    validate.positive_int(batches, "batches")
    shadow = [p.detach().clone() for p in model.params]
    opt = _Adam(shadow, config.update_ema, config.adam_beta2)
    for _ in range(batches):
        _, grads = model.loss_and_grad(*draws())
        before = [p.clone() for p in shadow]
        opt.step(grads, 1.0)
        yield grads, [after - b for after, b in zip(shadow, before)]


def checkpoint_key(X, sizes, config, init, dtype, model: str = "isotropic") -> dict:
    """What a checkpoint must match to be resumed: model, data, sizes, settings, start, dtype."""
    digest = lambda t: hashlib.sha256(t.detach().cpu().double().numpy().tobytes()).hexdigest()  # noqa: E731
    return {"model": model, "data": digest(X), "sizes": list(sizes),
            "config": dataclasses.asdict(config),
            "init": None if init is None else digest(init), "dtype": str(dtype)}


def _save_atomic(state: dict, path: str | Path) -> None:
    """Write a checkpoint atomically and durably."""
    files.save_checkpoint(state, path)


class DivergenceError(files.RunError):
    """Training produced a non-finite loss or parameter."""


def _check_finite(history, params, checked: int, step: int, config: TrainConfig,
                  checkpoint: str | Path | None) -> int:
    """``step`` if the losses of steps ``checked..step`` and the parameters are finite; else
    remove ``checkpoint`` (resuming would diverge again) and raise :class:`DivergenceError`."""
    losses = history[checked:step]
    if bool(torch.isfinite(losses).all()) and all(bool(torch.isfinite(p).all()) for p in params):
        return step
    bad = (~torch.isfinite(losses)).flatten(1).any(1).nonzero()
    first = checked + int(bad[0]) if len(bad) else step - 1
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)
    raise DivergenceError(
        f"training diverged: non-finite {'loss' if len(bad) else 'parameters'} at step "
        f"{first + 1} of {config.steps} (learning rate there {config.lr(first):.3g}, peak_lr "
        f"{config.peak_lr:g}); lower the learning rate (peak_lr, --peak-lr)"
        + ("; no checkpoint kept" if checkpoint is not None else ""))


#: Keys every training checkpoint holds.
CHECKPOINT_KEYS = ("key", "step", "params", "adam", "generator", "history")


def _resume(path, key, params, opt, draws) -> tuple[int, torch.Tensor | None, dict]:
    """Load a checkpoint into the parameters, optimizer and draws' generator(s) in place; returns the
    step to start from, the loss history so far and the parameter snapshots kept so far (0,
    None and none for a damaged checkpoint, which is moved aside:
    :func:`gmmmem.files.load_checkpoint`)."""
    state = files.load_checkpoint(path, params[0].device, CHECKPOINT_KEYS)
    if state is None:
        return 0, None, {}
    if state.get("key") != key:
        raise ValueError(
            f"checkpoint {path} was made with other data, model sizes or settings; "
            "delete it or pass another checkpoint path"
        )
    for p, saved in zip(params, state["params"]):
        p.copy_(saved)
    opt.load(state["adam"])
    draws.load(state["generator"])
    kept = {s: [p.cpu() for p in ps] for s, ps in state.get("snapshots", {}).items()}
    return state["step"], state["history"], kept


def train_gmm(
    X: torch.Tensor,
    model_sizes: Sequence[int],
    config: TrainConfig,
    device: str | torch.device | None = None,
    *,
    init_means: torch.Tensor | None = None,
    progress: bool | None = None,
    dtype: torch.dtype = torch.float32,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1000,
) -> TrainedMixtures:
    """Train one mixture denoiser per model size on the training points ``X`` (N, d).

    ``init_means`` (Mmax, d), if given, replaces the partially memorizing start (size M starts
    at its first M rows, variance ``config.init_var``). ``progress`` shows a tqdm bar (None:
    only on a terminal). Returns the learned means and variance of each size and the loss
    history (steps, sizes), all on the CPU.

    With ``checkpoint`` (a file path) the full training state (parameters, optimizer, random
    generator, loss history) is saved there atomically every ``checkpoint_every`` steps and
    at the end; a run started with an existing checkpoint resumes from it, so an interrupted
    run loses at most ``checkpoint_every`` steps and ends exactly as an uninterrupted one. A
    checkpoint made with other data, sizes or settings is refused.
    """
    validate.points(X, "X")
    N, d = X.shape
    sizes = validate.model_sizes(model_sizes, N)
    dev = for_training(device)
    Mmax = max(sizes)
    X = X.to(dev, dtype)
    if init_means is None:
        start = X[pmem_init_order(N, config.seed)[:Mmax].to(dev)]
    else:
        start = validate.points(init_means, "init_means", dim=d).to(dev, dtype)
        if start.shape[0] < Mmax:
            raise ValueError(f"init_means has {start.shape[0]} rows, need {Mmax}")
    model = _PackedMixtures(start, sizes, config.init_var, N * config.num_draws)
    S = len(sizes)
    key = {**checkpoint_key(X, sizes, config, init_means, dtype), "groups": model.layout}
    run = fit(
        model, X, config, key=key,
        desc=f"training {S} model size{'s' if S > 1 else ''}", progress=progress,
        checkpoint=checkpoint, checkpoint_every=checkpoint_every,
    )
    means, var = model.learned()
    return TrainedMixtures(
        model_sizes=sizes,
        means=means,
        var=var,
        loss_history=run.loss_history,
        config=config,
        seconds=run.seconds,
        var_history=run.var_history,
    )
