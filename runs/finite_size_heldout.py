"""Held-out errors of the crossover predictors on the committed default sweep (chapter 6).

    OMP_NUM_THREADS=1 python runs/finite_size_heldout.py --out data/finite_size/heldout.json

Four predictors of M_pt/N, each a fit of time weights: the closed form (c = 2), the finite-size
losses (Theorem 3.2), the sweep's Monte Carlo losses, and the finite-size partially memorizing
loss against the measured generalizing excess; each fitted on every record of
``data/sweeps/default.jsonl`` and evaluated with chapter 4's three held-out evaluations (40 random
75/25 splits with seed 0, leave one N out, fit on variance 1). About 4 minutes on one CPU core.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

import numpy as np
import torch

from gmmmem import config, diffusion, provenance, weights
from gmmmem.config import COMMAND_VARIABLE
from gmmmem.sweep import load_sweep

SPLITS, SEED, TEST_FRACTION = 40, 0, 0.25


def settings(args: argparse.Namespace) -> dict:
    """The settings this run records."""
    return {"experiment": "finite_size_heldout", "sweep": "data/sweeps/default.jsonl",
            "random_splits": SPLITS, "test_fraction": TEST_FRACTION, "split_seed": SEED,
            "finite_size_num_sizes": 50}


def build_parser() -> argparse.ArgumentParser:
    """The command line of this run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output JSON file")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    os.environ[COMMAND_VARIABLE] = "python " + shlex.join([sys.argv[0], *(argv or sys.argv[1:])])
    torch.set_num_threads(1)
    began = time.perf_counter()
    records = load_sweep(config.data_dir() / "sweeps" / "default.jsonl")

    def field(name):
        return np.array([r["config"][name] for r in records])

    d, K, N, var = field("d"), field("K"), field("N"), field("var")
    measured = np.array([r["midpoint_over_N"] for r in records])
    t = diffusion.time_grid().numpy()
    coarse = [np.array(r["stage"]) == "coarse" for r in records]
    sizes = np.array([np.array(r["model_sizes"])[c] / r["config"]["N"] for r, c in zip(records, coarse)])
    gen = np.array([r["reference"]["true_train"] for r in records])
    mem = np.array([r["reference"]["mem_train"] for r in records])
    pmem = np.array([np.array(r["reference"]["pmem_train"])[c] for r, c in zip(records, coarse)])
    fs_sizes, fs_gen, fs_pmem = weights.finite_size_losses(t, d, K, N, var)
    predictors = {
        "closed form (c = 2)": lambda m: weights.fit_lambda(t, var, measured, m),
        "finite size": lambda m: weights.fit_lambda_from_losses(fs_sizes, fs_gen, fs_pmem, measured, m),
        "Monte Carlo losses": lambda m: weights.fit_lambda_from_losses(sizes, gen, pmem, measured, m),
        "finite-size Theorem 3.2, measured generalizing excess":
            lambda m: weights.fit_lambda_from_losses(fs_sizes, gen - mem, fs_pmem, measured, m),
    }
    splits = {"random 75/25": weights.random_splits(len(records), SPLITS, test_fraction=TEST_FRACTION,
                                                    seed=SEED),
              "leave one N out": weights.group_splits(N), "fit on variance 1": [var == 1.0]}
    out = {}
    for name, fit_fn in predictors.items():
        everything = fit_fn(np.ones(len(records), dtype=bool))
        row = {"all": {"train_mse": everything.train_mse, "effective_dof": everything.effective_dof,
                       "predictions": everything.predictions.tolist(),
                       "weights": everything.weights.tolist()}}
        for split_name, masks in splits.items():
            ev = weights.evaluate(fit_fn, masks)
            row[split_name] = {k: (ev[k].tolist() if isinstance(ev[k], np.ndarray) else ev[k])
                               for k in ("n_splits", "train_mse", "test_mse", "train_mse_mean",
                                         "train_mse_std", "test_mse_mean", "test_mse_std")}
            print(f"{name} | {split_name} | {ev['train_mse_mean']:.2e} | "
                  f"{ev['test_mse_mean']:.2e} ± {ev['test_mse_std']:.1e}", flush=True)
        out[name] = row
    record = provenance.record(settings(args), torch.device("cpu"), time.perf_counter() - began)
    provenance.write_json_atomic(args.out, {"provenance": record, "measured": measured.tolist(),
                                            "predictors": out})


if __name__ == "__main__":
    main()
