"""Command line: ``python -m gmmmem phase-transition --d 30 --K 4 --N 100 --out data/x.json``."""

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
    print(f"memorization ratio by model size: "
          + ", ".join(f"{M}: {r:.2f}" for M, r in zip(result.model_sizes, result.memorization_ratio)))
    print(f"transition start (ratio >= 0.1): {start}, end (ratio >= 0.9): {end}, "
          f"midpoint M_pt: {result.midpoint}")
    print(f"wrote {args.out} ({result.provenance['wall_seconds']:.1f} s on {result.provenance['device_name']})")


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

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except ValueError as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
