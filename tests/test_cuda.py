"""CUDA checks: the same code on the GPU agrees with the CPU. Skipped without a GPU."""

import math

import pytest
import torch

from gmmmem import mixtures, train
from gmmmem.experiments import phase_transition
from gmmmem.sampling import ddim_sample
from gmmmem.diffusion import time_grid

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
F64 = torch.float64


def test_denoiser_on_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(20, 30, generator=g, dtype=F64) * 2
    x_t = torch.randn(500, 30, generator=g, dtype=F64)
    t = torch.rand(500, generator=g, dtype=F64) * 0.99 + 0.005
    for var in (0.0, 1e-6, 1.0):
        cpu = mixtures.gmm_denoise(x_t, t, means, var)
        gpu = mixtures.gmm_denoise(x_t.cuda(), t.cuda(), means.cuda(), var).cpu()
        assert torch.allclose(cpu, gpu, rtol=1e-10, atol=1e-10)


def test_loss_and_gradient_on_cuda_match_cpu():
    g = torch.Generator().manual_seed(1)
    S, M, d, n = 4, 9, 30, 300
    means = torch.randn(S, M, d, generator=g, dtype=F64)
    log_std = torch.linspace(-6.9, 0.2, S, dtype=F64)
    bias = torch.zeros(S, 1, M, dtype=F64)
    bias[0, 0, 3:] = -math.inf
    x0 = torch.randn(n, d, generator=g, dtype=F64)
    t = torch.rand(n, 1, generator=g, dtype=F64) * 0.998 + 0.001
    eps = torch.randn(n, d, generator=g, dtype=F64)
    cpu = train._loss_and_grad(x0, t, eps, means, log_std, bias, 0.01)
    gpu = train._loss_and_grad(*(v.cuda() for v in (x0, t, eps, means, log_std, bias)), 0.01)
    for a, b in zip(cpu, gpu):
        assert torch.allclose(a, b.cpu(), rtol=1e-9, atol=1e-9 * a.abs().max())


def test_training_on_cuda_is_reproducible_and_learns():
    g = torch.Generator().manual_seed(2)
    X = mixtures.random_iso_gmm(10, 3, generator=g).sample(50, g)[0]
    cfg = train.TrainConfig(steps=300, peak_lr=1e-2, final_lr=1e-4, num_draws=10, seed=4)
    a = train.train_gmm(X, [5, 25, 50], cfg, "cuda", progress=False)
    b = train.train_gmm(X, [5, 25, 50], cfg, "cuda", progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.means, b.means))
    assert (a.loss_history[-30:].mean(0) < 0.5 * a.loss_history[:30].mean(0)).all()


def test_sampler_and_experiment_run_on_cuda():
    gmm = mixtures.random_iso_gmm(5, 2, generator=torch.Generator().manual_seed(3), device="cuda")
    x = ddim_sample(gmm.denoise, 64, 5, time_grid(), torch.Generator("cuda").manual_seed(0), device="cuda")
    assert x.is_cuda and torch.isfinite(x).all()
    res = phase_transition(5, 2, 20, [5, 20], scale="ci", device="cuda", progress=False)
    assert res.provenance["device"].startswith("cuda") and len(res.memorization_ratio) == 2


def test_template_training_groups_sizes_on_cuda_and_matches_cpu():
    from gmmmem.experiments import make_template_data
    from gmmmem.train_templates import train_templates

    _, images, _ = make_template_data(3, 24, 8, 0, torch.device("cpu"))
    cfg = train.TrainConfig(steps=200, peak_lr=1e-2, final_lr=1e-4, num_draws=4, seed=1)
    cpu = train_templates(images, [6, 12, 24], cfg, "cpu", progress=False, dtype=F64)
    gpu = train_templates(images, [6, 12, 24], cfg, "cuda", progress=False, dtype=F64)
    for a, b in zip(cpu.templates + cpu.color_means, gpu.templates + gpu.color_means):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-7)
    assert cpu.var == pytest.approx(gpu.var, rel=1e-7)
