"""The committed files of chapter 6: the finite-size Theorem 3.2 against Monte Carlo
(``data/finite_size/check.json``, ``runs/finite_size_check.py``) and the held-out errors of the
crossover predictors (``data/finite_size/heldout.json``, ``runs/finite_size_heldout.py``).

The runs write their rows with :meth:`CheckRow.to_dict`, :meth:`FitOnAll.to_dict` and
:func:`evaluation_dict`; :func:`load_check` and :func:`load_heldout` read the files back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import config
from .heldout import HeldOut


def default_check() -> Path:
    """The committed Monte Carlo check of the finite-size formula."""
    return config.data_dir() / "finite_size" / "check.json"


def default_heldout() -> Path:
    """The committed held-out errors of the crossover predictors."""
    return config.data_dir() / "finite_size" / "heldout.json"


def _read(path: Path, experiment: str) -> dict[str, Any]:
    """The JSON object of ``path``, whose provenance names ``experiment``; ValueError otherwise."""
    if not path.is_file():
        raise ValueError(f"no {experiment} file at {path}")
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a {experiment} file: not JSON ({err})") from None
    try:
        found = payload["provenance"]["settings"]["experiment"]
    except (TypeError, KeyError):
        raise ValueError(f"{path} is not a {experiment} file: no provenance settings") from None
    if found != experiment:
        raise ValueError(f"{path} is not a {experiment} file: its experiment is {found!r}")
    return payload


# --------------------------------------------------------------------------- the Monte Carlo check


@dataclass(frozen=True, eq=False)
class CheckRow:
    """One configuration (d, K, N, data variance) of the check: at the model sizes ``M`` (S,),
    the Monte Carlo mean ``mc_mean`` and standard error ``mc_stderr`` of the
    nearest-memorized-point excess over ``num_sets`` drawn training sets, and the finite-size
    formula's value ``formula`` (all (S,)); the seconds each took."""

    d: int
    K: int
    N: int
    var: float
    M: np.ndarray
    num_sets: int
    mc_mean: np.ndarray
    mc_stderr: np.ndarray
    formula: np.ndarray
    mc_seconds: float
    formula_seconds: float

    @property
    def key(self) -> tuple[int, int, int, float]:
        """(d, K, N, var)."""
        return (self.d, self.K, self.N, self.var)

    def to_dict(self) -> dict[str, Any]:
        """The row as the check file stores it."""
        return {"d": self.d, "K": self.K, "N": self.N, "var": self.var, "M": self.M.tolist(),
                "num_sets": self.num_sets, "mc_mean": self.mc_mean.tolist(),
                "mc_stderr": self.mc_stderr.tolist(), "formula": self.formula.tolist(),
                "mc_seconds": self.mc_seconds, "formula_seconds": self.formula_seconds}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "CheckRow":
        """The row :meth:`to_dict` wrote."""
        arrays = {name: np.asarray(row[name], dtype=float) for name in ("mc_mean", "mc_stderr", "formula")}
        M = np.asarray(row["M"], dtype=int)
        if M.ndim != 1 or any(a.shape != M.shape for a in arrays.values()):
            raise ValueError(f"row {row['d'], row['K'], row['N'], row['var']}: M and the excesses "
                             f"differ in shape")
        return cls(d=int(row["d"]), K=int(row["K"]), N=int(row["N"]), var=float(row["var"]), M=M,
                   num_sets=int(row["num_sets"]), **arrays, mc_seconds=float(row["mc_seconds"]),
                   formula_seconds=float(row["formula_seconds"]))


@dataclass(frozen=True)
class FiniteSizeCheck:
    """The check file: its rows, the Monte Carlo ``seed``, and its settings and provenance."""

    rows: tuple[CheckRow, ...]
    seed: int
    settings: dict[str, Any]
    provenance: dict[str, Any]

    def row(self, d: int, K: int, N: int, var: float) -> CheckRow:
        """The row of configuration (d, K, N, var); KeyError if there is none."""
        for r in self.rows:
            if r.key == (d, K, N, var):
                return r
        raise KeyError(f"no row for (d, K, N, var) = ({d}, {K}, {N}, {var})")


def load_check(path: str | Path | None = None) -> FiniteSizeCheck:
    """The check file ``path`` (default :func:`default_check`)."""
    path = Path(path) if path is not None else default_check()
    payload = _read(path, "finite_size_check")
    try:
        settings = payload["provenance"]["settings"]
        return FiniteSizeCheck(rows=tuple(CheckRow.from_dict(r) for r in payload["rows"]),
                               seed=int(settings["seed"]), settings=settings,
                               provenance=payload["provenance"])
    except (TypeError, KeyError, ValueError) as err:
        raise ValueError(f"{path} is not a finite_size_check file: malformed "
                         f"({type(err).__name__}: {err})") from None


# --------------------------------------------------------------------------- the held-out errors


@dataclass(frozen=True, eq=False)
class FitOnAll:
    """A predictor fitted on every configuration: its training MSE, effective degrees of
    freedom, predicted M_pt/N (C,) and time weights (T,)."""

    train_mse: float
    effective_dof: float
    predictions: np.ndarray
    weights: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """The fit as the held-out file stores it."""
        return {"train_mse": self.train_mse, "effective_dof": self.effective_dof,
                "predictions": self.predictions.tolist(), "weights": self.weights.tolist()}


def evaluation_dict(ev: HeldOut) -> dict[str, Any]:
    """One held-out evaluation as the held-out file stores it: per-split errors and summary."""
    return {"n_splits": ev.n_splits, "train_mse": ev.train_mse.tolist(), "test_mse": ev.test_mse.tolist(),
            "train_mse_mean": ev.train_mse_mean, "train_mse_std": ev.train_mse_std,
            "test_mse_mean": ev.test_mse_mean, "test_mse_std": ev.test_mse_std}


@dataclass(frozen=True, eq=False)
class PredictorEvaluations:
    """The held-out file: the sweep's ``measured`` M_pt/N (C,); for each predictor (by name),
    its fit on every configuration (``fits``) and its evaluations (``evaluations``: by name,
    ``"random 75/25"``, ``"leave one N out"``, ``"fit on variance 1"``, a
    :class:`~gmmmem.heldout.HeldOut` of per-split errors); settings and provenance."""

    measured: np.ndarray
    fits: dict[str, FitOnAll]
    evaluations: dict[str, dict[str, HeldOut]]
    settings: dict[str, Any]
    provenance: dict[str, Any]


def load_heldout(path: str | Path | None = None) -> PredictorEvaluations:
    """The held-out file ``path`` (default :func:`default_heldout`)."""
    path = Path(path) if path is not None else default_heldout()
    payload = _read(path, "finite_size_heldout")
    try:
        fits, evaluations = {}, {}
        for name, row in payload["predictors"].items():
            everything = row["all"]
            fits[name] = FitOnAll(train_mse=float(everything["train_mse"]),
                                  effective_dof=float(everything["effective_dof"]),
                                  predictions=np.asarray(everything["predictions"], dtype=float),
                                  weights=np.asarray(everything["weights"], dtype=float))
            evaluations[name] = {
                split: HeldOut(train_mse=np.asarray(ev["train_mse"], dtype=float),
                               test_mse=np.asarray(ev["test_mse"], dtype=float))
                for split, ev in row.items() if split != "all"}
        return PredictorEvaluations(measured=np.asarray(payload["measured"], dtype=float), fits=fits,
                                    evaluations=evaluations, settings=payload["provenance"]["settings"],
                                    provenance=payload["provenance"])
    except (TypeError, KeyError, ValueError, AttributeError) as err:
        raise ValueError(f"{path} is not a finite_size_heldout file: malformed "
                         f"({type(err).__name__}: {err})") from None
