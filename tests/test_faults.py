"""Fault injection: bad output paths, damaged checkpoints, diverging runs, numpy and float
arguments, concurrent writers, transitions outside the measured sizes, bad devices, Ctrl-C,
and commands killed then rerun. Nothing computed or committed may be lost."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import gmmmem.experiments as experiments
import gmmmem.train as train
from gmmmem import files, results
from gmmmem.__main__ import main
from gmmmem.data_size import DataSizeResult, data_size, stop_memorizing, stop_status
from gmmmem.device import resolve
from gmmmem.experiments import (EvalConfig, PhaseTransitionResult, midpoint, midpoint_status,
                                phase_transition, phase_transition_templates)
from gmmmem.width_sweep import width_sweep
from gmmmem.predict import load_weights
from gmmmem.sweep import Dataset, merge, run_config, run_sweep, summary
from gmmmem.train import DivergenceError, TrainConfig, train_gmm

ROOT = Path(__file__).resolve().parent.parent
SHORT = TrainConfig(steps=60, peak_lr=1e-2, final_lr=1e-3, num_draws=2)
EVAL = EvalConfig(num_samples=20, loss_draws=2)
TINY = dict(config=SHORT, eval_config=EVAL, device="cpu", progress=False)
#: A phase-transition command that trains for a fraction of a second.
PT = ["phase-transition", "--d", "4", "--K", "2", "--N", "12", "--sizes", "3", "6", "12",
      "--scale", "ci", "--steps", "60", "--no-progress"]
DS = ["data-size", "--d", "4", "--K", "2", "--M", "3", "--N", "6", "8", "--scale", "ci",
      "--steps", "60", "--no-progress"]
#: An unwritable folder on Linux, even for root.
UNWRITABLE = "/proc/gmmmem-test/x.json"


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a command starts training."""
    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    for module in (experiments, train):
        monkeypatch.setattr(module, "train_gmm", refuse)
    monkeypatch.setattr(experiments, "train_templates", refuse)
    monkeypatch.setattr("gmmmem.data_size.train_gmm", refuse)


def _exit_code(argv, capsys) -> tuple[int, str]:
    """The exit code of ``main(argv)`` and what it printed on stderr."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped the command")
    return code, capsys.readouterr().err


def _data():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(12, 4, generator=gen, dtype=torch.float64)


# ------------------------------------------------------------------ 1. committed results


@pytest.fixture
def committed(tmp_path, monkeypatch):
    """A copy of the committed weights and sweep in a data folder of its own."""
    data = tmp_path / "data"
    for part in ("weights", "sweeps"):
        shutil.copytree(ROOT / "data" / part, data / part)
    monkeypatch.setenv("GMMMEM_DATA", str(data))
    small = tmp_path / "small.jsonl"
    small.write_text("".join((ROOT / "data/sweeps/default.jsonl").read_text().splitlines(True)[:3]))
    return data / "weights" / "default.json", small


def test_fit_weights_never_replaces_the_committed_weights_unasked(committed, tmp_path, capsys):
    weights, small = committed
    before = weights.read_bytes()
    code, err = _exit_code(["fit-weights", "--sweep", str(small)], capsys)
    assert code == 2 and "--force" in err and str(weights) in err
    assert weights.read_bytes() == before
    assert _exit_code(["fit-weights", "--sweep", str(small), "--out", str(tmp_path / "w.json")],
                      capsys)[0] == 0
    assert load_weights(tmp_path / "w.json").fit.n_configs == 3
    assert weights.read_bytes() == before
    assert _exit_code(["fit-weights", "--sweep", str(small), "--force"], capsys)[0] == 0
    assert load_weights(weights).fit.n_configs == 3


# ------------------------------------------------------------------ 2, 5. output paths


@pytest.mark.parametrize("command", [PT, DS, ["phase-transition-templates", "--K", "2", "--N",
                                              "6", "--size", "4", "--scale", "ci", "--steps", "5"]])
@pytest.mark.parametrize("out, word", [
    (UNWRITABLE, "cannot write --out"),
    ("{tmp}/folder/", "is a folder"),
    ("{tmp}/folder", "is a folder"),
])
def test_a_bad_output_path_fails_before_any_training(command, out, word, tmp_path, capsys,
                                                     no_training):
    (tmp_path / "folder").mkdir()
    code, err = _exit_code([*command, "--out", out.format(tmp=tmp_path)], capsys)
    assert code == 2 and word in err and f"usage: python -m gmmmem {command[0]}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]  # no stray checkpoint
    assert not any((tmp_path / "folder").iterdir())


def test_an_output_in_a_new_folder_is_checked_without_creating_it(tmp_path):
    out = tmp_path / "new" / "deeper" / "r.json"
    assert files.check_output(out) == out and not (tmp_path / "new").exists()
    (tmp_path / "a file").write_text("")
    with pytest.raises(ValueError, match="is not a folder"):
        files.check_output(tmp_path / "a file" / "r.json")


@pytest.mark.parametrize("command", [PT, DS])
def test_the_checkpoint_cannot_be_the_output(command, tmp_path, capsys, no_training):
    out = tmp_path / "r.json"
    code, err = _exit_code([*command, "--out", str(out), "--checkpoint", str(out)], capsys)
    assert code == 2 and "are the same file" in err and not out.exists()


def test_a_sweep_checks_its_output_before_starting_workers(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("gmmmem.sweep._compute", lambda *a, **k: pytest.fail("sweep started"))
    with pytest.raises(ValueError, match="cannot write out"):
        run_sweep([Dataset(3, 2, 10)], UNWRITABLE.replace(".json", ".jsonl"), scale="ci")
    code, err = _exit_code(["sweep", "--grid", "ci", "--out", str(tmp_path) + "/"], capsys)
    assert code == 2 and "is a folder" in err


# ------------------------------------------------------------------ 3. damaged checkpoints


def _truncated(path: Path) -> bytes:
    """The first half of a real checkpoint."""
    train_gmm(_data(), [3, 6], SHORT, "cpu", progress=False, checkpoint=path)
    return path.read_bytes()[: path.stat().st_size // 2]


@pytest.mark.parametrize("kind", ["empty", "garbage", "truncated", "foreign pickle"])
def test_a_damaged_checkpoint_is_named_moved_aside_and_training_restarts(kind, tmp_path):
    ck = tmp_path / "run.checkpoint"
    content = {"empty": lambda: b"", "garbage": lambda: b"\x80\x04not a checkpoint\x00" * 9,
               "truncated": lambda: _truncated(ck),
               "foreign pickle": lambda: (torch.save({"x": 1}, ck), ck.read_bytes())[1]}[kind]()
    ck.write_bytes(content)
    fresh = train_gmm(_data(), [3, 6], SHORT, "cpu", progress=False)
    with pytest.warns(files.CheckpointWarning, match=f"checkpoint {ck} is damaged.*from scratch"):
        resumed = train_gmm(_data(), [3, 6], SHORT, "cpu", progress=False, checkpoint=ck)
    assert all(torch.equal(a, b) for a, b in zip(fresh.means, resumed.means))
    assert (tmp_path / "run.checkpoint.damaged").read_bytes() == content


def test_a_damaged_checkpoint_inside_a_sweep_does_not_fail_the_configuration(tmp_path):
    config, train_config = Dataset(4, 2, 10), TrainConfig.preset("ci", steps=60, peak_lr=3e-2)
    first = run_config(config, "ci", train_config, EVAL, "cpu", checkpoint_dir=tmp_path)
    checkpoints = sorted(tmp_path.glob("*.pt"))
    assert checkpoints
    for ck in checkpoints:
        ck.write_bytes(ck.read_bytes()[:100])
    with pytest.warns(files.CheckpointWarning):
        again = run_config(config, "ci", train_config, EVAL, "cpu", checkpoint_dir=tmp_path)
    assert again["memorization_ratio"] == first["memorization_ratio"]
    assert again["learned_var"] == first["learned_var"]


# ------------------------------------------------------------------ 4. divergence


def test_a_diverging_run_stops_early_naming_the_step_and_learning_rate(tmp_path, monkeypatch):
    calls = []
    real = train._loss_and_grad
    monkeypatch.setattr(train, "_loss_and_grad", lambda *a: calls.append(1) or real(*a))
    config = TrainConfig(steps=3000, peak_lr=1e6, final_lr=1e-3, num_draws=2)
    ck = tmp_path / "run.checkpoint"
    named = r"step \d+ of 3000 \(learning rate there .*peak_lr 1e\+06"
    with pytest.raises(DivergenceError, match=named) as err:
        train_gmm(_data(), [3, 6], config, "cpu", progress=False, checkpoint=ck, checkpoint_every=100)
    step = int(str(err.value).split("at step ")[1].split()[0])
    assert len(calls) <= step + train.DIVERGENCE_CHECK_EVERY < config.steps  # stopped early
    assert not ck.exists()  # no checkpoint of a diverged state


def test_the_command_reports_divergence_and_the_corrected_rerun_runs(tmp_path, capsys):
    out = tmp_path / "r.json"
    code, err = _exit_code([*PT, "--steps", "400", "--peak-lr", "1e6", "--checkpoint-every",
                            "100", "--out", str(out)], capsys)
    assert code == 1 and err.startswith("error: training diverged") and "--peak-lr" in err
    assert len(err.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []
    assert _exit_code([*PT, "--out", str(out)], capsys)[0] == 0 and out.is_file()


# ------------------------------------------------------------------ 6. integer arguments


def test_numpy_integers_are_accepted_and_saved_as_json(tmp_path):
    i = np.int64
    config = TrainConfig(steps=i(30), peak_lr=1e-2, final_lr=1e-3, num_draws=i(2), seed=i(1))
    r = phase_transition(i(4), np.int32(2), i(12), np.array([3, 12]), seed=i(1), config=config,
                         eval_config=EvalConfig(i(20), i(2)), device="cpu", progress=False)
    r.save(tmp_path / "r.json")
    back = json.loads((tmp_path / "r.json").read_text())
    assert back["d"] == 4 and back["provenance"]["settings"]["seed"] == 1
    assert back["provenance"]["settings"]["train_config"]["steps"] == 30
    ds = data_size(i(4), i(2), i(3), [i(6), i(8)], seed=i(0), **TINY)
    ds.save(tmp_path / "ds.json")
    assert json.loads((tmp_path / "ds.json").read_text())["M"] == 3


@pytest.mark.parametrize("call, name", [
    (lambda: phase_transition(3.0, 2, 12, **TINY), "d"),
    (lambda: phase_transition(3, 2.0, 12, **TINY), "K"),
    (lambda: phase_transition(3, 2, 12.0, **TINY), "N"),
    (lambda: phase_transition(3, 2, 12, seed=1.5, **TINY), "seed"),
    (lambda: phase_transition(3, 2, 12, seed=-1, **TINY), "seed"),
    (lambda: phase_transition(3, 2, 12, seed=True, **TINY), "seed"),
    (lambda: phase_transition_templates(2, 6, size=4.0, **TINY), "size"),
    (lambda: width_sweep(3, 2.0, 12, [4], **TINY), "K"),
    (lambda: data_size(3, 2, 3.0, [6], **TINY), "M"),
    (lambda: data_size(3, 2, 3, [6.0], **TINY), "training-set size N"),
    (lambda: data_size(3, 2, 3, [6], seed=0.5, **TINY), "seed"),
    (lambda: TrainConfig(steps=10.0, peak_lr=1e-3, final_lr=0.0), "steps"),
    (lambda: TrainConfig(steps=10, peak_lr=1e-3, final_lr=0.0, seed=1.5), "seed"),
    (lambda: EvalConfig(num_samples=2.5, loss_draws=2), "num_samples"),
])
def test_floats_are_refused_naming_the_argument(call, name, no_training):
    with pytest.raises(ValueError, match=f"^{name} must be an integer"):
        call()


# ------------------------------------------------------------------ 7. concurrent writers


def test_a_second_writer_of_a_sweep_file_gets_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("gmmmem.sweep._compute", lambda *a, **k: pytest.fail("sweep started"))
    out = tmp_path / "s.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom gmmmem.files import exclusive\n"
         "with exclusive(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(60)\n",
         str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(files.LockedError, match=f"pid {holder.pid}.* is writing {out}"):
            run_sweep([Dataset(3, 2, 10)], out, scale="ci")
        code, err = _exit_code(["sweep", "--grid", "ci", "--out", str(out)], capsys)
        assert code == 1 and err.startswith("error: another process") and "usage" not in err
    finally:
        holder.kill()
        holder.wait()
    assert not out.exists()
    with files.exclusive(out) as lock:  # released by the killed holder: free again
        assert lock.read_text() == str(os.getpid())
    assert not lock.exists()


# ------------------------------------------------------------------ 8. unmeasured transitions


@pytest.mark.parametrize("ratio, mid, status", [
    ([0.0, 0.4, 0.6, 1.0], 7.5, "measured"),
    ([0.6, 0.8, 1.0, 1.0], None, "below the smallest size"),
    ([0.0, 0.1, 0.2, 0.3], None, "not reached"),
])
def test_a_midpoint_outside_the_measured_sizes_is_none_with_a_reason(ratio, mid, status):
    assert midpoint([3, 6, 9, 12], ratio) == (None if mid is None else pytest.approx(mid))
    assert midpoint_status(ratio) == status


@pytest.mark.parametrize("ratio, stop, status", [
    ([1.0, 0.6, 0.4], 13.0, "measured"),
    ([1.0, 1.0, 1.0], None, "above the largest size"),
    ([0.3, 0.2, 0.0], None, "below the smallest size"),
])
def test_n_pt_outside_the_measured_sizes_is_none_with_a_reason(ratio, stop, status):
    assert stop_memorizing([10, 12, 14], ratio) == (None if stop is None else pytest.approx(stop))
    assert stop_status(ratio) == status


def test_commands_and_records_say_when_the_smallest_size_already_memorizes(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main([*PT[:7], "--sizes", "12", *PT[-5:], "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "midpoint M_pt: none (below the smallest size)" in printed
    assert "the transition may start below M = 12" in printed
    saved = json.loads(out.read_text())
    assert saved["midpoint"] is None and saved["midpoint_status"] == "below the smallest size"
    result = PhaseTransitionResult.load(out)
    assert result.midpoint is None and result.memorization_ratio.tolist() == [1.0]
    rec = merge(Dataset(4, 2, 12), {}, result, None, torch.device("cpu"), 0.0)
    assert rec["midpoint"] is None and rec["midpoint_over_N"] is None
    assert rec["midpoint_status"] == "below the smallest size"
    assert summary(rec).endswith("midpoint M_pt none (below the smallest size)")
    ds = tmp_path / "ds.json"
    assert main(["data-size", "--d", "4", "--K", "2", "--M", "10", "--N", "10", "12", "--scale",
                 "ci", "--steps", "30", "--no-progress", "--out", str(ds)]) == 0
    printed = capsys.readouterr().out
    assert "N_pt = none (above the largest size)" in printed and "may generalize only beyond" in printed
    assert json.loads(ds.read_text())["stop_status"] == "above the largest size"
    assert DataSizeResult.load(ds).stop_point is None


# ------------------------------------------------------------------ 9. devices


@pytest.mark.parametrize("command", [PT, DS])
@pytest.mark.parametrize("option, env, word", [
    (["--device", "tpu"], None, "unknown device 'tpu'"),
    ([], "bogus", "GMMMEM_DEVICE: unknown device 'bogus'"),
])
def test_a_bad_device_is_a_clear_error(command, option, env, word, tmp_path, capsys, monkeypatch,
                                       no_training):
    if env:
        monkeypatch.setenv("GMMMEM_DEVICE", env)
    code, err = _exit_code([*command, *option, "--out", str(tmp_path / "r.json")], capsys)
    assert code == 2 and word in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve("cuda:1")


# ------------------------------------------------------------------ 10. smaller points


def test_results_are_readable_by_all_and_written_durably(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    path = files.write_json(tmp_path / "r.json", {"a": 1})
    assert path.stat().st_mode & 0o777 == 0o644 and json.loads(path.read_text()) == {"a": 1}
    assert len(synced) == 2  # the file, then its folder
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_weights_file_that_is_not_json_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("not JSON at all")
    with pytest.raises(ValueError, match=f"{bad} is not a fitted-weights file: not JSON"):
        load_weights(bad)
    code, err = _exit_code(["predict", "--d", "30", "--K", "3", "--N", "50", "--weights", str(bad)],
                           capsys)
    assert code == 2 and str(bad) in err


@pytest.mark.parametrize("command", [PT, DS])
def test_a_negative_seed_is_refused_by_every_command(command, tmp_path, capsys, no_training):
    code, err = _exit_code([*command, "--seed", "-1", "--out", str(tmp_path / "r.json")], capsys)
    assert code == 2 and "--seed: must be an integer >= 0" in err


def test_errors_during_a_run_show_the_usage_of_the_command(tmp_path, capsys, no_training):
    code, err = _exit_code([*PT[:6], "1", "--out", str(tmp_path / "r.json")], capsys)
    assert code == 2 and err.startswith("usage: python -m gmmmem phase-transition")
    assert "N must be >= 2" in err


def test_ctrl_c_stops_with_one_line_and_keeps_the_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.json"

    def interrupted(*args, checkpoint, **kwargs):
        checkpoint.write_bytes(b"state")
        raise KeyboardInterrupt

    monkeypatch.setattr(experiments, "phase_transition", interrupted)
    code, err = _exit_code([*PT, "--out", str(out)], capsys)
    assert code == 130 and err == f"interrupted; checkpoint kept at {out}.checkpoint\n"
    assert Path(f"{out}.checkpoint").read_bytes() == b"state"


def test_a_sweep_reports_each_configuration_as_it_finishes(tmp_path, monkeypatch):
    from distributed import LocalCluster

    out, said = tmp_path / "s.jsonl", []

    def report(line):
        said.append((line, len(out.read_text().splitlines()) if out.exists() else 0))

    threads = torch.get_num_threads()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        records = run_sweep([Dataset(3, 2, 10), Dataset(3, 2, 12)], out, scale="ci",
                            scheduler=cluster.scheduler_address, device="cpu", progress=False,
                            train={"steps": 40, "peak_lr": 3e-2, "final_lr": 3e-5},
                            eval_config=EVAL, report=report)
    torch.set_num_threads(threads)
    done = [(line, n) for line, n in said if line.startswith("d=")]
    assert sorted(line for line, _ in done) == sorted(summary(r) for r in records)
    assert [n for _, n in done] == [1, 2]  # each reported once its record is in the file


# ------------------------------------------------------------------ killed, then rerun


def _cli(argv, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "gmmmem", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _kill_once(argv, written: Path) -> None:
    """Start the command, SIGKILL it as soon as ``written`` exists, check it was still running."""
    proc = _cli(argv)
    deadline = time.monotonic() + 60
    while not written.exists():
        assert proc.poll() is None, f"the command ended before it could be killed: {proc.stderr.read()}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def _rerun(argv, monkeypatch) -> int:
    """Rerun the command (in this process: the same code as a second command, without
    another start of Python and torch); returns the number of steps it trained."""
    steps, real = [], TrainConfig.lr
    monkeypatch.setattr(TrainConfig, "lr", lambda self, step: steps.append(step) or real(self, step))
    assert main(argv) == 0
    monkeypatch.setattr(TrainConfig, "lr", real)
    return len(steps)


KILLED = TrainConfig.preset("ci", steps=400)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the commands run (OMP_NUM_THREADS=1): the same numbers
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("command", ["phase-transition", "phase-transition-templates"])
def test_a_killed_phase_transition_resumes_to_the_same_result(command, tmp_path, one_thread,
                                                             monkeypatch):
    out = tmp_path / "r.json"
    if command == "phase-transition":
        args = ["--d", "4", "--K", "2", "--N", "12", "--sizes", "3", "12"]
        reference = phase_transition(4, 2, 12, [3, 12], "ci", 0, "cpu", config=KILLED,
                                     progress=False)
    else:
        args = ["--K", "2", "--N", "6", "--size", "4", "--sizes", "2", "6"]
        config = experiments.template_config("ci", seed=0, steps=KILLED.steps)
        reference = phase_transition_templates(2, 6, [2, 6], 4, "ci", 0, "cpu", config=config,
                                               progress=False)
    argv = [command, *args, "--scale", "ci", "--steps", str(KILLED.steps), "--checkpoint-every",
            "50", "--device", "cpu", "--no-progress", "--out", str(out)]
    _kill_once(argv, Path(f"{out}.checkpoint"))
    assert not out.exists()
    assert _rerun(argv, monkeypatch) < KILLED.steps  # resumed, not restarted
    result = type(reference).load(out)
    assert np.array_equal(result.memorization_ratio, reference.memorization_ratio)
    assert np.array_equal(result.learned_var, reference.learned_var)
    assert np.array_equal(result.train_loss, reference.train_loss)
    assert results.to_json(result.loss_history) == results.to_json(reference.loss_history)
    assert not Path(f"{out}.checkpoint").exists()


def test_a_killed_data_size_run_resumes_to_the_same_result(tmp_path, one_thread, monkeypatch):
    out = tmp_path / "ds.json"
    reference = data_size(4, 2, 3, [6, 8], "ci", 0, "cpu", config=KILLED, progress=False)
    argv = ["data-size", "--d", "4", "--K", "2", "--M", "3", "--N", "6", "8", "--scale", "ci",
            "--steps", str(KILLED.steps), "--checkpoint-every", "50", "--device", "cpu",
            "--no-progress", "--out", str(out)]
    _kill_once(argv, Path(f"{out}.checkpoints") / "N8.pt")  # N = 6 done, N = 8 under way
    assert not out.exists()
    assert _rerun(argv, monkeypatch) < KILLED.steps  # N = 6 not retrained, N = 8 resumed
    result = DataSizeResult.load(out)
    assert np.array_equal(result.memorization_ratio, reference.memorization_ratio)
    assert np.array_equal(result.learned_var, reference.learned_var)
    assert not Path(f"{out}.checkpoints").exists()

