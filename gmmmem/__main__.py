"""Command line of gmmmem.

``python -m gmmmem phase-transition --d 30 --K 4 --N 100 --out data/x.json``: one configuration;
``python -m gmmmem phase-transition-templates --K 6 --N 100 --out data/x.json``: the same on
coloured templates (image-like data);
``python -m gmmmem sweep --grid default --out data/sweeps/default.jsonl``: a grid of them, on Dask;
``python -m gmmmem predict --d 50 --K 12 --N 200``: where a configuration should memorize, from
the weights ``python -m gmmmem fit-weights`` fits on a sweep (no training);
``python -m gmmmem data-size --d 30 --K 3 --M 40 --N 40 50 60 --out data/x.json``: fixed model
size, growing training set.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import SCALES


def _overrides(args: argparse.Namespace) -> dict:
    """The training settings given on the command line (those not given keep the preset's)."""
    return {
        name: value
        for name, value in (
            ("steps", args.steps), ("peak_lr", args.peak_lr), ("final_lr", args.final_lr),
            ("num_draws", args.draws), ("update_ema", args.ema), ("adam_beta2", args.beta2),
        )
        if value is not None
    }


def _phase_transition(args: argparse.Namespace) -> None:
    from .experiments import phase_transition, phase_transition_templates, template_config
    from .train import TrainConfig

    checkpoint = Path(args.checkpoint or f"{args.out}.checkpoint")
    common = dict(progress=not args.no_progress, checkpoint=checkpoint)
    if args.command == "phase-transition-templates":
        config = template_config(args.scale, seed=args.seed, **_overrides(args))
        result = phase_transition_templates(args.K, args.N, args.sizes, args.size, args.scale,
                                            args.seed, args.device, config=config,
                                            snapshots=args.snapshots or (), **common)
    else:
        config = TrainConfig.preset(args.scale, seed=args.seed, **_overrides(args))
        result = phase_transition(args.d, args.K, args.N, args.sizes, args.scale, args.seed,
                                  args.device, config=config, **common)
    result.save(args.out)
    checkpoint.unlink(missing_ok=True)
    start, end = result.transition
    print("memorization ratio by model size: "
          + ", ".join(f"{M}: {r:.2f}" for M, r in zip(result.model_sizes, result.memorization_ratio)))
    print(f"transition start (ratio >= 0.1): {start}, end (ratio >= 0.9): {end}, "
          f"midpoint M_pt: {result.midpoint}")
    print(f"wrote {args.out} ({result.provenance['wall_seconds']:.1f} s on {result.provenance['device_name']})")


def _fit_weights(args: argparse.Namespace) -> None:
    from .predict import default_weights, write_weights

    fitted = write_weights(args.sweep, args.out)
    ev = fitted["held_out"]["random 75/25"]
    print(f"{fitted['predictor']}: fitted on {fitted['fit']['n_configs']} configurations, "
          f"training MSE {fitted['fit']['train_mse']:.2e}, held-out MSE (random 75/25) "
          f"{ev['closed form']['test_mse_mean']:.2e} (constant baseline "
          f"{ev['constant (baseline)']['test_mse_mean']:.2e})")
    print(f"wrote {args.out or default_weights()}")


def _predict(args: argparse.Namespace) -> None:
    import json
    import warnings

    from .predict import RangeWarning, predict

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RangeWarning)  # reported below, on stderr
        p = predict(args.d, args.K, args.N, args.var, args.weights)
    for note in p.warnings:
        print(f"warning: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(p.to_dict(), indent=1))
        return
    print(f"d = {p.d}, K = {p.K}, N = {p.N}, data variance {p.var:g}")
    print(f"predicted memorization threshold M* = {p.M_star:.1f} ({p.M_star_over_N:.3f} N): "
          "half the generated samples memorized")
    print(f"generalizes below M = {p.generalizes_below:.1f}, memorizes above M = "
          f"{p.memorizes_above:.1f} (memorization ratio < 0.1 and >= 0.9, the sweep's median "
          "transition width)")
    print(f"predictor: {p.predictor}")
    print("held-out error of M*/N, root mean square (mean square), on the sweep:")
    for name, mse in p.held_out_mse.items():
        base = p.baseline_held_out_mse[name]
        print(f"  {name}: {mse ** 0.5:.3f} N ({mse:.1e}); "
              f"a constant predictor: {base ** 0.5:.3f} N ({base:.1e})")


def _data_size(args: argparse.Namespace) -> None:
    from .data_size import data_size
    from .train import TrainConfig

    overrides = {} if args.steps is None else {"steps": args.steps}
    config = TrainConfig.preset(args.scale, seed=args.seed, **overrides)
    result = data_size(args.d, args.K, args.M, args.N, args.var, args.seed, args.scale,
                       args.device, config=config, progress=not args.no_progress)
    result.save(args.out)
    print("memorization ratio by training-set size: "
          + ", ".join(f"{n}: {r:.2f}" for n, r in zip(result.training_sizes, result.memorization_ratio)))
    high, low = result.transition
    stop = result.stop_point
    print(f"memorizes up to N = {high} (ratio >= 0.9), generalizes above N = {low} (ratio < 0.1), "
          f"stops memorizing at N_pt = {'none' if stop is None else f'{stop:.1f}'}")
    print(f"wrote {args.out} ({result.provenance['wall_seconds']:.1f} s on {result.provenance['device_name']})")


#: The grids of ``gmmmem.sweep.GRIDS`` (named here so that --help needs no torch import).
GRID_NAMES = ("paper", "paper-seeds", "default", "ci")


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


def _phase_transition_options(pt: argparse.ArgumentParser) -> None:
    """Options shared by the two phase-transition commands."""
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
    pt.add_argument("--beta2", type=float, help="override the preset's Adam second-moment decay")
    pt.add_argument("--checkpoint", help="training checkpoint file (default: OUT.checkpoint); "
                    "rerunning an interrupted command resumes from it; removed once OUT is written")
    pt.add_argument("--no-progress", action="store_true", help="no progress bar")
    pt.set_defaults(run=_phase_transition)


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
    _phase_transition_options(pt)
    tt = commands.add_parser(
        "phase-transition-templates",
        help="the same on coloured templates, image-like low-rank data (Figure 6)",
        description="Train one coloured-template mixture per model size on coloured digit "
        "templates and save the measurements as JSON.",
    )
    tt.add_argument("--K", type=int, required=True, help="number of templates")
    tt.add_argument("--size", type=int, default=15, help="templates are SIZE x SIZE pixels")
    tt.add_argument("--snapshots", type=int, nargs="+", metavar="STEP",
                    help="also measure the memorization ratio after these training steps")
    _phase_transition_options(tt)

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

    pr = commands.add_parser(
        "predict",
        help="predict where a configuration starts to memorize, from fitted weights (no training)",
        description="Print the predicted memorization threshold M* of a configuration and the "
        "model sizes below which it should generalize and above which it should memorize, from "
        "the time weights fitted on the committed sweep, with the predictor's held-out error.",
    )
    pr.add_argument("--d", type=int, required=True, help="dimension of the data")
    pr.add_argument("--K", type=int, required=True, help="number of true mixture components")
    pr.add_argument("--N", type=int, required=True, help="number of training points (>= 2)")
    pr.add_argument("--var", type=float, default=1.0, help="data variance s_star^2 (default 1)")
    pr.add_argument("--weights", help="fitted weights (default: data/weights/default.json)")
    pr.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    pr.set_defaults(run=_predict)

    fw = commands.add_parser(
        "fit-weights",
        help="fit the predictor's time weights on a sweep and write them as JSON",
        description="Fit the closed-form predictor's time weights on every record of a sweep, "
        "evaluate them held out (random 75/25 splits, leave one N out, fit on variance 1) and "
        "write weights, errors and transition width as JSON, with provenance.",
    )
    fw.add_argument("--sweep", help="sweep file, JSON lines (default: data/sweeps/default.jsonl)")
    fw.add_argument("--out", help="output file (default: data/weights/default.json)")
    fw.set_defaults(run=_fit_weights)

    ds = commands.add_parser(
        "data-size",
        help="fix the model size M, grow the training set N and measure memorization",
        description="Draw one training set and train one mixture denoiser of size M on its first "
        "N points for every N given (nested training sets, the same start), then save the "
        "memorization ratio by N as JSON.",
    )
    ds.add_argument("--d", type=int, required=True, help="dimension of the data")
    ds.add_argument("--K", type=int, required=True, help="number of true mixture components")
    ds.add_argument("--M", type=int, required=True, help="model size (number of learned means)")
    ds.add_argument("--N", type=int, nargs="+", required=True,
                    help="training-set sizes, increasing, each >= M")
    ds.add_argument("--var", type=float, default=1.0, help="data variance s_star^2 (default 1)")
    ds.add_argument("--scale", choices=SCALES, default="default", help="training preset")
    ds.add_argument("--seed", type=int, default=0, help="seed of data, training and evaluation")
    ds.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    ds.add_argument("--out", required=True, help="output JSON file")
    ds.add_argument("--steps", type=int, help="override the preset's number of steps")
    ds.add_argument("--no-progress", action="store_true", help="no progress bar")
    ds.set_defaults(run=_data_size)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except ValueError as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
