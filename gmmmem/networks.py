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

**Experiment** (:func:`width_sweep`). One MLP per width on the data of
:func:`gmmmem.experiments.make_data`; each is measured as the mixtures of
:func:`gmmmem.experiments.phase_transition` are: the memorization ratio of DDIM samples over the
26 times, and Monte Carlo losses (clean-point units) on the training and test sets next to the
true mixture's and the memorizing denoiser's.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import metrics, presets, provenance, results, validate
from .config import check_scale
from .device import resolve, tune_cpu_allocator
from .diffusion import alpha, sigma, time_grid
from .experiments import (EVAL_PRESETS, HISTORY_POINTS, EvalConfig, generate_samples, make_data,
                          split_losses, transition)
from .mixtures import gmm_denoise
from .results import LossHistory, MeasuredRun, ReferenceLosses, Snapshots, floats
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
    dev = resolve(device)
    if dev.type == "cpu":
        tune_cpu_allocator()
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


#: The keys of a width-sweep result file.
_FILE_KEYS = ("d", "K", "N", "widths", "depth", "emb_dim", "num_params", "times", "memorization_ratio",
              "nearest_ratio_median", "train_loss", "test_loss", "reference", "loss_history",
              "provenance")


@dataclass(eq=False)
class WidthSweepResult(MeasuredRun):
    """Everything measured in one width sweep: per width (S) and time of the grid (T), float64
    arrays; ``reference`` without partially memorizing losses (a network has no such start)."""

    d: int
    K: int
    N: int
    widths: list[int]
    depth: int
    emb_dim: int
    num_params: list[int]
    times: np.ndarray  # (T,)
    memorization_ratio: np.ndarray  # (S,)
    nearest_ratio_median: np.ndarray  # (S,)
    train_loss: np.ndarray  # (S, T), clean-point units
    test_loss: np.ndarray  # (S, T)
    reference: ReferenceLosses
    loss_history: LossHistory
    provenance: dict[str, Any] = field(repr=False)

    @property
    def transition(self) -> tuple[int | None, int | None]:
        """(start, end): the smallest parameter counts with memorization ratio >= 0.1, >= 0.9."""
        return transition(self.num_params, self.memorization_ratio)

    def save(self, path: str | Path) -> Path:
        """Write the result as JSON (atomically)."""
        return results.save(path, {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def load(cls, path: str | Path) -> "WidthSweepResult":
        """Read a result written by :meth:`save`."""
        raw = results.read(path, "width-sweep result", _FILE_KEYS)
        return cls(
            d=raw["d"], K=raw["K"], N=raw["N"], widths=raw["widths"], depth=raw["depth"],
            emb_dim=raw["emb_dim"], num_params=raw["num_params"], times=floats(raw["times"]),
            memorization_ratio=floats(raw["memorization_ratio"]),
            nearest_ratio_median=floats(raw["nearest_ratio_median"]),
            train_loss=floats(raw["train_loss"]), test_loss=floats(raw["test_loss"]),
            reference=ReferenceLosses.from_json(raw["reference"]),
            loss_history=LossHistory.from_json(raw["loss_history"]), provenance=raw["provenance"],
        )


def _sample_ratios(trained: TrainedMLPs, X, ev: EvalConfig, seed: int):
    """Per width: memorization ratio and median nearest/second-nearest distance ratio of DDIM
    samples (seeds as in :func:`gmmmem.experiments.phase_transition`)."""
    models = [trained.denoiser(k) for k in range(len(trained.widths))]
    ratio, median = [], []
    for samples in generate_samples(models, X, ev, seed):
        d1, d2, _ = metrics.nearest_two(samples, X)
        ratio.append(metrics.memorization_ratio(samples, X))
        median.append(float((d1 / d2).median()))
    return ratio, median


def _measure(trained: TrainedMLPs, truth_denoise, X, X_test, ev: EvalConfig, seed: int):
    """Per width: :func:`_sample_ratios`, and Monte Carlo losses (rows [widths..., true,
    memorizing], columns the 26 times) on both splits."""
    models = [trained.denoiser(k) for k in range(len(trained.widths))]
    refs = [truth_denoise, lambda x, t: gmm_denoise(x, t, X, 0.0)]
    ratio, median = _sample_ratios(trained, X, ev, seed)
    return ratio, median, split_losses(models + refs, X, X_test, ev, seed)


def width_config(scale: str, **overrides) -> TrainConfig:
    """The training preset of ``scale`` for the MLP: :data:`gmmmem.presets.MLP_DEFAULT` at ``default`` scale,
    the preset itself otherwise; fields overridable (``seed=...``, ``steps=...``)."""
    base = presets.MLP_DEFAULT if check_scale(scale) == "default" else {}
    return TrainConfig.preset(scale, **{**base, **overrides})


def width_sweep_settings(
    d: int,
    K: int,
    N: int,
    widths: Sequence[int],
    scale: str = "default",
    seed: int = 0,
    *,
    depth: int = DEPTH,
    emb_dim: int = EMB_DIM,
    config: TrainConfig | None = None,
    eval_config: EvalConfig | None = None,
    var: float = 1.0,
) -> dict[str, Any]:
    """The settings :func:`width_sweep` records for these arguments (all but the measured
    ``train_seconds``), the arguments checked; nothing is trained."""
    d, K, N = (validate.integer(value, name) for name, value in (("d", d), ("K", K), ("N", N)))
    seed = validate.seed(seed)
    if N < 2:
        raise ValueError(
            f"N must be >= 2 (the memorization criterion needs two training points), got {N}")
    check_scale(scale)
    config = config or width_config(scale, seed=seed)
    ev = eval_config or EVAL_PRESETS[scale]
    return {
        "experiment": "width_sweep", "d": d, "K": K, "N": N, "var": var, "seed": seed,
        "scale": scale, "widths": _widths(widths), "depth": depth, "emb_dim": emb_dim,
        "train_config": dataclasses.asdict(config), "eval_config": dataclasses.asdict(ev),
    }


def width_sweep(
    d: int,
    K: int,
    N: int,
    widths: Sequence[int],
    scale: str = "default",
    seed: int = 0,
    device: str | torch.device | None = None,
    *,
    depth: int = DEPTH,
    emb_dim: int = EMB_DIM,
    config: TrainConfig | None = None,
    eval_config: EvalConfig | None = None,
    progress: bool | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1000,
    snapshots: Sequence[int] = (),
    var: float = 1.0,
) -> WidthSweepResult:
    """Train one MLP denoiser per width on the data of ``make_data(d, K, N, seed, var=var)``
    and measure each as the mixtures are measured (module docstring).

    ``scale`` picks the training and evaluation presets, ``config`` / ``eval_config``
    override them; data, initialization, training noise and evaluation noise all derive
    from ``seed``. ``nearest_ratio_median`` is the median over samples of d1/d2, the
    distance to the nearest training point over that to the second nearest (a sample is
    memorized when d1/d2 < 1/3): a continuous view of how close samples come to copying.
    ``snapshots``: training steps after which the networks are measured too (memorization
    ratio and median d1/d2 on the same sampler noise), kept in ``loss_history.snapshots``
    to show whether the ratio still moves at the end of training.
    """
    settings = width_sweep_settings(d, K, N, widths, scale, seed, depth=depth, emb_dim=emb_dim,
                                    config=config, eval_config=eval_config, var=var)
    d, K, N, var, seed, ws = (settings[k] for k in ("d", "K", "N", "var", "seed", "widths"))
    config, ev = TrainConfig(**settings["train_config"]), EvalConfig(**settings["eval_config"])
    dev = resolve(device)
    began = time.perf_counter()

    truth, X, X_test = make_data(d, K, N, seed, dev, var)
    trained = train_mlp(X, ws, config, dev, depth=depth, emb_dim=emb_dim, progress=progress,
                        checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                        snapshots=snapshots)
    ratio, median, losses = _measure(trained, truth.denoise, X, X_test, ev, seed)
    snapshot_record = None
    if trained.snapshots:
        steps = sorted(trained.snapshots)
        measured = [_sample_ratios(trained.snapshots[s], X, ev, seed) for s in steps]
        snapshot_record = Snapshots(steps=np.array(steps, dtype=np.int64),
                                    memorization_ratio=floats([m[0] for m in measured]),
                                    nearest_ratio_median=floats([m[1] for m in measured]))
    S = len(ws)
    keep = np.unique(np.linspace(0, config.steps - 1, HISTORY_POINTS).round().astype(int))
    settings = {**settings, "train_seconds": round(trained.seconds, 2)}
    reference = ReferenceLosses(**{f"{name}_{split}": floats(losses[split][S + j])
                                   for split in ("train", "test") for j, name in enumerate(("true", "mem"))})
    return WidthSweepResult(
        d=d, K=K, N=N, widths=ws, depth=depth, emb_dim=emb_dim,
        num_params=trained.num_params,
        times=time_grid(dtype=torch.float64).numpy(),
        memorization_ratio=floats(ratio),
        nearest_ratio_median=floats(median),
        train_loss=floats(losses["train"][:S]),
        test_loss=floats(losses["test"][:S]),
        reference=reference,
        loss_history=LossHistory(steps=keep, loss=floats(trained.loss_history[keep]),
                                 snapshots=snapshot_record),
        provenance=provenance.record(settings, dev, time.perf_counter() - began),
    )
