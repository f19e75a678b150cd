import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gmmmem import results
from gmmmem.__main__ import main
from gmmmem.data_size import DataSizeResult, data_size, stop_memorizing, transition_in_n
from gmmmem.diffusion import time_grid
from gmmmem.experiments import EvalConfig, make_data, midpoint, transition
from gmmmem.metrics import memorization_ratio
from gmmmem.sampling import ddim_sample
from gmmmem.train import TrainConfig, train_gmm

ROOT = Path(__file__).resolve().parent.parent
SHORT = TrainConfig(steps=300, peak_lr=3e-2, final_lr=3e-5, num_draws=2)
TINY = dict(config=SHORT, eval_config=EvalConfig(num_samples=100, loss_draws=2), device="cpu",
            progress=False)


def _brute(Ns, ratio):
    """The N-axis transition by direct scans (largest N at each level; 0.5 crossing from above,
    None when the largest N still reaches 0.5: the crossing lies beyond the measured sizes)."""
    largest = [max((n for n, r in zip(Ns, ratio) if r >= lv), default=None) for lv in (0.9, 0.1)]
    stop = None
    for k in range(len(Ns) - 1, -1, -1):
        if ratio[k] >= 0.5:
            if k == len(Ns) - 1:
                stop = None
            else:
                r0, r1 = ratio[k], ratio[k + 1]
                stop = Ns[k] + (r0 - 0.5) / (r0 - r1) * (Ns[k + 1] - Ns[k])
            break
    return tuple(largest), stop


@pytest.mark.parametrize("Ns, ratio", [
    ([40, 45, 50, 55, 60, 70], [1.0, 0.95, 0.6, 0.3, 0.05, 0.0]),
    ([20, 22, 24, 26], [0.92, 0.95, 0.4, 0.12]),  # not monotone; never below 0.1
    ([10, 20, 30], [0.3, 0.2, 0.0]),  # never reaches 0.5 or 0.9
    ([10, 20], [1.0, 0.7]),  # still memorizing at the largest N
])
def test_transition_in_n_against_a_direct_scan(Ns, ratio):
    (high, low), stop = _brute(Ns, ratio)
    assert transition_in_n(Ns, ratio) == (high, low)
    assert stop_memorizing(Ns, ratio) == (None if stop is None else pytest.approx(stop))


def test_the_n_axis_mirrors_the_m_axis():
    """A ratio curve over model sizes m at N0 = 100 points, read at fixed M = 40 over the
    training-set sizes N = M N0 / m with the same M/N: the transition lands at N = M N0 / m."""
    sizes = [10, 20, 40, 50, 80, 100]
    ratio = [0.0, 0.05, 0.3, 0.6, 0.95, 1.0]
    start, end = transition(sizes, ratio)
    M_pt = midpoint(sizes, ratio)
    Ns = [4000 // m for m in sizes[::-1]]  # 40, 50, 80, 100, 200, 400
    assert transition_in_n(Ns, ratio[::-1]) == (4000 // end, 4000 // start) == (50, 100)
    assert 4000 / 50 < stop_memorizing(Ns, ratio[::-1]) < 4000 / 40 and 40 < M_pt < 50


def test_memorizes_at_small_n_generalizes_at_large_n(tmp_path):
    """Four means, two clusters: trained on its own four starting points a model memorizes;
    on forty points the means leave the training points and no sample is memorized."""
    r = data_size(4, 2, 4, [4, 40], seed=0, **TINY)
    assert r.memorization_ratio[0] == 1.0 and r.memorization_ratio[-1] < 0.1
    assert r.training_sizes == [4, 40] and len(r.learned_var) == len(r.train_seconds) == 2
    assert r.transition == (4, 4) and 4 <= r.stop_point <= 40
    np.testing.assert_array_equal(r.fractions, [1.0, 0.1])
    r.save(tmp_path / "r.json")
    back = DataSizeResult.load(tmp_path / "r.json")
    assert results.to_json(back) == results.to_json(r)  # every number, exactly
    assert back.memorization_ratio.dtype == back.learned_var.dtype == back.train_seconds.dtype == np.float64
    prov = back.provenance
    assert prov["settings"]["experiment"] == "data_size" and prov["settings"]["M"] == 4
    assert back.train_config == SHORT and back.eval_config == TINY["eval_config"] and "git_commit" in prov
    (tmp_path / "bad.json").write_text(json.dumps({"d": 4}))
    with pytest.raises(ValueError, match="not a data-size result"):
        DataSizeResult.load(tmp_path / "bad.json")


def test_each_model_is_trained_and_measured_as_stated():
    """Recomputed from the public pieces: the model at N trains on the first N points of one
    draw of max N points, from its first M points; its samples (sampling seed + 1) are
    judged against those N points."""
    d, K, M, Ns, seed = 3, 2, 4, [5, 9], 2
    r = data_size(d, K, M, Ns, seed=seed, **TINY)
    _, X, _ = make_data(d, K, Ns[-1], seed, torch.device("cpu"))
    for k, N in enumerate(Ns):
        trained = train_gmm(X[:N], [M], SHORT, "cpu", init_means=X[:M], progress=False)
        gen = torch.Generator().manual_seed(seed + 1)
        samples = ddim_sample(trained.denoiser(0), 100, d, time_grid(dtype=torch.float64), gen,
                              dtype=torch.float64)
        assert r.memorization_ratio[k] == memorization_ratio(samples, X[:N])
        assert r.learned_var[k] == trained.var[0]
    # Frozen at its start (M distinct training points, variance 1e-6) every sample memorizes.
    frozen = dict(TINY, config=TrainConfig(steps=20, peak_lr=1e-9, final_lr=0.0, num_draws=1))
    assert data_size(d, K, M, Ns, seed=seed, **frozen).memorization_ratio.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("kwargs, match", [
    (dict(M=10, training_sizes=[8, 12]), "max\\(M, 2\\)"),
    (dict(M=1, training_sizes=[1, 4]), "max\\(M, 2\\)"),
    (dict(M=4, training_sizes=[8, 6]), "strictly increasing"),
    (dict(M=4, training_sizes=[]), "empty"),
    (dict(M=4, training_sizes=[8], var=0.0), "var"),
    (dict(M=0, training_sizes=[8]), "M"),
])
def test_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data_size(3, 2, **kwargs, **TINY)


def test_cli(tmp_path, capsys):
    out = tmp_path / "ds.json"
    run = subprocess.run(
        [sys.executable, "-m", "gmmmem", "data-size", "--d", "3", "--K", "2", "--M", "3",
         "--N", "3", "9", "--scale", "ci", "--steps", "50", "--device", "cpu", "--out", str(out),
         "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr
    r = DataSizeResult.load(out)
    assert r.training_sizes == [3, 9] and r.steps == 50
    assert "memorization ratio by training-set size: 3: 1.00" in run.stdout
    with pytest.raises(SystemExit) as exit_:
        main(["data-size", "--d", "3", "--K", "2", "--M", "5", "--N", "4", "--out", str(out)])
    assert exit_.value.code == 2 and "max(M, 2) = 5" in capsys.readouterr().err
