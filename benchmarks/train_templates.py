"""Speed of the coloured-template trainer (Figure 6): the hand-written gradient against autograd.

    python benchmarks/train_templates.py --out data/benchmarks/template_train_cpu-2-cores.json

Measured on the machine it runs on, the CPU and the wall seconds of one training step (the
smallest of ``--repeats``; CPU time is inflated less than wall time by other jobs), for chapter 5's
committed configuration (K = 6 templates of 15 x 15 pixels, N = 100, ten sizes M = 10..100,
2 noise draws) and its small retrained one (K = 3, 8 x 8 pixels, N = 24, M = 6 and 24):

1. the step of :func:`gmmmem.train_templates.train_templates` (hand-written gradient, one
   thread);
2. the same loss and gradient through autograd of :func:`gmmmem.templates.posterior_mean`,
   one size at a time (the implementation the hand-written gradient replaced);
3. the step of (1) with two intra-op threads instead of one.
"""

from __future__ import annotations

import argparse
import time

import torch

from gmmmem import files, provenance
from gmmmem.device import single_threaded
from gmmmem.experiments import make_template_data, template_config
from gmmmem.templates import posterior_mean
from gmmmem.train_templates import _TemplateMixtures, rank1_factors

CONFIGS = {
    "figure6": dict(K=6, N=100, size=15, sizes=list(range(10, 101, 10))),
    "chapter5_small": dict(K=3, N=24, size=8, sizes=[6, 24]),
}


def _batch(X: torch.Tensor, draws: int, seed: int):
    """One step's rows: clean images, times and noise, as the trainer draws them."""
    g = torch.Generator().manual_seed(seed)
    x0 = X.flatten(1).repeat_interleave(draws, 0)
    t = torch.rand(len(x0), 1, generator=g) * 0.9 + 0.05
    return x0, t, torch.randn(x0.shape, generator=g)


def _autograd_step(model: _TemplateMixtures, x0, t, eps) -> None:
    """Loss and gradients of every size through autograd, one size at a time."""
    n, q = x0.shape[0], model.groups[0].templates.shape[-1]
    a, s2 = torch.sqrt(1 - t * t), t * t
    x0 = x0.view(n, 3, q)
    x = a[..., None] * x0 + t[..., None] * eps.view(n, 3, q)
    psi = (a * a / s2).view(n)
    params = [p.clone().requires_grad_() for p in model.params]
    loss = 0.0
    for i, group in enumerate(model.groups):  # on the CPU each size is its own group
        T, mu, log_std = params[3 * i : 3 * i + 3]
        for k, M in enumerate(group.sizes):
            out = posterior_mean(x, a, s2, T[k, :M], mu[k, :M], torch.exp(2 * log_std[k]))
            loss = loss + (psi * (out - x0).square().sum((-2, -1))).mean()
    torch.autograd.grad(loss, params)


def seconds(step, repeats: int) -> dict[str, float]:
    """Smallest CPU time and smallest wall time of ``repeats`` calls of ``step`` after one
    warm-up call."""
    step()
    cpu = wall = float("inf")
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        step()
        cpu, wall = min(cpu, time.process_time() - c), min(wall, time.perf_counter() - w)
    return {"cpu": cpu, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    began = time.perf_counter()
    figures = {}
    for name, c in CONFIGS.items():
        _, images, _ = make_template_data(c["K"], c["N"], c["size"], 0, torch.device("cpu"))
        images = images.float()
        T, colors = rank1_factors(images[: max(c["sizes"])])
        draws = template_config("default").num_draws
        model = _TemplateMixtures(T.flatten(1), colors, c["sizes"], 1e-6, rows=c["N"] * draws)
        batch = _batch(images, draws, 0)
        with single_threaded():
            hand = seconds(lambda: model.loss_and_grad(*batch), args.repeats)
            auto = seconds(lambda: _autograd_step(model, *batch), args.repeats)
        previous = torch.get_num_threads()
        torch.set_num_threads(2)
        two = seconds(lambda: model.loss_and_grad(*batch), args.repeats)
        torch.set_num_threads(previous)
        figures[name] = {"config": c, "draws": draws, "hand_seconds": hand,
                         "autograd_seconds": auto, "hand_two_threads_seconds": two}
        print(f"{name}, ms per step (CPU / wall): hand-written {1e3 * hand['cpu']:.1f} / "
              f"{1e3 * hand['wall']:.1f}, autograd {1e3 * auto['cpu']:.1f} / {1e3 * auto['wall']:.1f}, "
              f"hand-written with two threads {1e3 * two['cpu']:.1f} / {1e3 * two['wall']:.1f}")
    settings = {"benchmark": "train_templates", "repeats": args.repeats}
    record = provenance.record(settings, torch.device("cpu"), time.perf_counter() - began)
    files.write_json(args.out, {"figures": figures, "provenance": record})


if __name__ == "__main__":
    main()
