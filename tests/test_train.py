import math

import numpy as np
import pytest
import torch

from gmmmem import mixtures, train
from gmmmem.mixtures import posterior_mean
from gmmmem.train import TrainConfig, train_gmm

F64 = torch.float64


def _autograd_loss_and_grad(x0, t, eps, means, log_std, bias, scale):
    means = means.clone().requires_grad_(True)
    log_std = log_std.clone().requires_grad_(True)
    a, s2 = torch.sqrt(1 - t * t), t * t
    out = posterior_mean(a * x0 + t * eps, a, s2, means, torch.exp(2 * log_std)[:, None, None], bias)
    loss = (((out - x0) ** 2).sum(-1) * (a * a / s2).squeeze(-1)).sum(-1)
    (scale * loss.sum()).backward()
    return loss.detach(), means.grad, log_std.grad


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hand_written_gradient_equals_autograd(seed):
    g = torch.Generator().manual_seed(seed)
    S, M, d, n = 3, 7, 5, 60
    means = torch.randn(S, M, d, generator=g, dtype=F64)
    log_std = torch.tensor([-6.9, -1.0, 0.3], dtype=F64)
    bias = torch.zeros(S, 1, M, dtype=F64)
    bias[0, 0, 4:] = -math.inf
    bias[1, 0, 6:] = -math.inf
    x0 = means[2, torch.randint(M, (n,), generator=g)] + 0.5 * torch.randn(n, d, generator=g, dtype=F64)
    t = torch.rand(n, 1, generator=g, dtype=F64) * 0.998 + 0.001
    eps = torch.randn(n, d, generator=g, dtype=F64)
    got = train._loss_and_grad(x0, t, eps, means, log_std, bias, 0.37)
    want = _autograd_loss_and_grad(x0, t, eps, means, log_std, bias, 0.37)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9 * b.abs().max())
    assert (got[1][0, 4:] == 0).all() and (got[1][1, 6:] == 0).all()  # padding gets no gradient


def _adam_reference(grads, lr, ema, b1=0.9, b2=0.999, eps=1e-8):
    """optax.chain(adam(lr), ema(ema, debias=True)) written out step by step."""
    m = v = u = 0.0
    out = []
    for k, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        step = lr[k - 1] * (m / (1 - b1**k)) / (np.sqrt(v / (1 - b2**k)) + eps)
        if ema:
            u = ema * u + (1 - ema) * step
            step = u / (1 - ema**k)
        out.append(step)
    return np.cumsum(out, axis=0)


@pytest.mark.parametrize("ema", [0.0, 0.99])
def test_adam_with_update_ema_matches_its_definition(ema):
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(40, 3))
    lr = np.linspace(1e-3, 1e-4, 40)
    p = torch.zeros(3, dtype=F64)
    opt = train._Adam([p], ema)
    for g, rate in zip(grads, lr):
        opt.step([torch.as_tensor(g)], rate)
    assert np.allclose(-p.numpy(), _adam_reference(grads, lr, ema)[-1], rtol=1e-10)


def test_plain_adam_matches_torch_optim():
    rng = np.random.default_rng(1)
    grads = rng.normal(size=(25, 4))
    p, q = torch.zeros(4, dtype=F64), torch.zeros(4, dtype=F64, requires_grad=True)
    mine, ref = train._Adam([p], 0.0), torch.optim.Adam([q], lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    for g in grads:
        mine.step([torch.as_tensor(g)], 1e-2)
        q.grad = torch.as_tensor(g)
        ref.step()
    assert torch.allclose(p, q.detach(), rtol=1e-10, atol=1e-14)


def test_learning_rate_schedule():
    cfg = TrainConfig(steps=100, peak_lr=1e-3, final_lr=1e-6, warmup_frac=0.1, num_draws=1)
    lrs = np.array([cfg.lr(k) for k in range(100)])
    assert lrs[9] == pytest.approx(1e-3) and lrs[0] == pytest.approx(1e-4)
    assert np.all(np.diff(lrs[:10]) > 0) and np.all(np.diff(lrs[10:]) < 0)
    assert lrs[-1] == pytest.approx(1e-6)


def _data(d=6, K=3, N=40, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    gmm = mixtures.random_iso_gmm(d, K, generator=g, dtype=dtype)
    return gmm, gmm.sample(N, g)[0]


def test_training_decreases_the_loss():
    _, X = _data()
    cfg = TrainConfig(steps=400, peak_lr=1e-2, final_lr=1e-4, num_draws=8)
    res = train_gmm(X, [5, 20], cfg, device="cpu", progress=False)
    h = res.loss_history
    assert h.shape == (400, 2) and np.isfinite(h).all()
    assert (h[-50:].mean(0) < 0.5 * h[:50].mean(0)).all()
    assert all(v > 1e-6 for v in res.var)  # the variance has grown from its start


def test_a_model_started_at_the_true_mixture_stays_near_it():
    gmm, X = _data(d=10, K=3, N=300, seed=3)
    cfg = TrainConfig(steps=300, peak_lr=1e-3, final_lr=1e-5, num_draws=16, init_var=1.0)
    res = train_gmm(X, [3], cfg, device="cpu", init_means=gmm.means, progress=False)
    moved = (res.means[0] - gmm.means).norm(dim=1)
    assert (moved < 0.3).all()  # cluster means estimated from ~100 points each: error ~ sqrt(d/100)
    assert 0.8 < res.var[0] < 1.25


def test_training_is_reproducible_under_a_seed():
    _, X = _data()
    cfg = TrainConfig(steps=30, peak_lr=1e-2, final_lr=1e-3, num_draws=4, seed=5)
    a, b = (train_gmm(X, [4, 9], cfg, device="cpu", progress=False) for _ in range(2))
    c = train_gmm(X, [4, 9], TrainConfig(**{**cfg.__dict__, "seed": 6}), device="cpu", progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.means, b.means)) and a.var == b.var
    assert not torch.equal(a.means[1], c.means[1])


def test_batched_sizes_train_exactly_as_each_alone():
    _, X = _data(N=30)
    cfg = TrainConfig(steps=60, peak_lr=1e-2, final_lr=1e-3, num_draws=5, update_ema=0.9)
    together = train_gmm(X, [3, 11, 30], cfg, device="cpu", progress=False, dtype=F64)
    for k, M in enumerate([3, 11, 30]):
        alone = train_gmm(X, [M], cfg, device="cpu", progress=False, dtype=F64)
        assert torch.allclose(together.means[k], alone.means[0], rtol=1e-9, atol=1e-9)
        assert together.var[k] == pytest.approx(alone.var[0], rel=1e-9)
        assert np.allclose(together.loss_history[:, k], alone.loss_history[:, 0], rtol=1e-9)


def test_start_is_partially_memorizing_and_nested():
    _, X = _data(N=25)
    cfg = TrainConfig(steps=1, peak_lr=1e-12, final_lr=0.0, num_draws=1, warmup_frac=0.0)
    res = train_gmm(X, [4, 10], cfg, device="cpu", progress=False, dtype=F64)
    order = train.pmem_init_order(25, cfg.seed)
    assert torch.allclose(res.means[1], X[order[:10]], atol=1e-9)
    assert torch.allclose(res.means[0], res.means[1][:4], atol=1e-9)
    assert res.var[0] == pytest.approx(1e-6, rel=1e-6)


def test_presets():
    paper = TrainConfig.preset("paper")
    assert (paper.steps, paper.peak_lr, paper.final_lr, paper.num_draws, paper.update_ema) == (
        50_000, 1e-3, 1e-6, 100, 0.99)
    assert TrainConfig.preset("ci", seed=3).seed == 3


@pytest.mark.parametrize(
    "call,word",
    [
        (lambda X: train_gmm(X, [41], TrainConfig.preset("ci"), progress=False), "model size"),
        (lambda X: train_gmm(X, [0], TrainConfig.preset("ci"), progress=False), "model size"),
        (lambda X: train_gmm(X, [], TrainConfig.preset("ci"), progress=False), "empty"),
        (lambda X: TrainConfig(steps=0, peak_lr=1e-3, final_lr=0.0), "steps"),
        (lambda X: TrainConfig(steps=10, peak_lr=0.0, final_lr=0.0), "peak_lr"),
        (lambda X: TrainConfig(steps=10, peak_lr=1e-3, final_lr=0.0, update_ema=1.0), "update_ema"),
        (lambda X: TrainConfig.preset("huge"), "scale"),
        (lambda X: train_gmm(X, [3], TrainConfig.preset("ci"), init_means=X[:2], progress=False), "init_means"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, word):
    _, X = _data()
    with pytest.raises(ValueError, match=word):
        call(X)


def test_an_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    _, X = _data()
    cfg = TrainConfig(steps=40, peak_lr=1e-2, final_lr=1e-3, num_draws=3, update_ema=0.9)
    kw = dict(device="cpu", progress=False, dtype=F64)
    full = train_gmm(X, [4, 9], cfg, **kw)
    ck = tmp_path / "run.ckpt"
    real_lr = TrainConfig.lr

    def interrupt_at_25(self, step):
        if step == 25:
            raise KeyboardInterrupt
        return real_lr(self, step)

    monkeypatch.setattr(TrainConfig, "lr", interrupt_at_25)
    with pytest.raises(KeyboardInterrupt):
        train_gmm(X, [4, 9], cfg, checkpoint=ck, checkpoint_every=10, **kw)
    monkeypatch.setattr(TrainConfig, "lr", real_lr)
    assert torch.load(ck, weights_only=False)["step"] == 20  # the last periodic save
    resumed = train_gmm(X, [4, 9], cfg, checkpoint=ck, checkpoint_every=10, **kw)
    assert all(torch.equal(a, b) for a, b in zip(full.means, resumed.means))
    assert full.var == resumed.var and np.array_equal(full.loss_history, resumed.loss_history)
    assert np.array_equal(full.var_history, resumed.var_history)
    with pytest.raises(ValueError, match="other data, model sizes or settings"):
        train_gmm(X, [4, 10], cfg, checkpoint=ck, **kw)


def test_adam_second_moment_decay_matches_torch_optim():
    rng = np.random.default_rng(2)
    grads = rng.normal(size=(25, 4)) * np.logspace(3, -2, 25)[:, None]  # shrinking gradients
    p, q = torch.zeros(4, dtype=F64), torch.zeros(4, dtype=F64, requires_grad=True)
    mine, ref = train._Adam([p], 0.0, beta2=0.9), torch.optim.Adam([q], lr=1e-2, betas=(0.9, 0.9), eps=1e-8)
    for g in grads:
        mine.step([torch.as_tensor(g)], 1e-2)
        q.grad = torch.as_tensor(g)
        ref.step()
    assert torch.allclose(p, q.detach(), rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="adam_beta2"):
        TrainConfig(steps=10, peak_lr=1e-3, final_lr=0.0, adam_beta2=1.0)


@pytest.mark.parametrize("overhead", [0.0, 7.0, 40.0, 1e9])
def test_size_groups_is_the_cheapest_split(overhead):
    import itertools

    sizes = [3, 5, 6, 20, 21, 40, 90]

    def cost(groups):
        return sum(len(g) * max(g) + overhead for g in groups)

    best = math.inf
    for cuts in itertools.product([False, True], repeat=len(sizes) - 1):  # every split
        groups, cur = [], [sizes[0]]
        for cut, M in zip(cuts, sizes[1:]):
            if cut:
                groups.append(cur)
                cur = []
            cur.append(M)
        best = min(best, cost(groups + [cur]))
    found = train.size_groups(sizes, overhead)
    assert [M for g in found for M in g] == sizes and cost(found) == pytest.approx(best)
    assert (len(found) == 1) == (overhead == 1e9) and (len(found) == len(sizes)) == (overhead == 0.0)


@pytest.mark.parametrize("overhead", [0, 10**9])  # one size a group, one group
def test_packed_sizes_in_any_order_train_exactly_as_each_alone(monkeypatch, overhead):
    monkeypatch.setitem(train.GROUP_OVERHEAD, "cpu", overhead)
    _, X = _data(N=30)
    cfg = TrainConfig(steps=40, peak_lr=1e-2, final_lr=1e-3, num_draws=3, update_ema=0.9)
    sizes = [11, 3, 30, 7]
    together = train_gmm(X, sizes, cfg, device="cpu", progress=False, dtype=F64)
    assert together.model_sizes == sizes
    assert together.var_history.shape == (40, 4) and np.allclose(together.var_history[-1], together.var)
    for k, M in enumerate(sizes):
        alone = train_gmm(X, [M], cfg, device="cpu", progress=False, dtype=F64)
        assert together.means[k].shape == (M, X.shape[1])
        assert torch.allclose(together.means[k], alone.means[0], rtol=1e-9, atol=1e-9)
        assert together.var[k] == pytest.approx(alone.var[0], rel=1e-9)
        assert np.allclose(together.loss_history[:, k], alone.loss_history[:, 0], rtol=1e-9)
