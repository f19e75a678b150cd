import json
import os

import numpy as np
import pytest
import torch

from gmmmem.__main__ import main
from gmmmem import metrics, results
from gmmmem.experiments import EvalConfig, PhaseTransitionResult, make_data, midpoint, phase_transition, transition
from gmmmem.train import TrainConfig


def test_transition_and_midpoint():
    sizes = [10, 20, 30, 40]
    assert transition(sizes, [0.0, 0.1, 0.5, 0.95]) == (20, 40)
    assert transition(sizes, [0.0, 0.05, 0.3, 0.6]) == (30, None)
    assert midpoint(sizes, [0.0, 0.2, 0.6, 1.0]) == pytest.approx(27.5)
    assert midpoint(sizes, [0.0, 0.1, 0.2, 0.3]) is None


TINY = dict(config=TrainConfig(steps=30, peak_lr=1e-2, final_lr=1e-3, num_draws=2),
            eval_config=EvalConfig(num_samples=20, loss_draws=3), device="cpu", progress=False)


def test_phase_transition_result_is_complete_and_round_trips(tmp_path):
    r = phase_transition(4, 2, 12, [3, 6, 12], seed=1, **TINY)
    S, T = 3, 26
    assert r.train_loss.shape == r.test_loss.shape == (S, T) and r.times.shape == (T,)
    assert r.reference.pmem_train.shape == (S, T) and r.reference.true_test.shape == (T,)
    assert r.memorization_ratio.shape == r.learned_var.shape == (S,)
    assert np.all((0 <= r.memorization_ratio) & (r.memorization_ratio <= 1))
    assert [st.M for st in r.means_stats] == [3, 6, 12]
    assert all(isinstance(st, metrics.MeansStatistics) for st in r.means_stats)
    assert r.X.shape == (12, 4) and r.true_means.shape == (2, 4)
    assert [m.shape for m in r.learned_means] == [(3, 4), (6, 4), (12, 4)]
    assert r.loss_history.loss.shape == (len(r.loss_history.steps), S) and r.loss_history.steps[-1] == 29
    assert r.loss_history.var.shape == r.loss_history.loss.shape and r.loss_history.snapshots is None
    np.testing.assert_array_equal(r.fractions, [0.25, 0.5, 1.0])
    # The partially memorizing reference with M = N is the memorizing denoiser.
    assert np.allclose(r.reference.pmem_train[-1], r.reference.mem_train)
    assert r.train_config == TINY["config"] and r.eval_config == TINY["eval_config"]
    assert r.steps == 30 and r.seed == 1 and r.scale == "default"
    assert r.device_name == r.provenance["device_name"] and r.wall_seconds >= r.train_seconds > 0
    assert {"git_commit", "torch_version", "device", "date", "wall_seconds"} <= r.provenance.keys()
    back = PhaseTransitionResult.load(r.save(tmp_path / "r.json"))
    assert results.to_json(back) == results.to_json(r)  # every number, exactly
    assert back.transition == r.transition and back.midpoint_over_N == r.midpoint_over_N
    assert [m.dtype for m in (back.X, back.times, back.memorization_ratio)] == [np.float64] * 3


def test_phase_transition_is_reproducible_under_a_seed():
    a = phase_transition(4, 2, 12, [3, 12], seed=2, **TINY)
    b = phase_transition(4, 2, 12, [3, 12], seed=2, **TINY)
    assert np.array_equal(a.memorization_ratio, b.memorization_ratio)
    assert np.array_equal(a.train_loss, b.train_loss)


def test_loading_a_foreign_file_is_an_error(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"d": 3}))
    with pytest.raises(ValueError, match="not a phase-transition result"):
        PhaseTransitionResult.load(tmp_path / "x.json")


@pytest.mark.parametrize(
    "kw,word",
    [(dict(model_sizes=[13]), "model size"), (dict(model_sizes=[6, 3]), "increasing"),
     (dict(scale="huge"), "scale"), (dict(N=1), "N")],
)
def test_bad_arguments(kw, word):
    args = dict(d=4, K=2, N=12, **TINY) | kw
    with pytest.raises(ValueError, match=word):
        phase_transition(**args)


def test_command_line(tmp_path, capsys):
    out = tmp_path / "run.json"
    main(["phase-transition", "--d", "3", "--K", "2", "--N", "8", "--sizes", "2", "8", "--scale", "ci",
          "--steps", "20", "--draws", "1", "--device", "cpu", "--no-progress", "--out", str(out)])
    r = PhaseTransitionResult.load(out)
    assert r.model_sizes == [2, 8] and r.train_config.steps == 20 and r.train_config.num_draws == 1
    assert r.provenance["command"] == (
        "python -m gmmmem phase-transition --d 3 --K 2 --N 8 --sizes 2 8 --scale ci --steps 20 "
        f"--draws 1 --device cpu --no-progress --out {out}")
    assert "GMMMEM_COMMAND" not in os.environ  # restored: results made from Python record None
    assert "transition start" in capsys.readouterr().out
    assert not (tmp_path / "run.json.checkpoint").exists()  # removed once the result is written
    with pytest.raises(SystemExit):
        main(["phase-transition", "--d", "3", "--K", "2", "--N", "8", "--sizes", "9", "--out", str(out)])
    assert "model size" in capsys.readouterr().err


def test_midpoint_interval_matches_a_bootstrap_over_the_samples():
    # brute force: resample each size's 0/1 memorization flags with replacement
    from gmmmem.experiments import midpoint, midpoint_interval

    rng = np.random.default_rng(3)
    sizes = np.arange(10, 101, 10)
    counts = [0, 0, 0, 1, 4, 20, 60, 130, 180, 200]
    flags = [np.r_[np.ones(c), np.zeros(200 - c)] for c in counts]
    mids = []
    for _ in range(1500):
        m = midpoint(sizes, [rng.choice(f, 200).mean() for f in flags])
        mids.append(np.inf if m is None else m)
    lo_ref, hi_ref = np.quantile(mids, [0.025, 0.975])
    lo, hi = midpoint_interval(sizes, np.array(counts) / 200, 200)
    assert abs(lo - lo_ref) < 0.3 and abs(hi - hi_ref) < 0.3
    assert lo < midpoint(sizes, np.array(counts) / 200) < hi


def test_midpoint_interval_covers_the_true_midpoint_95_percent_of_the_time():
    from gmmmem.experiments import midpoint, midpoint_interval

    sizes = np.arange(10, 101, 10)
    p = 1 / (1 + np.exp(-(sizes - 75) / 6))
    true = midpoint(sizes, p)
    rng = np.random.default_rng(0)
    covered = [lo <= true <= hi for lo, hi in
               (midpoint_interval(sizes, rng.binomial(200, p) / 200, 200, seed=i) for i in range(300))]
    # 300 independent intervals: a 95% interval covers 285 on average, sd 3.8
    assert 0.91 <= np.mean(covered) <= 0.99


def test_midpoint_interval_open_ends():
    from gmmmem.experiments import midpoint_interval

    sizes = [10, 20, 30]
    assert midpoint_interval(sizes, [0.0, 0.0, 0.0], 200) == (None, None)
    lo, hi = midpoint_interval(sizes, [0.5, 0.9, 1.0], 200)  # half the replicates reach 0.5 at 10
    assert lo is None and hi is not None and hi <= 20
    lo, hi = midpoint_interval(sizes, [0.0, 0.1, 0.5], 200)  # half never reach 0.5
    assert lo is not None and 20 < lo and hi is None
    with pytest.raises(ValueError, match="equally long"):
        midpoint_interval(sizes, [0.1, 0.2], 200)


def test_random_start_is_not_on_training_points_and_is_recorded():
    from gmmmem.train import random_start

    _, X, _ = make_data(6, 2, 30, 0, torch.device("cpu"))
    start = random_start(X, 30, seed=0)
    assert start.shape == (30, 6) and torch.equal(start, random_start(X, 30, seed=0))
    assert torch.cdist(start, X).min() > 1e-3  # no mean sits on a training point
    # the data's scale: per-coordinate means and spreads within sampling noise of the data's
    big = random_start(X, 20_000, seed=1)
    assert torch.allclose(big.mean(0), X.mean(0), atol=5 * float(X.std(0).max()) / 20_000 ** 0.5)
    assert torch.allclose(big.std(0), X.std(0), rtol=0.05)
    r = phase_transition(6, 2, 30, [6, 30], scale="ci", device="cpu", progress=False,
                         start="random", config=TrainConfig(steps=30, peak_lr=1e-2, final_lr=1e-4, num_draws=1))
    assert r.provenance["settings"]["start"] == "random"
    with pytest.raises(ValueError, match="start"):
        phase_transition(6, 2, 30, [6], scale="ci", device="cpu", start="zeros")


def test_result_crossover_is_the_crossing_of_its_monte_carlo_losses():
    r = phase_transition(6, 2, 20, [4, 8, 12, 16, 20], scale="ci", device="cpu", progress=False,
                         config=TrainConfig(steps=30, peak_lr=1e-2, final_lr=1e-4, num_draws=1))
    gap = r.reference.true_train.mean() - r.reference.pmem_train.mean(1)
    frac = np.asarray(r.model_sizes) / r.N
    k = int(np.flatnonzero(gap >= 0)[0])  # brute force: the first size where the gap is >= 0
    want = frac[k - 1] + (frac[k] - frac[k - 1]) * (0 - gap[k - 1]) / (gap[k] - gap[k - 1])
    assert r.crossover() == pytest.approx(want, rel=1e-12)
