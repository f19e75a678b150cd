r"""Training coloured-template mixtures (the image-like model of Figures 5-6), all sizes at once.

The model of size :math:`M` is the posterior-mean denoiser of :mod:`gmmmem.templates` with
trainable templates :math:`T_1..T_M \in \mathbb{R}^{hw}`, colour means
:math:`\mu_1..\mu_M \in \mathbb{R}^3` and one shared log colour standard deviation
:math:`\log s_c`. It is trained with the same loss, time and noise draws, optimizer and
checkpoints as the isotropic model (:func:`gmmmem.train.fit`):

.. math:: \ell(\theta) = \frac{1}{N R}\sum_{i,r} \psi_{t_i}
          \big\|D_\theta(\alpha_{t_i} x_i + \sigma_{t_i}\varepsilon_{ir}) - x_i\big\|^2 .

**Start** ("partially memorizing"). Size :math:`M` starts at the first :math:`M` training images
of :func:`gmmmem.train.pmem_init_order`. A training image :math:`x = c \otimes T` is a rank-one
:math:`3 \times hw` matrix; its leading singular triple :math:`x = s\,u v^\top` gives the start
template :math:`\sqrt{hw}\,v` (root-mean-square pixel 1, sign chosen so its pixels sum to
:math:`\ge 0`) and colour mean :math:`s\,u/\sqrt{hw}`, so that :math:`\mu \otimes T = x`
exactly; the colour variance starts at ``config.init_var``. At variance 0 this is the
memorizing denoiser of those :math:`M` images. (The factorization :math:`c \otimes T` is
defined up to a scale moved between :math:`c` and :math:`T`; the RMS-1 templates keep every
parameter of order one, which suits Adam's step size.)

The gradient is written out by hand (:func:`_loss_and_grad`). On a CPU sizes are not padded
to the largest: here the work per component is a full image row, and padding ten sizes nearly
doubles a step. On a GPU they are grouped and padded, as :func:`gmmmem.train.train_gmm` does.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import validate
from .device import for_training, single_threaded
from .templates import lowrank_denoise
from .train import (CHUNK_FLOATS, GROUP_OVERHEAD, RowDraws, SizeGroups, TrainConfig,
                    checkpoint_key, fit, frozen_adam, padding_bias, pmem_init_order)


#: Below this :func:`step_work` a CPU step runs faster on one thread than on two. Measured by
#: ``benchmarks/train_templates.py`` on an idle 2-core machine: chapter 5's small model (work
#: 2.8e5) 1.2 ms per step on one thread against 2.1 ms on two; Figure 6's (work 7.4e7) 33 ms
#: against 23 ms. The threshold sits between the two, on a log scale.
SMALL_STEP_WORK = 2**22


def step_work(N: int, draws: int, pixels: int, sizes: Sequence[int]) -> int:
    """Multiply-adds of one matrix product of a step: rows x colour channels x pixels x
    components, summed over the model sizes."""
    return N * draws * 3 * pixels * sum(sizes)


def rank1_factors(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Templates (n, h, w) and colours (n, 3) with ``colors ⊗ templates`` the best rank-one
    approximation of each image (n, 3, h, w); exact for coloured templates.

    Templates have root-mean-square pixel 1 and non-negative pixel sum (fixing the scale and
    sign that :math:`c \otimes T` leaves free). An all-zero image has no template: ValueError.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (n, 3, h, w), got {tuple(images.shape)}")
    n, _, h, w = images.shape
    flat = images.flatten(2)
    if bool((flat.abs().amax((1, 2)) == 0).any()):
        raise ValueError("an all-zero image has no rank-one factorization")
    U, S, Vh = torch.linalg.svd(flat, full_matrices=False)
    u, s, v = U[:, :, 0], S[:, 0], Vh[:, 0, :]
    sign = torch.where(v.sum(-1) < 0, -1.0, 1.0).to(v.dtype)
    root = math.sqrt(h * w)
    templates = (sign[:, None] * v * root).reshape(n, h, w)
    colors = sign[:, None] * u * (s[:, None] / root)
    return templates, colors


def _loss_and_grad(
    x0: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    templates: torch.Tensor,
    colors: torch.Tensor,
    log_std: torch.Tensor,
    bias: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Loss of a group of S models on a chunk of rows and ``scale`` times its gradient,
    written by hand.

    Shapes: ``x0``, ``eps`` (n, 3, q); ``t`` (n, 1); ``templates`` (S, M, q), ``colors``
    (S, M, 3), ``log_std`` (S,) the log colour standard deviations, ``bias`` (S, 1, M): 0 for
    a model's components, -inf for the padding of a smaller model (its softmax weight is then
    0 and so is every gradient on it). Returns the loss of each model summed over rows (S,)
    and the gradients of ``scale`` x the loss with respect to ``templates``, ``colors`` and
    ``log_std``.

    Forward (notation of :func:`gmmmem.templates.posterior_mean`, per row and component):
    :math:`B = \langle x^{(i)}, T_j\rangle`, :math:`n_j = \|T_j\|`, :math:`p = B/n_j`,
    :math:`\delta = p - a n_j \mu_j`, :math:`\lambda = a^2 s_c^2 n_j^2`, :math:`V = \sigma^2 + \lambda`,
    logits :math:`\sum_i p_i^2/(2\sigma^2) - \sum_i\delta_i^2/(2V) - \tfrac32\log(1+\lambda/\sigma^2)`,
    :math:`w = \mathrm{softmax}`, :math:`g = a s_c^2 n_j / V`, coefficients
    :math:`C_{ij} = w_j(\mu_{ji} + g_j \delta_{ij})`, output :math:`\sum_j C_{ij} T_j`, loss
    :math:`\psi\|\text{output} - x_0\|^2`. The backward pass is the chain rule through each line in
    reverse; ``tests/test_train_templates.py`` checks it against autograd in float64. Four
    (batched) matrix products of (3n, q) by (q, M) do the work. ``benchmarks/train_templates.py``:
    on chapter 5's small model a step takes 1.2 ms against autograd's 3.4 ms (fewer operations);
    at Figure 6's size, where the products dominate, both take about 30 ms.
    """
    n, _, q = x0.shape
    S = templates.shape[0]
    a = torch.sqrt(1.0 - t * t)  # (n, 1)
    s2 = t * t
    a3 = a[:, :, None]  # (n, 1, 1), against (S, n, 3, M)
    x = (a3 * x0 + t[:, :, None] * eps).view(3 * n, q)
    var = torch.exp(2.0 * log_std)
    var3 = var[:, None, None]  # (S, 1, 1), against (S, n, M)
    sq = (templates * templates).sum(-1)  # (S, M)
    nrm = torch.sqrt(sq)
    nrm3 = nrm[:, None, :]  # (S, 1, M)
    B = torch.matmul(x, templates.transpose(1, 2)).view(S, n, 3, -1)  # (S, n, 3, M)
    p = B / nrm[:, None, None, :]
    nu = (nrm[:, :, None] * colors).transpose(1, 2)  # (S, 3, M)
    delta = p - a3 * nu[:, None]
    lam = (a * a) * var3 * sq[:, None, :]  # (S, n, M)
    V = s2 + lam
    dd = (delta * delta).sum(2)  # (S, n, M)
    logits = (p * p).sum(2) / (2.0 * s2) - dd / (2.0 * V) - 1.5 * torch.log1p(lam / s2) + bias
    w = torch.softmax(logits, dim=-1)
    g = a * var3 * nrm3 / V  # (S, n, M)
    col = colors.transpose(1, 2)[:, None] + g[:, :, None] * delta  # (S, n, 3, M)
    C = (col * w[:, :, None]).reshape(S, 3 * n, -1)
    err = torch.matmul(C, templates).view(S, n, 3, q) - x0
    psi = (a * a / s2)[:, :, None]  # (n, 1, 1)
    loss = (psi * err * err).sum((1, 2, 3))

    G = err.mul_(psi * (2.0 * scale)).view(S, 3 * n, q)  # d loss / d output
    dC = torch.matmul(G, templates.transpose(1, 2)).view(S, n, 3, -1)
    dcol = dC * w[:, :, None]
    dw = (dC * col).sum(2)
    dz = w * (dw - (w * dw).sum(-1, keepdim=True))  # softmax backward, (S, n, M)
    d_colors = dcol.sum(1).transpose(1, 2)  # (S, M, 3), from col = mu + g delta
    dg = (dcol * delta).sum(2)
    dz_V = dz / V
    d_delta = g[:, :, None] * dcol - dz_V[:, :, None] * delta
    dV = dz_V * dd / (2.0 * V) - dg * g / V
    d_lam = dV - 1.5 * dz_V
    d_var = (dg * a * nrm3 / V + d_lam * (a * a) * sq[:, None, :]).sum((1, 2))  # (S,)
    d_nrm = (dg * a * var3 / V).sum(1)  # (S, M)
    d_sq = (d_lam * (a * a) * var3).sum(1)
    d_nu = -(a3 * d_delta).sum(1)  # (S, 3, M)
    d_colors += (nrm[:, None, :] * d_nu).transpose(1, 2)
    d_nrm += (colors.transpose(1, 2) * d_nu).sum(1)
    dp = d_delta + (dz / s2)[:, :, None] * p
    d_nrm -= (dp * B).sum((1, 2)) / sq
    dB = (dp / nrm[:, None, None, :]).reshape(S, 3 * n, -1)
    d_templates = (torch.matmul(C.transpose(1, 2), G) + torch.matmul(dB.transpose(1, 2), x)
                   + templates * (2.0 * d_sq + d_nrm / nrm)[:, :, None])
    return loss, d_templates, d_colors, d_var * 2.0 * var


class _TemplateGroup:
    """Sizes of one group (:func:`gmmmem.train.size_groups`): templates (S, Mmax, q) and colour
    means (S, Mmax, 3) padded to the group's largest size (masked by ``bias``), one log colour
    standard deviation per size (S,). Rows are processed in chunks of a few MiB of
    (S, rows, 3, max(M, q)) work."""

    def __init__(self, templates: torch.Tensor, colors: torch.Tensor, sizes: list[int],
                 init_var: float) -> None:
        S, Mmax = len(sizes), max(sizes)
        self.sizes = list(sizes)
        self.templates = templates[:Mmax].expand(S, *templates[:Mmax].shape).clone()
        self.colors = colors[:Mmax].expand(S, *colors[:Mmax].shape).clone()
        self.log_std = torch.full((S,), 0.5 * math.log(init_var),
                                  dtype=templates.dtype, device=templates.device)
        self.bias = padding_bias(sizes, templates)
        self.params = [self.templates, self.colors, self.log_std]
        budget = CHUNK_FLOATS if templates.device.type == "cpu" else 64 * CHUNK_FLOATS
        self.chunk = max(1, budget // (3 * S * max(Mmax, templates.shape[1])))

    def loss_and_grad(self, x0, t, eps) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Mean eps-prediction loss (x0 units, weight psi_t) per size (S,) over the rows of
        flattened images (rows, 3q), and its gradients, in chunks of rows."""
        rows = x0.shape[0]
        x0, eps = x0.view(rows, 3, -1), eps.view(rows, 3, -1)
        loss = torch.zeros_like(self.log_std)
        grads = [torch.zeros_like(p) for p in self.params]
        for lo in range(0, rows, self.chunk):
            hi = min(rows, lo + self.chunk)
            part, *grad = _loss_and_grad(x0[lo:hi], t[lo:hi], eps[lo:hi], self.templates,
                                         self.colors, self.log_std, self.bias, 1.0 / rows)
            loss += part
            for total, g in zip(grads, grad):
                total += g
        return loss / rows, grads


class _TemplateMixtures(SizeGroups):
    """Trainable state of :func:`train_templates`: the sizes in groups, each a
    :class:`_TemplateGroup`. On a CPU every size is its own group (the products dominate a
    step: padding ten sizes to the largest nearly doubles it); on a GPU, where a step is bound
    by kernel launches, the sizes are grouped as :func:`gmmmem.train.train_gmm` groups them
    (``GROUP_OVERHEAD["cuda"]``)."""

    def __init__(self, templates: torch.Tensor, colors: torch.Tensor, sizes: list[int],
                 init_var: float, rows: int) -> None:
        overhead = 0.0 if templates.device.type == "cpu" else GROUP_OVERHEAD["cuda"] / rows
        super().__init__(sizes, overhead, lambda g: _TemplateGroup(templates, colors, g, init_var))

    def unpack(self, params: Sequence[torch.Tensor]) -> tuple[list, list, list[float]]:
        """Templates (M, q), colour means (M, 3) and colour variance of each size, in the order
        of ``sizes``, on the CPU, from ``params`` laid out as :attr:`params`."""
        templates, colors, var = [], [], []  # in increasing size
        for i, g in enumerate(self.groups):
            T, mu, log_std = (p.cpu() for p in params[3 * i : 3 * i + 3])
            templates += [T[k, :M].clone() for k, M in enumerate(g.sizes)]
            colors += [mu[k, :M].clone() for k, M in enumerate(g.sizes)]
            var += torch.exp(2 * log_std).tolist()
        return self._list_in_order(templates), self._list_in_order(colors), self._list_in_order(var)


@dataclass
class TrainedTemplates:
    """Result of :func:`train_templates`: one trained template mixture per model size."""

    model_sizes: list[int]
    templates: list[torch.Tensor]
    color_means: list[torch.Tensor]
    var: list[float]
    loss_history: np.ndarray
    config: TrainConfig
    seconds: float
    var_history: np.ndarray | None = None  # (steps, sizes): the colour variance after each step
    snapshots: dict[int, "TrainedTemplates"] = field(default_factory=dict)  # by step, if asked

    def denoiser(self, i: int) -> Callable[[torch.Tensor, float | torch.Tensor], torch.Tensor]:
        """The ``i``-th size's denoiser on flattened images: (n, 3hw), t -> (n, 3hw)."""
        T, mu, var = self.templates[i], self.color_means[i], self.var[i]
        shape = (3, *T.shape[1:])

        def denoise(x_t: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
            images = x_t.reshape(*x_t.shape[:-1], *shape)
            out = lowrank_denoise(images, t, T.to(x_t), mu.to(x_t), var)
            return out.reshape(x_t.shape)

        return denoise


def train_templates(
    images: torch.Tensor,
    model_sizes: Sequence[int],
    config: TrainConfig,
    device: str | torch.device | None = None,
    *,
    progress: bool | None = None,
    dtype: torch.dtype = torch.float32,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1000,
    snapshots: Sequence[int] = (),
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TrainedTemplates:
    """Train one coloured-template mixture per model size on ``images`` (N, 3, h, w).

    Start, loss and optimizer: see the module docstring; ``progress``, ``checkpoint`` and
    ``checkpoint_every`` work as in :func:`gmmmem.train.train_gmm` (an interrupted run resumes
    exactly). Returns templates (M, h, w), colour means (M, 3) and colour variance per size,
    and the loss history (steps, sizes), all on the CPU. ``snapshots`` (steps) keeps the
    models as they were after those steps in ``TrainedTemplates.snapshots``. On a CPU a small problem
    (:func:`step_work` below ``SMALL_STEP_WORK``) trains with one intra-op thread
    (:func:`gmmmem.device.single_threaded`). ``init`` = (templates (Mmax, h, w), colour means
    (Mmax, 3)), if given, replaces the partially memorizing start (as ``init_means`` of
    :func:`gmmmem.train.train_gmm`: size M starts at the first M, colour variance
    ``config.init_var``), for example to continue training a trained model.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor of shape (N, 3, h, w), got {got}")
    N, _, h, w = images.shape
    validate.points(images.flatten(1), "images")
    sizes = validate.model_sizes(model_sizes, N)
    dev = for_training(device)
    images = images.to(dev, dtype)
    if init is None:
        templates, colors = rank1_factors(images[pmem_init_order(N, config.seed)[: max(sizes)].to(dev)])
        start = None
    else:
        shapes = [tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for v in init]
        if shapes != [(max(sizes), h, w), (max(sizes), 3)]:
            raise ValueError(f"init must be templates ({max(sizes)}, {h}, {w}) and colour means "
                             f"({max(sizes)}, 3), got {shapes}")
        templates, colors = (validate.points(v.flatten(1), name).to(dev, dtype).reshape(v.shape)
                             for v, name in zip(init, ("init templates", "init colour means")))
        start = torch.cat([templates.flatten(), colors.flatten()])
    model = _TemplateMixtures(templates.flatten(1), colors, sizes, config.init_var,
                              rows=N * config.num_draws)
    S = len(sizes)
    X = images.flatten(1)
    small = dev.type == "cpu" and step_work(N, config.num_draws, h * w, sizes) < SMALL_STEP_WORK
    with single_threaded() if small else contextlib.nullcontext():
        run = fit(
            model, X, config, key=checkpoint_key(X, sizes, config, start, dtype, model="templates"),
            desc=f"training {S} template model{'s' if S > 1 else ''}", progress=progress,
            checkpoint=checkpoint, checkpoint_every=checkpoint_every, snapshots=snapshots,
        )

    def trained(params: list[torch.Tensor], **extra) -> TrainedTemplates:
        templates, colors, var = model.unpack(params)
        return TrainedTemplates(
            model_sizes=sizes,
            templates=[T.reshape(-1, h, w) for T in templates],
            color_means=colors,
            var=var,
            loss_history=run.loss_history[:extra.pop("steps", None)],
            config=config,
            seconds=run.seconds,
            **extra,
        )

    return trained(model.params, var_history=run.var_history,
                   snapshots={step: trained(p, steps=step) for step, p in run.snapshots.items()})


@dataclass
class VarianceDrift:
    """Where training would take the colour variance of a template mixture from where it stands
    (:func:`variance_drift`): the mean gradient of the training loss on the log colour standard
    deviation over the batches, and the mean change Adam makes to log s per unit learning rate
    once its moment estimates have settled (after the first ``burn_in`` batches), each with a
    standard error (of the batches; of means over blocks of ``DRIFT_BLOCK`` batches for Adam's
    changes, which its moving averages correlate)."""

    gradient: float
    gradient_stderr: float
    log_std_rate: float
    log_std_rate_stderr: float
    batches: int
    burn_in: int


#: Batches of Adam's changes per block, for the standard error of their mean (several times
#: the 1/(1 - 0.99) steps over which the update EMA correlates them).
DRIFT_BLOCK = 500


def variance_drift(images: torch.Tensor, templates: torch.Tensor, colors: torch.Tensor,
                   var: float, config: TrainConfig, *, batches: int, burn_in: int,
                   seed: int) -> VarianceDrift:
    """Whether a template mixture (templates (M, h, w), colour means (M, 3), colour variance)
    rests on its training loss over ``images`` (N, 3, h, w) in its colour variance, in float64:
    the gradient on log s over ``batches`` training batches drawn as :func:`fit` draws them
    (``config.num_draws`` noise draws per image, generator seeded with ``seed``) and the change
    :func:`fit`'s optimizer would make (:func:`gmmmem.train.frozen_adam`), the model held still.

    At rest both means lie within a few standard errors of zero; a model whose log s drifts at a
    rate many standard errors from zero is not at rest, whatever the learning rate. The rate
    holds where the model stands: as training moves the model, it changes."""
    images = images.to(torch.float64)
    N, _, h, w = images.shape
    if templates.ndim != 3 or templates.shape[1:] != (h, w) or colors.shape != (len(templates), 3):
        raise ValueError(f"need templates (M, {h}, {w}) and colours (M, 3), got "
                         f"{tuple(templates.shape)} and {tuple(colors.shape)}")
    if not var > 0:
        raise ValueError(f"the colour variance must be > 0, got {var}")
    validate.positive_int(burn_in, "burn_in")
    if batches < burn_in + 2 * DRIFT_BLOCK:
        raise ValueError(f"need batches >= burn_in + {2 * DRIFT_BLOCK} (two blocks of Adam's "
                         f"changes after the burn-in), got {batches} and {burn_in}")
    model = _TemplateMixtures(templates.to(torch.float64).flatten(1), colors.to(torch.float64),
                              [len(templates)], var, rows=N * config.num_draws)
    stream = frozen_adam(model, RowDraws(images.flatten(1), config.num_draws, seed), config, batches)
    grad, change = (np.array(v) for v in zip(*((float(g[2][0]), float(u[2][0])) for g, u in stream)))
    settled = change[burn_in:]
    blocks = settled[: len(settled) // DRIFT_BLOCK * DRIFT_BLOCK].reshape(-1, DRIFT_BLOCK).mean(1)
    return VarianceDrift(gradient=float(grad.mean()),
                         gradient_stderr=float(grad.std(ddof=1) / math.sqrt(batches)),
                         log_std_rate=float(blocks.mean()),
                         log_std_rate_stderr=float(blocks.std(ddof=1) / math.sqrt(len(blocks))),
                         batches=batches, burn_in=burn_in)
