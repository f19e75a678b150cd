"""The typed results: every committed result file loads into arrays and records, and writes
back the same numbers."""

import json

import numpy as np
import pytest

from gmmmem import config, metrics, results
from gmmmem.data_size import DataSizeResult
from gmmmem.experiments import PhaseTransitionResult, TemplateTransitionResult
from gmmmem.width_sweep import WidthSweepResult
from gmmmem.train import TrainConfig

DATA = config.data_dir()

#: The result class of each experiment named in a file's settings.
READERS = {"phase_transition": PhaseTransitionResult,
           "phase_transition_templates": TemplateTransitionResult,
           "width_sweep": WidthSweepResult, "data_size": DataSizeResult}


def _committed():
    """(path, result class) of every committed result file of the four kinds."""
    found = []
    for path in sorted(DATA.rglob("*.json")):
        experiment = json.loads(path.read_text()).get("provenance", {}).get("settings", {}).get("experiment")
        if experiment in READERS:
            found.append((path, READERS[experiment]))
    return found


COMMITTED = _committed()


def test_the_committed_results_are_found():
    kinds = {cls for _, cls in COMMITTED}
    assert kinds == set(READERS.values())
    assert len(COMMITTED) >= 40


@pytest.mark.parametrize("path, cls", COMMITTED, ids=[str(p.relative_to(DATA)) for p, _ in COMMITTED])
def test_every_committed_result_loads_into_arrays(path, cls):
    raw = json.loads(path.read_text())
    r = cls.load(path)
    settings = raw["provenance"]["settings"]
    assert isinstance(r.train_config, TrainConfig)
    assert r.train_config.steps == r.steps == settings["train_config"]["steps"]
    assert r.train_config.peak_lr == settings["train_config"]["peak_lr"]
    assert r.eval_config.num_samples == settings["eval_config"]["num_samples"]
    assert r.wall_seconds == raw["provenance"]["wall_seconds"] and r.device_name and r.date
    S = len(r.training_sizes if cls is DataSizeResult else r.widths if cls is WidthSweepResult
            else r.model_sizes)
    assert r.memorization_ratio.shape == (S,) and r.memorization_ratio.dtype == np.float64
    assert np.array_equal(r.memorization_ratio, raw["memorization_ratio"])
    if cls is DataSizeResult:
        assert r.seed == settings["seed"] and r.learned_var.shape == r.train_seconds.shape == (S,)
        np.testing.assert_allclose(r.fractions, r.M / np.array(raw["training_sizes"]), rtol=1e-15)
        return
    T = len(raw["times"])
    assert r.seed == settings["seed"] and r.train_seconds == settings["train_seconds"]
    assert r.times.shape == (T,) and r.train_loss.shape == r.test_loss.shape == (S, T)
    assert r.reference.true_train.shape == r.reference.mem_test.shape == (T,)
    assert r.times[r.time_index(0.36)] == pytest.approx(0.36, abs=0.02)
    history = r.loss_history
    assert history.loss.shape == (len(history.steps), S) and history.steps.dtype == np.int64
    assert history.var is None or history.var.shape == history.loss.shape
    if history.snapshots is not None:
        assert history.snapshots.memorization_ratio.shape == (len(history.snapshots.steps), S)
        assert history.snapshots.steps.tolist() == raw["loss_history"]["snapshots"]["steps"]
    if cls is WidthSweepResult:
        assert r.reference.pmem_train is None and r.nearest_ratio_median.shape == (S,)
        return
    N, D = r.N, len(raw["arrays"]["X"][0])
    assert r.X.shape == (N, D) and r.reference.pmem_train.shape == r.reference.pmem_test.shape == (S, T)
    assert r.learned_var.shape == (S,) and r.fractions.shape == (S,)
    assert r.fractions.tolist() == [M / N for M in r.model_sizes]
    assert r.midpoint_over_N == (None if r.midpoint is None else r.midpoint / N)
    if cls is PhaseTransitionResult:
        assert r.true_means.shape == (r.K, r.d) == (r.K, D)
        assert [m.shape for m in r.learned_means] == [(M, r.d) for M in r.model_sizes]
        assert [st.M for st in r.means_stats] == r.model_sizes
        assert all(isinstance(st, metrics.MeansStatistics) for st in r.means_stats)
    else:
        h = r.true_templates.shape[1]
        assert r.true_templates.shape == (r.K, h, h) and D == 3 * h * h == r.d
        assert [T.shape for T in r.learned_templates] == [(M, h, h) for M in r.model_sizes]
        assert [mu.shape for mu in r.learned_color_means] == [(M, 3) for M in r.model_sizes]
        assert [st.M for st in r.template_stats] == r.model_sizes
        assert all(isinstance(st, metrics.TemplateStatistics) for st in r.template_stats)


def _one_of_each():
    """The smallest committed file of each result class."""
    smallest = {}
    for path, cls in COMMITTED:
        if cls not in smallest or path.stat().st_size < smallest[cls][0].stat().st_size:
            smallest[cls] = (path, cls)
    return list(smallest.values())


@pytest.mark.parametrize("path, cls", _one_of_each(), ids=lambda v: getattr(v, "__name__", ""))
def test_a_loaded_result_saves_the_file_it_was_loaded_from(path, cls, tmp_path):
    raw = json.loads(path.read_text())
    out = cls.load(path).save(tmp_path / "again.json")
    again = json.loads(out.read_text())
    derived = {"midpoint", "midpoint_status", "stop_point", "stop_status"}
    assert {k: v for k, v in again.items() if k not in derived} == {k: v for k, v in raw.items()
                                                                     if k not in derived}
    assert {k: again[k] for k in derived & raw.keys()} == {k: raw[k] for k in derived & raw.keys()}


def test_loading_the_wrong_kind_of_result_says_which_class_reads_it(tmp_path):
    mixture = next(p for p, cls in COMMITTED if cls is PhaseTransitionResult)
    with pytest.raises(ValueError, match="experiment 'phase_transition'.*PhaseTransitionResult.load"):
        TemplateTransitionResult.load(mixture)
    with pytest.raises(ValueError, match="not a width-sweep result: missing"):
        WidthSweepResult.load(mixture)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a data-size result: it holds a JSON list"):
        DataSizeResult.load(tmp_path / "list.json")


def test_to_json_writes_arrays_records_and_numpy_numbers_as_json():
    history = results.LossHistory(steps=np.array([0, 9]), loss=np.array([[2.0], [1.5]]))
    assert results.to_json({"h": history, "x": (np.float64(0.5), np.int64(3))}) == {
        "h": {"steps": [0, 9], "loss": [[2.0], [1.5]]}, "x": [0.5, 3]}
    assert json.dumps(results.to_json(history))  # nothing left that JSON cannot write
    back = results.LossHistory.from_json(results.to_json(history))
    assert back.var is None and back.snapshots is None and np.array_equal(back.loss, history.loss)
