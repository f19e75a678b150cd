"""Speed of the trainer: seconds per step and the wall time of a Figure 2 sweep.

    python benchmarks/train.py --device cpu --out data/benchmarks/cpu.json

Measured (on the machine it runs on), all at d = 30, N = 100:

1. seconds per step of one model, M = 50 and M = 100, 100 noise draws (the authors' setting);
2. the ten-size sweep M = 10, 20, ..., 100 trained batched (one program) against a plain
   loop that trains one size at a time with the same code, at 100 draws (the authors') and
   at 5 draws (the ``default`` recipe);
3. the full Figure 2 training sweep at each scale named by ``--sweeps`` (the ``paper`` one is
   50,000 steps: run it where that is affordable, otherwise it is extrapolated from (2)).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gmmmem import provenance
from gmmmem.device import resolve
from gmmmem.experiments import make_data
from gmmmem.train import TrainConfig, train_gmm

SIZES = list(range(10, 101, 10))


def seconds_per_step(X, sizes, steps, device, draws=100) -> float:
    """Median-free simple timing: a short warm-up run, then ``steps`` timed steps."""
    cfg = TrainConfig(steps=steps, peak_lr=1e-3, final_lr=1e-6, num_draws=draws)
    train_gmm(X, sizes, TrainConfig(steps=3, peak_lr=1e-3, final_lr=1e-6, num_draws=draws),
              device, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    train_gmm(X, sizes, cfg, device, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - began) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--sweeps", nargs="*", default=["ci", "default"],
                        help="scales whose full Figure 2 training sweep is run and timed")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    dev = resolve(args.device)
    _, X, _ = make_data(30, 4, 100, seed=0, device=dev)
    X = X.float()
    began = time.perf_counter()

    figures: dict[str, float] = {}
    for M in (50, 100):
        figures[f"step_seconds_M{M}"] = seconds_per_step(X, [M], args.steps, dev)
        print(f"one model, M = {M}, 100 draws: {1e3 * figures[f'step_seconds_M{M}']:.1f} ms/step")
    for draws, suffix in ((100, ""), (5, "_5_draws")):
        batched = seconds_per_step(X, SIZES, args.steps, dev, draws)
        looped = sum(seconds_per_step(X, [M], args.steps, dev, draws) for M in SIZES)
        figures[f"step_seconds_batched_10_sizes{suffix}"] = batched
        figures[f"step_seconds_loop_10_sizes{suffix}"] = looped
        print(f"ten sizes, {draws} draws: batched {1e3 * batched:.1f} ms/step, "
              f"one at a time {1e3 * looped:.1f} ms/step ({looped / batched:.1f}x)")
    batched = figures["step_seconds_batched_10_sizes"]
    paper = TrainConfig.preset("paper")
    figures["paper_sweep_seconds_extrapolated"] = batched * paper.steps
    print(f"paper sweep (10 sizes x {paper.steps} steps) extrapolated: "
          f"{batched * paper.steps / 60:.1f} min")
    for scale in args.sweeps:
        cfg = TrainConfig.preset(scale)
        t0 = time.perf_counter()
        train_gmm(X, SIZES, cfg, dev, progress=False)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        figures[f"sweep_seconds_{scale}"] = time.perf_counter() - t0
        print(f"Figure 2 training sweep at scale {scale} ({cfg.steps} steps, {cfg.num_draws} "
              f"draws): {figures[f'sweep_seconds_{scale}']:.1f} s")
    if args.out:
        settings = {"benchmark": "train", "d": 30, "N": 100, "sizes": SIZES,
                    "timed_steps": args.steps, "sweeps": args.sweeps}
        payload = {"figures": figures,
                   "provenance": provenance.record(settings, dev, time.perf_counter() - began)}
        provenance.write_json_atomic(args.out, payload)
        print(json.dumps(payload["provenance"], indent=1))


if __name__ == "__main__":
    main()
