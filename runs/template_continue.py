"""The 100,000-step template models near N, trained on at a constant learning rate (chapter 5).

    OMP_NUM_THREADS=1 python runs/template_continue.py --out data/phase_transition/templates/continued_K6_N100_lr1e-3_steps40k.json
    OMP_NUM_THREADS=1 python runs/template_continue.py --plan smaller-lr --workers 2 --out data/phase_transition/templates/continued_K6_N100_smaller_lr.json
    OMP_NUM_THREADS=1 python runs/template_continue.py --plan lr3e-4 --out data/phase_transition/templates/continued_K6_N100_lr3e-4.json

Each model of a plan (``PLANS``: seed, M, learning rate, steps) starts where its run of
``default_K6_N100_seed{0,1}_steps100k.json`` ended (templates, colour means, colour variance;
:func:`gmmmem.train_templates.train_templates` with ``init``) and trains on at a constant
learning rate after a 2% warm-up, with the run's optimizer settings (Adam from a fresh state,
beta2 0.999, update EMA 0.99, 2 noise draws) and new training noise (seed 100 + the run's seed).
The memorization ratio is measured ten times, every tenth of the steps, on the run's sampler
noise (200 samples); float32 training, one torch thread per model.

- ``lr1e-3``: every size that still copies at the end of its run, one size per seed that
  generalizes there (a control), and seed 1's M = N model, which let go of its images late in
  its run; 40,000 steps at 1e-3 (about the run's rate at the start of its last third).
- ``smaller-lr``: seed 0's copying M = N model at 1e-4 (600,000 steps) and 3e-4 (200,000), the
  copying model of the weakest drift below N (seed 1, M = 96) at 3e-4 (200,000), and seed 1's
  M = 95, still on its way after the first plan, at 1e-3 for 100,000 steps (summed learning
  rates of 60, 60, 60 and 100, against 40 in the first plan).
- ``lr3e-4``: at 3e-4 the rest of what decides the ratio curve at that rate: seed 1's M = N
  model, which let go during its run (200,000 steps), and seed 0's copying M = 95 and 94
  (100,000 steps each).

``--workers`` models train at once, each in its own process (one: in this process). The file
is rewritten (atomically) as each model is done: a rerun skips the models already in it and
resumes those in progress from their checkpoints
(``OUT.seed{seed}_M{M}_lr{lr}_steps{steps}.checkpoint``, removed once the model is in OUT).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import multiprocessing
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch

from gmmmem import files, provenance
from gmmmem.experiments import TemplateTransitionResult, sample_ratios
from gmmmem.train import TrainConfig
from gmmmem.train_templates import train_templates

RUNS = {seed: Path(f"data/phase_transition/templates/default_K6_N100_seed{seed}_steps100k.json")
        for seed in (0, 1)}
#: Per plan, the models trained on: (seed, M, constant learning rate, steps).
PLANS = {
    "lr1e-3": tuple((seed, M, 1e-3, 40_000) for seed, M in
                    ((0, 94), (0, 95), (0, 100), (1, 95), (1, 96), (0, 96), (1, 94), (1, 100))),
    "smaller-lr": ((0, 100, 1e-4, 600_000), (0, 100, 3e-4, 200_000), (1, 96, 3e-4, 200_000),
                   (1, 95, 1e-3, 100_000)),
    "lr3e-4": ((1, 100, 3e-4, 200_000), (0, 95, 3e-4, 100_000), (0, 94, 3e-4, 100_000)),
}
WARMUP = 0.02
#: The ratio is measured this many times, evenly over the steps; the variance history is kept
#: every ``KEEP_EVERY`` steps.
MEASURES, KEEP_EVERY = 10, 200


def continued(seed: int, M: int, lr: float, steps: int, checkpoint: Path) -> dict:
    """Train size M of seed ``seed``'s run on from its end at learning rate ``lr``; the record."""
    began = time.perf_counter()
    r = TemplateTransitionResult.load(RUNS[seed])
    j = r.model_sizes.index(M)
    run = r.train_config
    config = TrainConfig(steps=steps, peak_lr=lr, final_lr=lr, warmup_frac=WARMUP,
                         num_draws=run.num_draws, update_ema=run.update_ema,
                         init_var=r.learned_var[j], seed=100 + seed, adam_beta2=run.adam_beta2)
    images = torch.as_tensor(r.X, dtype=torch.float32).reshape(len(r.X), 3, *r.true_templates.shape[1:])
    init = (torch.as_tensor(r.learned_templates[j]), torch.as_tensor(r.learned_color_means[j]))
    snapshots = list(range(steps // MEASURES, steps, steps // MEASURES))
    trained = train_templates(images, [M], config, "cpu", progress=False, init=init,
                              checkpoint=checkpoint, checkpoint_every=1000, snapshots=snapshots)
    X = torch.as_tensor(r.X, dtype=torch.float64)
    ev = r.eval_config
    ratios = [sample_ratios(trained.snapshots[s], X, ev, r.seed)[0] for s in snapshots]
    ratios.append(sample_ratios(trained, X, ev, r.seed)[0])
    keep = np.arange(KEEP_EVERY - 1, steps, KEEP_EVERY)
    seconds = time.perf_counter() - began
    return {"seed": seed, "M": M, "train_config": vars(config), "eval_config": vars(ev),
            "start_ratio": float(r.memorization_ratio[j]), "start_var": float(r.learned_var[j]),
            "steps": snapshots + [steps], "memorization_ratio": ratios,
            "var": [trained.snapshots[s].var[0] for s in snapshots] + [trained.var[0]],
            "history_steps": (keep + 1).tolist(),
            "var_history": trained.var_history[keep, 0].tolist(),
            "loss_history": trained.loss_history[keep, 0].tolist(),
            "train_seconds": round(trained.seconds, 1), "seconds": round(seconds, 1),
            # each model records when and at which commit it was trained; the file, its command
            "provenance": provenance.record({"run": str(RUNS[seed])}, torch.device("cpu"), seconds)}


def settings(args: argparse.Namespace) -> dict:
    """The settings this run records (as read back from its JSON)."""
    return json.loads(json.dumps({
        "experiment": "template_continuation", "runs": {str(s): str(p) for s, p in RUNS.items()},
        "plan": args.plan, "models": [list(m) for m in PLANS[args.plan]], "warmup_frac": WARMUP,
        "measures": MEASURES, "keep_every": KEEP_EVERY, "dtype": "float32", "threads": 1}))


def build_parser() -> argparse.ArgumentParser:
    """The command line of this run."""
    parser = provenance.run_file_parser(__doc__)
    parser.add_argument("--plan", choices=sorted(PLANS), default="lr1e-3", help="which models to train on")
    parser.add_argument("--workers", type=int, default=1, help="models trained at once (one process each)")
    return parser


def _checkpoint(out: Path, model: tuple) -> Path:
    """Where the model (seed, M, learning rate, steps) in progress keeps its checkpoint."""
    return out.with_name(f"{out.name}.seed{model[0]}_M{model[1]}_lr{model[2]:g}_steps{model[3]}.checkpoint")


def _key(record: dict) -> tuple:
    """A record's model: seed, M, learning rate, steps."""
    return record["seed"], record["M"], record["train_config"]["peak_lr"], record["train_config"]["steps"]


def _worker_start() -> None:
    """Start a worker: one torch thread, and on Linux ended when the run that spawned it ends."""
    torch.set_num_threads(1)
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _trained(todo: list[tuple], workers: int, out: Path):
    """Each model of ``todo`` with its record, as it is done: in this process for one worker,
    else ``workers`` at a time, each in a fresh interpreter on one thread."""
    if workers == 1:
        for model in todo:
            yield model, continued(*model, _checkpoint(out, model))
        return
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_worker_start) as pool:
        running = {pool.submit(continued, *model, _checkpoint(out, model)): model for model in todo}
        for future in as_completed(running):
            yield running[future], future.result()


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = provenance.start_run_file(parser, argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    out = Path(args.out)
    plan = PLANS[args.plan]
    records = json.loads(out.read_text())["models"] if out.exists() else []
    done = {_key(rec) for rec in records}
    for model, record in _trained([m for m in plan if m not in done], args.workers, out):
        records.append(record)
        records.sort(key=lambda rec: plan.index(_key(rec)))
        total = sum(rec["provenance"]["wall_seconds"] for rec in records)
        files.write_json(out, {"provenance": provenance.record(settings(args), torch.device("cpu"), total),
                               "models": records})
        _checkpoint(out, model).unlink()
        print(*model[:2], f"lr {model[2]:g}", "ratio", " ".join(f"{p:.2f}" for p in record["memorization_ratio"]),
              f"var {record['start_var']:.1e} -> {record['var'][-1]:.1e}", flush=True)


if __name__ == "__main__":
    main()
