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


def test_template_gradient_of_grouped_sizes_on_cuda_matches_cpu():
    """On a GPU the sizes are grouped and padded (one batched gradient); on a CPU each is alone.
    One step's losses and gradients agree (training itself is not compared: Adam turns the
    rounding noise of gradients that are ~0, on pixels no image uses, into full-size steps)."""
    from gmmmem.experiments import make_template_data
    from gmmmem.train_templates import _TemplateMixtures, rank1_factors

    _, images, _ = make_template_data(3, 24, 8, 0, torch.device("cpu"))
    T, colors = rank1_factors(images)
    g = torch.Generator().manual_seed(5)
    x0 = images.flatten(1).repeat(3, 1)
    t = torch.rand(len(x0), 1, generator=g, dtype=F64) * 0.99 + 0.005
    eps = torch.randn(x0.shape, generator=g, dtype=F64)
    sizes = [6, 12, 24]
    cpu = _TemplateMixtures(T.flatten(1), colors, sizes, 1e-3, rows=len(x0))
    gpu = _TemplateMixtures(T.flatten(1).cuda(), colors.cuda(), sizes, 1e-3, rows=len(x0))
    assert len(cpu.groups) == 3 and len(gpu.groups) == 1
    loss_c, grads_c = cpu.loss_and_grad(x0, t, eps)
    loss_g, grads_g = gpu.loss_and_grad(x0.cuda(), t.cuda(), eps.cuda())
    torch.testing.assert_close(loss_g.cpu(), loss_c, rtol=1e-10, atol=0)
    gT, gmu, gs = (p.cpu() for p in grads_g)
    for k, M in enumerate(sizes):
        torch.testing.assert_close(gT[k, :M], grads_c[3 * k][0], rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(gmu[k, :M], grads_c[3 * k + 1][0], rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(gs[k], grads_c[3 * k + 2][0], rtol=1e-8, atol=0)
