r"""The configuration sweep behind Figure 3: where the phase transition sits, for many datasets.

A *configuration* is a dataset: dimension ``d``, ``K`` true components, ``N`` training points,
the true variance ``var`` (:math:`s_\star^2`) and a ``seed``. For each one the sweep locates
the memorization transition in two stages, as the authors' code does
(``run_phase_transition_experiment_sweep.py`` of DruvPai/diffusion_mem_gen):

1. *coarse*: model sizes M = N/10, 2N/10, ..., N (:func:`gmmmem.experiments.phase_transition`);
2. *fine*: about :data:`FINE_POINTS` sizes, evenly spaced, across the coarse bracket of the
   transition (:func:`fine_sizes`); sizes the coarse stage already measured are not retrained.

Both stages are merged into one curve: the sorted sizes and their memorization ratios. This is
sound because a model size's training trajectory does not depend on which other sizes train
beside it (:func:`gmmmem.train.train_gmm` guarantees it), and the Monte Carlo losses of a
size use the same noise in either stage. The start, end and midpoint of the transition are then
recomputed on the merged curve (:func:`gmmmem.experiments.transition` and
:func:`~gmmmem.experiments.midpoint`). Only the sampling noise behind a size's memorization
ratio depends on its place in its stage: a fresh, equally distributed draw.

The configurations run as tasks on Dask (``dask.distributed``), one task per configuration
(both stages): by default on a :class:`~distributed.LocalCluster` with one worker per GPU, each
pinned to its GPU, or, without a GPU, one single-threaded worker per CPU core; or on a running
cluster given by its scheduler's address. On one GPU many small programs leave the device idle:
there ``batch`` (``--batch-configs``) runs the configurations in this process instead, many at a
time as one program (:func:`run_configs`, training by :func:`gmmmem.train_many.train_many`),
with the same records. Results go to one JSON-lines file per sweep, one
record per configuration, rewritten atomically as each task finishes; rerunning the same
command resumes (:func:`run_sweep`). :func:`load_sweep` reads and validates such a file.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import itertools
import json
import logging
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from . import device as _device
from . import files, presets, provenance, validate
from .config import check_scale
from .experiments import (EVAL_PRESETS, EvalConfig, PhaseTransitionResult, _model_sizes, make_data,
                          measure_phase_transition, midpoint, midpoint_interval, midpoint_status,
                          phase_transition, transition)
from .train import TrainConfig
from .train_many import train_many

#: Sizes of the fine stage, spread evenly over the coarse bracket (the authors use 10).
FINE_POINTS = 10

#: Seconds to wait for a Dask scheduler given by its address.
CONNECT_TIMEOUT = 30

#: How the two stages are chosen (:func:`fine_sizes`), stored in every record's settings so that
#: a record is reused only under the same rule. Bump ``rule`` when the rule changes.
TWO_STAGE = {"rule": 1, "coarse": "round(k N / 10), k = 1..10", "fine": "authors' bracket, see fine_sizes"}


class SweepWarning(UserWarning):
    """A record of a sweep file is unusable (corrupted, or made with other settings)."""


class SweepError(RuntimeError):
    """Some configurations of a sweep failed; the others were recorded."""


@dataclass(frozen=True)
class Dataset:
    """One configuration of a sweep, the data it trains on: dimension, true components, training
    points, variance, seed (a record's ``config``; the training recipe is a :class:`TrainConfig`)."""

    d: int
    K: int
    N: int
    var: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("d", "K", "N"):
            object.__setattr__(self, name, validate.positive_int(getattr(self, name), name))
        if self.N < 2:
            raise ValueError(f"N must be >= 2, got {self.N}")
        object.__setattr__(self, "var", validate.data_variance(self.var))
        object.__setattr__(self, "seed", validate.seed(self.seed))

    @property
    def key(self) -> tuple:
        """What identifies the configuration in a sweep file."""
        return (self.d, self.K, self.N, self.var, self.seed)

    @property
    def name(self) -> str:
        """A short readable name, e.g. ``d30_K3_N50_var1_seed0``."""
        return f"d{self.d}_K{self.K}_N{self.N}_var{self.var:g}_seed{self.seed}"


@dataclass(frozen=True)
class Grid:
    """A named set of configurations and the training recipe they all run with.

    ``train`` overrides fields of the ``scale``'s :class:`~gmmmem.train.TrainConfig` preset
    (the seed always comes from the configuration); ``eval_config`` defaults to the scale's.
    """

    configs: tuple[Dataset, ...]
    scale: str
    train: dict[str, Any] = field(default_factory=dict)
    eval_config: EvalConfig | None = None


def product(ds, Ks, Ns, variances=(1.0,), seeds=(0,)) -> tuple[Dataset, ...]:
    """Every combination of the given values, d varying slowest."""
    return tuple(Dataset(*c) for c in itertools.product(ds, Ks, Ns, variances, seeds))


#: The named grids; what each is for and what it costs: :mod:`gmmmem.presets`.
GRIDS: dict[str, Grid] = {
    "paper": Grid(product(**presets.PAPER_GRID), "default"),
    "paper-seeds": Grid(tuple(Dataset(d, K, N, 1.0, seed) for seed in presets.SEEDS
                              for d, K, N in presets.SEED_CONFIGS), "default"),
    "default": Grid(product(**presets.DEFAULT_GRID) + product(**presets.DEFAULT_GRID_EXTRA), "default",
                    train=presets.LONG_DEFAULT),
    "ci": Grid(tuple(Dataset(*c) for c in presets.CI_CONFIGS), "ci", train=presets.CI_TRAIN),
}


# --------------------------------------------------------------------------- one configuration


def fine_sizes(model_sizes: Sequence[int], ratio: Sequence[float], points: int = FINE_POINTS) -> list[int]:
    """The sizes of the fine stage, given the coarse curve (``model_sizes``, ``ratio``).

    The bracket is the authors': from the coarse size just before the first whose ratio reaches
    0.1 (the transition starts somewhere after it) to the first whose ratio reaches 0.9; the
    coarse grid's first / last size where no size reaches 0.1 / 0.9. Step
    ``max((hi - lo) // points, 1)``; sizes already in ``model_sizes`` are left out.
    """
    sizes = list(model_sizes)
    validate.positive_int(points, "points")
    start, end = transition(sizes, ratio)
    lo = sizes[0] if start is None else sizes[max(sizes.index(start) - 1, 0)]
    hi = sizes[-1] if end is None else end
    known = set(sizes)
    return [M for M in range(lo, hi + 1, max((hi - lo) // points, 1)) if M not in known]


def settings(config: Dataset, scale: str, train_config: TrainConfig, eval_config: EvalConfig,
             fine_points: int = FINE_POINTS) -> dict[str, Any]:
    """The settings a record is made with; a stored record is reused only if they are equal."""
    return json.loads(json.dumps({
        "experiment": "sweep",
        **dataclasses.asdict(config),
        "scale": scale,
        "train_config": dataclasses.asdict(train_config),
        "eval_config": dataclasses.asdict(eval_config),
        "two_stage": {**TWO_STAGE, "fine_points": fine_points},
    }))


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _pick(rows: list[tuple[PhaseTransitionResult, int]], get: Callable) -> list:
    return [get(res, k) for res, k in rows]


def merge(config: Dataset, settings_: dict, coarse: PhaseTransitionResult,
          fine: PhaseTransitionResult | None, device: torch.device, seconds: float) -> dict[str, Any]:
    """One sweep record from the two stages: the merged curve and what a predictor needs."""
    where: dict[int, tuple[str, PhaseTransitionResult, int]] = {}
    for stage, res in (("coarse", coarse), ("fine", fine)):
        for k, M in enumerate(res.model_sizes if res is not None else []):
            where.setdefault(M, (stage, res, k))
    sizes = sorted(where)
    rows = [where[M][1:] for M in sizes]
    ratio = _pick(rows, lambda r, k: float(r.memorization_ratio[k]))
    start, end = transition(sizes, ratio)
    mid = midpoint(sizes, ratio)
    lo, hi = midpoint_interval(sizes, ratio, coarse.eval_config.num_samples)
    ref = coarse.reference
    stages = {}
    for stage, res in (("coarse", coarse), ("fine", fine)):
        if res is not None:
            stages[stage] = {
                "model_sizes": res.model_sizes,
                "transition": list(res.transition),
                "train_seconds": res.train_seconds,
                "wall_seconds": res.wall_seconds,
            }
    return {
        "config": dataclasses.asdict(config),
        "settings": settings_,
        "model_sizes": sizes,
        "stage": [where[M][0] for M in sizes],
        "memorization_ratio": ratio,
        "start": start,
        "end": end,
        "midpoint": mid,
        "midpoint_over_N": None if mid is None else mid / config.N,
        # 95% bootstrap interval of the midpoint over the generated samples (None: open end)
        "midpoint_interval": [lo, hi],
        "midpoint_interval_over_N": [None if v is None else v / config.N for v in (lo, hi)],
        "midpoint_status": midpoint_status(ratio),
        "times": coarse.times.tolist(),
        # x0-unit Monte Carlo losses: true mixture / memorizing denoiser per time (T,), and the
        # partially memorizing one and the trained model per merged size and time (S, T).
        "reference": {
            "true_train": ref.true_train.tolist(), "true_test": ref.true_test.tolist(),
            "mem_train": ref.mem_train.tolist(), "mem_test": ref.mem_test.tolist(),
            "pmem_train": _pick(rows, lambda r, k: r.reference.pmem_train[k].tolist()),
            "pmem_test": _pick(rows, lambda r, k: r.reference.pmem_test[k].tolist()),
        },
        "train_loss": _pick(rows, lambda r, k: r.train_loss[k].tolist()),
        "test_loss": _pick(rows, lambda r, k: r.test_loss[k].tolist()),
        "learned_var": _pick(rows, lambda r, k: float(r.learned_var[k])),
        "stages": stages,
        "provenance": provenance.record(settings_, device, seconds),
    }


def run_config(
    config: Dataset,
    scale: str = "default",
    train_config: TrainConfig | None = None,
    eval_config: EvalConfig | None = None,
    device: str | torch.device | None = None,
    *,
    fine_points: int = FINE_POINTS,
    checkpoint_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Both stages of one configuration, in this process; returns its sweep record.

    ``train_config`` defaults to the ``scale``'s preset; its seed is replaced by the
    configuration's. With ``checkpoint_dir`` each stage's training checkpoints there (a file
    named after the configuration, its settings and sizes), so a killed task resumes.
    """
    check_scale(scale)
    train_config = dataclasses.replace(train_config or TrainConfig.preset(scale), seed=config.seed)
    ev = eval_config or EVAL_PRESETS[scale]
    settings_ = settings(config, scale, train_config, ev, fine_points)
    dev = _device.resolve(device)
    began = time.perf_counter()

    def stage(sizes):
        checkpoint = None
        if checkpoint_dir is not None:
            checkpoint = Path(checkpoint_dir) / f"{config.name}-{_digest([settings_, sizes])}.pt"
        return phase_transition(
            config.d, config.K, config.N, sizes, scale, config.seed, dev, config=train_config,
            eval_config=ev, progress=False, checkpoint=checkpoint, var=config.var,
        )

    coarse = stage(None)
    extra = fine_sizes(coarse.model_sizes, coarse.memorization_ratio, fine_points)
    fine = stage(extra) if extra else None
    return merge(config, settings_, coarse, fine, dev, time.perf_counter() - began)


def run_configs(
    configs: Sequence[Dataset],
    scale: str = "default",
    train_config: TrainConfig | None = None,
    eval_config: EvalConfig | None = None,
    device: str | torch.device | None = None,
    *,
    fine_points: int = FINE_POINTS,
    checkpoint_dir: str | Path | None = None,
    progress: bool | None = None,
) -> list[dict[str, Any]]:
    """:func:`run_config` for several configurations at once, in this process on one device:
    each stage trains every configuration's sizes in one batched program
    (:func:`gmmmem.train_many.train_many`), then measures each configuration; returns their
    records, in order: those :func:`run_config` makes but for the times and rounding (which the
    training amplifies, as between two devices: :mod:`gmmmem.train_many`).

    A record's times are its equal share of its batch's training plus its own measuring, so
    that the records' wall times add up to the batch's. With ``checkpoint_dir`` each stage's
    training checkpoints there (one file for the batch). ``progress``: the training's bar.
    """
    configs = list(configs)
    if not configs:
        raise ValueError("configs is empty")
    check_scale(scale)
    base = train_config or TrainConfig.preset(scale)
    trains = [dataclasses.replace(base, seed=c.seed) for c in configs]
    ev = eval_config or EVAL_PRESETS[scale]
    settings_ = [settings(c, scale, tc, ev, fine_points) for c, tc in zip(configs, trains)]
    dev = _device.resolve(device)
    began = time.perf_counter()
    data = [make_data(c.d, c.K, c.N, c.seed, dev, c.var) for c in configs]
    made = (time.perf_counter() - began) / len(configs)

    def stage(which: list[int], sizes: list[list[int]]) -> list[PhaseTransitionResult]:
        checkpoint = None
        if checkpoint_dir is not None:
            checkpoint = Path(checkpoint_dir) / (
                f"batch-{_digest([[settings_[i] for i in which], sizes])}.pt")
        trained = train_many([data[i][1] for i in which], sizes, [trains[i] for i in which], dev,
                             progress=progress, checkpoint=checkpoint)
        share = trained[0].seconds / len(which)
        results = []
        for i, run in zip(which, trained):
            run = dataclasses.replace(run, seconds=share)
            truth, X, X_test = data[i]
            results.append(measure_phase_transition(
                run, truth, X, X_test, ev, seed=configs[i].seed, scale=scale,
                began=time.perf_counter() - share))
        return results

    everyone = list(range(len(configs)))
    coarse = stage(everyone, [_model_sizes(None, c.N) for c in configs])
    extra = [fine_sizes(r.model_sizes, r.memorization_ratio, fine_points) for r in coarse]
    refine = [i for i in everyone if extra[i]]
    fine = dict(zip(refine, stage(refine, [extra[i] for i in refine]))) if refine else {}
    return [merge(c, settings_[i], coarse[i], fine.get(i), dev,
                  made + sum(r.provenance["wall_seconds"] for r in (coarse[i], fine.get(i)) if r))
            for i, c in enumerate(configs)]


def _task(config, scale, train_config, eval_config, device, fine_points, checkpoint_dir, pin_gpu):
    """A Dask task: one configuration on this worker's device, single-threaded on a CPU."""
    if pin_gpu:  # our local cluster, one worker per GPU: worker i (its name) computes on GPU i
        from distributed import get_worker

        index = int(get_worker().name) % torch.cuda.device_count()
        torch.cuda.set_device(index)
        device = f"cuda:{index}"
    if _device.resolve(device).type == "cpu":
        torch.set_num_threads(1)  # one configuration per core: workers must not share cores
    return run_config(config, scale, train_config, eval_config, device,
                      fine_points=fine_points, checkpoint_dir=checkpoint_dir)


# --------------------------------------------------------------------------- the sweep file

_FIELDS = ("config", "settings", "model_sizes", "memorization_ratio", "start", "end", "midpoint",
           "midpoint_over_N", "times", "reference", "learned_var", "provenance")


def _problem(rec: Any) -> str | None:
    """Why ``rec`` is not a valid sweep record (None: it is)."""
    try:
        return _check(rec)
    except (TypeError, KeyError, AttributeError, ValueError) as err:
        return f"malformed record ({type(err).__name__}: {err})"


def _check(rec: Any) -> str | None:
    if not isinstance(rec, dict):
        return f"not a JSON object but {type(rec).__name__}"
    missing = [f for f in _FIELDS if f not in rec]
    if missing:
        return f"missing fields {missing}"
    try:
        config = Dataset(**rec["config"])
    except (TypeError, ValueError) as err:
        return f"bad configuration {rec['config']!r} ({err})"
    if not isinstance(rec["settings"], dict) or any(
        rec["settings"].get(k) != v for k, v in dataclasses.asdict(config).items()
    ):
        return "its settings do not name its configuration"
    S, T = len(rec["model_sizes"]), len(rec["times"])
    ref = rec["reference"]
    if not (isinstance(ref, dict) and S > 0 and T > 0
            and len(rec["memorization_ratio"]) == len(rec["learned_var"]) == S
            and len(ref.get("true_train") or []) == T
            and [len(row) for row in ref.get("pmem_train") or []] == [T] * S):
        return "its arrays have inconsistent lengths"
    return None


def _read(path: Path) -> tuple[list[tuple[int, dict]], list[tuple[int, str, str]]]:
    """Valid records with their line numbers, and (line, reason, text) of the invalid lines."""
    good, bad = [], []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                bad.append((lineno, f"not JSON ({err.msg})", line))
                continue
            why = _problem(rec)
            if why:
                bad.append((lineno, why, line))
            else:
                good.append((lineno, rec))
    return good, bad


def load_sweep(path: str | Path) -> list[dict[str, Any]]:
    """The valid records of a sweep file, in file order; each invalid line is warned about.

    A line that is not JSON or lacks fields gives a :class:`SweepWarning` and is skipped.
    """
    path = Path(path)
    good, bad = _read(path)
    for lineno, why, _ in bad:
        warnings.warn(f"{path}:{lineno}: {why}; line ignored", SweepWarning, stacklevel=2)
    seen = set()
    for lineno, rec in good:
        key = Dataset(**rec["config"]).key
        if key in seen:
            warnings.warn(f"{path}:{lineno}: a second record of {Dataset(*key).name}",
                          SweepWarning, stacklevel=2)
        seen.add(key)
    return [rec for _, rec in good]


@dataclass(frozen=True)
class SweepTable:
    r"""A sweep as a table: one row per configuration, NumPy array columns.

    ``d``, ``K``, ``N``, ``var``, ``seed`` (C,); ``measured`` (C,) :math:`M_{pt}/N` (NaN where
    the record has none); ``interval`` (C, 2) its 95% bootstrap interval over N (the stored
    ``midpoint_interval_over_N``, recomputed with :func:`~gmmmem.experiments.midpoint_interval`
    for records made before it was stored; NaN at an open end); ``status`` (C,)
    :func:`~gmmmem.experiments.midpoint_status`; ``start``, ``end`` (C,) the smallest model
    sizes with ratio >= 0.1 and >= 0.9 (NaN if none); ``times`` (T,); ``sizes`` (C, S) the coarse
    stage's model sizes over N; ``gen`` (C, T) the true mixture's training loss, ``mem`` (C, T)
    the memorizing model's and ``pmem`` (C, S, T) the partially memorizing models' at those
    sizes (Monte Carlo, x0 units), the inputs of :class:`gmmmem.predictors.MonteCarlo`;
    ``records`` the records themselves (settings, provenance). Every record must have the same
    times and number of coarse sizes.
    """

    d: np.ndarray
    K: np.ndarray
    N: np.ndarray
    var: np.ndarray
    seed: np.ndarray
    measured: np.ndarray
    interval: np.ndarray
    status: np.ndarray
    times: np.ndarray
    sizes: np.ndarray
    gen: np.ndarray
    mem: np.ndarray
    pmem: np.ndarray
    start: np.ndarray
    end: np.ndarray
    records: tuple = field(repr=False)

    @classmethod
    def load(cls, path: str | Path) -> "SweepTable":
        """The table of a sweep file (:func:`load_sweep`)."""
        return cls.from_records(load_sweep(path))

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]]) -> "SweepTable":
        """The table of sweep records (as :func:`load_sweep` returns them)."""
        records = list(records)
        if not records:
            raise ValueError("records is empty")
        columns = {name: np.array([r["config"][name] for r in records])
                   for name in ("d", "K", "N", "var", "seed")}
        measured = np.array([np.nan if r["midpoint_over_N"] is None else r["midpoint_over_N"]
                             for r in records], dtype=float)
        interval = []
        for r in records:
            iv = r.get("midpoint_interval_over_N")
            if iv is None:
                n = r["settings"]["eval_config"]["num_samples"]
                iv = [None if v is None else v / r["config"]["N"]
                      for v in midpoint_interval(r["model_sizes"], r["memorization_ratio"], n)]
            interval.append([np.nan if v is None else v for v in iv])
        status = np.array([r.get("midpoint_status") or midpoint_status(r["memorization_ratio"])
                           for r in records])
        times = records[0]["times"]
        if any(r["times"] != times for r in records):
            raise ValueError("the records do not share one time grid")
        coarse = [np.array(r["stage"]) == "coarse" for r in records]
        if len({int(c.sum()) for c in coarse}) != 1:
            raise ValueError("the records have different numbers of coarse sizes: "
                             f"{sorted({int(c.sum()) for c in coarse})}")
        return cls(
            **columns, measured=measured, interval=np.array(interval, dtype=float), status=status,
            times=np.array(times, dtype=float),
            sizes=np.array([np.array(r["model_sizes"])[c] / r["config"]["N"]
                            for r, c in zip(records, coarse)], dtype=float),
            gen=np.array([r["reference"]["true_train"] for r in records], dtype=float),
            mem=np.array([r["reference"]["mem_train"] for r in records], dtype=float),
            pmem=np.array([np.array(r["reference"]["pmem_train"])[c]
                           for r, c in zip(records, coarse)], dtype=float),
            start=np.array([np.nan if r["start"] is None else r["start"] for r in records], dtype=float),
            end=np.array([np.nan if r["end"] is None else r["end"] for r in records], dtype=float),
            records=tuple(records),
        )

    @classmethod
    def from_columns(cls, *, measured: Any, var: Any, times: Any, d: Any = None, K: Any = None,
                     N: Any = None, sizes: Any = None, gen: Any = None,
                     pmem: Any = None) -> "SweepTable":
        """A table of the columns given and no records (synthetic transitions); ``d``, ``K``,
        ``N`` default to 0, the losses to empty arrays, every other column to NaN."""
        measured = np.asarray(measured, dtype=float)
        C, T = len(measured), len(times)
        nan = np.full(C, np.nan)
        zero = np.zeros(C, dtype=int)
        return cls(
            d=zero if d is None else np.asarray(d), K=zero if K is None else np.asarray(K),
            N=zero if N is None else np.asarray(N), var=np.asarray(var, dtype=float), seed=zero,
            measured=measured, interval=np.full((C, 2), np.nan), status=np.full(C, "measured"),
            times=np.asarray(times, dtype=float),
            sizes=np.zeros((C, 0)) if sizes is None else np.asarray(sizes, dtype=float),
            gen=np.full((C, T), np.nan) if gen is None else np.asarray(gen, dtype=float),
            mem=np.full((C, T), np.nan),
            pmem=np.zeros((C, 0, T)) if pmem is None else np.asarray(pmem, dtype=float),
            start=nan, end=nan.copy(), records=(),
        )

    #: The columns with one entry per row.
    ROW_COLUMNS = ("d", "K", "N", "var", "seed", "measured", "interval", "status", "sizes", "gen",
                   "mem", "pmem", "start", "end")

    def rows(self, select: Any) -> "SweepTable":
        """The table of the rows ``select`` picks (a boolean mask or indices), in its order."""
        idx = np.arange(len(self))[np.asarray(select)]
        return dataclasses.replace(self, **{name: getattr(self, name)[idx] for name in self.ROW_COLUMNS},
                                   records=tuple(self.records[i] for i in idx) if self.records else ())

    def with_losses(self, sizes: np.ndarray, gen: np.ndarray, pmem: np.ndarray) -> "SweepTable":
        """The table with other losses in place of ``sizes`` (C, S), ``gen`` (C, T), ``pmem`` (C, S, T)."""
        sizes, gen, pmem = (np.asarray(a, dtype=float) for a in (sizes, gen, pmem))
        C, T = len(self), len(self.times)
        if gen.shape != (C, T) or pmem.ndim != 3 or pmem.shape[::2] != (C, T) \
                or sizes.shape != pmem.shape[:2]:
            raise ValueError(f"losses must have shapes (C, S), (C, T), (C, S, T) with C = {C}, "
                             f"T = {T}; got {sizes.shape}, {gen.shape}, {pmem.shape}")
        return dataclasses.replace(self, sizes=sizes, gen=gen, pmem=pmem)

    def curve(self, i: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Row ``i``'s model sizes (coarse and fine, increasing) and its per-size field ``name``
        at them (a dotted path into the record, e.g. ``"reference.pmem_train"``)."""
        r = self.records[i]
        value = r
        for key in name.split("."):
            value = value[key]
        return np.asarray(r["model_sizes"]), np.asarray(value, dtype=float)

    def at_size(self, name: str, M: Any) -> np.ndarray:
        """The per-size field ``name`` of each record (e.g. ``"memorization_ratio"``) at model
        size ``M`` (one for all rows, or one per row); KeyError where a row has no such size."""
        sizes = np.broadcast_to(np.asarray(M), (len(self),))
        out = []
        for r, m in zip(self.records, sizes):
            if int(m) not in r["model_sizes"]:
                raise KeyError(f"{Dataset(**r['config']).name} has no model size {int(m)}")
            out.append(r[name][r["model_sizes"].index(int(m))])
        return np.array(out, dtype=float)

    def _shared(self, name: str, drop: str | None = None) -> Any:
        """A setting every record has the same value of (but for its field ``drop``);
        ValueError if they differ."""
        values = [{k: v for k, v in r["settings"][name].items() if k != drop} for r in self.records]
        if len({json.dumps(v, sort_keys=True) for v in values}) != 1:
            raise ValueError(f"the records differ in {name!r}")
        return values[0]

    @property
    def train_config(self) -> TrainConfig:
        """The training recipe of every record (with the first row's seed; each row has its own)."""
        return TrainConfig(**self._shared("train_config", drop="seed"), seed=int(self.seed[0]))

    @property
    def eval_config(self) -> EvalConfig:
        """The evaluation settings of every record."""
        return EvalConfig(**self._shared("eval_config"))

    @property
    def train_seed(self) -> np.ndarray:
        """The training seed of each configuration (its recorded ``train_config.seed``) (C,)."""
        return np.array([r["settings"]["train_config"]["seed"] for r in self.records], dtype=int)

    @property
    def wall_seconds(self) -> np.ndarray:
        """Wall time of each configuration, from its provenance (C,)."""
        return np.array([r["provenance"]["wall_seconds"] for r in self.records], dtype=float)

    def __len__(self) -> int:
        return len(self.d)

    @property
    def standard_error(self) -> np.ndarray:
        """The sampling standard error of each M_pt/N, its 95% interval read as +-1.96 s.e. (C,)."""
        return (self.interval[:, 1] - self.interval[:, 0]) / (2 * 1.959963984540054)

    def row(self, d: int, K: int, N: int) -> int:
        """The index of configuration (d, K, N) (KeyError if the table has none, or several)."""
        rows = np.flatnonzero((self.d == d) & (self.K == K) & (self.N == N))
        if len(rows) != 1:
            raise KeyError(f"{len(rows)} rows for (d, K, N) = ({d}, {K}, {N})")
        return int(rows[0])

    @property
    def configs(self) -> list[tuple[int, int, int]]:
        """(d, K, N) of each row."""
        return [(int(d), int(K), int(N)) for d, K, N in zip(self.d, self.K, self.N)]


def _write_jsonl_atomic(path: Path, records: Sequence[dict]) -> None:
    """Replace ``path`` by these records, one JSON object a line, atomically and durably.

    The whole file is rewritten (a temporary file in the same folder, fsync, ``os.replace``)
    rather than appended to: a kill at any moment leaves either the old or the new file, never
    a torn last line; the file always holds exactly one record per configuration, so a record
    recomputed for new settings replaces the old one and corrupted lines disappear. The cost,
    rewriting ~50 kB per record after each configuration, is nothing next to the training.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            for rec in records:
                f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return {k.rstrip("."): v for k, v in out.items()}


def _differences(stored: dict, wanted: dict) -> str:
    a, b = _flatten(stored), _flatten(wanted)
    diffs = [f"{k}: {a.get(k, '(absent)')!r} stored, {b.get(k, '(absent)')!r} requested"
             for k in sorted(a.keys() | b.keys()) if a.get(k, "(absent)") != b.get(k, "(absent)")]
    return "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")


# --------------------------------------------------------------------------- arguments

_SCHEMES = ("tcp", "tls", "inproc", "ucx", "ws", "wss")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")


def check_scheduler(address: str) -> str:
    """A Dask scheduler address (``tcp://HOST:PORT``, ``HOST:PORT``, ``tls://...``,
    ``inproc://...``) or the path of a scheduler file (``.json``); else ``ValueError``."""
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"scheduler must be an address such as tcp://HOST:PORT, got {address!r}")
    if address.endswith(".json"):
        if not Path(address).is_file():
            raise ValueError(f"scheduler file {address} does not exist")
        return address
    scheme, sep, location = address.partition("://")
    if not sep:
        scheme, location = "tcp", address
    ok = scheme in _SCHEMES and (
        bool(location) and not any(c.isspace() for c in location) if scheme == "inproc"
        else bool(_HOST_PORT.fullmatch(location)) and int(location.rsplit(":", 1)[1]) <= 65535
    )
    if not ok:
        raise ValueError(
            f"bad scheduler address {address!r}: expected tcp://HOST:PORT (or HOST:PORT; "
            f"protocols {', '.join(_SCHEMES)}) or a scheduler file ending in .json"
        )
    return address


def _resolve_grid(grid, scale, train, eval_config) -> tuple[list[Dataset], str, dict, EvalConfig]:
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise ValueError(f"unknown grid {grid!r}: choose one of {', '.join(GRIDS)}")
        spec = GRIDS[grid]
        configs = list(spec.configs)
        own = scale is None or scale == spec.scale
        scale = spec.scale if scale is None else scale
        # The grid's training overrides belong to its own scale; another scale runs its preset.
        train = train if train is not None else (spec.train if own else {})
        eval_config = eval_config or (spec.eval_config if own else None)
    else:
        configs = list(grid)
        if not configs:
            raise ValueError("the grid holds no configuration")
        bad = [c for c in configs if not isinstance(c, Dataset)]
        if bad:
            raise ValueError(f"a grid is a name or a list of Dataset, got {bad[0]!r}")
        scale = "default" if scale is None else scale
    check_scale(scale)
    if len({c.key for c in configs}) != len(configs):
        raise ValueError("the grid lists a configuration twice")
    train = dict(train or {})
    if "seed" in train:
        raise ValueError("the training seed is each configuration's seed; do not override it")
    TrainConfig.preset(scale, **train)  # checks the overrides now, not in a worker
    return configs, scale, train, eval_config or EVAL_PRESETS[scale]


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# --------------------------------------------------------------------------- the sweep


def summary(rec: dict[str, Any]) -> str:
    """One line on a record: its configuration and the transition found."""
    c, mid = rec["config"], rec["midpoint"]
    where = (f"{mid:.1f} ({rec['midpoint_over_N']:.3f} N)" if mid is not None
             else f"none ({midpoint_status(rec['memorization_ratio'])})")
    return (f"d={c['d']} K={c['K']} N={c['N']} var={c['var']:g} seed={c['seed']}: "
            f"start {rec['start']}, end {rec['end']}, midpoint M_pt {where}")


def _writes_out(run: Callable) -> Callable:
    """Check ``run``'s ``out`` before any work, and hold it locked (:func:`gmmmem.files.exclusive`)
    while ``run`` writes it: a second writer gets :class:`gmmmem.files.LockedError`."""
    signature = inspect.signature(run)

    @functools.wraps(run)
    def locked(*args, **kwargs):
        out = signature.bind(*args, **kwargs).arguments["out"]
        files.check_output(out, "out")
        with files.exclusive(out):
            return run(*args, **kwargs)

    return locked


@_writes_out
def run_sweep(
    grid: str | Sequence[Dataset],
    out: str | Path,
    scale: str | None = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    progress: bool | None = None,
    device: str | torch.device | None = None,
    *,
    train: dict[str, Any] | None = None,
    eval_config: EvalConfig | None = None,
    fine_points: int = FINE_POINTS,
    report: Callable[[str], None] | None = None,
    batch: int | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) a sweep; returns the records of ``grid``'s configurations, in its order.

    ``grid`` is a name of :data:`GRIDS` or a list of :class:`Dataset`. ``scale`` picks the
    training and evaluation presets (default: the grid's; ``default`` for a list); ``train``
    overrides fields of the training preset and ``eval_config`` replaces the evaluation preset
    (a named grid brings its own, used while ``scale`` is the grid's).

    Where it runs: on the Dask scheduler at ``scheduler`` (``tcp://HOST:PORT`` or a scheduler
    file), else on a local cluster of ``n_workers`` workers (default: one per GPU, each pinned
    to its GPU, when ``device`` is auto and CUDA is present; else one single-threaded worker
    per CPU core). ``device``: None / ``"auto"`` (each worker's own default), or one device for
    every task. Only the local cluster checkpoints training (next to ``out``), so that a
    killed sweep also resumes the configurations it was computing. With ``batch`` (a number of
    configurations) no Dask: here, on one device, up to ``batch`` configurations at a time run
    as one program (:func:`run_configs`; what one GPU needs), checkpointed next to ``out``, a
    batch's records written when it ends; a batch that fails fails all its configurations.

    Records go to ``out`` (JSON lines), the file rewritten atomically after each configuration.
    ``out`` is checked before any work and locked while the sweep runs: a second sweep writing
    it fails at once (:class:`gmmmem.files.LockedError`). ``report`` gets a line on each
    configuration as it finishes (:func:`summary`).
    A configuration whose stored record has the same settings is not recomputed. A stored
    record made with other settings, a corrupted line and a duplicate are each reported
    (:class:`SweepWarning`); such a configuration is recomputed, and the lines are dropped from
    ``out`` when it is next rewritten (copied first to ``out`` + ``.rejected``). Records of
    configurations outside ``grid`` are kept in the file but not returned. If tasks fail, the
    others are still recorded and :class:`SweepError` is raised at the end.
    """
    configs, scale, ev, train_configs, wanted = _plan(grid, scale, train, eval_config, fine_points)
    out = Path(out)
    if out.exists() and not out.is_file():
        raise ValueError(f"out must be a file path, but {out} exists and is not a file")
    if scheduler is not None:
        check_scheduler(scheduler)
        if n_workers is not None:
            raise ValueError("n_workers (--workers) sets the size of the local cluster; "
                             "it cannot be used with a scheduler address")
    if n_workers is not None:
        validate.positive_int(n_workers, "n_workers (--workers)")
    if batch is not None:
        validate.positive_int(batch, "batch (--batch-configs)")
        if scheduler is not None or n_workers is not None:
            raise ValueError("batch (--batch-configs) runs the configurations here, in one "
                             "program: it cannot be used with a scheduler or workers")
    if device == "auto":
        device = None
    if device is not None:
        try:
            torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"bad device {device!r}: {err}") from None
        if scheduler is None:
            _device.resolve(device)  # the local cluster computes here: the device must exist
    say = report or (lambda message: None)

    done: dict[tuple, dict] = {}
    others: list[dict] = []
    rejected: list[str] = []
    rejected_path = out.with_name(out.name + ".rejected")
    if out.exists():
        good, bad = _read(out)
        for lineno, why, line in bad:
            warnings.warn(f"{out}:{lineno}: {why}; line ignored (it is dropped from the file when "
                          f"the file is next rewritten, and kept in {rejected_path})",
                          SweepWarning, stacklevel=2)
            rejected.append(line if line.endswith("\n") else line + "\n")
        seen = set()
        for lineno, rec in good:
            cfg = Dataset(**rec["config"])
            line = json.dumps(rec, separators=(",", ":")) + "\n"
            if cfg.key in seen:
                warnings.warn(f"{out}:{lineno}: a second record of {cfg.name}; ignored",
                              SweepWarning, stacklevel=2)
                rejected.append(line)
            elif cfg.key not in wanted:
                others.append(rec)
            elif provenance.upgraded(rec["settings"]) != wanted[cfg.key]:
                warnings.warn(
                    f"{out}:{lineno}: the record of {cfg.name} was made with other settings "
                    f"({_differences(provenance.upgraded(rec['settings']), wanted[cfg.key])}); not reused: it is "
                    f"recomputed, and the old line is kept in {rejected_path}",
                    SweepWarning, stacklevel=2)
                rejected.append(line)
            else:
                done[cfg.key] = rec
            seen.add(cfg.key)
        if others:
            warnings.warn(f"{out} holds {len(others)} record(s) of configurations outside this grid; "
                          "they stay in the file and are not returned", SweepWarning, stacklevel=2)

    def save() -> None:
        if rejected:
            with open(rejected_path, "a") as f:
                f.writelines(rejected)
                f.flush()
                os.fsync(f.fileno())
            rejected.clear()
        _write_jsonl_atomic(out, [done[c.key] for c in configs if c.key in done] + others)

    todo = [c for c in configs if c.key not in done]
    say(f"{len(configs)} configurations, {len(done)} already in {out}, {len(todo)} to compute")
    failures: list[tuple[Dataset, BaseException]] = []
    if todo and batch is not None:
        failures = _compute_batched(todo, batch, scale, train_configs, ev, fine_points, device,
                                    out, done, save, progress, len(configs), say)
    elif todo:
        failures = _compute(todo, scale, train_configs, ev, fine_points, device, scheduler,
                            n_workers, out, done, save, progress, len(configs), say)
    if failures:
        lines = "\n".join(f"  {c.name}: {type(e).__name__}: {e}" for c, e in failures)
        kept = f"the others are in {out}" if done else "none is recorded"
        raise SweepError(f"{len(failures)} of {len(configs)} configurations failed ({kept}; "
                         f"rerun the command to retry):\n{lines}")
    return [done[c.key] for c in configs]


def grid_settings(grid: str | Sequence[Dataset], scale: str | None = None, *,
                  train: dict[str, Any] | None = None, eval_config: EvalConfig | None = None,
                  fine_points: int = FINE_POINTS) -> dict[tuple, dict[str, Any]]:
    """The settings :func:`run_sweep` with these arguments records for each configuration, by
    :attr:`Dataset.key`; nothing is trained."""
    return _plan(grid, scale, train, eval_config, fine_points)[-1]


def _plan(grid, scale, train, eval_config, fine_points):
    """The configurations, scale, evaluation, training settings by key and record settings by key."""
    configs, scale, train, ev = _resolve_grid(grid, scale, train, eval_config)
    validate.positive_int(fine_points, "fine_points")
    train_configs = {c.key: TrainConfig.preset(scale, **train, seed=c.seed) for c in configs}
    wanted = {c.key: settings(c, scale, train_configs[c.key], ev, fine_points) for c in configs}
    return configs, scale, ev, train_configs, wanted


def _compute(todo, scale, train_configs, ev, fine_points, device, scheduler, n_workers, out,
             done, save, progress, total, say) -> list[tuple[Dataset, BaseException]]:
    """Submit the missing configurations to Dask and record each as it finishes."""
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    pin_gpu = False
    checkpoint_dir = None
    if scheduler is None:
        gpus = torch.cuda.device_count() if _device.resolve(device).type == "cuda" else 0
        pin_gpu = device is None and gpus > 0
        workers = n_workers or (gpus or _cpu_count())
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
        # Workers of a local cluster share this filesystem: checkpoint training beside `out`.
        checkpoint_dir = out.with_name(out.name + ".checkpoints")
        where = (f"a local cluster of {workers} worker(s)"
                 + (f", one per GPU ({gpus})" if pin_gpu else f" on {_device.resolve(device)}"))
    else:
        try:
            if scheduler.endswith(".json"):
                client = Client(scheduler_file=scheduler, timeout=CONNECT_TIMEOUT)
            else:
                client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except OSError as err:
            raise ConnectionError(f"could not reach the Dask scheduler {scheduler} "
                                  f"within {CONNECT_TIMEOUT} s: {err}") from None
        where = f"the Dask scheduler {scheduler}"
    say(f"computing on {where}")
    failures = []
    try:
        futures = {
            client.submit(_task, c, scale, train_configs[c.key], ev, device, fine_points,
                          checkpoint_dir, pin_gpu, pure=False): c
            for c in todo
        }
        with tqdm(total=total, initial=total - len(todo), unit="config", desc=f"sweep {out.name}",
                  disable=None if progress is None else not progress) as bar:
            for future in as_completed(futures):
                c = futures[future]
                if future.status == "error":
                    err = future.exception()
                    warnings.warn(f"configuration {c.name} failed: {type(err).__name__}: {err}",
                                  SweepWarning, stacklevel=3)
                    failures.append((c, err))
                else:
                    done[c.key] = future.result()
                    save()
                    say(summary(done[c.key]))
                    if checkpoint_dir is not None:
                        for f in checkpoint_dir.glob(f"{c.name}-*.pt"):
                            f.unlink(missing_ok=True)
                bar.update()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        if checkpoint_dir is not None and checkpoint_dir.is_dir() and not any(checkpoint_dir.iterdir()):
            checkpoint_dir.rmdir()
    return failures


def _compute_batched(todo, batch, scale, train_configs, ev, fine_points, device, out, done, save,
                     progress, total, say) -> list[tuple[Dataset, BaseException]]:
    """Run the missing configurations here, ``batch`` at a time (:func:`run_configs`), and
    record each batch as it finishes."""
    dev = _device.resolve(device)
    checkpoint_dir = out.with_name(out.name + ".checkpoints")
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    chunks = [todo[i:i + batch] for i in range(0, len(todo), batch)]
    say(f"computing here on {dev}, {len(chunks)} batch(es) of up to {batch} configurations")
    failures = []
    try:
        with tqdm(total=total, initial=total - len(todo), unit="config", desc=f"sweep {out.name}",
                  disable=None if progress is None else not progress) as bar:
            for chunk in chunks:
                base = dataclasses.replace(train_configs[chunk[0].key], seed=0)
                try:
                    records = run_configs(chunk, scale, base, ev, dev, fine_points=fine_points,
                                          checkpoint_dir=checkpoint_dir, progress=progress)
                except Exception as err:  # as a failed Dask task: the other batches go on
                    names = ", ".join(c.name for c in chunk)
                    warnings.warn(f"the batch of {names} failed: {type(err).__name__}: {err}",
                                  SweepWarning, stacklevel=3)
                    failures += [(c, err) for c in chunk]
                    bar.update(len(chunk))
                    continue
                for c, rec in zip(chunk, records):
                    done[c.key] = rec
                save()
                for c in chunk:
                    say(summary(done[c.key]))
                for f in checkpoint_dir.glob("batch-*.pt"):  # this batch's stages
                    f.unlink(missing_ok=True)
                bar.update(len(chunk))
    finally:
        if checkpoint_dir.is_dir() and not any(checkpoint_dir.iterdir()):
            checkpoint_dir.rmdir()
    return failures
