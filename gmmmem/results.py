"""Typed pieces of the result files, and the one place where results become JSON and back.

A result (:class:`gmmmem.experiments.PhaseTransitionResult`,
:class:`gmmmem.experiments.TemplateTransitionResult`, :class:`gmmmem.width_sweep.WidthSweepResult`,
:class:`gmmmem.data_size.DataSizeResult`) holds NumPy arrays and the records below in memory;
:func:`save` writes it as JSON (arrays as nested lists, records as objects, empty parts left
out) and each result's ``load`` reads the file back through :func:`read` and the records'
``from_json``. Saving a loaded result writes back every number of the file it was loaded from.
Its ``provenance`` (:func:`gmmmem.provenance.record`) is kept as written; :class:`Recorded`
reads the training recipe, evaluation and machine from it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import torch

from . import files
from .train import TrainConfig

if TYPE_CHECKING:
    from .experiments import EvalConfig


def floats(values: Any) -> np.ndarray:
    """``values`` (nested lists, an array, a tensor on any device) as a new float64 array."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.array(values, dtype=np.float64)


def to_json(value: Any) -> Any:
    """``value`` in JSON types: dataclasses as objects (fields that are None left out), arrays
    and tuples as lists, NumPy scalars as Python numbers; dicts and lists converted inside."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)
                if getattr(value, f.name) is not None}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: to_json(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def save(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``to_json(payload)`` to ``path`` atomically and durably (:func:`gmmmem.files.write_json`)."""
    return files.write_json(path, to_json(payload))


def read(path: str | Path, kind: str, required: Iterable[str]) -> dict[str, Any]:
    """The JSON object in ``path``; ``ValueError`` ("``path`` is not a ``kind``") when it is not
    an object or lacks a key of ``required``."""
    with open(path) as f:
        raw = json.load(f)
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a {kind}: it holds a JSON {type(raw).__name__}, not an object")
    missing = set(required) - raw.keys()
    if missing:
        raise ValueError(f"{path} is not a {kind}: missing {sorted(missing)}")
    return raw


@dataclass(frozen=True, eq=False)
class ReferenceLosses:
    """Monte Carlo losses (clean-point units) of the reference denoisers at every time (T,):
    the true mixture (generalizing), the memorizing denoiser (all N training points) and, for
    the mixture models, the partially memorizing one of each model size (its M starting
    points), (S, T); None for the networks, which have no such start."""

    true_train: np.ndarray
    true_test: np.ndarray
    mem_train: np.ndarray
    mem_test: np.ndarray
    pmem_train: np.ndarray | None = None
    pmem_test: np.ndarray | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "ReferenceLosses":
        """The record of a result file's ``reference`` object."""
        return cls(**{f.name: None if raw.get(f.name) is None else floats(raw[f.name])
                      for f in dataclasses.fields(cls)})


@dataclass(frozen=True, eq=False)
class Snapshots:
    """Measurements of the models as they were after some training steps (``--snapshots``):
    per snapshot (Q) and model (S), the memorization ratio on the final models' sampler noise,
    and the learned variance (template models) or the median d1/d2 of the samples (networks)."""

    steps: np.ndarray
    memorization_ratio: np.ndarray
    var: np.ndarray | None = None
    nearest_ratio_median: np.ndarray | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "Snapshots":
        """The record of a result file's ``loss_history["snapshots"]`` object."""
        return cls(steps=np.array(raw["steps"], dtype=np.int64),
                   memorization_ratio=floats(raw["memorization_ratio"]),
                   var=None if raw.get("var") is None else floats(raw["var"]),
                   nearest_ratio_median=(None if raw.get("nearest_ratio_median") is None
                                         else floats(raw["nearest_ratio_median"])))


@dataclass(frozen=True, eq=False)
class LossHistory:
    """The training loss at some steps (P,), 0-based, per model (P, S); the learned variance
    at the same steps when recorded (P, S); and the :class:`Snapshots` when asked for."""

    steps: np.ndarray
    loss: np.ndarray
    var: np.ndarray | None = None
    snapshots: Snapshots | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "LossHistory":
        """The record of a result file's ``loss_history`` object."""
        return cls(steps=np.array(raw["steps"], dtype=np.int64), loss=floats(raw["loss"]),
                   var=None if raw.get("var") is None else floats(raw["var"]),
                   snapshots=None if raw.get("snapshots") is None else Snapshots.from_json(raw["snapshots"]))


class Recorded:
    """What a result's ``provenance`` (:func:`gmmmem.provenance.record`) says about its run."""

    provenance: dict[str, Any]

    @property
    def train_config(self) -> TrainConfig:
        """The training recipe (files made before ``adam_beta2`` was recorded used 0.999)."""
        return TrainConfig(**self.provenance["settings"]["train_config"])

    @property
    def eval_config(self) -> EvalConfig:
        """How the trained models were measured."""
        from .experiments import EvalConfig  # experiments imports this module

        return EvalConfig(**self.provenance["settings"]["eval_config"])

    @property
    def steps(self) -> int:
        """Training steps of the recipe."""
        return self.train_config.steps

    @property
    def scale(self) -> str:
        """The scale (``ci``, ``default``, ``paper``) whose presets the run started from."""
        return self.provenance["settings"]["scale"]

    @property
    def wall_seconds(self) -> float:
        """Seconds the whole run took (data, training, measurement)."""
        return self.provenance["wall_seconds"]

    @property
    def device_name(self) -> str:
        """The GPU model, or the CPU and its thread count, the run used."""
        return self.provenance["device_name"]

    @property
    def git_commit(self) -> str:
        """The commit of the code that made the result (``-dirty``: with uncommitted edits)."""
        return self.provenance["git_commit"]

    @property
    def date(self) -> str:
        """When the result was made (ISO 8601, UTC)."""
        return self.provenance["date"]


class MeasuredRun(Recorded):
    """A run that trains every model at once from one seed and measures them on the time grid
    (``times``)."""

    times: np.ndarray

    @property
    def seed(self) -> int:
        """The seed of the data, start, training and evaluation noise."""
        return self.provenance["settings"]["seed"]

    @property
    def train_seconds(self) -> float:
        """Seconds spent training (all models together)."""
        return self.provenance["settings"]["train_seconds"]

    def time_index(self, t: float) -> int:
        """Index of the grid time nearest to ``t``."""
        return int(np.argmin(np.abs(self.times - t)))
