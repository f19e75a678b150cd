"""Command line of gmmmem.

``python -m gmmmem phase-transition --d 30 --K 4 --N 100 --out data/x.json``: one configuration;
``python -m gmmmem phase-transition-templates --K 6 --N 100 --out data/x.json``: the same on
coloured templates (image-like data);
``python -m gmmmem sweep --grid default --out data/sweeps/default.jsonl``: a grid of them, on Dask;
``python -m gmmmem predict --d 50 --K 12 --N 200``: where a configuration should memorize, from
the weights ``python -m gmmmem fit-weights`` fits on a sweep (no training);
``python -m gmmmem predict-check --out data/predict_check``: predictions written first, then the
configurations trained and measured;
``python -m gmmmem data-size --d 30 --K 3 --M 40 --N 40 50 60 --out data/x.json``: fixed model
size, growing training set;
``python -m gmmmem width-sweep --d 30 --K 4 --N 100 --widths 64 128 256 --out data/x.json``: MLP
denoisers of growing width.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

from .config import COMMAND_VARIABLE, SCALES


def _overrides(args: argparse.Namespace) -> dict:
    """The training settings given on the command line (those not given keep the preset's)."""
    return {
        name: value
        for name, value in (
            ("steps", args.steps), ("peak_lr", args.peak_lr), ("final_lr", args.final_lr),
            ("num_draws", args.draws), ("update_ema", args.ema), ("adam_beta2", args.beta2),
            ("warmup_frac", args.warmup),
        )
        if value is not None
    }


def _eval_config(args: argparse.Namespace):
    """The scale's evaluation preset with the ``--samples`` / ``--loss-draws`` given."""
    import dataclasses

    from .experiments import EVAL_PRESETS

    given = {name: value for name, value in (("num_samples", args.samples),
                                             ("loss_draws", args.loss_draws)) if value is not None}
    return dataclasses.replace(EVAL_PRESETS[args.scale], **given)


def experiment(args: argparse.Namespace) -> tuple[Callable, Callable, dict[str, Any]]:
    """What a training command runs, from its parsed arguments: (the experiment, the function
    giving the settings it records, the keyword arguments both take). The command runs the
    first; :func:`recorded_settings` calls the second, so a result's settings can be checked
    against its command without training."""
    from .train import TrainConfig

    common = dict(scale=args.scale, seed=args.seed)
    if args.command == "data-size":
        from .data_size import data_size, data_size_settings

        return data_size, data_size_settings, dict(
            d=args.d, K=args.K, M=args.M, training_sizes=args.N, var=args.var, **common,
            config=TrainConfig.preset(args.scale, seed=args.seed, **_overrides(args)))
    common["eval_config"] = _eval_config(args)
    if args.command == "phase-transition":
        from .experiments import phase_transition, phase_transition_settings

        return phase_transition, phase_transition_settings, dict(
            d=args.d, K=args.K, N=args.N, model_sizes=args.sizes, start=args.start, **common,
            config=TrainConfig.preset(args.scale, seed=args.seed, **_overrides(args)))
    if args.command == "phase-transition-templates":
        from .experiments import phase_transition_templates, template_config, template_settings

        return phase_transition_templates, template_settings, dict(
            K=args.K, N=args.N, model_sizes=args.sizes, size=args.size,
            snapshots=args.snapshots or (), **common,
            config=template_config(args.scale, seed=args.seed, **_overrides(args)))
    if args.command == "width-sweep":
        from .width_sweep import width_config, width_sweep, width_sweep_settings

        return width_sweep, width_sweep_settings, dict(
            d=args.d, K=args.K, N=args.N, widths=args.widths, **common,
            config=width_config(args.scale, seed=args.seed, **_overrides(args)))
    raise ValueError(f"{args.command} is not a training command")


def recorded_settings(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The settings of every record the command of ``args`` writes (a sweep: one per
    configuration; ``predict-check``: its predictions, then each configuration), without running
    it: by the same functions the command runs with. ``fit-weights`` and ``predict`` are not
    covered (they train nothing: rerun them)."""
    if args.command == "sweep":
        from .sweep import grid_settings

        return list(grid_settings(args.grid, args.scale).values())
    if args.command == "predict-check":
        from .predict import check_grid, check_settings
        from .sweep import grid_settings

        return [check_settings(fitted=args.weights)] + list(grid_settings(
            check_grid(seed=args.seed), args.scale, train=_overrides(args),
            eval_config=_eval_config(args)).values())
    _, settings, kwargs = experiment(args)
    return [settings(**kwargs)]


def _nonnegative(text: str) -> int:
    """An argparse type: an integer >= 0 (a seed)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    """An argparse type: an integer >= 1 (a count)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def _fraction(text: str) -> float:
    """An argparse type: a number in [0, 1) (the warm-up fraction)."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {value}")
    return value


def _checked_outputs(args: argparse.Namespace, default_checkpoint: str, folder: bool = False) -> Path:
    """Check ``--out`` and the checkpoint (a file, or a ``folder``) before any work; returns
    the checkpoint path, remembered on ``args`` for the message of an interrupted run."""
    from .files import check_output

    checkpoint = Path(args.checkpoint or default_checkpoint)
    check_output(args.out, "--out", checkpoint=checkpoint)
    if checkpoint.exists() and checkpoint.is_dir() != folder:
        raise ValueError(f"--checkpoint {checkpoint} exists and is not a "
                         f"{'folder' if folder else 'file'}; give another path")
    check_output(checkpoint / "N.pt" if folder else checkpoint, "--checkpoint")
    args.checkpoint_path = checkpoint
    return checkpoint


def _edge_note(sizes: list[int], start: int | None) -> str:
    """A note when the transition starts at the smallest size measured (it may start below)."""
    if start is not None and start == sizes[0]:
        return f" (the smallest size measured: the transition may start below M = {start})"
    return ""


def _phase_transition(args: argparse.Namespace) -> None:
    checkpoint = _checked_outputs(args, f"{args.out}.checkpoint")
    run, _, kwargs = experiment(args)
    result = run(**kwargs, device=args.device, progress=not args.no_progress,
                 checkpoint=checkpoint, checkpoint_every=args.checkpoint_every)
    result.save(args.out)
    checkpoint.unlink(missing_ok=True)
    start, end = result.transition
    mid = result.midpoint
    print("memorization ratio by model size: "
          + ", ".join(f"{M}: {r:.2f}" for M, r in zip(result.model_sizes, result.memorization_ratio)))
    print(f"transition start (ratio >= 0.1): {start}"
          f"{_edge_note(result.model_sizes, start)}, "
          f"end (ratio >= 0.9): {end}, midpoint M_pt: "
          + (f"{mid:.1f}" if mid is not None else f"none ({result.midpoint_status})"))
    print(f"wrote {args.out} ({result.provenance['wall_seconds']:.1f} s on {result.provenance['device_name']})")


def _fit_weights(args: argparse.Namespace) -> None:
    from .predict import default_weights, write_weights

    fitted = write_weights(args.sweep, args.out, force=args.force)
    ev = fitted.held_out["random 75/25"]
    print(f"{fitted.predictor}: fitted on {fitted.fit.n_configs} configurations, "
          f"training MSE {fitted.fit.train_mse:.2e}, held-out MSE (random 75/25) "
          f"{ev['closed form'].test_mse_mean:.2e} (constant baseline "
          f"{ev['constant (baseline)'].test_mse_mean:.2e})")
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


def _predict_check(args: argparse.Namespace) -> None:
    from .predict import run_check
    from .sweep import SweepError

    args.checkpoint_path = Path(args.out) / "measured.jsonl.checkpoints"
    try:
        made, records = run_check(args.out, fitted=args.weights, n_workers=args.workers,
                                  scheduler=args.scheduler, scale=args.scale,
                                  train=_overrides(args), eval_config=_eval_config(args),
                                  seed=args.seed)
    except (SweepError, ConnectionError) as err:
        sys.exit(f"error: {err}")
    for p, r in zip(made.predictions, records):
        print(f"d = {p.d}, K = {p.K}, N = {p.N}, variance {p.var:g}: predicted M* = "
              f"{p.M_star:.1f}, measured M_pt = "
              + (f"{r['midpoint']:.1f}" if r["midpoint"] is not None else "none"))
    print(f"wrote {Path(args.out) / 'predictions.json'} and {Path(args.out) / 'measured.jsonl'}")


def _data_size(args: argparse.Namespace) -> None:
    import shutil

    checkpoint = _checked_outputs(args, f"{args.out}.checkpoints", folder=True)
    run, _, kwargs = experiment(args)
    result = run(**kwargs, device=args.device, progress=not args.no_progress,
                 checkpoint=checkpoint, checkpoint_every=args.checkpoint_every)
    result.save(args.out)
    shutil.rmtree(checkpoint, ignore_errors=True)
    print("memorization ratio by training-set size: "
          + ", ".join(f"{n}: {r:.2f}" for n, r in zip(result.training_sizes, result.memorization_ratio)))
    high, low = result.transition
    stop = result.stop_point
    beyond = (" (the largest size measured: it may generalize only beyond)"
              if low is not None and low == result.training_sizes[-1] else "")
    print(f"memorizes up to N = {high} (ratio >= 0.9), generalizes above N = {low} (ratio < 0.1)"
          f"{beyond}, stops memorizing at N_pt = "
          + (f"{stop:.1f}" if stop is not None else f"none ({result.stop_status})"))
    print(f"wrote {args.out} ({result.provenance['wall_seconds']:.1f} s on {result.provenance['device_name']})")


def _width_sweep(args: argparse.Namespace) -> None:
    checkpoint = _checked_outputs(args, f"{args.out}.checkpoint")
    run, _, kwargs = experiment(args)
    result = run(**kwargs, device=args.device, progress=not args.no_progress,
                 checkpoint=checkpoint, checkpoint_every=args.checkpoint_every,
                 snapshots=args.snapshots or ())  # measured, not recorded in the settings
    result.save(args.out)
    checkpoint.unlink(missing_ok=True)
    print("memorization ratio by width: " + ", ".join(
        f"{W} ({P} parameters): {r:.2f}"
        for W, P, r in zip(result.widths, result.num_params, result.memorization_ratio)))
    print(f"wrote {args.out} ({result.provenance['wall_seconds']:.1f} s on {result.provenance['device_name']})")


#: The grids of ``gmmmem.sweep.GRIDS`` (named here so that --help needs no torch import).
GRID_NAMES = ("paper", "paper-seeds", "default", "ci")


def _sweep(args: argparse.Namespace) -> None:
    from .sweep import SweepError, run_sweep

    args.checkpoint_path = Path(f"{args.out}.checkpoints")
    try:
        records = run_sweep(
            args.grid, args.out, scale=args.scale, scheduler=args.scheduler,
            n_workers=args.workers, progress=False if args.no_progress else None,
            device=args.device, report=print, batch=args.batch_configs,
        )
    except (SweepError, ConnectionError) as err:
        sys.exit(f"error: {err}")
    print(f"{len(records)} records in {args.out}")


def _training_options(parser: argparse.ArgumentParser) -> None:
    """Overrides of the training preset (read back by :func:`_overrides`)."""
    parser.add_argument("--steps", type=int, help="override the preset's number of steps")
    parser.add_argument("--peak-lr", type=float, help="override the preset's peak learning rate")
    parser.add_argument("--final-lr", type=float, help="override the preset's final learning rate")
    parser.add_argument("--draws", type=int, help="override the preset's noise draws per point")
    parser.add_argument("--ema", type=float, help="override the preset's update EMA (0 = off)")
    parser.add_argument("--beta2", type=float, help="override the preset's Adam second-moment decay")
    parser.add_argument("--warmup", type=_fraction, metavar="FRACTION",
                        help="override the preset's warm-up, a fraction of the steps in [0, 1)")


def _eval_options(parser: argparse.ArgumentParser) -> None:
    """Overrides of the scale's evaluation preset (read back by :func:`_eval_config`)."""
    parser.add_argument("--samples", type=_positive,
                        help="override the scale's generated samples per model (memorization ratio)")
    parser.add_argument("--loss-draws", type=_positive,
                        help="override the scale's noise draws per point and time (Monte Carlo losses)")


def _mixture_options(parser: argparse.ArgumentParser) -> None:
    """The true mixture's dimension and number of components."""
    parser.add_argument("--d", type=int, required=True, help="dimension of the data")
    parser.add_argument("--K", type=int, required=True, help="number of true mixture components")


def _phase_transition_options(pt: argparse.ArgumentParser, sizes: bool = True) -> None:
    """Options shared by the commands that train on one training set (``sizes``: model sizes)."""
    pt.add_argument("--N", type=int, required=True, help="number of training points")
    if sizes:
        pt.add_argument("--sizes", type=int, nargs="+", help="model sizes M (default: N/10, ..., N)")
    pt.add_argument("--scale", choices=SCALES, default="default", help="training preset")
    pt.add_argument("--seed", type=_nonnegative, default=0,
                    help="seed of data, training and evaluation (>= 0)")
    pt.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    pt.add_argument("--out", required=True, help="output JSON file")
    _training_options(pt)
    _eval_options(pt)
    pt.add_argument("--checkpoint", help="training checkpoint file (default: OUT.checkpoint); "
                    "rerunning an interrupted command resumes from it; removed once OUT is written")
    pt.add_argument("--checkpoint-every", type=int, default=1000, metavar="STEPS",
                    help="steps between checkpoints (default 1000)")
    pt.add_argument("--no-progress", action="store_true", help="no progress bar")
    pt.set_defaults(run=_phase_transition, parser=pt)


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser, every subcommand with its options."""
    parser = argparse.ArgumentParser(prog="python -m gmmmem", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    pt = commands.add_parser(
        "phase-transition",
        help="train mixture denoisers of growing size and measure memorization (Figure 2)",
        description="Train one mixture denoiser per model size and save the measurements as JSON.",
    )
    _mixture_options(pt)
    pt.add_argument("--start", choices=("pmem", "random"), default="pmem",
                    help="pmem: means start on training points (the paper's); random: on random "
                    "points of the data's scale (a control)")
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
    sw.add_argument("--batch-configs", type=int, metavar="C",
                    help="no Dask: train up to C configurations at a time as one program, here on "
                    "--device (what one GPU needs; the same records)")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar")
    sw.set_defaults(run=_sweep, parser=sw)

    pr = commands.add_parser(
        "predict",
        help="predict where a configuration starts to memorize, from fitted weights (no training)",
        description="Print the predicted memorization threshold M* of a configuration and the "
        "model sizes below which it should generalize and above which it should memorize, from "
        "the time weights fitted on the committed sweep, with the predictor's held-out error.",
    )
    _mixture_options(pr)
    pr.add_argument("--N", type=int, required=True, help="number of training points (>= 2)")
    pr.add_argument("--var", type=float, default=1.0, help="data variance s_star^2 (default 1)")
    pr.add_argument("--weights", help="fitted weights (default: data/weights/default.json)")
    pr.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    pr.set_defaults(run=_predict, parser=pr)

    fw = commands.add_parser(
        "fit-weights",
        help="fit the predictor's time weights on a sweep and write them as JSON",
        description="Fit the closed-form predictor's time weights on every record of a sweep, "
        "evaluate them held out (random 75/25 splits, leave one N out, fit on variance 1) and "
        "write weights, errors and transition width as JSON, with provenance.",
    )
    fw.add_argument("--sweep", help="sweep file, JSON lines (default: data/sweeps/default.jsonl)")
    fw.add_argument("--out", help="output file (default: data/weights/default.json, replaced "
                    "only with --force)")
    fw.add_argument("--force", action="store_true",
                    help="replace the committed data/weights/default.json when --out is not given")
    fw.set_defaults(run=_fit_weights, parser=fw)

    pc = commands.add_parser(
        "predict-check",
        help="predict, then train: check the predictor on configurations it was not fitted on",
        description="Write the predictions for gmmmem.predict.CHECK_CONFIGS to OUT/predictions.json "
        "before any training, then locate their transitions with the sweep's two-stage search into "
        "OUT/measured.jsonl (JSON lines, resumed like a sweep; chapter 8).",
    )
    pc.add_argument("--out", required=True, help="output folder (e.g. data/predict_check)")
    pc.add_argument("--weights", help="fitted weights (default: data/weights/default.json)")
    pc.add_argument("--scale", choices=SCALES, default="default", help="training preset")
    pc.add_argument("--seed", type=_nonnegative, default=0,
                    help="seed of every configuration's data, training and evaluation (>= 0)")
    pc.add_argument("--workers", type=_positive, metavar="N",
                    help="workers of the local Dask cluster (default: one per GPU, else per CPU core)")
    pc.add_argument("--scheduler", metavar="ADDRESS",
                    help="a running Dask scheduler, tcp://HOST:PORT, or its scheduler file (.json)")
    _training_options(pc)
    _eval_options(pc)
    pc.set_defaults(run=_predict_check, parser=pc)

    ws = commands.add_parser(
        "width-sweep",
        help="train MLP denoisers of growing width and measure memorization (chapter 7)",
        description="Train one time-conditioned MLP denoiser per width on the data of one "
        "configuration, exactly as the mixtures are trained, and save the memorization ratio "
        "and losses by width as JSON.",
    )
    _mixture_options(ws)
    ws.add_argument("--widths", type=int, nargs="+", required=True,
                    help="hidden widths, strictly increasing")
    ws.add_argument("--snapshots", type=int, nargs="+", metavar="STEP",
                    help="also measure the memorization ratio after these training steps")
    _phase_transition_options(ws, sizes=False)
    ws.set_defaults(run=_width_sweep, parser=ws)

    ds = commands.add_parser(
        "data-size",
        help="fix the model size M, grow the training set N and measure memorization",
        description="Draw one training set and train one mixture denoiser of size M on its first "
        "N points for every N given (nested training sets, the same start), then save the "
        "memorization ratio by N as JSON.",
    )
    _mixture_options(ds)
    ds.add_argument("--M", type=int, required=True, help="model size (number of learned means)")
    ds.add_argument("--N", type=int, nargs="+", required=True,
                    help="training-set sizes, increasing, each >= M")
    ds.add_argument("--var", type=float, default=1.0, help="data variance s_star^2 (default 1)")
    ds.add_argument("--scale", choices=SCALES, default="default", help="training preset")
    ds.add_argument("--seed", type=_nonnegative, default=0,
                    help="seed of data, training and evaluation (>= 0)")
    ds.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    ds.add_argument("--out", required=True, help="output JSON file")
    _training_options(ds)
    ds.add_argument("--checkpoint", help="folder of training checkpoints, one per N (default: "
                    "OUT.checkpoints); rerunning an interrupted command resumes from them; "
                    "removed once OUT is written")
    ds.add_argument("--checkpoint-every", type=int, default=1000, metavar="STEPS",
                    help="steps between checkpoints (default 1000)")
    ds.add_argument("--no-progress", action="store_true", help="no progress bar")
    ds.set_defaults(run=_data_size, parser=ds)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The command, as typed, goes into the provenance of every result it writes (Dask workers
    # started by it inherit the environment).
    words = sys.argv[1:] if argv is None else list(argv)
    before = os.environ.get(COMMAND_VARIABLE)
    os.environ[COMMAND_VARIABLE] = "python -m gmmmem " + shlex.join(words)
    try:
        return _run(args)
    finally:
        if before is None:
            del os.environ[COMMAND_VARIABLE]
        else:
            os.environ[COMMAND_VARIABLE] = before


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Print a warning as one line on stderr, without the source line."""
    print(f"warning: {message}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    """Run the chosen command: bad arguments give its usage and exit 2, a failed run one
    line and exit 1, Ctrl-C one line and exit 130 (the checkpoint kept)."""
    import warnings

    from .files import RunError

    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            args.run(args)
    except ValueError as err:
        args.parser.error(str(err))
    except KeyboardInterrupt:
        kept = getattr(args, "checkpoint_path", None)
        where = f"; checkpoint kept at {kept}" if kept is not None and kept.exists() else ""
        print(f"interrupted{where}", file=sys.stderr)
        return 130
    except (RunError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
