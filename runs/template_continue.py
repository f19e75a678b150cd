"""The 100,000-step template models near N, trained on at a constant learning rate (chapter 5).

    OMP_NUM_THREADS=1 python runs/template_continue.py --out data/phase_transition/templates/continued_K6_N100_lr1e-3_steps40k.json

Each model of ``MODELS`` (seed, M): every size that still copies at the end of
``default_K6_N100_seed{0,1}_steps100k.json``, one size per seed that generalizes there (a
control), and seed 1's M = N model, which let go of its images late in its run. Each starts
where its run ended (templates, colour means, colour variance;
:func:`gmmmem.train_templates.train_templates` with ``init``) and trains ``STEPS`` more steps at
a constant learning rate ``LR`` (about the run's rate at the start of its last third) after a
2% warm-up, with the run's optimizer settings (Adam from a fresh state, beta2 0.999, update EMA
0.99, 2 noise draws) and new training noise (seed 100 + the run's seed). The memorization ratio
is measured every ``EVERY`` steps on the run's sampler noise (200 samples), float32 training on
one torch thread. The file is rewritten (atomically) as each model is done: a rerun skips the
models already in it and resumes the one in progress from its checkpoint
(``OUT.seed{seed}_M{M}.checkpoint``, removed once the model is in OUT).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from gmmmem import files, provenance
from gmmmem.experiments import TemplateTransitionResult, sample_ratios
from gmmmem.train import TrainConfig
from gmmmem.train_templates import train_templates

RUNS = {seed: Path(f"data/phase_transition/templates/default_K6_N100_seed{seed}_steps100k.json")
        for seed in (0, 1)}
#: (seed, M): the copying sizes, one generalizing control per seed, seed 1's M = N.
MODELS = ((0, 94), (0, 95), (0, 100), (1, 95), (1, 96), (0, 96), (1, 94), (1, 100))
STEPS, LR, WARMUP, EVERY = 40_000, 1e-3, 0.02, 4_000
#: The variance history is kept every this many steps.
KEEP_EVERY = 200


def continued(r: TemplateTransitionResult, M: int, seed: int, checkpoint: Path) -> dict:
    """Train size M of run ``r`` on from its end; the record of the continuation."""
    j = r.model_sizes.index(M)
    run = r.train_config
    config = TrainConfig(steps=STEPS, peak_lr=LR, final_lr=LR, warmup_frac=WARMUP,
                         num_draws=run.num_draws, update_ema=run.update_ema,
                         init_var=r.learned_var[j], seed=100 + seed, adam_beta2=run.adam_beta2)
    images = torch.as_tensor(r.X, dtype=torch.float32).reshape(len(r.X), 3, *r.true_templates.shape[1:])
    init = (torch.as_tensor(r.learned_templates[j]), torch.as_tensor(r.learned_color_means[j]))
    snapshots = list(range(EVERY, STEPS, EVERY))
    began = time.perf_counter()
    trained = train_templates(images, [M], config, "cpu", progress=False, init=init,
                              checkpoint=checkpoint, checkpoint_every=1000, snapshots=snapshots)
    X = torch.as_tensor(r.X, dtype=torch.float64)
    ev = r.eval_config
    ratios = [sample_ratios(trained.snapshots[s], X, ev, r.seed)[0] for s in snapshots]
    ratios.append(sample_ratios(trained, X, ev, r.seed)[0])
    keep = np.arange(KEEP_EVERY - 1, STEPS, KEEP_EVERY)
    return {"seed": seed, "M": M, "train_config": vars(config), "eval_config": vars(ev),
            "start_ratio": float(r.memorization_ratio[j]), "start_var": float(r.learned_var[j]),
            "steps": snapshots + [STEPS], "memorization_ratio": ratios,
            "var": [trained.snapshots[s].var[0] for s in snapshots] + [trained.var[0]],
            "history_steps": (keep + 1).tolist(),
            "var_history": trained.var_history[keep, 0].tolist(),
            "loss_history": trained.loss_history[keep, 0].tolist(),
            "train_seconds": round(trained.seconds, 1),
            "seconds": round(time.perf_counter() - began, 1)}


def settings(args: argparse.Namespace) -> dict:
    """The settings this run records (as read back from its JSON)."""
    return json.loads(json.dumps({
        "experiment": "template_continuation", "runs": {str(s): str(p) for s, p in RUNS.items()},
        "models": [list(m) for m in MODELS], "steps": STEPS, "lr": LR, "warmup_frac": WARMUP,
        "every": EVERY, "keep_every": KEEP_EVERY, "dtype": "float32", "threads": 1}))


def build_parser() -> argparse.ArgumentParser:
    """The command line of this run."""
    return provenance.run_file_parser(__doc__)


def main(argv: list[str] | None = None) -> None:
    args = provenance.start_run_file(build_parser(), argv)
    out = Path(args.out)
    records = json.loads(out.read_text())["models"] if out.exists() else []
    done = {(rec["seed"], rec["M"]) for rec in records}
    runs = {seed: TemplateTransitionResult.load(path) for seed, path in RUNS.items()}
    for seed, M in MODELS:
        if (seed, M) in done:
            continue
        began = time.perf_counter()
        checkpoint = out.with_name(f"{out.name}.seed{seed}_M{M}.checkpoint")
        record = continued(runs[seed], M, seed, checkpoint)
        # each model records when and at which commit it was trained; the file, its command
        record["provenance"] = provenance.record({"run": str(RUNS[seed])}, torch.device("cpu"),
                                                 time.perf_counter() - began)
        records.append(record)
        total = sum(r["provenance"]["wall_seconds"] for r in records)
        files.write_json(out, {"provenance": provenance.record(settings(args), torch.device("cpu"), total),
                               "models": records})
        checkpoint.unlink()
        print(seed, M, "ratio", " ".join(f"{p:.2f}" for p in record["memorization_ratio"]),
              f"var {record['start_var']:.1e} -> {record['var'][-1]:.1e}", flush=True)


if __name__ == "__main__":
    main()
