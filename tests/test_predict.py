import dataclasses
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gmmmem import predict as P
from gmmmem.__main__ import main
from gmmmem.diffusion import time_grid
from gmmmem.experiments import EvalConfig
from gmmmem.losses import closed_form_losses, crossover
from gmmmem.sweep import SweepTable, load_sweep

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def committed():
    return P.load_weights()


def _table(N, var, mid, start, end, t):
    """A sweep table (d = 30, K = 3) with the columns fit_weights reads."""
    table = SweepTable.from_columns(measured=mid, var=var, times=t, d=np.full(len(N), 30),
                                    K=np.full(len(N), 3), N=N)
    return dataclasses.replace(table, start=np.asarray(start, dtype=float), end=np.asarray(end, dtype=float))


def test_committed_weights_name_their_sweep_and_lie_on_the_simplex(committed):
    """(That ``fit-weights`` remakes them: tests/test_data_readme.py, from the recorded command.)"""
    table = SweepTable.load(P.default_sweep())
    assert committed.fit.n_configs == len(table) == len(committed.configs)
    assert committed.configs.measured == pytest.approx(table.measured, rel=1e-12)
    w = committed.weights
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0)


def test_prediction_against_an_independent_computation(committed):
    t = np.array(committed.times)
    w = np.array(committed.weights) / np.sum(committed.weights)
    records = load_sweep(P.default_sweep())  # the raw records: independent of SweepTable
    mid = np.array([r["midpoint"] for r in records])
    start = np.median([(r["start"] - m) / r["config"]["N"] for r, m in zip(records, mid)])
    end = np.median([(r["end"] - m) / r["config"]["N"] for r, m in zip(records, mid)])
    for var, N in [(1.0, 50), (0.7, 120), (1.9, 64)]:
        psi = (1 - t**2) / t**2
        ratio = float(np.sum(w * (0.5 + psi * var) / (1 + psi * var)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", P.RangeWarning)  # N = 120: outside, predicted anyway
            p = P.predict(30, 3, N, var)
        assert p.M_star_over_N == pytest.approx(ratio, rel=1e-12)
        assert p.M_star == pytest.approx(ratio * N, rel=1e-12)
        assert p.generalizes_below == pytest.approx((ratio + start) * N, rel=1e-12)
        assert p.memorizes_above == pytest.approx((ratio + end) * N, rel=1e-12)
        assert p.generalizes_below < p.M_star < p.memorizes_above
    # Larger data variance, later memorization (the closed form's direction).
    assert P.predict(30, 3, 50, 0.5).M_star < P.predict(30, 3, 50, 2.0).M_star


def test_fit_on_synthetic_transitions_recovers_them():
    """Midpoints made by known weights: the closed form predicts held-out ones exactly,
    the constant baseline cannot; start/end offsets are the medians given."""
    rng = np.random.default_rng(1)
    t = time_grid(dtype=torch.float64).numpy()
    true_w = rng.dirichlet(np.full(t.size, 0.3))
    var = rng.choice([0.25, 0.5, 1.0, 2.0, 4.0], size=24)
    N = rng.choice([40, 80, 120], size=24)
    mid = crossover(*closed_form_losses(t, var), true_w)
    table = _table(N, var, mid, np.round((mid - 0.1) * N), np.round((mid + 0.15) * N), t)
    out = P.fit_weights(table)
    ev = {name: {k: v.test_mse_mean for k, v in e.items()} for name, e in out.held_out.items()}
    assert ev["random 75/25"]["closed form"] < 1e-12 < 1e-4 < ev["random 75/25"]["constant (baseline)"]
    assert ev["leave one N out"]["closed form"] < 1e-6 < 1e-4 < ev["leave one N out"]["constant (baseline)"]
    # Fitted at one variance the closed form has one degree of freedom: it cannot extrapolate.
    assert ev["fit on variance 1"]["closed form"] > 0.1 * ev["fit on variance 1"]["constant (baseline)"]
    assert out.fit.train_mse < 1e-12 and out.provenance is None
    assert out.start_offset == pytest.approx(-0.1, abs=0.02)
    assert out.end_offset == pytest.approx(0.15, abs=0.02)
    assert out.fitted_range["var"] == (0.25, 4.0) and out.fitted_range["N"] == (40, 120)
    assert out.configs.measured == pytest.approx(mid, rel=1e-12) and out.configs.N.tolist() == N.tolist()
    incomplete = dataclasses.replace(table, start=np.where(np.arange(24) == 3, np.nan, table.start))
    with pytest.raises(ValueError, match="complete transition"):
        P.fit_weights(incomplete)


@pytest.mark.parametrize("args, match", [
    ((30, 3, 0), "N"), ((30, 3, 1), "N"), ((30, 3, 50.5), "N"), ((0, 3, 50), "d"),
    ((30, 0, 50), "K"), ((True, 3, 50), "d"), ((30, 3, 50, 0.0), "var"),
    ((30, 3, 50, -1.0), "var"), ((30, 3, 50, math.nan), "var"), ((30, 3, 50, math.inf), "var"),
])
def test_bad_configurations_are_refused(args, match):
    with pytest.raises(ValueError, match=match):
        P.predict(*args)


def test_range_warnings_name_the_parameter(committed):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert P.predict(30, 3, 50, 1.0).warnings == ()  # inside the fitted range: silent
    with pytest.warns(P.RangeWarning) as caught:
        p = P.predict(50, 12, 200, 1.0)
    names = [str(w.message).split(" ")[0] for w in caught]
    assert names == ["d", "K", "N"] and len(p.warnings) == 3
    with pytest.warns(P.RangeWarning, match="var = 3 lies outside the fitted range 0.5..2"):
        P.predict(30, 3, 50, 3.0)


def test_missing_or_wrong_weights_file(tmp_path):
    with pytest.raises(ValueError, match="fit-weights"):
        P.predict(30, 3, 50, fitted=tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text(json.dumps({"weights": [1.0]}))
    with pytest.raises(ValueError, match="not a fitted-weights file: missing"):
        P.load_weights(tmp_path / "bad.json")
    broken = json.loads(P.default_weights().read_text())
    broken["weights"] = broken["weights"][:-1]
    (tmp_path / "short.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="short.json is not a fitted-weights file: malformed"):
        P.load_weights(tmp_path / "short.json")
    with pytest.raises(ValueError, match="not a fitted-weights file"):  # another committed file
        P.load_weights(ROOT / "data" / "predict_check" / "predictions.json")


def test_committed_weights_load_typed(committed):
    assert isinstance(committed, P.FittedWeights) and committed.provenance["settings"]["experiment"] == "fit_weights"
    assert committed.times.shape == committed.weights.shape == (26,) and committed.times.dtype == float
    assert isinstance(committed.fit, P.FitSummary) and committed.fit.n_configs == 14
    summary = committed.held_out["random 75/25"]["closed form"]
    assert isinstance(summary, P.HeldOutSummary) and summary.n_splits == committed.random_splits == 40
    assert committed.start_offset < 0 < committed.end_offset
    assert committed.start_over_N.shape == committed.end_over_N.shape == (14,)
    assert set(committed.fitted_range) == set(P.RANGE_PARAMETERS)
    assert committed.configs.d.dtype.kind == "i" and committed.configs.var.dtype == float
    assert len(committed.configs) == 14 and committed.configs.fitted.shape == (14,)


def test_committed_predictions_load_typed(committed):
    made = P.load_predictions(ROOT / "data" / "predict_check" / "predictions.json")
    assert made.configs == P.CHECK_CONFIGS
    assert all(isinstance(p, P.Prediction) and isinstance(p.warnings, tuple) for p in made.predictions)
    assert [(p.d, p.K, p.N, p.var) for p in made.predictions] == list(P.CHECK_CONFIGS)
    assert made.weights == "default.json" and len(made.weights_sha256) == 64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", P.RangeWarning)
        today = P.predict(*P.CHECK_CONFIGS[1], committed)
    assert made.predictions[1].M_star == pytest.approx(today.M_star, rel=1e-9)
    assert made.predictions[1].warnings == today.warnings


def test_a_wrong_predictions_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="no predictions file"):
        P.load_predictions(tmp_path / "absent.json")
    with pytest.raises(ValueError, match="is not a predictions file"):
        P.load_predictions(P.default_weights())
    payload = json.loads((ROOT / "data" / "predict_check" / "predictions.json").read_text())
    del payload["predictions"][0]["M_star"]
    (tmp_path / "p.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="p.json is not a predictions file: malformed .*not a prediction"):
        P.load_predictions(tmp_path / "p.json")
    with pytest.raises(ValueError, match="not a prediction"):
        P.Prediction.from_dict([1, 2])


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "gmmmem", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_cli_predict_json_and_errors():
    run = _cli("predict", "--d", "50", "--K", "12", "--N", "200", "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    with pytest.warns(P.RangeWarning):
        expected = P.predict(50, 12, 200).to_dict()
    assert out.keys() == expected.keys() and out["warnings"] == expected["warnings"]
    assert out["M_star"] == pytest.approx(expected["M_star"], rel=1e-12)
    assert "warning: d = 50 lies outside" in run.stderr and "warning: var" not in run.stderr
    run = _cli("predict", "--d", "30", "--K", "3", "--N", "0")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "N (the training-set size; the memorization criterion needs two points) must be" in run.stderr


def test_cli_predict_text(capsys):
    assert main(["predict", "--d", "30", "--K", "3", "--N", "50", "--var", "1.5"]) == 0
    out, err = capsys.readouterr()
    p = P.predict(30, 3, 50, 1.5)
    assert err == "" and f"M* = {p.M_star:.1f} ({p.M_star_over_N:.3f} N)" in out
    assert f"generalizes below M = {p.generalizes_below:.1f}" in out
    assert "random 75/25" in out and "constant predictor" in out
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--d", "30", "--K", "3", "--N", "50", "--var", "0"])
    assert exit_.value.code == 2 and "var (the data variance)" in capsys.readouterr().err


def test_cli_help_imports_no_torch():
    code = ("import sys\nfrom gmmmem.__main__ import main\n"
            "for cmd in ('predict', 'fit-weights', 'data-size'):\n"
            "    try:\n        main([cmd, '--help'])\n    except SystemExit:\n        pass\n"
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr


def test_run_check_predicts_before_it_trains(tmp_path, monkeypatch):
    """The predictions file is written before training and kept on a rerun; the measured
    records are sweep records of the configurations asked for."""
    from distributed import LocalCluster

    import gmmmem.sweep as sweep

    seen = []
    real = sweep.run_config

    def spy(config, *args, **kwargs):
        seen.append((config, (tmp_path / "predictions.json").is_file()))
        return real(config, *args, **kwargs)

    monkeypatch.setattr(sweep, "run_config", spy)
    configs = ((4, 2, 10, 1.0), (3, 2, 12, 0.5))
    tiny = dict(scale="ci", train={"steps": 40, "peak_lr": 3e-2, "final_lr": 3e-5, "num_draws": 2},
                eval_config=EvalConfig(num_samples=20, loss_draws=2))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        payload, records = P.run_check(tmp_path, configs, scheduler=cluster.scheduler_address, **tiny)
        date = payload.provenance["date"]
        again, _ = P.run_check(tmp_path, configs, scheduler=cluster.scheduler_address, **tiny)
    assert [s[1] for s in seen] == [True, True]  # predicted first; the rerun trains nothing
    assert again.provenance["date"] == date
    assert [(r["config"]["d"], r["config"]["N"], r["config"]["var"]) for r in records] == \
        [(4, 10, 1.0), (3, 12, 0.5)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", P.RangeWarning)
        assert payload.predictions[1] == P.predict(3, 2, 12, 0.5)
