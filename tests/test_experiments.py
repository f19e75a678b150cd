import json

import numpy as np
import pytest

from gmmmem.__main__ import main
from gmmmem.experiments import EvalConfig, PhaseTransitionResult, midpoint, phase_transition, transition
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
    assert np.shape(r.train_loss) == np.shape(r.test_loss) == (S, T) and len(r.times) == T
    assert np.shape(r.reference["pmem_train"]) == (S, T) and np.shape(r.reference["true_test"]) == (T,)
    assert all(0 <= x <= 1 for x in r.memorization_ratio) and len(r.means_stats) == S
    # The partially memorizing reference with M = N is the memorizing denoiser.
    assert np.allclose(r.reference["pmem_train"][-1], r.reference["mem_train"])
    p = r.provenance
    assert p["settings"]["train_config"]["steps"] == 30 and p["settings"]["seed"] == 1
    assert {"git_commit", "torch_version", "device", "date", "wall_seconds"} <= p.keys()
    back = PhaseTransitionResult.load(r.save(tmp_path / "r.json"))
    assert back.memorization_ratio == r.memorization_ratio and back.transition == r.transition


def test_phase_transition_is_reproducible_under_a_seed():
    a = phase_transition(4, 2, 12, [3, 12], seed=2, **TINY)
    b = phase_transition(4, 2, 12, [3, 12], seed=2, **TINY)
    assert a.memorization_ratio == b.memorization_ratio and a.train_loss == b.train_loss


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
    assert r.model_sizes == [2, 8] and r.provenance["settings"]["train_config"]["steps"] == 20
    assert "transition start" in capsys.readouterr().out
    assert not (tmp_path / "run.json.checkpoint").exists()  # removed once the result is written
    with pytest.raises(SystemExit):
        main(["phase-transition", "--d", "3", "--K", "2", "--N", "8", "--sizes", "9", "--out", str(out)])
    assert "model size" in capsys.readouterr().err
