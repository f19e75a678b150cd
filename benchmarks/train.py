"""Speed of the trainer: milliseconds per step, the matrix-multiply throughput it reaches, and
the wall time of the Figure 2 training and of the paper's grid.

    python benchmarks/train.py --device cpu --out data/benchmarks/train_cpu-2-cores.json

Measured on the machine it runs on, at d = 30, N = 100 and the ten sizes M = 10, 20, ..., 100
of Figure 2 (``train_gmm``, float32):

1. ms per step at the authors' settings (100 noise draws) and at the ``default`` recipe
   (2 draws), with the sizes packed into groups (:func:`gmmmem.train.size_groups`, the
   trainer's way) and padded to the largest size (one group, the way before);
2. the throughput of ``torch.matmul`` on the step's shapes (GFLOP/s), and the fraction of it
   a step reaches: a step does five (rows x components x d) matrix products per size group,
   10 n M d floating-point operations for n rows and M (padded) components;
3. the full Figure 2 training at the ``default`` recipe, timed, and the authors' 50,000 steps
   extrapolated from (1);
4. the paper's 64-configuration grid at the ``default`` recipe, extrapolated from a timed
   step at each configuration's coarse-stage shapes (training only: the sweep also samples and
   measures each size; its records give the measured wall time).

Each timing is the fastest of ``--repeats`` runs (the machine may be shared: the load average
at the start and the end is recorded beside the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from gmmmem import provenance, train
from gmmmem.device import resolve
from gmmmem.experiments import make_data
from gmmmem.sweep import GRIDS
from gmmmem.train import TrainConfig, size_groups, train_gmm

SIZES = list(range(10, 101, 10))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_seconds(X, sizes, steps, device, draws, packed=True, repeats=3) -> float:
    """Seconds per training step of ``sizes`` on ``X`` (fastest of ``repeats`` runs)."""
    overhead = None if packed else {"cpu": 1e12, "cuda": 1e12}  # one group: padded
    saved = dict(train.GROUP_OVERHEAD)
    if overhead:
        train.GROUP_OVERHEAD.update(overhead)
    try:
        cfg = TrainConfig(steps=steps, peak_lr=1e-3, final_lr=1e-6, num_draws=draws)
        train_gmm(X, sizes, TrainConfig(steps=3, peak_lr=1e-3, final_lr=1e-6, num_draws=draws),
                  device, progress=False)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            _sync(device)
            began = time.perf_counter()
            train_gmm(X, sizes, cfg, device, progress=False)
            _sync(device)
            best = min(best, (time.perf_counter() - began) / steps)
        return best
    finally:
        train.GROUP_OVERHEAD.clear()
        train.GROUP_OVERHEAD.update(saved)


def step_flops(sizes, rows, d, overhead) -> float:
    """Floating-point operations of one step's matrix products: 10 n M d per size, M padded."""
    return sum(10.0 * rows * max(g) * d * len(g) for g in size_groups(sorted(sizes), overhead))


def matmul_gflops(rows, M, d, S, device, repeats=20) -> float:
    """Throughput of ``torch.matmul`` on (S, rows, d) @ (d, M), the step's leading shape."""
    a = torch.randn(S, rows, d, device=device)
    b = torch.randn(S, M, d, device=device)
    torch.matmul(a, b.mT)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        began = time.perf_counter()
        for _ in range(10):
            torch.matmul(a, b.mT)
        _sync(device)
        best = min(best, (time.perf_counter() - began) / 10)
    return 2.0 * S * rows * M * d / best / 1e9


def grid_training_seconds(config: TrainConfig, device) -> float:
    """The paper grid's coarse-stage training at ``config``, extrapolated from 5 timed steps of
    each configuration's shapes."""
    total = 0.0
    for c in GRIDS["paper"].configs:
        _, Xc, _ = make_data(c.d, c.K, c.N, seed=0, device=device)
        sizes = sorted({max(1, round(c.N * k / 10)) for k in range(1, 11)})
        total += step_seconds(Xc.float(), sizes, 5, device, config.num_draws, True, 1) * config.steps
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="timings per measurement (fastest kept)")
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--paper-grid", action="store_true",
                        help="also extrapolate the grid's training at the authors' recipe (slow on a CPU)")
    args = parser.parse_args()
    dev = resolve(args.device)
    load_before = os.getloadavg()
    _, X, _ = make_data(30, 4, 100, seed=0, device=dev)
    X = X.float()
    began = time.perf_counter()
    overhead = train.GROUP_OVERHEAD["cpu" if dev.type == "cpu" else "cuda"]
    default = TrainConfig.preset("default")
    paper = TrainConfig.preset("paper")

    figures: dict[str, float] = {}
    for name, draws in (("paper", paper.num_draws), ("default", default.num_draws)):
        for packed in (True, False):
            key = f"step_ms_{name}_{'packed' if packed else 'padded'}"
            figures[key] = 1e3 * step_seconds(X, SIZES, args.steps, dev, draws, packed, args.repeats)
        rows = 100 * draws
        flops = step_flops(SIZES, rows, 30, overhead)
        figures[f"step_gflops_{name}"] = flops / (figures[f"step_ms_{name}_packed"] / 1e3) / 1e9
        figures[f"matmul_gflops_{name}"] = matmul_gflops(rows, 100, 30, 5, dev)
        figures[f"matmul_fraction_{name}"] = figures[f"step_gflops_{name}"] / figures[f"matmul_gflops_{name}"]
        print(f"{name} ({draws} draws): {figures[f'step_ms_{name}_packed']:.2f} ms/step packed, "
              f"{figures[f'step_ms_{name}_padded']:.2f} padded; "
              f"{figures[f'step_gflops_{name}']:.1f} GFLOP/s = "
              f"{100 * figures[f'matmul_fraction_{name}']:.0f}% of matmul's "
              f"{figures[f'matmul_gflops_{name}']:.1f} on these shapes")
    figures["paper_figure2_seconds_extrapolated"] = figures["step_ms_paper_packed"] / 1e3 * paper.steps

    t0 = time.perf_counter()
    train_gmm(X, SIZES, default, dev, progress=False)
    _sync(dev)
    figures["default_figure2_seconds"] = time.perf_counter() - t0
    print(f"Figure 2 training at default ({default.steps} steps): "
          f"{figures['default_figure2_seconds']:.1f} s; the authors' recipe extrapolated: "
          f"{figures['paper_figure2_seconds_extrapolated'] / 60:.1f} min")

    figures["paper_grid_coarse_training_seconds"] = grid_training_seconds(default, dev)
    print(f"the paper grid's coarse-stage training at default, one process: "
          f"{figures['paper_grid_coarse_training_seconds'] / 60:.1f} min")
    if args.paper_grid:  # the same at the authors' recipe (100 draws, 50,000 steps): GPU work
        figures["paper_grid_coarse_training_seconds_paper_recipe"] = grid_training_seconds(paper, dev)
        print(f"the same at the authors' recipe, one process: "
              f"{figures['paper_grid_coarse_training_seconds_paper_recipe'] / 60:.1f} min")

    if args.out:
        settings = {"benchmark": "train", "d": 30, "N": 100, "sizes": SIZES,
                    "timed_steps": args.steps, "repeats": args.repeats,
                    "torch_threads": torch.get_num_threads(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg()}
        payload = {"figures": figures,
                   "provenance": provenance.record(settings, dev, time.perf_counter() - began)}
        provenance.write_json_atomic(args.out, payload)
        print(json.dumps(payload["provenance"], indent=1))


if __name__ == "__main__":
    main()
