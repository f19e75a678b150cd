"""Whether the 100,000-step template models rest where training left them (chapter 5).

    OMP_NUM_THREADS=1 python runs/template_drift.py --out data/phase_transition/templates/drift_K6_N100_steps100k.json

For the sizes from M = 80 on (``SIZES``: the copying ones and their neighbours) of
``default_K6_N100_seed{0,1}_steps100k.json``: the mean gradient of the
training loss on the log colour standard deviation over 3,000 training batches, and the mean
change Adam would make to it per unit learning rate after 1,000 batches of burn-in
(:func:`gmmmem.train_templates.variance_drift`, the model held still, batches seeded with
``DRIFT_SEED``), one torch thread (about 25 minutes on one CPU core).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from gmmmem import files, provenance
from gmmmem.experiments import TemplateTransitionResult
from gmmmem.train_templates import DRIFT_BLOCK, variance_drift

RUNS = {seed: Path(f"data/phase_transition/templates/default_K6_N100_seed{seed}_steps100k.json")
        for seed in (0, 1)}
BATCHES, BURN_IN, DRIFT_SEED = 3000, 1000, 7
SIZES = (80, 90, 92, 94, 95, 96, 98, 100)


def settings(args: argparse.Namespace) -> dict:
    """The settings this run records (as read back from its JSON)."""
    return json.loads(json.dumps({
        "experiment": "template_variance_drift", "runs": {s: str(p) for s, p in RUNS.items()},
        "sizes": list(SIZES), "batches": BATCHES, "burn_in": BURN_IN, "block": DRIFT_BLOCK,
        "seed": DRIFT_SEED, "dtype": "float64", "threads": 1}))


def build_parser() -> argparse.ArgumentParser:
    """The command line of this run."""
    return provenance.run_file_parser(__doc__)


def main(argv: list[str] | None = None) -> None:
    args = provenance.start_run_file(build_parser(), argv)
    began = time.perf_counter()
    rows = []
    for seed, path in RUNS.items():
        r = TemplateTransitionResult.load(path)
        images = torch.as_tensor(r.X).reshape(len(r.X), 3, *r.true_templates.shape[1:])
        for j, M in enumerate(r.model_sizes):
            if M not in SIZES:
                continue
            t0 = time.perf_counter()
            drift = variance_drift(images, torch.as_tensor(r.learned_templates[j]),
                                   torch.as_tensor(r.learned_color_means[j]), r.learned_var[j],
                                   r.train_config, batches=BATCHES, burn_in=BURN_IN, seed=DRIFT_SEED)
            rows.append({"seed": seed, "M": M, **vars(drift),
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(seed, M, f"gradient {drift.gradient:.3g} ± {drift.gradient_stderr:.2g}, "
                  f"log s rate {drift.log_std_rate:.3g} ± {drift.log_std_rate_stderr:.2g}",
                  flush=True)
    record = provenance.record(settings(args), torch.device("cpu"), time.perf_counter() - began)
    files.write_json(args.out, {"provenance": record, "rows": rows})


if __name__ == "__main__":
    main()
