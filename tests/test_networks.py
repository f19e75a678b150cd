import dataclasses
import math

import numpy as np
import pytest
import torch

from gmmmem import networks, results
from gmmmem.diffusion import time_grid
from gmmmem.experiments import EvalConfig, make_data
from gmmmem.networks import (
    MLPDenoisers,
    init_params,
    mlp_denoise,
    num_params,
    predict_noise,
    time_embedding,
    train_mlp,
)
from gmmmem.train import TrainConfig
from gmmmem.width_sweep import WidthSweepResult, _sample_ratios, width_config, width_sweep

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small networks: one thread is fastest, and on a busy machine several threads that wait
    for each other make a step many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _params(d=5, width=7, depth=2, emb_dim=6, seed=0, dtype=F64):
    return init_params(d, width, depth, emb_dim, generator=torch.Generator().manual_seed(seed),
                       dtype=dtype)


def _reference_net(params, depth):
    """The same network written with torch.nn layers, for an independent forward pass."""
    layers = []
    for k in range(depth + 1):
        W, b = params[2 * k], params[2 * k + 1]
        lin = torch.nn.Linear(W.shape[1], W.shape[0], dtype=W.dtype)
        with torch.no_grad():
            lin.weight.copy_(W)
            lin.bias.copy_(b)
        layers += [lin, torch.nn.SiLU()]
    return torch.nn.Sequential(*layers[:-1])


@pytest.mark.parametrize("d,width,depth,emb_dim", [(5, 7, 1, 2), (5, 7, 2, 6), (30, 64, 3, 32)])
def test_parameter_count_and_shapes(d, width, depth, emb_dim):
    params = _params(d, width, depth, emb_dim)
    assert sum(p.numel() for p in params) == num_params(d, width, depth, emb_dim)
    assert len(params) == 2 * (depth + 1)
    for shape in [(11, d), (3, 4, d)]:
        x = torch.randn(*shape, dtype=F64)
        assert predict_noise(params, x, 0.3).shape == shape
        assert mlp_denoise(params, x, 0.3).shape == shape
    # init: uniform on +-1/sqrt(fan_in)
    assert params[0].abs().max() <= 1 / math.sqrt(d + emb_dim)
    assert params[-2].abs().max() <= 1 / math.sqrt(width)


def test_forward_equals_torch_nn_layers():
    d, depth, emb_dim = 5, 2, 6
    params = _params(d, 9, depth, emb_dim)
    x = torch.randn(13, d, dtype=F64)
    t = torch.rand(13, 1, dtype=F64) * 0.9 + 0.05
    net = _reference_net(params, depth)
    want = net(torch.cat([x, time_embedding(t, emb_dim)], -1))
    assert torch.allclose(predict_noise(params, x, t), want, atol=1e-12)
    # one time for all rows: a float and a tensor of that time agree
    assert torch.allclose(predict_noise(params, x, 0.4),
                          predict_noise(params, x, torch.full((13,), 0.4, dtype=F64)))


def test_loss_is_the_weighted_clean_point_loss():
    """||eps_hat - eps||^2 equals psi_t ||x0_hat - x0||^2, x0_hat from the denoiser."""
    g = torch.Generator().manual_seed(1)
    d, n = 4, 50
    model = MLPDenoisers(d, [6, 10], 2, 8, seed=3, dtype=F64, device=torch.device("cpu"))
    x0 = torch.randn(n, d, generator=g, dtype=F64) * 2
    t = torch.rand(n, 1, generator=g, dtype=F64) * 0.998 + 0.001
    eps = torch.randn(n, d, generator=g, dtype=F64)
    loss, grads = model.loss_and_grad(x0, t, eps)
    a, s = torch.sqrt(1 - t * t), t
    x_t = a * x0 + s * eps
    psi = (a * a / (s * s))[:, 0]
    for k, net in enumerate(model.nets):
        x0_hat = mlp_denoise(net, x_t, t)
        want = (psi * ((x0_hat - x0) ** 2).sum(-1)).mean()
        assert torch.allclose(loss[k], want, rtol=1e-9)
    assert [g.shape for g in grads] == [p.shape for p in model.params]


def test_gradient_equals_finite_differences():
    g = torch.Generator().manual_seed(2)
    d, n = 3, 20
    model = MLPDenoisers(d, [5], 1, 4, seed=0, dtype=F64, device=torch.device("cpu"))
    x0 = torch.randn(n, d, generator=g, dtype=F64)
    t = torch.rand(n, 1, generator=g, dtype=F64) * 0.9 + 0.05
    eps = torch.randn(n, d, generator=g, dtype=F64)
    _, grads = model.loss_and_grad(x0, t, eps)
    h = 1e-6
    for p, gp in zip(model.params, grads):
        idx = (0,) * p.ndim
        p[idx] += h
        up = model.loss_and_grad(x0, t, eps)[0][0]
        p[idx] -= 2 * h
        down = model.loss_and_grad(x0, t, eps)[0][0]
        p[idx] += h
        assert abs((up - down) / (2 * h) - gp[idx]) < 1e-6 * max(1.0, abs(float(gp[idx])))


def test_time_embedding_properties():
    t = torch.linspace(0.001, 0.999, 26, dtype=F64)
    e = time_embedding(t, 16)
    assert e.shape == (26, 16)
    assert e.abs().max() <= 1
    assert torch.allclose(e[:, :8] ** 2 + e[:, 8:] ** 2, torch.ones(26, 8, dtype=F64))
    # the lowest frequency is 1: the first (sin, cos) pair is the angle t, so t is recovered
    assert torch.allclose(torch.atan2(e[:, 0], e[:, 8]), t, atol=1e-12)
    assert torch.cdist(e, e).add(torch.eye(26, dtype=F64)).min() > 0.1  # distinct times differ
    assert torch.equal(time_embedding(0.3, 16, n=4, dtype=F64),
                       time_embedding(torch.full((4,), 0.3, dtype=F64), 16))
    assert torch.equal(time_embedding(t[:, None], 16), e)


@pytest.mark.parametrize("call", [
    lambda: time_embedding(0.5, 7),
    lambda: time_embedding(0.5, 0),
    lambda: time_embedding(1.0, 8),
    lambda: time_embedding(torch.tensor([0.2, 0.0]), 8),
    lambda: time_embedding(torch.zeros(2, 2) + 0.5, 8),
    lambda: num_params(30, 0),
    lambda: num_params(30, 8, depth=0),
    lambda: predict_noise(_params(), torch.randn(4, 5, dtype=F64), torch.full((3,), 0.5)),
])
def test_bad_inputs_raise(call):
    with pytest.raises(ValueError):
        call()


def _tiny_data(N=12, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[2.0, 0, 0], [-2.0, 0, 0]])
    return centers[torch.arange(N) % 2] + 0.3 * torch.randn(N, d, generator=g)


def test_train_mlp_bad_inputs():
    X, c = _tiny_data(), TrainConfig(steps=5, peak_lr=1e-3, final_lr=1e-6)
    for widths in ([], [8, 8], [16, 8], [0]):
        with pytest.raises(ValueError):
            train_mlp(X, widths, c, "cpu", progress=False)
    with pytest.raises(ValueError):
        train_mlp(X, [4], c, "cpu", depth=0, progress=False)
    with pytest.raises(ValueError):
        train_mlp(X.clone().fill_(float("nan")), [4], c, "cpu", progress=False)


def test_training_decreases_the_loss():
    X = _tiny_data()
    c = TrainConfig(steps=200, peak_lr=3e-3, final_lr=3e-6, num_draws=2, update_ema=0.99, seed=4)
    trained = train_mlp(X, [8, 32], c, "cpu", emb_dim=8, progress=False)
    assert trained.loss_history.shape == (200, 2)
    # the loss of the initial and of the trained networks on the same 1,200 noisy points
    g = torch.Generator().manual_seed(9)
    x0 = X.repeat(100, 1)
    t = time_grid()[torch.randint(26, (len(x0),), generator=g)][:, None]
    eps = torch.randn(x0.shape, generator=g)
    model = MLPDenoisers(3, [8, 32], 2, 8, seed=4, dtype=torch.float32, device=torch.device("cpu"))
    before = model.loss_and_grad(x0, t, eps)[0]
    model.nets = trained.params
    after = model.loss_and_grad(x0, t, eps)[0]
    assert torch.all(after < 0.9 * before), (before, after)


def test_training_is_reproducible_and_widths_independent():
    X = _tiny_data()
    c = TrainConfig(steps=20, peak_lr=3e-3, final_lr=3e-6, num_draws=2, update_ema=0.99, seed=4)
    a = train_mlp(X, [8, 32], c, "cpu", emb_dim=8, progress=False)
    b = train_mlp(X, [8, 32], c, "cpu", emb_dim=8, progress=False)
    alone = train_mlp(X, [32], c, "cpu", emb_dim=8, progress=False)
    for p, q, r in zip(a.params[1], b.params[1], alone.params[0]):
        assert torch.equal(p, q)  # same seed, same result
        assert torch.allclose(p, r, atol=1e-6)  # a width trained alone follows the same path
    assert not torch.allclose(a.params[1][0], init_params(3, 32, 2, 8, generator=torch.Generator(
        ).manual_seed(networks._init_seed(4, 32, 2, 8)))[0])  # it moved
    other = train_mlp(X, [8], dataclasses.replace(c, seed=5), "cpu", emb_dim=8, progress=False)
    assert not torch.equal(other.params[0][0], a.params[0][0])
    assert a.num_params == [num_params(3, 8, 2, 8), num_params(3, 32, 2, 8)]
    den = a.denoiser(1)(X.double(), 0.2)
    assert den.dtype == F64 and torch.allclose(
        den, mlp_denoise([p.double() for p in a.params[1]], X.double(), 0.2))


def test_checkpoint_resume_restores_the_networks(tmp_path):
    X = _tiny_data()
    c = TrainConfig(steps=40, peak_lr=1e-3, final_lr=1e-6, num_draws=1, seed=0)
    path = tmp_path / "mlp.checkpoint"
    first = train_mlp(X, [4, 6], c, "cpu", emb_dim=4, progress=False, checkpoint=path,
                      checkpoint_every=10)
    again = train_mlp(X, [4, 6], c, "cpu", emb_dim=4, progress=False, checkpoint=path)
    for p, q in zip(sum(first.params, []), sum(again.params, [])):
        assert torch.equal(p, q)
    assert np.array_equal(first.loss_history, again.loss_history)
    with pytest.raises(ValueError, match="checkpoint"):
        train_mlp(X, [4, 8], c, "cpu", emb_dim=4, progress=False, checkpoint=path)


def test_width_sweep_runs_and_round_trips(tmp_path):
    c = TrainConfig(steps=60, peak_lr=1e-3, final_lr=1e-6, num_draws=1, update_ema=0.99, seed=0)
    r = width_sweep(4, 2, 10, [4, 8], scale="ci", device="cpu", emb_dim=4, config=c,
                    eval_config=EvalConfig(num_samples=20, loss_draws=2), progress=False)
    assert r.num_params == [num_params(4, 4, 2, 4), num_params(4, 8, 2, 4)]
    assert np.all((0 <= r.memorization_ratio) & (r.memorization_ratio <= 1))
    assert np.all((0 <= r.nearest_ratio_median) & (r.nearest_ratio_median <= 1))
    assert r.train_loss.shape == (2, 26) == r.test_loss.shape
    assert r.reference.pmem_train is None and r.reference.pmem_test is None  # no such start
    # the memorizing denoiser returns a training point at the smallest time
    assert r.reference.mem_train[0] < 1e-6 < r.reference.true_train[0]
    assert r.provenance["settings"]["widths"] == [4, 8]
    assert r.train_config == c and r.steps == 60 and r.eval_config.num_samples == 20
    assert r.loss_history.loss.shape == (60, 2) and r.loss_history.var is None
    loaded = WidthSweepResult.load(r.save(tmp_path / "sweep.json"))
    assert results.to_json(loaded) == results.to_json(r) and loaded.transition == r.transition
    assert "pmem_train" not in (tmp_path / "sweep.json").read_text()
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="width-sweep"):
        WidthSweepResult.load(tmp_path / "bad.json")
    with pytest.raises(ValueError):
        width_sweep(4, 2, 1, [4], config=c, device="cpu")
    with pytest.raises(ValueError):
        width_sweep(4, 2, 10, [4], scale="huge", config=c, device="cpu")


def test_init_seed_depends_on_shape_not_on_company():
    assert networks._init_seed(0, 8, 2, 32) == networks._init_seed(0, 8, 2, 32)
    assert networks._init_seed(0, 8, 2, 32) != networks._init_seed(0, 16, 2, 32)
    assert networks._init_seed(0, 8, 2, 32) != networks._init_seed(1, 8, 2, 32)


def test_width_sweep_snapshots_measure_the_networks_of_those_steps(tmp_path):
    """A snapshot at the last step is the final network (same ratios on the same sampler
    noise); one earlier is measured on the networks of that step."""
    c = TrainConfig(steps=40, peak_lr=1e-3, final_lr=1e-6, num_draws=1, update_ema=0.99, seed=0)
    ev = EvalConfig(num_samples=20, loss_draws=2)
    r = width_sweep(4, 2, 10, [4, 8], scale="ci", device="cpu", emb_dim=4, config=c,
                    eval_config=ev, progress=False, snapshots=[10, 40])
    snap = r.loss_history.snapshots
    assert snap.steps.tolist() == [10, 40] and snap.var is None
    assert np.array_equal(snap.memorization_ratio[1], r.memorization_ratio)
    assert np.array_equal(snap.nearest_ratio_median[1], r.nearest_ratio_median)
    early = networks.train_mlp(make_data(4, 2, 10, 0, torch.device("cpu"))[1], [4, 8],
                               dataclasses.replace(c), "cpu", emb_dim=4, progress=False, snapshots=[10])
    ten = early.snapshots[10]
    assert ten.loss_history.shape == (10, 2)
    assert not torch.equal(ten.params[1][0], early.params[1][0])  # the step-10 networks differ
    ratio, median = _sample_ratios(ten, make_data(4, 2, 10, 0, torch.device("cpu"))[1], ev, 0)
    assert snap.memorization_ratio[0].tolist() == ratio and snap.nearest_ratio_median[0].tolist() == median


def test_width_config_is_the_committed_recipe():
    c = width_config("default", seed=3)
    assert (c.peak_lr, c.final_lr, c.num_draws, c.steps, c.seed) == (3e-4, 3e-7, 2, 30_000, 3)
    assert width_config("paper") == TrainConfig.preset("paper")


def test_width_sweep_command_line(tmp_path, capsys):
    from gmmmem.__main__ import main

    out = tmp_path / "w.json"
    main(["width-sweep", "--d", "3", "--K", "2", "--N", "8", "--widths", "4", "8", "--scale", "ci",
          "--steps", "20", "--snapshots", "10", "20", "--device", "cpu", "--out", str(out),
          "--no-progress"])
    r = WidthSweepResult.load(out)
    assert r.widths == [4, 8] and r.loss_history.snapshots.steps.tolist() == [10, 20]
    assert r.provenance["command"].startswith("python -m gmmmem width-sweep --d 3")
    assert "memorization ratio by width" in capsys.readouterr().out
    assert not (tmp_path / "w.json.checkpoint").exists()
