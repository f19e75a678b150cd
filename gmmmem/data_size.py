r"""The other axis: fix the model size M and grow the training set.

The crossover of chapter 2 says a model of size :math:`M` trained on :math:`N` points
memorizes when :math:`M/N` exceeds :math:`w = M^\star/N` (about 0.8) and generalizes below.
Read at a fixed model size, the same statement predicts the training-set size at which models
stop memorizing:

.. math:: N^\star = M / w ,

memorizing for :math:`N < N^\star`, generalizing for :math:`N > N^\star` — the transition seen
by the earlier empirical literature as the training set grows at fixed capacity.

:func:`data_size` measures it. For one configuration (dimension ``d``, ``K`` true components,
data variance ``var``, model size ``M``, ``seed``) it draws *one* training set of
:math:`\max N` points (:func:`gmmmem.experiments.make_data`) and trains, for every :math:`N`,
one model on its first :math:`N` points. The datasets are nested, and every model starts
from the same :math:`M` points, the first :math:`M` of the set (a partially memorizing
start, as :func:`gmmmem.train.train_gmm`'s own: the points are i.i.d., so the first
:math:`M` are as random a choice as any). What changes from one :math:`N` to the next is only
the :math:`N - M` further training points, so the curve is smooth in :math:`N`. The
memorization ratio is measured as :func:`gmmmem.experiments.phase_transition` does (samples
of the DDIM sampler over the 26 times, the :math:`d_1 < d_2/3` criterion against the model's
own :math:`N` training points), with the same sampling noise for every :math:`N`.

The transition in :math:`N` mirrors the one in :math:`M` (:func:`transition_in_n`): the
memorization ratio *falls* as :math:`N` grows, its start and end are the largest :math:`N`
whose ratio still reaches 0.9 and 0.1, and :math:`N_{pt}` the size where it falls through
0.5, interpolated linearly (:func:`stop_memorizing`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import metrics, provenance, results, validate
from .config import check_scale
from .device import resolve
from .diffusion import time_grid
from .experiments import (BELOW_SMALLEST, EVAL_PRESETS, MEASURED, NOT_REACHED, EvalConfig,
                          make_data, midpoint, midpoint_status, transition)
from .results import Recorded, floats
from .sampling import ddim_sample
from .train import TrainConfig, train_gmm

#: Where N_pt lies when the largest training-set size still memorizes.
ABOVE_LARGEST = "above the largest size"


def transition_in_n(Ns: Sequence[int], ratio: Sequence[float]) -> tuple[int | None, int | None]:
    """(memorizes up to, generalizes above): the largest N whose ratio reaches 0.9, and 0.1.

    The transition of :func:`gmmmem.experiments.transition` read along the decreasing axis:
    the largest training-set size with ratio >= 0.9 (the end of the transition seen from the
    memorizing side) and the largest with ratio >= 0.1 (above it every measured size
    generalizes). None where no size reaches the level.
    """
    at_01, at_09 = transition([-n for n in Ns[::-1]], list(ratio)[::-1])
    return (None if at_09 is None else -at_09, None if at_01 is None else -at_01)


def stop_memorizing(Ns: Sequence[int], ratio: Sequence[float]) -> float | None:
    """N_pt: the training-set size where the ratio, falling with N, crosses 0.5.

    Scanning from the largest N downwards, the first size whose ratio reaches 0.5, linearly
    interpolated with the next larger one (:func:`gmmmem.experiments.midpoint` on the
    reversed axis). None when the crossing lies outside the measured sizes
    (:func:`stop_status` says where).
    """
    m = midpoint([-n for n in Ns[::-1]], list(ratio)[::-1])
    return None if m is None else -m


#: Where N_pt lies when it is not measured, by the status of the reversed-axis midpoint.
_STOP_STATUS = {MEASURED: MEASURED, BELOW_SMALLEST: ABOVE_LARGEST, NOT_REACHED: BELOW_SMALLEST}


def stop_status(ratio: Sequence[float]) -> str:
    """Whether N_pt was measured: ``"measured"``, ``"above the largest size"`` (the largest N
    still reaches 0.5) or ``"below the smallest size"`` (no N reaches 0.5)."""
    return _STOP_STATUS[midpoint_status(list(ratio)[::-1])]


#: The keys of a data-size result file.
_FILE_KEYS = ("d", "K", "var", "M", "seed", "training_sizes", "memorization_ratio", "learned_var",
              "train_seconds", "provenance")


@dataclass(eq=False)
class DataSizeResult(Recorded):
    """The memorization ratio of models of one size M trained on nested training sets: per
    training-set size (S), float64 arrays."""

    d: int
    K: int
    var: float
    M: int
    seed: int
    training_sizes: list[int]
    memorization_ratio: np.ndarray  # (S,)
    learned_var: np.ndarray  # (S,)
    train_seconds: np.ndarray  # (S,): each model's training
    provenance: dict[str, Any] = field(repr=False)

    @property
    def fractions(self) -> np.ndarray:
        """M/N of every training-set size (S,), decreasing."""
        return self.M / np.asarray(self.training_sizes)

    @property
    def transition(self) -> tuple[int | None, int | None]:
        """(memorizes up to, generalizes above), see :func:`transition_in_n`."""
        return transition_in_n(self.training_sizes, self.memorization_ratio)

    @property
    def stop_point(self) -> float | None:
        """N_pt, the N where the ratio falls through 0.5 (:func:`stop_memorizing`); None
        outside the measured sizes (:attr:`stop_status`)."""
        return stop_memorizing(self.training_sizes, self.memorization_ratio)

    @property
    def stop_status(self) -> str:
        """Whether N_pt was measured or lies above the largest / below the smallest size."""
        return stop_status(self.memorization_ratio)

    def save(self, path: str | Path) -> Path:
        """Write the result as JSON (atomically), with N_pt and its status."""
        return results.save(path, {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                                   "stop_point": self.stop_point, "stop_status": self.stop_status})

    @classmethod
    def load(cls, path: str | Path) -> "DataSizeResult":
        """Read a result written by :meth:`save` (the derived N_pt fields are recomputed)."""
        raw = results.read(path, "data-size result", _FILE_KEYS)
        return cls(
            d=raw["d"], K=raw["K"], var=raw["var"], M=raw["M"], seed=raw["seed"],
            training_sizes=raw["training_sizes"],
            memorization_ratio=floats(raw["memorization_ratio"]),
            learned_var=floats(raw["learned_var"]), train_seconds=floats(raw["train_seconds"]),
            provenance=raw["provenance"],
        )


def _checkpoint_file(folder: str | Path | None, N: int) -> Path | None:
    """The training checkpoint of training-set size ``N`` in ``folder`` (None: none)."""
    return None if folder is None else Path(folder) / f"N{N}.pt"


def data_size_settings(
    d: int,
    K: int,
    M: int,
    training_sizes: Sequence[int],
    scale: str = "default",
    seed: int = 0,
    *,
    config: TrainConfig | None = None,
    eval_config: EvalConfig | None = None,
    var: float = 1.0,
) -> dict[str, Any]:
    """The settings :func:`data_size` records for these arguments, the arguments checked;
    nothing is trained."""
    d, K, M = (validate.integer(value, name) for name, value in (("d", d), ("K", K), ("M", M)))
    seed, var = validate.seed(seed), validate.data_variance(var)
    Ns = [validate.integer(n, "training-set size N") for n in training_sizes]
    if not Ns:
        raise ValueError("training_sizes is empty")
    if sorted(set(Ns)) != Ns:
        raise ValueError(f"training_sizes must be strictly increasing, got {list(training_sizes)}")
    if Ns[0] < max(M, 2):
        raise ValueError(
            f"every training-set size must be >= max(M, 2) = {max(M, 2)} (M = {M} means start at "
            f"M distinct training points; the memorization criterion needs two), got {Ns[0]}"
        )
    check_scale(scale)
    return {
        "experiment": "data_size",
        "d": d, "K": K, "var": var, "M": M, "seed": seed, "scale": scale,
        "training_sizes": Ns,
        "init": "the first M training points (the same for every N)",
        "train_config": dataclasses.asdict(config or TrainConfig.preset(scale, seed=seed)),
        "eval_config": dataclasses.asdict(eval_config or EVAL_PRESETS[scale]),
    }


def data_size(
    d: int,
    K: int,
    M: int,
    training_sizes: Sequence[int],
    scale: str = "default",
    seed: int = 0,
    device: str | torch.device | None = None,
    *,
    config: TrainConfig | None = None,
    eval_config: EvalConfig | None = None,
    progress: bool | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1000,
    var: float = 1.0,
) -> DataSizeResult:
    """Train one model of size ``M`` per training-set size N in ``training_sizes`` and measure.

    ``training_sizes``: strictly increasing, each N >= max(M, 2). ``scale`` picks the training
    and evaluation presets (``config`` / ``eval_config`` override them). Data, training and
    sampling noise all derive from ``seed``, as in :func:`gmmmem.experiments.phase_transition`.
    With ``checkpoint`` (a folder) the training of each N checkpoints to ``N<N>.pt`` there
    (:func:`gmmmem.train.train_gmm`), so a rerun of an interrupted call resumes where it
    stopped and ends exactly as an uninterrupted one; the caller removes the folder.
    """
    settings = data_size_settings(d, K, M, training_sizes, scale, seed, config=config,
                                  eval_config=eval_config, var=var)
    d, K, M, var, seed, Ns = (settings[k] for k in ("d", "K", "M", "var", "seed", "training_sizes"))
    config, ev = TrainConfig(**settings["train_config"]), EvalConfig(**settings["eval_config"])
    dev = resolve(device)
    began = time.perf_counter()

    _, X_all, _ = make_data(d, K, Ns[-1], seed, dev, var)
    times = time_grid(dtype=torch.float64)
    ratio, learned_var, seconds = [], [], []
    for N in Ns:
        X = X_all[:N]
        trained = train_gmm(X, [M], config, dev, init_means=X_all[:M], progress=progress,
                            checkpoint=_checkpoint_file(checkpoint, N),
                            checkpoint_every=checkpoint_every)
        gen = torch.Generator(device=dev).manual_seed(seed + 1)
        samples = ddim_sample(trained.denoiser(0), ev.num_samples, d, times, gen,
                              dtype=torch.float64, device=dev)
        ratio.append(metrics.memorization_ratio(samples, X))
        learned_var.append(trained.var[0])
        seconds.append(round(trained.seconds, 2))

    return DataSizeResult(
        d=d, K=K, var=var, M=M, seed=seed,
        training_sizes=Ns,
        memorization_ratio=floats(ratio),
        learned_var=floats(learned_var),
        train_seconds=floats(seconds),
        provenance=provenance.record(settings, dev, time.perf_counter() - began),
    )
