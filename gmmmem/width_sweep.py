r"""The width sweep (chapter 7): MLP denoisers (:mod:`gmmmem.networks`) of growing width on
the data of the mixture experiments, measured as the mixtures are.

One MLP per width on the data of
:func:`gmmmem.experiments.make_data`; each is measured as the mixtures of
:func:`gmmmem.experiments.phase_transition` are: the memorization ratio of DDIM samples over the
26 times, and Monte Carlo losses (clean-point units) on the training and test sets next to the
true mixture's and the memorizing denoiser's.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import metrics, presets, provenance, results, validate
from .config import check_scale
from .device import resolve
from .diffusion import time_grid
from .experiments import (EVAL_PRESETS, HISTORY_POINTS, EvalConfig, generate_samples, make_data,
                          split_losses, transition)
from .mixtures import gmm_denoise
from .networks import DEPTH, EMB_DIM, TrainedMLPs, _widths, train_mlp
from .results import LossHistory, MeasuredRun, ReferenceLosses, Snapshots, floats
from .train import TrainConfig


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
    d, K, N = validate.integer(d, "d"), validate.integer(K, "K"), validate.training_set(N)
    seed, var = validate.seed(seed), validate.data_variance(var)
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
