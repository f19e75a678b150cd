"""Command line of gmmmem.

``python -m gmmmem phase-transition --d 30 --K 4 --N 100 --out data/x.json``: one configuration;
``python -m gmmmem sweep --grid default --out data/sweeps/default.jsonl``: a grid of them, on Dask.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import SCALES


def _phase_transition(args: argparse.Namespace) -> None:
    from .experiments import phase_transition
    from .train import TrainConfig

    overrides = {
        name: value
        for name, value in (
            ("steps", args.steps), ("peak_lr", args.peak_lr), ("final_lr", args.final_lr),
            ("num_draws", args.draws), ("update_ema", args.ema),
        )
        if value is not None
    }
    config = TrainConfig.preset(args.scale, seed=args.seed, **overrides)
    checkpoint = Path(args.checkpoint or f"{args.out}.checkpoint")
    result = phase_transition(
        args.d, args.K, args.N, args.sizes, args.scale, args.seed, args.device,
        config=config, progress=not args.no_progress, checkpoint=checkpoint,
    )
    result.save(args.out)
    checkpoint.unlink(missing_ok=True)
    start, end = result.transition
    print("memorization ratio by model size: "
          + ", ".join(f"{M}: {r:.2f}" for M, r in zip(result.model_sizes, result.memorization_ratio)))
    print(f"transition start (ratio >= 0.1): {start}, end (ratio >= 0.9): {end}, "
          f"midpoint M_pt: {result.midpoint}")
    print(f"wrote {args.out} ({result.provenance['wall_seconds']:.1f} s on {result.provenance['device_name']})")


#: The grids of ``gmmmem.sweep.GRIDS`` (named here so that --help needs no torch import).
GRID_NAMES = ("paper", "default", "ci")


def _sweep(args: argparse.Namespace) -> None:
    from .sweep import SweepError, run_sweep

    try:
        records = run_sweep(
            args.grid, args.out, scale=args.scale, scheduler=args.scheduler,
            n_workers=args.workers, progress=False if args.no_progress else None,
            device=args.device, report=print,
        )
    except (SweepError, ConnectionError) as err:
        sys.exit(f"error: {err}")
    for r in records:
        c, mid = r["config"], r["midpoint"]
        print(f"d={c['d']} K={c['K']} N={c['N']} var={c['var']:g} seed={c['seed']}: "
              f"start {r['start']}, end {r['end']}, midpoint M_pt "
              + ("none" if mid is None else f"{mid:.1f} ({r['midpoint_over_N']:.3f} N)"))
    print(f"{len(records)} records in {args.out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gmmmem", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    pt = commands.add_parser(
        "phase-transition",
        help="train mixture denoisers of growing size and measure memorization (Figure 2)",
        description="Train one mixture denoiser per model size and save the measurements as JSON.",
    )
    pt.add_argument("--d", type=int, required=True, help="dimension of the data")
    pt.add_argument("--K", type=int, required=True, help="number of true mixture components")
    pt.add_argument("--N", type=int, required=True, help="number of training points")
    pt.add_argument("--sizes", type=int, nargs="+", help="model sizes M (default: N/10, ..., N)")
    pt.add_argument("--scale", choices=SCALES, default="default", help="training preset")
    pt.add_argument("--seed", type=int, default=0, help="seed of data, training and evaluation")
    pt.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    pt.add_argument("--out", required=True, help="output JSON file")
    pt.add_argument("--steps", type=int, help="override the preset's number of steps")
    pt.add_argument("--peak-lr", type=float, help="override the preset's peak learning rate")
    pt.add_argument("--final-lr", type=float, help="override the preset's final learning rate")
    pt.add_argument("--draws", type=int, help="override the preset's noise draws per point")
    pt.add_argument("--ema", type=float, help="override the preset's update EMA (0 = off)")
    pt.add_argument("--checkpoint", help="training checkpoint file (default: OUT.checkpoint); "
                    "rerunning an interrupted command resumes from it; removed once OUT is written")
    pt.add_argument("--no-progress", action="store_true", help="no progress bar")
    pt.set_defaults(run=_phase_transition)

    sw = commands.add_parser(
        "sweep",
        help="locate the phase transition of a grid of configurations, on Dask (Figure 3)",
        description="Run the two-stage phase-transition search (coarse sizes N/10..N, then ~10 "
        "sizes across the coarse transition) for every configuration of a grid, one Dask task "
        "each, and write one JSON record per configuration to OUT (JSON lines) as each finishes. "
        "Rerunning the same command resumes: configurations already recorded with the same "
        "settings are skipped.",
    )
    sw.add_argument("--grid", choices=GRID_NAMES, required=True,
                    help="paper: the authors' 64 configurations (GPU); default: 14 for 2 CPU cores "
                    "(~50 min); ci: 3 tiny ones (seconds)")
    sw.add_argument("--out", required=True, help="output file, JSON lines (e.g. data/sweeps/NAME.jsonl)")
    sw.add_argument("--scheduler", metavar="ADDRESS",
                    help="a running Dask scheduler, tcp://HOST:PORT, or its scheduler file (.json); "
                    "default: start a local cluster")
    sw.add_argument("--workers", type=int, metavar="N",
                    help="workers of the local cluster (default: one per GPU, else one per CPU core)")
    sw.add_argument("--scale", choices=SCALES,
                    help="training preset (default: the grid's own, with its settings)")
    sw.add_argument("--device", default="auto",
                    help="auto (each worker: its GPU, else the CPU), or one device for every task")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar")
    sw.set_defaults(run=_sweep)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except ValueError as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
