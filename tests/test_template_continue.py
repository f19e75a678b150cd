"""runs/template_continue.py: a plan's models trained on from the end of their runs, recorded
as each is done, skipped when a rerun finds them, the same on the same seed."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run_file(monkeypatch):
    """The run file as a module, with a two-model plan of 20 steps, measured twice."""
    spec = importlib.util.spec_from_file_location("template_continue", ROOT / "runs" / "template_continue.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.chdir(ROOT)  # the runs it continues are named from the repository root
    monkeypatch.setattr(module, "PLANS", {"tiny": ((0, 94, 1e-3, 20), (1, 100, 3e-4, 20))})
    monkeypatch.setattr(module, "MEASURES", 2)
    monkeypatch.setattr(module, "KEEP_EVERY", 5)
    return module


def test_a_plan_is_recorded_model_by_model_and_a_rerun_skips_what_is_done(run_file, tmp_path, monkeypatch):
    out = tmp_path / "continued.json"
    run_file.main(["--plan", "tiny", "--out", str(out)])
    made = json.loads(out.read_text())
    assert [(r["seed"], r["M"], r["train_config"]["peak_lr"]) for r in made["models"]] == [(0, 94, 1e-3), (1, 100, 3e-4)]
    for rec in made["models"]:
        assert rec["steps"] == [10, 20] and len(rec["memorization_ratio"]) == 2 and len(rec["var"]) == 2
        assert rec["history_steps"] == [5, 10, 15, 20] and len(rec["var_history"]) == 4
        assert rec["train_config"]["final_lr"] == rec["train_config"]["peak_lr"]
        assert 0.0 <= min(rec["memorization_ratio"]) <= max(rec["memorization_ratio"]) <= 1.0
    assert made["provenance"]["settings"]["models"] == [[0, 94, 1e-3, 20], [1, 100, 3e-4, 20]]
    assert not list(tmp_path.glob("*.checkpoint")), "checkpoints are removed once a model is recorded"

    def fail(*args):
        raise AssertionError("a model already in the file was trained again")

    monkeypatch.setattr(run_file, "continued", fail)
    run_file.main(["--plan", "tiny", "--out", str(out)])
    assert json.loads(out.read_text())["models"] == made["models"]


def test_the_same_seed_gives_the_same_continuation(run_file, tmp_path):
    first, again = (run_file.continued(1, 100, 3e-4, 20, tmp_path / f"{k}.checkpoint") for k in (0, 1))
    assert first["var_history"] == again["var_history"] and first["memorization_ratio"] == again["memorization_ratio"]


def test_workers_must_be_positive(run_file, tmp_path):
    with pytest.raises(SystemExit):
        run_file.main(["--plan", "tiny", "--workers", "0", "--out", str(tmp_path / "x.json")])
