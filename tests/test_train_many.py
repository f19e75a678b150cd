import numpy as np
import pytest
import torch

from gmmmem import train, train_many
from gmmmem.experiments import make_data
from gmmmem.train import RowDraws, TrainConfig, train_gmm
from gmmmem.train_many import Item, ManyDraws, _ManyMixtures

F64 = torch.float64
CPU = torch.device("cpu")
# (d, K, N, seed): three configurations of different dimension, components and size
CONFIGS = [(5, 2, 12, 0), (8, 3, 20, 1), (3, 4, 9, 2)]
SIZES = [[3, 12, 6], [20, 2], [9]]
RECIPE = TrainConfig(steps=30, peak_lr=1e-2, final_lr=1e-3, num_draws=3, update_ema=0.9)


def _data():
    Xs = [make_data(d, K, N, seed, CPU)[1] for d, K, N, seed in CONFIGS]
    return Xs, [TrainConfig(**{**RECIPE.__dict__, "seed": seed}) for *_, seed in CONFIGS]


def _assert_same_training(many, alone, rtol=1e-10):
    assert many.model_sizes == alone.model_sizes and many.config == alone.config
    for a, b in zip(many.means, alone.means):
        assert a.shape == b.shape
        assert torch.allclose(a, b, rtol=rtol, atol=rtol)
    assert np.allclose(many.var, alone.var, rtol=rtol, atol=0)
    assert np.allclose(many.loss_history, alone.loss_history, rtol=rtol, atol=0)
    assert np.allclose(many.var_history, alone.var_history, rtol=rtol, atol=0)


@pytest.mark.parametrize("overhead", [0, 20_000, 10**12])  # no padding, the CPU's, one group
def test_each_configuration_trains_as_it_does_alone(monkeypatch, overhead):
    monkeypatch.setitem(train.GROUP_OVERHEAD, "cpu", overhead)
    Xs, configs = _data()
    many = train_many.train_many(Xs, SIZES, configs, "cpu", progress=False, dtype=F64)
    for X, sizes, cfg, got in zip(Xs, SIZES, configs, many):
        _assert_same_training(got, train_gmm(X, sizes, cfg, "cpu", progress=False, dtype=F64))


def test_rows_in_chunks_train_as_all_at_once(monkeypatch):
    Xs, configs = _data()
    whole = train_many.train_many(Xs, SIZES, configs, "cpu", progress=False, dtype=F64)
    monkeypatch.setattr(train_many, "CHUNK_FLOATS", 300)  # 300 // (6 x 20) = 2 rows a chunk
    chunked = train_many.train_many(Xs, SIZES, configs, "cpu", progress=False, dtype=F64)
    for a, b in zip(whole, chunked):
        _assert_same_training(a, b, rtol=1e-8)  # sums in another order, amplified by training


def test_one_group_pads_dimension_rows_and_components():
    Xs, configs = _data()
    items = [Item(X.shape[1], X.shape[0] * 3, M, c) for c, (X, s) in enumerate(zip(Xs, SIZES))
             for M in s]
    model = _ManyMixtures(items, [X.to(F64) for X in Xs], 1e-6)
    assert len(model.groups) == 1  # the CPU's overhead: these tiny models in one padded group
    g = model.groups[0]
    assert g.means.shape == (6, 20, 8) and (g.d, g.rows) == (8, 60)


def test_draws_are_those_of_each_configuration_alone():
    Xs, configs = _data()
    many = ManyDraws([X.to(F64) for X in Xs], 3, [c.seed for c in configs])
    alone = [RowDraws(X.to(F64), 3, c.seed) for X, c in zip(Xs, configs)]
    for _ in range(3):
        x0, t, eps = many()
        assert x0.shape == (3, 60, 8) and t.shape == (3, 60, 1)
        for c, draw in enumerate(alone):
            x0_c, t_c, eps_c = draw()
            n, d = x0_c.shape
            assert torch.equal(x0[c, :n, :d], x0_c) and torch.equal(t[c, :n], t_c)
            assert torch.equal(eps[c, :n, :d], eps_c)  # bitwise: the same generator calls
            assert (x0[c, n:] == 0).all() and (eps[c, n:] == 0).all() and (t[c, n:] == 1).all()
            assert (x0[c, :, d:] == 0).all() and (eps[c, :, d:] == 0).all()


def test_padding_adds_nothing_to_loss_or_gradient():
    """Rows at t = 1 with clean point and noise 0, and coordinates 0 in points, noise and means:
    the loss and the real coordinates' gradients are those without them; the padded
    coordinates' gradients are exactly 0, so Adam never moves them."""
    g = torch.Generator().manual_seed(3)
    S, M, d, n, pad_d, pad_n = 3, 6, 4, 40, 3, 25
    means = torch.randn(S, M, d, generator=g, dtype=F64)
    log_std = torch.tensor([-4.0, -1.0, 0.2], dtype=F64)
    bias = train.padding_bias([2, 6, 4], means)
    x0 = torch.randn(S, n, d, generator=g, dtype=F64)
    t = torch.rand(S, n, 1, generator=g, dtype=F64) * 0.99 + 0.005
    eps = torch.randn(S, n, d, generator=g, dtype=F64)
    scale = torch.tensor([0.5, 0.25, 0.1], dtype=F64).view(-1, 1, 1)
    plain = train._loss_and_grad(x0, t, eps, means, log_std, bias, scale)

    def pad(v, rows_value=0.0, coords=True):
        width = v.shape[-1] + (pad_d if coords else 0)
        out = torch.full((S, n + pad_n, width), rows_value, dtype=F64)
        out[:, n:] = rows_value
        out[:, :n, : v.shape[-1]] = v
        if coords:
            out[:, :n, v.shape[-1]:] = 0.0
        return out

    padded_means = torch.cat([means, torch.zeros(S, M, pad_d, dtype=F64)], -1)
    padded = train._loss_and_grad(pad(x0), pad(t, 1.0, coords=False), pad(eps), padded_means,
                                  log_std, bias, scale)
    assert torch.allclose(padded[0], plain[0], rtol=1e-13, atol=0)
    assert torch.allclose(padded[1][..., :d], plain[1], rtol=1e-12, atol=1e-12 * plain[1].abs().max())
    assert torch.equal(padded[1][..., d:], torch.zeros(S, M, pad_d, dtype=F64))
    assert torch.allclose(padded[2], plain[2], rtol=1e-12, atol=0)
    # each size alone, with its own scale, matches its row of the batch
    for k in range(S):
        alone = train._loss_and_grad(x0[k], t[k], eps[k], means[k : k + 1], log_std[k : k + 1],
                                     bias[k : k + 1], float(scale[k]))
        assert torch.allclose(alone[0], plain[0][k : k + 1], rtol=1e-13, atol=0)
        assert torch.allclose(alone[1], plain[1][k : k + 1], rtol=1e-12, atol=1e-14)


def test_padded_coordinates_of_the_means_stay_zero():
    Xs, configs = _data()
    items = [Item(X.shape[1], X.shape[0] * 3, M, c) for c, (X, s) in enumerate(zip(Xs, SIZES))
             for M in s]
    model = _ManyMixtures(items, [X.to(F64)[train.pmem_init_order(X.shape[0], c.seed)]
                                  for X, c in zip(Xs, configs)], 1e-6)
    draws = ManyDraws([X.to(F64) for X in Xs], 3, [c.seed for c in configs])
    train.fit_draws(model, draws, configs[0], key={}, desc="", progress=False)
    g = model.groups[0]
    for k, it in enumerate(g.items):
        assert (g.means[k, :, it.d:] == 0).all() and (g.means[k, it.M:] == 0).all()
        assert (g.means[k, : it.M, : it.d] != 0).any()


def test_an_interrupted_batch_resumes_exactly(tmp_path, monkeypatch):
    Xs, configs = _data()
    kw = dict(device="cpu", progress=False, dtype=F64)
    full = train_many.train_many(Xs, SIZES, configs, **kw)
    ck = tmp_path / "batch.pt"
    real_lr = TrainConfig.lr

    def interrupt_at_25(self, step):
        if step == 25:
            raise KeyboardInterrupt
        return real_lr(self, step)

    monkeypatch.setattr(TrainConfig, "lr", interrupt_at_25)
    with pytest.raises(KeyboardInterrupt):
        train_many.train_many(Xs, SIZES, configs, checkpoint=ck, checkpoint_every=10, **kw)
    monkeypatch.setattr(TrainConfig, "lr", real_lr)
    assert torch.load(ck, weights_only=False)["step"] == 20
    resumed = train_many.train_many(Xs, SIZES, configs, checkpoint=ck, checkpoint_every=10, **kw)
    for a, b in zip(full, resumed):
        assert all(torch.equal(x, y) for x, y in zip(a.means, b.means)) and a.var == b.var
        assert np.array_equal(a.loss_history, b.loss_history)
    with pytest.raises(ValueError, match="other data, model sizes or settings"):
        train_many.train_many(Xs, [SIZES[0], SIZES[1], [8]], configs, checkpoint=ck, **kw)


@pytest.mark.parametrize("change,word", [
    (lambda Xs, S, C: (Xs, S, C[:2]), "one sizes list and one TrainConfig"),
    (lambda Xs, S, C: ([], [], []), "empty"),
    (lambda Xs, S, C: (Xs, [S[0], [], S[2]], C), r"model_sizes\[1\] is empty"),
    (lambda Xs, S, C: (Xs, [S[0], [21], S[2]], C), r"model size in model_sizes\[1\]"),
    (lambda Xs, S, C: (Xs, S, [C[0], TrainConfig(**{**C[1].__dict__, "steps": 31}), C[2]]),
     "more than the seed"),
])
def test_bad_arguments_raise_clear_errors(change, word):
    Xs, configs = _data()
    with pytest.raises(ValueError, match=word):
        train_many.train_many(*change(Xs, SIZES, configs), "cpu", progress=False)


def test_size_groups_pads_each_extent_to_its_largest():
    items = [(1, 5), (1, 9), (2, 3), (4, 4)]
    found = train.size_groups(items, 0.0, shape=lambda it: it)
    assert found == [[(1, 5)], [(1, 9)], [(2, 3)], [(4, 4)]]
    assert train.size_groups(items, 1e12, shape=lambda it: it) == [items]
    # a run of (1, 5) and (1, 9) costs 2 x 9 = 18 < 5 + 9 + overhead 5
    assert train.size_groups(items, 5.0, shape=lambda it: it)[0] == [(1, 5), (1, 9)]


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_on_cuda_each_configuration_trains_as_it_does_alone():
    Xs, configs = _data()
    many = train_many.train_many(Xs, SIZES, configs, "cuda", progress=False, dtype=F64)
    for X, sizes, cfg, got in zip(Xs, SIZES, configs, many):
        _assert_same_training(got, train_gmm(X, sizes, cfg, "cuda", progress=False, dtype=F64),
                              rtol=1e-8)


@cuda
def test_on_cuda_a_batched_sweep_stage_runs():
    from gmmmem.experiments import EvalConfig
    from gmmmem.sweep import Dataset, run_configs

    recs = run_configs([Dataset(5, 2, 20), Dataset(8, 3, 30, seed=1)], "ci",
                       TrainConfig.preset("ci", steps=50), EvalConfig(20, 2), "cuda")
    assert [r["config"]["N"] for r in recs] == [20, 30]
    assert all(r["provenance"]["device"].startswith("cuda") for r in recs)
    assert all(len(r["memorization_ratio"]) == len(r["model_sizes"]) >= 10 for r in recs)
