"""The finite-size excess formula (Theorem 3.2) against brute-force Monte Carlo (chapter 6).

    OMP_NUM_THREADS=1 python runs/finite_size_check.py --out data/finite_size/check.json

For 43 configurations (d, K, N, data variance) and 13 model sizes M = f N each, compares
:func:`gmmmem.losses.expected_nearest_memorized_excess` with
:func:`gmmmem.losses.mc_nearest_memorized_excess` over many drawn training sets (4,000 for
N <= 100, 1,500 for N = 200), seed 0, one torch thread (about 5 minutes on one CPU core).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from gmmmem import files, losses, provenance
from gmmmem.finite_size import CheckRow

SEED = 0
FRACTIONS = [0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
#: Training sets drawn per configuration, by N.
SETS = {50: 4000, 100: 4000, 200: 1500}


def grid() -> list[tuple[int, int, int, float]]:
    """The configurations (d, K, N, variance): a d x K x N grid at variance 1, and the default
    sweep's configurations."""
    configs = [(d, K, N, 1.0) for d in (10, 20, 30, 50, 100) for K in (1, 3, 12) for N in (50, 200)]
    configs += [(d, K, 50, v) for d in (30, 40) for K in (3, 6) for v in (0.5, 1.0, 2.0)]
    configs += [(30, K, 100, 1.0) for K in (3, 6)]
    return sorted(set(configs))


def sizes(N: int) -> list[int]:
    """The model sizes checked at N: round(f N) for the fractions f, at least 1."""
    return sorted({max(1, round(f * N)) for f in FRACTIONS})


def settings(args: argparse.Namespace) -> dict:
    """The settings this run records (as read back from its JSON)."""
    return json.loads(json.dumps({
        "experiment": "finite_size_check", "seed": SEED, "fractions": FRACTIONS,
        "num_sets_by_N": SETS, "grid": [list(g) for g in grid()],
        "monte_carlo": "losses.mc_nearest_memorized_excess(d, K, var, M, N, num_sets, "
                       "torch.Generator().manual_seed(seed)), torch 1 thread",
        "formula": "losses.expected_nearest_memorized_excess(d, K, var, M, N)",
        "M": "sorted({max(1, round(f * N)) for f in fractions})",
    }))


def build_parser() -> argparse.ArgumentParser:
    """The command line of this run."""
    return provenance.run_file_parser(__doc__)


def main(argv: list[str] | None = None) -> None:
    args = provenance.start_run_file(build_parser(), argv)
    began = time.perf_counter()
    rows = []
    for d, K, N, var in grid():
        M = sizes(N)
        t0 = time.perf_counter()
        mean, err = losses.mc_nearest_memorized_excess(d, K, var, M, N, SETS[N],
                                                       torch.Generator().manual_seed(SEED))
        t1 = time.perf_counter()
        formula = losses.expected_nearest_memorized_excess(d, K, var, M, N)
        rows.append(CheckRow(d=d, K=K, N=N, var=var, M=np.array(M), num_sets=SETS[N],
                             mc_mean=np.asarray(mean), mc_stderr=np.asarray(err), formula=np.asarray(formula),
                             mc_seconds=round(t1 - t0, 2),
                             formula_seconds=round(time.perf_counter() - t1, 3)).to_dict())
        rel = (formula - mean) / mean
        print(d, K, N, var, f"{t1 - t0:.1f}s", f"max |rel| {np.abs(rel).max():.4f}",
              f"max |z| {np.abs((formula - mean) / err).max():.1f}", flush=True)
    record = provenance.record(settings(args), torch.device("cpu"), time.perf_counter() - began)
    files.write_json(args.out, {"provenance": record, "rows": rows})


if __name__ == "__main__":
    main()
