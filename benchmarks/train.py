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

``--measure configs`` (also by default): one step of a handful of the grid's configurations
trained together (:func:`gmmmem.train_many.train_many`, one program) against the sum of their
steps trained one at a time (:func:`gmmmem.train.train_gmm`), at the ``default`` recipe: the
ratio is what batching the configurations saves (on a CPU little: the work is the same; on a
GPU the launches of many small programs are what it saves).

``--measure grid`` (a GPU's job; ``benchmarks/gpu_grid.sh``): the paper grid's wall time at the
recipe of ``--recipe`` (default the authors'), training extrapolated from timed steps of its
coarse stage (the fine stage trains about as many sizes, no larger: counted as a second coarse
stage), per configuration (one program each, one after another, as the Dask path runs them on
one GPU) and all 64 batched (for each overhead of ``--overheads``, the fixed cost of a group in
:data:`gmmmem.train.GROUP_OVERHEAD`'s units), plus the measuring of each configuration's models
(timed on one configuration of each N, counted twice: two stages).

Each timing is the fastest of ``--repeats`` runs (the machine may be shared: the load average
at the start and the end is recorded beside the figures).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import torch

from gmmmem import train
from gmmmem.benchmark import write_train_benchmark
from gmmmem.device import resolve, single_threaded
from gmmmem.experiments import EVAL_PRESETS, _model_sizes, make_data, measure_phase_transition
from gmmmem.sweep import GRIDS
from gmmmem.train import TrainConfig, size_groups, train_gmm
from gmmmem.train_many import train_many

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


#: The grid configurations (d, K, N) of the ``configs`` measurement: every d, K and N once or twice.
SOME_CONFIGS = ((30, 3, 50), (40, 6, 100), (50, 9, 50), (60, 12, 100), (30, 12, 150))


def _grid_data(configs, device):
    """Training sets (float32) and coarse sizes of configurations (d, K, N), seed 0."""
    Xs = [make_data(d, K, N, seed=0, device=device)[1].float() for d, K, N in configs]
    return Xs, [_model_sizes(None, N) for _, _, N in configs]


def batched_step_seconds(Xs, sizes, config: TrainConfig, device, steps, repeats) -> float:
    """Seconds per step of ``train_many`` on these training sets (fastest of ``repeats``; the
    training loop's own time, after a warm-up)."""
    run = lambda n: train_many(Xs, sizes, [dataclasses.replace(config, steps=n)] * len(Xs),  # noqa: E731
                               device, progress=False)[0].seconds / n
    run(3)
    return min(run(steps) for _ in range(repeats))


def alone_step_seconds(X, sizes, config: TrainConfig, device, steps, repeats) -> float:
    """Seconds per step of ``train_gmm`` on one training set (the loop's own time, after a warm-up)."""
    run = lambda n: train_gmm(X, sizes, dataclasses.replace(config, steps=n), device,  # noqa: E731
                              progress=False).seconds / n
    run(3)
    return min(run(steps) for _ in range(repeats))


def configs_figures(device, steps, repeats) -> dict[str, float]:
    """One step of :data:`SOME_CONFIGS` batched against the sum of their steps alone, at the
    ``default`` recipe, on one thread; the two timed in turn, ``repeats`` times (the fastest of
    each kept), so that a change of the machine's load strikes both."""
    cfg = TrainConfig.preset("default")
    alone, batched = float("inf"), float("inf")
    with single_threaded():
        Xs, sizes = _grid_data(SOME_CONFIGS, device)
        for _ in range(repeats):
            alone = min(alone, sum(alone_step_seconds(X, s, cfg, device, steps, 1)
                                   for X, s in zip(Xs, sizes)))
            batched = min(batched, batched_step_seconds(Xs, sizes, cfg, device, steps, 1))
    figures = {"configs_step_ms_alone_sum": 1e3 * alone, "configs_step_ms_batched": 1e3 * batched,
               "configs_batched_over_alone": batched / alone}
    print(f"{len(SOME_CONFIGS)} grid configurations at default, one thread: {1e3 * batched:.2f} ms "
          f"per batched step, {1e3 * alone:.2f} ms for their steps one at a time "
          f"(ratio {batched / alone:.2f})")
    return figures


def grid_figures(device, recipe: str, steps: int, repeats: int, overheads) -> dict[str, float]:
    """The paper grid's wall time at ``recipe``: training per configuration and batched
    (extrapolated from ``steps`` timed steps of the coarse stage, counted twice), and measuring."""
    cfg, ev = TrainConfig.preset(recipe), EVAL_PRESETS[recipe]
    configs = [(c.d, c.K, c.N) for c in GRIDS["paper"].configs]
    Xs, sizes = _grid_data(configs, device)
    kind = "cpu" if device.type == "cpu" else "cuda"
    figures: dict[str, float] = {}
    began = time.perf_counter()
    alone = sum(alone_step_seconds(X, s, cfg, device, steps, 1) for X, s in zip(Xs, sizes))
    figures["grid_step_seconds_alone_sum"] = alone
    figures["grid_train_seconds_alone"] = 2 * alone * cfg.steps
    print(f"one configuration at a time: {1e3 * alone:.1f} ms for a step of every configuration; "
          f"training both stages {2 * alone * cfg.steps / 60:.1f} min "
          f"(measured in {time.perf_counter() - began:.0f} s)")
    saved = dict(train.GROUP_OVERHEAD)
    try:
        for overhead in overheads:
            train.GROUP_OVERHEAD[kind] = overhead
            t0 = time.perf_counter()
            batched = batched_step_seconds(Xs, sizes, cfg, device, steps, repeats)
            figures[f"grid_step_seconds_batched_overhead{overhead:g}"] = batched
            figures[f"grid_train_seconds_batched_overhead{overhead:g}"] = 2 * batched * cfg.steps
            print(f"all {len(configs)} batched, group overhead {overhead:g}: {1e3 * batched:.1f} ms "
                  f"a step; training both stages {2 * batched * cfg.steps / 60:.1f} min "
                  f"(measured in {time.perf_counter() - t0:.0f} s)")
    finally:
        train.GROUP_OVERHEAD.clear()
        train.GROUP_OVERHEAD.update(saved)
    measure = 0.0  # one configuration of each N, measured at the recipe's evaluation settings
    for N in sorted({c[2] for c in configs}):
        d, K, _ = max(c for c in configs if c[2] == N)
        truth, X, X_test = make_data(d, K, N, seed=0, device=device)
        trained = train_gmm(X, _model_sizes(None, N), dataclasses.replace(cfg, steps=2), device,
                            progress=False)
        _sync(device)
        t0 = time.perf_counter()
        measure_phase_transition(trained, truth, X, X_test, ev, seed=0, scale=recipe, began=t0)
        _sync(device)
        seconds = time.perf_counter() - t0
        figures[f"measure_seconds_N{N}"] = seconds
        measure += 2 * seconds * sum(c[2] == N for c in configs)  # two stages
    figures["grid_measure_seconds"] = measure
    best = min(v for k, v in figures.items() if k.startswith("grid_train_seconds_batched"))
    figures["grid_wall_seconds_alone"] = figures["grid_train_seconds_alone"] + measure
    figures["grid_wall_seconds_batched"] = best + measure
    print(f"measuring every configuration's models (both stages): {measure / 60:.1f} min; the grid "
          f"at {recipe}: {figures['grid_wall_seconds_alone'] / 60:.1f} min one at a time, "
          f"{figures['grid_wall_seconds_batched'] / 60:.1f} min batched")
    return figures


def step_figures(dev, args) -> dict[str, float]:
    """Items 1-4 of the module's help: one configuration's step, Figure 2, the grid extrapolated."""
    _, X, _ = make_data(30, 4, 100, seed=0, device=dev)
    X = X.float()
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
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="timings per measurement (fastest kept)")
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--measure", nargs="+", choices=("step", "configs", "grid"),
                        default=["step", "configs"], help="what to measure (see the module's help)")
    parser.add_argument("--recipe", choices=("paper", "default"), default="paper",
                        help="the training and evaluation presets of --measure grid")
    parser.add_argument("--overheads", type=float, nargs="+",
                        help="group overheads tried by --measure grid's batched training "
                        "(default: the device's, gmmmem.train.GROUP_OVERHEAD)")
    args = parser.parse_args()
    dev = resolve(args.device)
    load_before = os.getloadavg()
    began = time.perf_counter()
    figures: dict[str, float] = {}
    if "step" in args.measure:
        figures.update(step_figures(dev, args))
    if "configs" in args.measure:
        figures.update(configs_figures(dev, args.steps, args.repeats))
    if "grid" in args.measure:
        args.overheads = args.overheads or [train.GROUP_OVERHEAD["cpu" if dev.type == "cpu" else "cuda"]]
        figures.update(grid_figures(dev, args.recipe, args.steps, args.repeats, args.overheads))

    if args.out:
        settings = {"benchmark": "train", "measure": args.measure, "d": 30, "N": 100, "sizes": SIZES,
                    "timed_steps": args.steps, "repeats": args.repeats,
                    "torch_threads": torch.get_num_threads(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg()}
        if "configs" in args.measure:
            settings["configs"] = SOME_CONFIGS
        if "grid" in args.measure:
            settings.update(recipe=args.recipe, overheads=args.overheads)
        payload = write_train_benchmark(args.out, figures, settings, dev, time.perf_counter() - began)
        print(json.dumps(payload["provenance"], indent=1))


if __name__ == "__main__":
    main()
