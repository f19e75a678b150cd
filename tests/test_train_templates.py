"""Training coloured-template mixtures: the hand-written gradient, the start, the trainer,
the experiment and its statistics."""

import math

import numpy as np
import pytest
import torch

import gmmmem.train_templates as tt
from gmmmem import metrics, results, train
from gmmmem.experiments import (PhaseTransitionResult, TemplateTransitionResult, make_template_data,
                                phase_transition_templates)
from gmmmem.mixtures import gmm_denoise
from gmmmem.templates import ColoredTemplates, colorize, load_templates, posterior_mean
from gmmmem.train import TrainConfig, pmem_init_order
from gmmmem.train_templates import _loss_and_grad, rank1_factors, train_templates

F64 = torch.float64


def _images(N=12, K=3, size=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    truth = ColoredTemplates(load_templates(K, size, dtype=F64),
                             torch.randn(K, 3, dtype=F64, generator=gen), 0.7)
    X, _ = truth.sample(N, gen)
    return truth, X


def _autograd_loss(x0, t, eps, T, mu, log_std):
    """The loss of one model through autograd of :func:`gmmmem.templates.posterior_mean`."""
    a = torch.sqrt(1 - t * t)
    x = a[..., None] * x0 + t[..., None] * eps
    out = posterior_mean(x, a, t * t, T, mu, torch.exp(2 * log_std))
    return ((a * a / (t * t))[..., None] * (out - x0) ** 2).sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hand_written_gradient_equals_autograd(seed):
    g = torch.Generator().manual_seed(seed)
    M, q, n = 6, 11, 7
    T = torch.rand(M, q, generator=g, dtype=F64) + 0.05
    mu = torch.randn(M, 3, generator=g, dtype=F64)
    log_std = torch.randn(1, generator=g, dtype=F64) - 1.0
    x0 = torch.randn(n, 3, q, generator=g, dtype=F64)
    eps = torch.randn(n, 3, q, generator=g, dtype=F64)
    t = torch.tensor([0.001, 0.05, 0.2, 0.5, 0.8, 0.95, 0.999], dtype=F64)[:, None]
    loss, gT, gmu, gs = _loss_and_grad(x0, t, eps, T[None], mu[None], log_std,
                                       torch.zeros(1, 1, M, dtype=F64), 0.3)
    loss, gT, gmu = loss[0], gT[0], gmu[0]  # the group of one size
    params = [p.clone().requires_grad_() for p in (T, mu, log_std)]
    ref = _autograd_loss(x0, t, eps, *params)
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=0)
    for mine, want in zip((gT, gmu, gs), torch.autograd.grad(0.3 * ref, params)):
        torch.testing.assert_close(mine, want, rtol=1e-9, atol=1e-9 * float(want.abs().max()))


def test_gradient_is_finite_at_tiny_colour_variance():
    _, X = _images()
    T, c = rank1_factors(X[:4])
    t = torch.tensor([[0.001], [0.5], [0.999]], dtype=F64)
    x0 = X[:3].flatten(2)
    eps = torch.randn(x0.shape, dtype=F64, generator=torch.Generator().manual_seed(0))
    out = _loss_and_grad(x0, t, eps, T.flatten(1)[None], c[None], torch.tensor([0.5 * math.log(1e-12)], dtype=F64),
                         torch.zeros(1, 1, 4, dtype=F64), 1.0)
    assert all(bool(torch.isfinite(o).all()) for o in out)


def test_a_padded_group_gives_each_size_its_own_loss_and_gradient():
    """Sizes padded to the largest in one group (as on a GPU) give, size by size, the loss and
    gradients of that size alone, and zero gradient on the padding."""
    g = torch.Generator().manual_seed(3)
    sizes, q, n = [2, 4, 6], 9, 5
    T = torch.rand(6, q, generator=g, dtype=F64) + 0.05
    mu = torch.randn(6, 3, generator=g, dtype=F64)
    log_std = torch.tensor([-1.0, -0.3, -2.0], dtype=F64)
    x0, eps = (torch.randn(n, 3, q, generator=g, dtype=F64) for _ in range(2))
    t = torch.tensor([0.01, 0.2, 0.5, 0.8, 0.99], dtype=F64)[:, None]
    bias = torch.zeros(3, 1, 6, dtype=F64)
    for k, M in enumerate(sizes):
        bias[k, 0, M:] = -math.inf
    loss, gT, gmu, gs = _loss_and_grad(x0, t, eps, T.expand(3, 6, q), mu.expand(3, 6, 3), log_std, bias, 0.7)
    for k, M in enumerate(sizes):
        l1, gT1, gmu1, gs1 = _loss_and_grad(x0, t, eps, T[None, :M], mu[None, :M], log_std[k : k + 1],
                                            torch.zeros(1, 1, M, dtype=F64), 0.7)
        torch.testing.assert_close(loss[k], l1[0], rtol=1e-12, atol=0)
        torch.testing.assert_close(gT[k, :M], gT1[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(gmu[k, :M], gmu1[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(gs[k], gs1[0], rtol=1e-10, atol=0)
        assert bool((gT[k, M:] == 0).all()) and bool((gmu[k, M:] == 0).all())


def test_grouped_sizes_train_as_each_alone(monkeypatch):
    """With the GPU's grouping forced on the CPU, a padded group trains each size as alone."""
    _, X = _images()
    cfg = TrainConfig(steps=20, peak_lr=1e-2, final_lr=1e-3, num_draws=2, update_ema=0.9)
    real = train.size_groups
    monkeypatch.setattr(train, "size_groups", lambda sizes, overhead, shape=None: real(sizes, 1e9, shape))
    both = train_templates(X, [3, 7], cfg, progress=False, dtype=F64)
    ones = torch.ones(7, 4, dtype=F64)
    assert len(tt._TemplateMixtures(ones, ones[:, :3], [3, 7], 1e-3, rows=1).groups) == 1  # one group
    monkeypatch.setattr(train, "size_groups", real)
    for k, M in enumerate([3, 7]):
        alone = train_templates(X, [M], cfg, progress=False, dtype=F64)
        torch.testing.assert_close(both.templates[k], alone.templates[0], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(both.color_means[k], alone.color_means[0], rtol=1e-9, atol=1e-10)
        assert both.var[k] == pytest.approx(alone.var[0], rel=1e-9)


def test_rank1_factors_reconstruct_coloured_templates_with_rms_one_templates():
    _, X = _images()
    T, c = rank1_factors(X)
    torch.testing.assert_close(colorize(c, T), X, rtol=0, atol=1e-12)
    torch.testing.assert_close(T.square().mean((1, 2)), torch.ones(len(X), dtype=F64))
    assert bool((T.sum((1, 2)) >= 0).all())
    # the best rank-one approximation of a rank-2 image is its leading singular part
    Y = X[:1].clone()
    Y[0, 0] += 0.1 * torch.rand(Y.shape[-2:], dtype=F64)
    T1, c1 = rank1_factors(Y)
    flat = Y[0].flatten(1)
    U, S, Vh = torch.linalg.svd(flat)
    torch.testing.assert_close(colorize(c1, T1)[0].flatten(1), S[0] * torch.outer(U[:, 0], Vh[0]))


def test_rank1_factors_reject_bad_images():
    with pytest.raises(ValueError, match=r"\(n, 3, h, w\)"):
        rank1_factors(torch.ones(2, 4, 4))
    with pytest.raises(ValueError, match="all-zero"):
        rank1_factors(torch.zeros(1, 3, 4, 4))


def test_start_is_the_memorizing_denoiser_of_the_first_images():
    _, X = _images()
    # colour variance 1e-16, not 0 (its log is trained): it moves the denoiser by ~1e-12 here
    # (at 1e-10 by up to ~1.5e-6 at t = 0.05, which failed this tolerance on some images)
    cfg = TrainConfig(steps=1, peak_lr=1e-12, final_lr=0.0, seed=3, init_var=1e-16)
    trained = train_templates(X, [5], cfg, progress=False, dtype=F64)
    start = X[pmem_init_order(len(X), 3)[:5]].flatten(1)
    x = torch.randn(20, X[0].numel(), dtype=F64, generator=torch.Generator().manual_seed(1))
    for t in (0.05, 0.5, 0.9):
        torch.testing.assert_close(trained.denoiser(0)(x, t), gmm_denoise(x, t, start, 0.0),
                                   rtol=1e-6, atol=1e-6)


def test_training_decreases_the_loss_and_grows_the_colour_variance():
    _, X = _images(N=16)
    cfg = TrainConfig(steps=600, peak_lr=1e-2, final_lr=1e-3, num_draws=4, seed=0)
    trained = train_templates(X, [3], cfg, progress=False, dtype=F64)
    h = trained.loss_history[:, 0]
    assert np.median(h[-100:]) < 0.5 * np.median(h[:100])  # the loss is heavy-tailed in t
    assert trained.var[0] > 2 * cfg.init_var  # it grows slowly at first (chapter 3)


def test_batched_sizes_train_exactly_as_each_alone():
    _, X = _images()
    cfg = TrainConfig(steps=30, peak_lr=1e-2, final_lr=1e-3, num_draws=3, update_ema=0.9)
    both = train_templates(X, [3, 7], cfg, progress=False, dtype=F64)
    for k, M in enumerate([3, 7]):
        alone = train_templates(X, [M], cfg, progress=False, dtype=F64)
        torch.testing.assert_close(both.templates[k], alone.templates[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(both.color_means[k], alone.color_means[0], rtol=1e-12, atol=1e-12)
        assert both.var[k] == pytest.approx(alone.var[0], rel=1e-12)


def _interrupt_at(step, monkeypatch, run):
    """Call ``run`` with a Ctrl-C raised when training reaches ``step``, then restore training."""
    real_lr = TrainConfig.lr

    def interrupt(self, k):
        if k == step:
            raise KeyboardInterrupt
        return real_lr(self, k)

    monkeypatch.setattr(TrainConfig, "lr", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(TrainConfig, "lr", real_lr)


def test_an_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    _, X = _images()
    cfg = TrainConfig(steps=30, peak_lr=1e-2, final_lr=1e-3, num_draws=2, update_ema=0.9)
    kw = dict(progress=False, dtype=F64)
    full = train_templates(X, [2, 5], cfg, **kw)
    ck = tmp_path / "run.ckpt"
    _interrupt_at(17, monkeypatch, lambda: train_templates(X, [2, 5], cfg, checkpoint=ck, checkpoint_every=10, **kw))
    resumed = train_templates(X, [2, 5], cfg, checkpoint=ck, checkpoint_every=10, **kw)
    assert all(torch.equal(a, b) for a, b in zip(full.templates, resumed.templates))
    assert full.var == resumed.var and np.array_equal(full.loss_history, resumed.loss_history)


@pytest.mark.parametrize(
    "call,word",
    [
        (lambda X: train_templates(X.flatten(1), [2], TrainConfig.preset("ci")), r"\(N, 3, h, w\)"),
        (lambda X: train_templates(X, [13], TrainConfig.preset("ci")), "model size"),
        (lambda X: train_templates(X, [], TrainConfig.preset("ci")), "empty"),
        (lambda X: phase_transition_templates(3, 1, size=5), "N must be >= 2"),
        (lambda X: phase_transition_templates(3, 10, [5, 3], size=5), "increasing"),
        (lambda X: phase_transition_templates(3, 10, size=0), "size"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, word):
    _, X = _images()
    with pytest.raises(ValueError, match=word):
        call(X)


def test_template_data_are_reproducible_coloured_templates():
    truth, X, X_test = make_template_data(3, 8, 6, 0, torch.device("cpu"))
    again, Y, _ = make_template_data(3, 8, 6, 0, torch.device("cpu"))
    assert torch.equal(X, Y) and not torch.equal(X, X_test)
    assert X.shape == (8, 3, 6, 6) and truth.color_var == 1.0
    T, _ = rank1_factors(X)  # every image is a colour times one of the K templates
    cos = (T.flatten(1) @ truth.templates.flatten(1).T).abs()
    cos /= T.flatten(1).norm(dim=1)[:, None] * truth.templates.flatten(1).norm(dim=1)
    torch.testing.assert_close(cos.amax(1), torch.ones(8, dtype=F64))


def test_phase_transition_templates_runs_and_round_trips(tmp_path):
    cfg = TrainConfig(steps=40, peak_lr=3e-3, final_lr=3e-6, num_draws=2)
    r = phase_transition_templates(2, 6, [2, 6], size=4, scale="ci", config=cfg, progress=False)
    assert r.d == 3 * 16 and r.model_sizes == [2, 6]
    assert np.all((0.0 <= r.memorization_ratio) & (r.memorization_ratio <= 1.0))
    assert r.train_loss.shape == (2, 26) and r.reference.pmem_train.shape == (2, 26)
    assert r.X.shape == (6, 48) and r.true_templates.shape == (2, 4, 4)
    assert [T.shape for T in r.learned_templates] == [(2, 4, 4), (6, 4, 4)]
    assert [mu.shape for mu in r.learned_color_means] == [(2, 3), (6, 3)]
    assert [st.M for st in r.template_stats] == [2, 6]
    # the memorizing denoiser has (close to) zero training loss at small noise
    assert r.reference.mem_train[0] < 1e-3 * r.reference.true_train[0]
    assert r.provenance["settings"]["experiment"] == "phase_transition_templates"
    assert r.train_config == cfg and r.loss_history.var.shape == r.loss_history.loss.shape
    back = TemplateTransitionResult.load(r.save(tmp_path / "r.json"))
    assert results.to_json(back) == results.to_json(r) and back.template_stats == r.template_stats
    with pytest.raises(ValueError, match="TemplateTransitionResult"):
        PhaseTransitionResult.load(tmp_path / "r.json")


def test_template_statistics_on_known_cases():
    truth, X = _images(N=10, K=3)
    flatX = X.flatten(1)
    # the true templates with zero colours: every template found, no component on an image
    s = metrics.template_statistics(truth.templates, torch.zeros(3, 3, dtype=F64), truth.templates, flatX)
    assert (s.M, s.true_templates_found, s.near_training_image) == (3, 3, 0)
    assert s.mean_template_cosine == pytest.approx(1.0) and s.mean_color_norm == 0.0
    # components at training images: all of them sit on a training image
    T, c = rank1_factors(X[:4])
    s = metrics.template_statistics(T, c, truth.templates, flatX)
    assert s.near_training_image == 4 and s.mean_template_cosine == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        metrics.template_statistics(T.flatten(1), c, truth.templates, flatX)


def test_command_line(tmp_path, capsys):
    from gmmmem.__main__ import main

    out = tmp_path / "run.json"
    main(["phase-transition-templates", "--K", "2", "--N", "6", "--size", "4", "--sizes", "2", "6",
          "--scale", "ci", "--steps", "20", "--device", "cpu", "--no-progress", "--out", str(out),
          "--snapshots", "10"])
    r = TemplateTransitionResult.load(out)
    assert r.loss_history.snapshots.steps.tolist() == [10]
    assert r.model_sizes == [2, 6] and r.provenance["settings"]["experiment"] == "phase_transition_templates"
    assert r.train_config.steps == 20 and r.train_config.num_draws == 2
    assert "transition start" in capsys.readouterr().out
    assert not (tmp_path / "run.json.checkpoint").exists()


def test_small_problems_train_single_threaded_and_restore_the_thread_count(monkeypatch):


    seen = []
    real_fit = tt.fit
    monkeypatch.setattr(tt, "fit", lambda *a, **k: (seen.append(torch.get_num_threads()), real_fit(*a, **k))[1])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _, X = _images()
        train_templates(X, [2], TrainConfig(steps=2, peak_lr=1e-3, final_lr=0.0), progress=False)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    # chapter 5's small model is below the threshold, Figure 6's above it
    assert tt.step_work(24, 2, 64, [6, 24]) < tt.SMALL_STEP_WORK < tt.step_work(100, 2, 225, range(10, 101, 10))


def test_snapshots_keep_the_models_after_the_asked_steps():
    _, X = _images()
    cfg = TrainConfig(steps=30, peak_lr=1e-2, final_lr=1e-3, num_draws=2, update_ema=0.9)
    run = train_templates(X, [2, 5], cfg, progress=False, dtype=F64, snapshots=[10, 30])
    assert sorted(run.snapshots) == [10, 30]
    last, mid = run.snapshots[30], run.snapshots[10]
    assert all(torch.equal(a, b) for a, b in zip(last.templates, run.templates))
    assert last.var == run.var
    # the step-10 models are those after step 10: their variance is the one recorded then
    np.testing.assert_allclose(mid.var, run.var_history[9], rtol=1e-12)
    assert mid.var != run.var and mid.loss_history.shape == (10, 2)
    with pytest.raises(ValueError, match="snapshot"):
        train_templates(X, [2], cfg, progress=False, snapshots=[31])


def test_snapshots_survive_an_interruption(tmp_path, monkeypatch):
    _, X = _images()
    cfg = TrainConfig(steps=30, peak_lr=1e-2, final_lr=1e-3, num_draws=2, update_ema=0.9)
    kw = dict(progress=False, dtype=F64)
    full = train_templates(X, [2, 5], cfg, snapshots=[5], **kw)
    ck = tmp_path / "run.ckpt"
    _interrupt_at(17, monkeypatch,
                  lambda: train_templates(X, [2, 5], cfg, checkpoint=ck, checkpoint_every=10, snapshots=[5], **kw))
    # the checkpoint (step 10) kept step 5 but cannot give step 8, which it never kept
    with pytest.raises(ValueError, match="did not keep"):
        train_templates(X, [2, 5], cfg, checkpoint=ck, checkpoint_every=10, snapshots=[8], **kw)
    resumed = train_templates(X, [2, 5], cfg, checkpoint=ck, checkpoint_every=10, snapshots=[5], **kw)
    assert all(torch.equal(a, b) for a, b in zip(full.snapshots[5].templates, resumed.snapshots[5].templates))
    assert full.snapshots[5].var == resumed.snapshots[5].var


def test_phase_transition_templates_measures_snapshots_on_the_same_sampler_noise():
    cfg = TrainConfig(steps=40, peak_lr=3e-2, final_lr=3e-5, num_draws=2, adam_beta2=0.9)
    r = phase_transition_templates(2, 6, [2, 6], size=4, scale="ci", config=cfg, progress=False,
                                   snapshots=[1, 40])
    snap = r.loss_history.snapshots
    assert snap.steps.tolist() == [1, 40] and r.provenance["settings"]["snapshots"] == [1, 40]
    assert np.array_equal(snap.memorization_ratio[1], r.memorization_ratio)  # the final models, same noise
    assert np.array_equal(snap.var[1], r.learned_var)
    assert not np.array_equal(snap.var[0], r.learned_var)
    # after one step the size-6 model is still (nearly) the memorizing start
    assert snap.memorization_ratio[0, 1] == 1.0


def test_template_config_keeps_the_authors_optimizer_at_default_scale():
    from gmmmem.experiments import template_config
    from gmmmem.presets import LONG_DEFAULT, TEMPLATE_DRAWS

    c = template_config("default", seed=3)
    assert (c.steps, c.adam_beta2, c.peak_lr) == (LONG_DEFAULT["steps"], 0.999, LONG_DEFAULT["peak_lr"])
    assert c.num_draws == TEMPLATE_DRAWS and c.seed == 3
    assert template_config("default", steps=60_000).steps == 60_000
    assert template_config("paper") == TrainConfig.preset("paper")


def _rms_one_truth(K=3, size=5, var=0.7, seed=0):
    """A coloured-template mixture whose templates have root-mean-square pixel 1 (the
    trainable model's normalization), so that its colour variance is a model parameter."""
    T = load_templates(K, size, dtype=F64)
    T = T / T.square().mean((1, 2), keepdim=True).sqrt()
    gen = torch.Generator().manual_seed(seed)
    return ColoredTemplates(T, torch.randn(K, 3, dtype=F64, generator=gen), var), gen


def test_frozen_adam_holds_the_model_and_its_first_change_is_fits_first_step():
    _, X = _images()
    cfg = TrainConfig(steps=1, peak_lr=1e-3, final_lr=0.0, num_draws=3, seed=4, update_ema=0.99)
    start = X[pmem_init_order(len(X), cfg.seed)[:5]]
    T, c = rank1_factors(start)
    model = tt._TemplateMixtures(T.flatten(1), c, [5], cfg.init_var, rows=len(X) * cfg.num_draws)
    before = [p.clone() for p in model.params]
    changes = [u for _, u in train.frozen_adam(model, train.RowDraws(X.flatten(1), 3, cfg.seed), cfg, 4)]
    for p, b in zip(model.params, before):
        assert torch.equal(p, b)  # the model is not moved
    trained = train_templates(X, [5], cfg, progress=False, dtype=F64)  # one step at lr 1e-3
    torch.testing.assert_close(0.5 * math.log(trained.var[0]),
                               0.5 * math.log(cfg.init_var) + cfg.peak_lr * float(changes[0][2][0]))
    torch.testing.assert_close(trained.color_means[0], c + cfg.peak_lr * changes[0][1][0])
    assert not torch.equal(changes[0][2], changes[1][2])  # a fresh batch each time


@pytest.mark.parametrize("factor, sign", [(0.1, 1.0), (10.0, -1.0)])
def test_variance_drift_points_towards_the_true_colour_variance(factor, sign):
    # the true templates and colour means, the colour variance off by ``factor``: the loss of
    # the images the truth generated falls towards the true variance, and Adam moves log s there
    truth, gen = _rms_one_truth()
    X, _ = truth.sample(200, gen)
    cfg = TrainConfig(steps=1, peak_lr=1e-3, final_lr=0.0, num_draws=2)
    drift = tt.variance_drift(X, truth.templates, truth.color_means, factor * truth.color_var, cfg,
                              batches=1300, burn_in=300, seed=0)
    assert sign * drift.gradient < -5 * drift.gradient_stderr
    assert sign * drift.log_std_rate > 5 * drift.log_std_rate_stderr


def test_variance_drift_rejects_bad_input():
    truth, gen = _rms_one_truth()
    X, _ = truth.sample(10, gen)
    cfg = TrainConfig(steps=1, peak_lr=1e-3, final_lr=0.0)
    with pytest.raises(ValueError, match="templates"):
        tt.variance_drift(X, truth.templates[:, :4], truth.color_means, 1.0, cfg, batches=1100,
                          burn_in=10, seed=0)
    with pytest.raises(ValueError, match="variance"):
        tt.variance_drift(X, truth.templates, truth.color_means, 0.0, cfg, batches=1100,
                          burn_in=10, seed=0)
    with pytest.raises(ValueError, match="two blocks"):
        tt.variance_drift(X, truth.templates, truth.color_means, 1.0, cfg, batches=1000,
                          burn_in=10, seed=0)


def test_init_replaces_the_start_and_continues_a_run_where_it_stopped():
    _, X = _images()
    cfg = TrainConfig(steps=40, peak_lr=1e-2, final_lr=1e-2, warmup_frac=0.0, num_draws=2, seed=2)
    first = train_templates(X, [4], cfg, progress=False, dtype=F64)
    # the model after 40 steps, continued: Adam restarts, so the second leg is its own run, but
    # it starts exactly where the first ended
    again = TrainConfig(steps=1, peak_lr=1e-12, final_lr=0.0, num_draws=2, seed=5,
                        init_var=first.var[0])
    cont = train_templates(X, [4], again, progress=False, dtype=F64,
                           init=(first.templates[0], first.color_means[0]))
    torch.testing.assert_close(cont.templates[0], first.templates[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(cont.color_means[0], first.color_means[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(cont.var[0], first.var[0], rtol=1e-9, atol=0)
    x = torch.randn(7, X[0].numel(), dtype=F64)
    torch.testing.assert_close(cont.denoiser(0)(x, 0.3), first.denoiser(0)(x, 0.3))
    with pytest.raises(ValueError, match="init must be"):
        train_templates(X, [4], again, progress=False, dtype=F64,
                        init=(first.templates[0][:3], first.color_means[0]))
    with pytest.raises(ValueError, match="finite"):
        bad = first.color_means[0].clone()
        bad[0, 0] = float("nan")
        train_templates(X, [4], again, progress=False, dtype=F64, init=(first.templates[0], bad))
