r"""A standard network as denoiser: a time-conditioned MLP, trained like the mixtures.

**Network.** The input is the noisy point :math:`x_t \in \mathbb{R}^d` next to a sinusoidal
embedding of the time (:func:`time_embedding`, ``emb_dim`` numbers); ``depth`` hidden layers
of width :math:`W` with the SiLU activation :math:`u \mapsto u/(1 + e^{-u})`; a linear output
layer of :math:`d` numbers, the predicted noise :math:`\hat\varepsilon(x_t, t)`. Its
parameter count is (:func:`num_params`)

.. math:: P(W) = (d + E) W + W + (\mathrm{depth} - 1)(W^2 + W) + W d + d ,

:math:`E` the embedding size. Weights and biases start as PyTorch's linear layers do,
uniform on :math:`[-1/\sqrt{\text{fan-in}}, 1/\sqrt{\text{fan-in}}]`.

**Denoiser** (:math:`\varepsilon`-prediction). The clean-point estimate is

.. math:: \hat x_0(x_t, t) = \big(x_t - \sigma_t\,\hat\varepsilon(x_t, t)\big) / \alpha_t .

**Loss.** It is trained by :func:`gmmmem.train.fit`, on exactly the loss, time and noise draws,
optimizer and schedule of the mixture denoisers. Since
:math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon`,
:math:`\hat x_0 - x_0 = \sigma_t(\varepsilon - \hat\varepsilon)/\alpha_t`, so with
:math:`\psi_t = \alpha_t^2/\sigma_t^2`

.. math:: \psi_t\,\|\hat x_0 - x_0\|^2 = \|\hat\varepsilon - \varepsilon\|^2 :

the mixtures' weighted clean-point loss *is* the plain noise-prediction loss of the network,
and the two loss histories are in the same units.

The width sweep that trains one per width and measures it is :mod:`gmmmem.width_sweep`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import validate
from .device import for_training
from .diffusion import alpha, sigma
from .train import TrainConfig, checkpoint_key, fit

#: Size of the time embedding (sines and cosines of EMB_DIM / 2 frequencies).
EMB_DIM = 32

#: Hidden layers of the network.
DEPTH = 2

#: Angular frequencies of the time embedding span [OMEGA_MIN, OMEGA_MAX] geometrically
#: (radians per unit of time, t in (0, 1)).
OMEGA_MIN, OMEGA_MAX = 1.0, 1000.0


def time_embedding(t: float | torch.Tensor, dim: int = EMB_DIM, *, n: int | None = None,
                   dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
    r"""Sinusoidal embedding of times: :math:`[\sin(\omega_k t), \cos(\omega_k t)]_{k}`, (n, dim).

    The ``dim / 2`` angular frequencies :math:`\omega_k` run geometrically from
    ``OMEGA_MIN`` = 1 to ``OMEGA_MAX`` = 1000, so the embedding resolves the grid's spacing
    (0.04) and the smallest times alike. With :math:`\omega_0 = 1` and :math:`t \in (0, 1)`
    the first pair is the point of angle :math:`t` on the unit circle: the embedding is
    one-to-one. ``t``: a float (repeated ``n`` times), or a tensor (n,) or (n, 1); ``dtype``
    and ``device`` default to the tensor's (else torch's defaults).
    """
    if int(dim) != dim or dim < 2 or dim % 2:
        raise ValueError(f"dim must be an even integer >= 2, got {dim}")
    if isinstance(t, torch.Tensor):
        if t.ndim == 2 and t.shape[1] == 1:
            t = t[:, 0]
        if t.ndim != 1:
            raise ValueError(
                f"t must be a float or a tensor of shape (n,) or (n, 1), got {tuple(t.shape)}")
        t = t.to(dtype or t.dtype)
    else:
        n = validate.positive_int(1 if n is None else n, "n")
        t = torch.full((n,), float(t), dtype=dtype, device=device)
    validate.times(t, "t")
    half = dim // 2
    omega = OMEGA_MIN * (OMEGA_MAX / OMEGA_MIN) ** torch.linspace(0, 1, half, dtype=t.dtype,
                                                                  device=t.device)
    phase = t[:, None] * omega
    return torch.cat([phase.sin(), phase.cos()], dim=-1)


def num_params(d: int, width: int, depth: int = DEPTH, emb_dim: int = EMB_DIM) -> int:
    """Number of parameters of the MLP (weights and biases), the formula of the module docstring."""
    for value, name in ((d, "d"), (width, "width"), (depth, "depth"), (emb_dim, "emb_dim")):
        validate.positive_int(value, name)
    return (d + emb_dim) * width + width + (depth - 1) * (width * width + width) + width * d + d


def _layer_shapes(d: int, width: int, depth: int, emb_dim: int) -> list[tuple[int, int]]:
    """(fan_out, fan_in) of each linear layer, input to output."""
    return [(width, d + emb_dim)] + [(width, width)] * (depth - 1) + [(d, width)]


def init_params(d: int, width: int, depth: int = DEPTH, emb_dim: int = EMB_DIM, *,
                generator: torch.Generator, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> list[torch.Tensor]:
    """Initial parameters [W_1, b_1, ..., W_out, b_out] (W: (fan_out, fan_in)), each entry
    uniform on [-1/sqrt(fan_in), 1/sqrt(fan_in)], drawn on the CPU from ``generator``."""
    num_params(d, width, depth, emb_dim)  # validates
    params = []
    for fan_out, fan_in in _layer_shapes(d, width, depth, emb_dim):
        bound = 1.0 / math.sqrt(fan_in)
        for shape in ((fan_out, fan_in), (fan_out,)):
            u = torch.rand(shape, generator=generator, dtype=torch.float64)
            params.append(((2 * u - 1) * bound).to(device=device, dtype=dtype))
    return params


def predict_noise(params: Sequence[torch.Tensor], x_t: torch.Tensor,
                  t: float | torch.Tensor) -> torch.Tensor:
    r"""The network's noise prediction :math:`\hat\varepsilon(x_t, t)`, shape of ``x_t`` (..., d).

    ``params`` as made by :func:`init_params` (the embedding size is read from the first
    layer's fan-in); ``t`` a float or a tensor of shape (...) or (..., 1), one time per point.
    """
    lead, d = x_t.shape[:-1], x_t.shape[-1]
    x = x_t.reshape(-1, d)
    if isinstance(t, torch.Tensor):
        if t.shape not in (lead, (*lead, 1)):
            raise ValueError(f"t must be a float or have shape {tuple(lead)} or "
                             f"{(*lead, 1)}, got {tuple(t.shape)}")
        t = t.reshape(-1)
    emb_dim = params[0].shape[1] - d
    emb = time_embedding(t, emb_dim, n=x.shape[0], dtype=x.dtype, device=x.device)
    h = torch.cat([x, emb], -1)
    for k in range(0, len(params) - 2, 2):
        h = torch.nn.functional.silu(torch.addmm(params[k + 1], h, params[k].T))
    return torch.addmm(params[-1], h, params[-2].T).reshape(x_t.shape)


def mlp_denoise(params: Sequence[torch.Tensor], x_t: torch.Tensor,
                t: float | torch.Tensor) -> torch.Tensor:
    r""":math:`\hat x_0 = (x_t - \sigma_t\hat\varepsilon)/\alpha_t`, shape of ``x_t``; ``t`` as in
    :func:`predict_noise`."""
    eps = predict_noise(params, x_t, t)
    if isinstance(t, torch.Tensor):
        t = t.to(x_t.dtype).reshape(*x_t.shape[:-1], 1)
    return (x_t - sigma(t) * eps) / alpha(t)


def _init_seed(seed: int, width: int, depth: int, emb_dim: int) -> int:
    """Seed of one network's initialization: depends on the run's seed and its shape only,
    so a width trained alone or next to others starts the same."""
    return int(np.random.SeedSequence([seed, width, depth, emb_dim]).generate_state(1)[0])


class MLPDenoisers:
    """The trainable state of :func:`train_mlp`: one network per width, parameters of all of
    them in one flat list (network ``k`` owns ``params[2 (depth + 1) k : 2 (depth + 1)(k + 1)]``).

    The gradient comes from autograd on detached views of the parameters, so :func:`fit`
    updates the stored tensors in place and checkpoints them like plain tensors.
    """

    def __init__(self, d: int, widths: Sequence[int], depth: int, emb_dim: int, seed: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        seeds = [_init_seed(seed, W, depth, emb_dim) for W in widths]
        self.nets = [
            init_params(d, W, depth, emb_dim, dtype=dtype, device=device,
                        generator=torch.Generator().manual_seed(s))
            for W, s in zip(widths, seeds)
        ]
        self.params = [p for net in self.nets for p in net]
        self.num_models = len(self.nets)

    def loss_and_grad(self, x0, t, eps) -> tuple[torch.Tensor, list[torch.Tensor]]:
        r"""Mean noise-prediction loss :math:`\|\hat\varepsilon - \varepsilon\|^2` per network
        (S,) over the rows, and its gradients (the order of ``params``)."""
        x_t = torch.sqrt(1.0 - t * t) * x0 + t * eps
        losses, grads = [], []
        for net in self.nets:
            leaves = [p.detach().requires_grad_() for p in net]
            loss = ((predict_noise(leaves, x_t, t) - eps) ** 2).sum(-1).mean()
            grads.extend(torch.autograd.grad(loss, leaves))
            losses.append(loss.detach())
        return torch.stack(losses), grads


@dataclass
class TrainedMLPs:
    """Result of :func:`train_mlp`: one trained network per width (parameters on the CPU)."""

    widths: list[int]
    depth: int
    emb_dim: int
    params: list[list[torch.Tensor]]
    num_params: list[int]
    loss_history: np.ndarray
    config: TrainConfig
    seconds: float
    snapshots: dict[int, "TrainedMLPs"] = field(default_factory=dict)  # by step, if asked

    def denoiser(self, i: int) -> Callable[[torch.Tensor, float | torch.Tensor], torch.Tensor]:
        """The ``i``-th width's denoiser (x_t, t) -> x0_hat, run in x_t's dtype and device."""
        params = self.params[i]

        def denoise(x_t: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return mlp_denoise([p.to(x_t) for p in params], x_t, t)

        return denoise


def _widths(widths: Sequence[int]) -> list[int]:
    """Strictly increasing positive widths."""
    ws = [validate.positive_int(W, "width") for W in widths]
    if not ws or sorted(set(ws)) != ws:
        raise ValueError(
            f"widths must be a non-empty, strictly increasing list, got {list(widths)}")
    return ws


def train_mlp(
    X: torch.Tensor,
    widths: Sequence[int],
    config: TrainConfig,
    device: str | torch.device | None = None,
    *,
    depth: int = DEPTH,
    emb_dim: int = EMB_DIM,
    progress: bool | None = None,
    dtype: torch.dtype = torch.float32,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1000,
    snapshots: Sequence[int] = (),
) -> TrainedMLPs:
    """Train one MLP denoiser per width on the training points ``X`` (N, d).

    Loss, time and noise draws, optimizer, learning-rate schedule, update EMA and seed are
    those of ``config``, exactly as for the mixtures (:func:`gmmmem.train.fit`;
    ``config.init_var`` plays no part). Each network starts from its own seed
    (:func:`_init_seed`) and, the networks sharing only the times and noise of each step,
    follows the trajectory it would follow if trained alone. ``progress``, ``checkpoint``
    and ``checkpoint_every`` work as in :func:`gmmmem.train.train_gmm`; ``snapshots`` (steps)
    keeps the networks as they were after those steps in ``TrainedMLPs.snapshots``.
    """
    validate.points(X, "X")
    ws = _widths(widths)
    num_params(X.shape[1], ws[0], depth, emb_dim)  # validates depth and emb_dim
    dev = for_training(device)
    X = X.to(dev, dtype)
    model = MLPDenoisers(X.shape[1], ws, depth, emb_dim, config.seed, dtype, dev)
    run = fit(
        model, X, config,
        key=checkpoint_key(X, ws, config, None, dtype, model=f"mlp-depth{depth}-emb{emb_dim}"),
        desc=f"training {len(ws)} MLP{'s' if len(ws) > 1 else ''}", progress=progress,
        checkpoint=checkpoint, checkpoint_every=checkpoint_every, snapshots=snapshots,
    )

    def trained(flat: Sequence[torch.Tensor], steps: int | None = None, **extra) -> TrainedMLPs:
        nets, i = [], 0  # flat: the parameters of every network in turn, as model.params
        for net in model.nets:
            nets.append([p.detach().cpu().clone() for p in flat[i : i + len(net)]])
            i += len(net)
        return TrainedMLPs(
            widths=ws, depth=depth, emb_dim=emb_dim, params=nets,
            num_params=[num_params(X.shape[1], W, depth, emb_dim) for W in ws],
            loss_history=run.loss_history[:steps], config=config, seconds=run.seconds, **extra,
        )

    return trained(model.params,
                   snapshots={step: trained(p, steps=step) for step, p in run.snapshots.items()})
