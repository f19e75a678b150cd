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
import time

import torch

from gmmmem import config, diffusion, files, provenance
from gmmmem.finite_size import FitOnAll, evaluation_dict
from gmmmem.heldout import group_splits, heldout, random_splits
from gmmmem.predictors import ClosedForm, FiniteSize, MonteCarlo
from gmmmem.sweep import SweepTable

SPLITS, SEED, TEST_FRACTION = 40, 0, 0.25


def settings(args: argparse.Namespace) -> dict:
    """The settings this run records."""
    return {"experiment": "finite_size_heldout", "sweep": "data/sweeps/default.jsonl",
            "random_splits": SPLITS, "test_fraction": TEST_FRACTION, "split_seed": SEED,
            "finite_size_num_sizes": 50}


def build_parser() -> argparse.ArgumentParser:
    """The command line of this run."""
    return provenance.run_file_parser(__doc__)


def main(argv: list[str] | None = None) -> None:
    args = provenance.start_run_file(build_parser(), argv)
    began = time.perf_counter()
    table = SweepTable.load(config.data_dir() / "sweeps" / "default.jsonl")
    t = diffusion.time_grid().numpy()  # the closed forms on the float32 grid, as chapters 4 and 6
    finite = FiniteSize(t)
    fs_sizes, _, fs_pmem = finite.losses(table)
    # (name in the file, predictor, the table it is fitted on)
    predictors = [
        ("closed form (c = 2)", ClosedForm(t), table),
        ("finite size", finite, table),
        ("Monte Carlo losses", MonteCarlo(), table),
        ("finite-size Theorem 3.2, measured generalizing excess", MonteCarlo(),
         table.with_losses(fs_sizes, table.gen - table.mem, fs_pmem)),
    ]
    splits = {"random 75/25": random_splits(len(table), SPLITS, test_fraction=TEST_FRACTION, seed=SEED),
              "leave one N out": group_splits(table.N), "fit on variance 1": [table.var == 1.0]}
    out = {}
    for name, predictor, rows in predictors:
        everything = predictor.fit(rows)
        row = {"all": FitOnAll(train_mse=everything.train_mse, effective_dof=everything.effective_dof,
                               predictions=everything.predict(rows),
                               weights=everything.weights).to_dict()}
        for split_name, masks in splits.items():
            ev = heldout(predictor, rows, masks)
            row[split_name] = evaluation_dict(ev)
            print(f"{name} | {split_name} | {ev.train_mse_mean:.2e} | "
                  f"{ev.test_mse_mean:.2e} ± {ev.test_mse_std:.1e}", flush=True)
        out[name] = row
    record = provenance.record(settings(args), torch.device("cpu"), time.perf_counter() - began)
    files.write_json(args.out, {"provenance": record, "measured": table.measured.tolist(),
                                            "predictors": out})


if __name__ == "__main__":
    main()
