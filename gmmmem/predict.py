r"""Predict before you train: where a configuration should start to memorize.

The prediction is chapter 4's closed-form crossover (Theorems 3.1/3.2 with :math:`c = 2`),

.. math:: \frac{M^\star}{N} = \sum_t w_t\, \frac{\tfrac12 + \psi_t s_\star^2}{1 + \psi_t s_\star^2},

with the time weights :math:`w` (non-negative, summing to one) fitted once on the committed
sweep (:func:`fit_weights`, across all its data variances: the setting in which it beats a
constant predictor on held-out configurations) and stored as JSON (:func:`write_weights`, ``data/weights/default.json``;
read back as a :class:`FittedWeights` by :func:`load_weights`).
It depends on the configuration through the training-set size :math:`N` and the data variance
:math:`s_\star^2` only; the dimension :math:`d` and the number of clusters :math:`K` enter
only through the range check (:class:`RangeWarning`).

Beside the midpoint :math:`M^\star` (where half the samples are memorized), a prediction gives
the model sizes below which the model should generalize and above which it should memorize:
:math:`M^\star` plus the median offset, over the sweep, of the measured transition start
(first size with memorization ratio >= 0.1) and end (first size >= 0.9) from the measured
midpoint, in units of :math:`N`.

The stored file also holds the held-out errors of the predictor under chapter 4's three
evaluations (random 75/25 splits, leave one :math:`N` out, fit on variance 1 only) beside
those of a constant predictor (the mean measured :math:`M_{pt}/N` of the fitted
configurations), so a prediction is reported with the error it can be trusted to.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import config as _config

#: The predictor the weights are fitted for (chapter 4's closed form, fitted across variances).
PREDICTOR = "closed form (Theorems 3.1/3.2, c = 2), time weights fitted across data variances"

#: The constant of Theorem 3.2.
C = 2.0

#: Chapter 4's random held-out evaluation: splits, held-out fraction, seed.
SPLITS, TEST_FRACTION, SPLIT_SEED = 40, 0.25, 0

#: The parameters whose fitted range is checked, in the order they are reported.
RANGE_PARAMETERS = ("d", "K", "N", "var")


class RangeWarning(UserWarning):
    """A configuration lies outside the range of the configurations the weights were fitted on."""


def default_sweep() -> Path:
    """The committed sweep the weights are fitted on."""
    return _config.data_dir() / "sweeps" / "default.jsonl"


def default_weights() -> Path:
    """The committed fitted weights."""
    return _config.data_dir() / "weights" / "default.json"


# ----------------------------------------------------------------------------- fitting


def fit_weights(table: Any) -> "FittedWeights":
    """Fit the closed-form weights on a sweep table and evaluate them held out
    (:func:`fit_payload`, read as :class:`FittedWeights`, without provenance)."""
    return FittedWeights.from_dict(fit_payload(table))


def fit_payload(table: Any) -> dict[str, Any]:
    r"""The weights file's content, fitted on a sweep table and evaluated held out.

    ``table``: a :class:`gmmmem.sweep.SweepTable` whose every row has a measured transition
    (start, midpoint, end). Returns a JSON-ready dictionary: the times and fitted weights, the
    fit on all rows (training MSE, effective degrees of freedom), the held-out evaluation
    (:func:`gmmmem.heldout.heldout`) of the closed form and of the constant baseline under
    chapter 4's three evaluations, each where the table allows it (leaving one N out needs two
    N, fitting on variance 1 other variances), the transition width (start/N and end/N of every
    row, and the median offsets of start and end from the midpoint), the fitted range of every
    parameter, and the rows' configurations with their measured and fitted ratios.
    """
    import torch

    from .diffusion import time_grid
    from .heldout import group_splits, heldout, random_splits
    from .predictors import ClosedForm, Constant

    if len(table) < 2:
        raise ValueError(f"need at least 2 sweep records to fit and hold out, got {len(table)}")
    incomplete = ~np.isfinite(table.measured) | ~np.isfinite(table.start) | ~np.isfinite(table.end)
    if incomplete.any():
        raise ValueError("records without a complete transition (start, midpoint, end): "
                         f"{[table.configs[i] for i in np.flatnonzero(incomplete)]}")
    measured = table.measured
    N = table.N.astype(float)
    start, end = table.start / N, table.end / N
    t = time_grid(dtype=torch.float64).numpy()
    closed, constant = ClosedForm(times=t, c=C), Constant()

    evaluations = {"random 75/25": random_splits(len(table), SPLITS, TEST_FRACTION, SPLIT_SEED)}
    if np.unique(table.N).size > 1:
        evaluations["leave one N out"] = group_splits(table.N)
    var_one = table.var == 1.0
    if var_one.any() and not var_one.all():
        evaluations["fit on variance 1"] = [var_one]
    held_out = {
        name: {"closed form": heldout(closed, table, splits).summary(),
               "constant (baseline)": heldout(constant, table, splits).summary()}
        for name, splits in evaluations.items()
    }
    fit = closed.fit(table)
    cfg = {name: getattr(table, name) for name in RANGE_PARAMETERS}
    return {
        "predictor": PREDICTOR,
        "c": C,
        "times": t.tolist(),
        "weights": fit.weights.tolist(),
        "fit": {"n_configs": len(table), "train_mse": fit.train_mse,
                "effective_dof": fit.effective_dof, "optimality_gap": fit.optimality_gap},
        "held_out": held_out,
        "evaluation": {"random_splits": SPLITS, "test_fraction": TEST_FRACTION,
                       "split_seed": SPLIT_SEED},
        "width": {
            "start_over_N": start.tolist(),
            "end_over_N": end.tolist(),
            "start_offset": float(np.median(start - measured)),
            "end_offset": float(np.median(end - measured)),
        },
        "fitted_range": {name: [float(cfg[name].min()), float(cfg[name].max())]
                         for name in RANGE_PARAMETERS},
        "configs": [{"d": int(d), "K": int(k), "N": int(n), "var": float(v), "seed": int(s_),
                     "measured": float(m), "fitted": float(p)}
                    for d, k, n, v, s_, m, p in zip(table.d, table.K, table.N, table.var, table.seed,
                                                     measured, fit.predict(table))],
    }


def write_weights(sweep: str | Path | None = None, out: str | Path | None = None, *,
                  force: bool = False) -> "FittedWeights":
    """Fit on the sweep file ``sweep`` (default :func:`default_sweep`), write ``out``
    (default :func:`default_weights`, replaced only with ``force``) with provenance, and
    return what was written."""
    import torch

    from . import files, provenance
    from .sweep import SweepTable

    sweep = Path(sweep) if sweep is not None else default_sweep()
    if out is None and not force:
        files.check_default_output(default_weights())
    out = files.check_output(out if out is not None else default_weights())
    if not sweep.is_file():
        raise ValueError(f"sweep file {sweep} does not exist")
    began = time.perf_counter()
    payload = fit_payload(SweepTable.load(sweep))
    settings = {
        "experiment": "fit_weights",
        "sweep": sweep.name,
        "sweep_sha256": hashlib.sha256(sweep.read_bytes()).hexdigest(),
        "predictor": PREDICTOR,
        **payload["evaluation"],
    }
    payload["provenance"] = provenance.record(settings, torch.device("cpu"),
                                              time.perf_counter() - began)
    files.write_json(out, payload)
    return FittedWeights.from_dict(payload, out)


# ----------------------------------------------------------------------------- the weights file


def _read_json(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; ValueError naming ``what`` the file should be otherwise."""
    import json

    try:
        with open(path) as f:
            payload = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a {what} file: not JSON ({err})") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{path} is not a {what} file: not a JSON object")
    return payload


@dataclass(frozen=True)
class FitSummary:
    """The fit on every configuration: how many, training MSE, effective degrees of freedom,
    optimality gap of the simplex-constrained least squares."""

    n_configs: int
    train_mse: float
    effective_dof: float
    optimality_gap: float


@dataclass(frozen=True)
class HeldOutSummary:
    """One predictor's training and held-out MSE of M_pt/N: number of splits, means and spreads."""

    n_splits: int
    train_mse_mean: float
    train_mse_std: float
    test_mse_mean: float
    test_mse_std: float


@dataclass(frozen=True, eq=False)
class FittedConfigs:
    """The configurations the weights were fitted on, one entry per configuration (C,): d, K,
    N, data variance, seed, measured M_pt/N and the fitted predictor's M*/N."""

    d: np.ndarray
    K: np.ndarray
    N: np.ndarray
    var: np.ndarray
    seed: np.ndarray
    measured: np.ndarray
    fitted: np.ndarray

    def __len__(self) -> int:
        return len(self.d)


@dataclass(frozen=True, eq=False)
class FittedWeights:
    """A weights file (:func:`write_weights`): the time weights ``weights`` (T,) at ``times``
    (T,) of the closed form with constant ``c``; the fit on all configurations; the held-out
    summaries, by evaluation then by ``"closed form"`` / ``"constant (baseline)"``; the random
    splits' settings; the transition width (start/N and end/N of every configuration, and the
    median offsets of start and end from the midpoint, in units of N); the fitted range
    (low, high) of each of :data:`RANGE_PARAMETERS`; the configurations; the provenance (None
    for :func:`fit_weights`' unwritten result)."""

    predictor: str
    c: float
    times: np.ndarray
    weights: np.ndarray
    fit: FitSummary
    held_out: dict[str, dict[str, HeldOutSummary]]
    random_splits: int
    test_fraction: float
    split_seed: int
    start_over_N: np.ndarray
    end_over_N: np.ndarray
    start_offset: float
    end_offset: float
    fitted_range: dict[str, tuple[float, float]]
    configs: FittedConfigs
    provenance: dict[str, Any] | None

    @classmethod
    def from_dict(cls, payload: Any, source: str | Path = "the payload") -> "FittedWeights":
        """Read the content of a weights file (``source`` names it in errors)."""
        if not isinstance(payload, dict):
            raise ValueError(f"{source} is not a fitted-weights file: not a JSON object")
        needed = ("predictor", "c", "times", "weights", "fit", "held_out", "evaluation", "width",
                  "fitted_range", "configs")
        absent = [k for k in needed if k not in payload]
        if absent:
            raise ValueError(f"{source} is not a fitted-weights file: missing {absent}")
        try:
            times = np.asarray(payload["times"], dtype=float)
            weights = np.asarray(payload["weights"], dtype=float)
            if times.ndim != 1 or times.shape != weights.shape:
                raise ValueError(f"times {times.shape} and weights {weights.shape} differ in shape")
            rows = payload["configs"]
            configs = FittedConfigs(**{
                name: np.array([row[name] for row in rows], dtype=kind)
                for name, kind in (("d", int), ("K", int), ("N", int), ("var", float), ("seed", int),
                                   ("measured", float), ("fitted", float))})
            width, ev = payload["width"], payload["evaluation"]
            return cls(
                predictor=str(payload["predictor"]), c=float(payload["c"]), times=times,
                weights=weights, fit=FitSummary(**payload["fit"]),
                held_out={name: {p: HeldOutSummary(**summary) for p, summary in by.items()}
                          for name, by in payload["held_out"].items()},
                random_splits=int(ev["random_splits"]), test_fraction=float(ev["test_fraction"]),
                split_seed=int(ev["split_seed"]),
                start_over_N=np.asarray(width["start_over_N"], dtype=float),
                end_over_N=np.asarray(width["end_over_N"], dtype=float),
                start_offset=float(width["start_offset"]), end_offset=float(width["end_offset"]),
                fitted_range={name: (float(payload["fitted_range"][name][0]),
                                     float(payload["fitted_range"][name][1]))
                              for name in RANGE_PARAMETERS},
                configs=configs, provenance=payload.get("provenance"),
            )
        except (TypeError, KeyError, ValueError, AttributeError, IndexError) as err:
            raise ValueError(f"{source} is not a fitted-weights file: malformed "
                             f"({type(err).__name__}: {err})") from None


def load_weights(path: str | Path | None = None) -> FittedWeights:
    """The fitted weights written by :func:`write_weights` (default :func:`default_weights`)."""
    path = Path(path) if path is not None else default_weights()
    if not path.is_file():
        raise ValueError(f"no fitted weights at {path}: make them with "
                         f"`python -m gmmmem fit-weights --out {path}`")
    return FittedWeights.from_dict(_read_json(path, "fitted-weights"), path)


# ----------------------------------------------------------------------------- predicting


@dataclass(frozen=True)
class Prediction:
    """Where a configuration should memorize; model sizes M are in units of model components."""

    d: int
    K: int
    N: int
    var: float
    M_star_over_N: float
    M_star: float
    generalizes_below: float
    memorizes_above: float
    predictor: str
    held_out_mse: dict[str, float]
    baseline_held_out_mse: dict[str, float]
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of every field."""
        out = asdict(self)
        out["warnings"] = list(self.warnings)
        return out

    @classmethod
    def from_dict(cls, payload: Any) -> "Prediction":
        """The prediction :meth:`to_dict` wrote; ValueError if ``payload`` is not one."""
        names = [f.name for f in fields(cls)]
        if not isinstance(payload, dict) or sorted(payload) != sorted(names):
            got = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
            raise ValueError(f"not a prediction: expected the fields {names}, got {got}")
        return cls(**{**payload, "warnings": tuple(payload["warnings"])})


def _integer(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def predict(d: int, K: int, N: int, var: float = 1.0,
            fitted: FittedWeights | str | Path | None = None) -> Prediction:
    r"""Predict the memorization threshold of dimension ``d``, ``K`` clusters, ``N`` training
    points and data variance ``var`` from ``fitted`` weights (:func:`load_weights`' result,
    a path, or None: the committed file).

    Raises ``ValueError`` on a bad configuration (``d``, ``K`` >= 1, ``N`` >= 2 integers,
    ``var`` finite and > 0); warns (:class:`RangeWarning`, one per parameter, also listed in
    :attr:`Prediction.warnings`) when a parameter lies outside the fitted range.
    """
    d, K = _integer(d, "d", 1), _integer(K, "K", 1)
    N = _integer(N, "N (the training-set size; the memorization criterion needs two points)", 2)
    if isinstance(var, bool) or not isinstance(var, numbers.Real) or not 0.0 < var < math.inf:
        raise ValueError(f"var (the data variance) must be a finite number > 0, got {var!r}")
    var = float(var)
    fitted = fitted if isinstance(fitted, FittedWeights) else load_weights(fitted)

    values = {"d": d, "K": K, "N": N, "var": var}
    notes = []
    for name in RANGE_PARAMETERS:
        lo, hi = fitted.fitted_range[name]
        if not lo <= values[name] <= hi:
            notes.append(f"{name} = {values[name]:g} lies outside the fitted range {lo:g}..{hi:g} "
                         f"of the sweep the weights were fitted on: the prediction extrapolates")
    for note in notes:
        warnings.warn(note, RangeWarning, stacklevel=2)

    from .losses import closed_form_losses, crossover  # torch: once the input is known to be good

    ratio = crossover(*closed_form_losses(fitted.times, var, fitted.c), fitted.weights)
    held = fitted.held_out
    return Prediction(
        d=d, K=K, N=N, var=var,
        M_star_over_N=ratio,
        M_star=ratio * N,
        generalizes_below=(ratio + fitted.start_offset) * N,
        memorizes_above=(ratio + fitted.end_offset) * N,
        predictor=fitted.predictor,
        held_out_mse={k: v["closed form"].test_mse_mean for k, v in held.items()},
        baseline_held_out_mse={k: v["constant (baseline)"].test_mse_mean for k, v in held.items()},
        warnings=tuple(notes),
    )


# ----------------------------------------------------------------------------- checking

#: Configurations the weights were not fitted on, (d, K, N, data variance), to check against:
#: both outside the fitted range of d (the first also of K), inside those of N and the variance.
CHECK_CONFIGS = ((20, 2, 60, 1.5), (50, 4, 50, 0.7))


def run_check(out_dir: str | Path, configs: Sequence[tuple[int, int, int, float]] = CHECK_CONFIGS,
              fitted: str | Path | None = None, *, n_workers: int | None = None,
              scheduler: str | None = None, scale: str = "default",
              train: dict[str, Any] | None = None, eval_config: Any = None,
              seed: int = 0) -> tuple["CheckPredictions", list[dict[str, Any]]]:
    """Predict, then train: the predictions for ``configs`` first, then their measured transitions.

    Writes ``out_dir/predictions.json`` (the :class:`Prediction` of each configuration from the
    weights file ``fitted``, with provenance) before any training starts — kept as it is when
    it already holds the predictions of the same weights and configurations — then locates
    each configuration's transition with the sweep's two-stage search
    (:func:`gmmmem.sweep.run_sweep`: on ``scheduler``, else a local cluster of ``n_workers``
    workers; at ``scale``, ``train`` / ``eval_config`` overriding its presets) into
    ``out_dir/measured.jsonl``, which resumes like any sweep file; every configuration with
    seed ``seed``. Returns (the predictions file, :func:`load_predictions`; the sweep records).
    """
    import torch

    from . import files, provenance
    from .sweep import run_sweep

    out_dir = Path(out_dir)
    path = Path(fitted) if fitted is not None else default_weights()
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RangeWarning)  # kept in each prediction's warnings
        predictions = [predict(d, K, N, var, load_weights(path)).to_dict()
                       for d, K, N, var in configs]
    settings = check_settings(configs, path)
    target = out_dir / "predictions.json"
    if not target.is_file() or load_predictions(target).settings != settings:
        files.write_json(target, {
            "predictions": predictions,
            "provenance": provenance.record(settings, torch.device("cpu"), time.perf_counter() - began)})
    records = run_sweep(check_grid(configs, seed), out_dir / "measured.jsonl", scale, scheduler, n_workers,
                        progress=False, train=train, eval_config=eval_config)
    return load_predictions(target), records


@dataclass(frozen=True)
class CheckPredictions:
    """A predictions file of :func:`run_check`: the predictions, in the order of ``configs``
    ((d, K, N, var) each), made from the weights file named ``weights`` with SHA-256
    ``weights_sha256``; ``settings`` (:func:`check_settings`) and ``provenance`` as recorded."""

    predictions: tuple[Prediction, ...]
    weights: str
    weights_sha256: str
    configs: tuple[tuple[int, int, int, float], ...]
    settings: dict[str, Any]
    provenance: dict[str, Any]


def load_predictions(path: str | Path) -> CheckPredictions:
    """The predictions file ``path`` (``predictions.json`` of :func:`run_check`)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no predictions file at {path}: make it with "
                         f"`python -m gmmmem predict-check --out {path.parent}`")
    payload = _read_json(path, "predictions")
    try:
        settings = payload["provenance"]["settings"]
        if settings.get("experiment") != "predict_check":
            raise ValueError(f"its experiment is {settings.get('experiment')!r}, not 'predict_check'")
        predictions = tuple(Prediction.from_dict(p) for p in payload["predictions"])
        configs = tuple((int(d), int(K), int(N), float(v)) for d, K, N, v in settings["configs"])
        if [(p.d, p.K, p.N, p.var) for p in predictions] != list(configs):
            raise ValueError("its predictions are not those of its configurations")
        return CheckPredictions(predictions=predictions, weights=str(settings["weights"]),
                                weights_sha256=str(settings["weights_sha256"]), configs=configs,
                                settings=settings, provenance=payload["provenance"])
    except (TypeError, KeyError, ValueError, AttributeError) as err:
        raise ValueError(f"{path} is not a predictions file: malformed "
                         f"({type(err).__name__}: {err})") from None


def check_settings(configs: Sequence[tuple[int, int, int, float]] = CHECK_CONFIGS,
                   fitted: str | Path | None = None) -> dict[str, Any]:
    """The settings :func:`run_check` records with its predictions: the weights file (name and
    SHA-256) and the configurations."""
    path = Path(fitted) if fitted is not None else default_weights()
    return {"experiment": "predict_check", "weights": path.name,
            "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "configs": [list(c) for c in configs]}


def check_grid(configs: Sequence[tuple[int, int, int, float]] = CHECK_CONFIGS, seed: int = 0) -> list:
    """The sweep configurations :func:`run_check` trains (:class:`gmmmem.sweep.Dataset`)."""
    from .sweep import Dataset

    return [Dataset(d, K, N, var, seed) for d, K, N, var in configs]
