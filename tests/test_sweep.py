import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gmmmem import sweep
from gmmmem.__main__ import GRID_NAMES, main
from gmmmem.experiments import EvalConfig, PhaseTransitionResult, make_data, phase_transition, transition
from gmmmem.results import LossHistory, ReferenceLosses
from gmmmem.sweep import Dataset, SweepError, SweepWarning, load_sweep, run_config, run_sweep
from gmmmem.train import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
TRAIN = {"steps": 40, "peak_lr": 3e-2, "final_lr": 3e-5, "num_draws": 2}
EVAL = EvalConfig(num_samples=20, loss_draws=2)
TINY = dict(scale="ci", train=TRAIN, eval_config=EVAL, device="cpu", progress=False)
C1, C2, C3 = Dataset(3, 2, 10), Dataset(3, 2, 12, var=0.5), Dataset(4, 2, 10, var=2.0, seed=1)


@pytest.fixture(scope="module")
def scheduler():
    """An in-process Dask cluster of 2 single-threaded workers (threads: starts in ~0.1 s)."""
    from distributed import LocalCluster

    threads = torch.get_num_threads()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address
    torch.set_num_threads(threads)  # the tasks set 1 thread, process-wide here


@pytest.fixture
def calls(monkeypatch):
    """Counts (and can fail) the configurations the workers compute."""
    ran, fail = [], set()
    real = sweep.run_config

    def counted(config, *args, **kwargs):
        ran.append(config)
        if config in fail:
            raise RuntimeError(f"task for {config.name} killed")
        return real(config, *args, **kwargs)

    monkeypatch.setattr(sweep, "run_config", counted)
    return ran, fail


def tiny_sweep(configs, out, scheduler, **kw):
    return run_sweep(configs, out, scheduler=scheduler, **TINY | kw)


def lines(path):
    return Path(path).read_text().splitlines()


# ------------------------------------------------------------------ data variance


def test_data_variance_scales_the_same_draws():
    dev = torch.device("cpu")
    truth1, X1, T1 = make_data(5, 3, 20, 4, dev)
    truth4, X4, T4 = make_data(5, 3, 20, 4, dev, var=4.0)
    assert truth1.var == 1.0 and truth4.var == 4.0
    assert torch.equal(truth1.means, truth4.means)
    # Same labels and noise, the noise twice as large: 2 X1 - X4 is each point's own mean.
    own = 2 * X1 - X4
    assert torch.cdist(own, truth1.means).min(1).values.max() < 1e-10
    assert torch.cdist(2 * T1 - T4, truth1.means).min(1).values.max() < 1e-10
    assert not torch.allclose(X1, X4)


def test_phase_transition_records_the_variance_and_checks_it():
    kw = dict(config=TrainConfig(steps=5, peak_lr=1e-2, final_lr=1e-3, num_draws=1),
              eval_config=EVAL, device="cpu", progress=False)
    r = phase_transition(3, 2, 8, [4, 8], seed=0, var=0.25, **kw)
    assert r.provenance["settings"]["var"] == 0.25
    base = phase_transition(3, 2, 8, [4, 8], seed=0, **kw)
    assert base.provenance["settings"]["var"] == 1.0
    assert not np.array_equal(r.reference.true_train, base.reference.true_train)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="var"):
            phase_transition(3, 2, 8, [4, 8], seed=0, var=bad, **kw)


# ------------------------------------------------------------------ two stages


def test_fine_sizes_follow_the_authors_bracket():
    coarse = list(range(10, 101, 10))
    ratio = [0, 0, 0, 0.05, 0.2, 0.6, 0.85, 0.95, 1, 1]  # first >= 0.1 at 50, >= 0.9 at 80
    assert sweep.fine_sizes(coarse, ratio) == [44, 48, 52, 56, 64, 68, 72, 76]  # 40..80 step 4
    assert sweep.fine_sizes(coarse, [0.0] * 10) == [19, 28, 37, 46, 55, 64, 73, 82, 91]  # whole grid
    assert sweep.fine_sizes(coarse, [0.95] * 10) == []  # memorizes from the first size
    assert sweep.fine_sizes([2, 4, 6, 8, 10], [0, 0.5, 1, 1, 1]) == [3, 5]  # step 1 on short brackets


def _fake_phase_transition(curve):
    """A stand-in for phase_transition whose ratio at size M is curve(M) and arrays name M."""

    def fake(d, K, N, model_sizes=None, scale="ci", seed=0, device=None, *, config, eval_config,
             progress, checkpoint, var):
        sizes = model_sizes or [N * k // 10 for k in range(1, 11)]
        T = 26
        rows = lambda sign: np.array([[sign * float(M)] * T for M in sizes])  # noqa: E731
        return PhaseTransitionResult(
            d=d, K=K, N=N, model_sizes=list(sizes), times=np.linspace(0.001, 0.999, T),
            memorization_ratio=np.array([curve(M) for M in sizes]),
            train_loss=rows(1), test_loss=rows(-1),
            reference=ReferenceLosses(true_train=np.full(T, 1.0), true_test=np.full(T, 2.0),
                                      mem_train=np.zeros(T), mem_test=np.full(T, 3.0),
                                      pmem_train=rows(1), pmem_test=rows(2)),
            learned_var=np.array([M / 1000 for M in sizes]),
            loss_history=LossHistory(steps=np.zeros(1, dtype=np.int64), loss=np.zeros((1, len(sizes)))),
            X=np.zeros((N, d)), true_means=np.zeros((K, d)),
            learned_means=[np.zeros((M, d)) for M in sizes], means_stats=[],
            provenance={"settings": {"train_seconds": 1.0, "eval_config": {"num_samples": 200, "loss_draws": 2}},
                        "wall_seconds": 2.0},
        )

    return fake


def test_two_stage_merge_recomputes_the_transition_on_the_merged_curve(monkeypatch):
    curve = lambda M: float(min(1.0, max(0.0, (M - 47) / 10)))  # noqa: E731
    monkeypatch.setattr(sweep, "phase_transition", _fake_phase_transition(curve))
    rec = run_config(Dataset(30, 3, 100), "ci", device="cpu")
    coarse = list(range(10, 101, 10))
    fine = [42, 44, 46, 48, 52, 54, 56, 58]  # bracket 40..60 (coarse start 50, end 60), step 2
    assert rec["stages"]["coarse"]["model_sizes"] == coarse and rec["stages"]["coarse"]["transition"] == [50, 60]
    assert rec["stages"]["fine"]["model_sizes"] == fine
    assert rec["model_sizes"] == sorted(coarse + fine)
    assert rec["stage"] == ["fine" if M in fine else "coarse" for M in rec["model_sizes"]]
    assert rec["memorization_ratio"] == [curve(M) for M in rec["model_sizes"]]
    # recomputed on the merged curve: the coarse grid alone would say 50, 60 and 52.86
    assert (rec["start"], rec["end"]) == (48, 56)
    assert rec["midpoint"] == pytest.approx(52.0) and rec["midpoint_over_N"] == pytest.approx(0.52)
    # every per-size array follows its size
    assert [r[0] for r in rec["reference"]["pmem_train"]] == rec["model_sizes"]
    assert [r[0] for r in rec["reference"]["pmem_test"]] == [2 * M for M in rec["model_sizes"]]
    assert [r[0] for r in rec["train_loss"]] == rec["model_sizes"]
    assert rec["learned_var"] == [M / 1000 for M in rec["model_sizes"]]
    assert len(rec["reference"]["true_train"]) == len(rec["times"]) == 26


def test_a_real_configuration_merges_both_stages():
    train = TrainConfig.preset("ci", **TRAIN)
    rec = run_config(Dataset(4, 2, 20), "ci", train, EVAL, "cpu")
    coarse = phase_transition(4, 2, 20, None, "ci", 0, "cpu", config=train, eval_config=EVAL,
                              progress=False)
    ratio = dict(zip(rec["model_sizes"], rec["memorization_ratio"]))
    assert [ratio[M] for M in coarse.model_sizes] == coarse.memorization_ratio.tolist()
    assert rec["stages"]["fine"]["model_sizes"] == sweep.fine_sizes(coarse.model_sizes, coarse.memorization_ratio)
    assert rec["model_sizes"] == sorted(coarse.model_sizes + rec["stages"]["fine"]["model_sizes"])
    assert (rec["start"], rec["end"]) == transition(rec["model_sizes"], rec["memorization_ratio"])
    assert rec["reference"]["true_train"] == coarse.reference.true_train.tolist()
    p = rec["provenance"]
    assert p["settings"] == rec["settings"] and p["settings"]["train_config"]["steps"] == 40
    assert {"git_commit", "device", "date", "wall_seconds"} <= p.keys()


# ------------------------------------------------------------------ Dask, files, resume


def test_dask_gives_the_records_of_a_serial_run(tmp_path, scheduler):
    records = tiny_sweep([C1, C2], tmp_path / "s.jsonl", scheduler)
    train = lambda c: TrainConfig.preset("ci", **TRAIN)  # noqa: E731  (seed: the config's)
    serial = [run_config(c, "ci", train(c), EVAL, "cpu") for c in (C1, C2)]
    keys = ("config", "settings", "model_sizes", "stage", "memorization_ratio", "start", "end",
            "midpoint", "midpoint_over_N", "times", "reference", "train_loss", "test_loss", "learned_var")
    for a, b in zip(records, serial):
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert load_sweep(tmp_path / "s.jsonl") == records


def test_resume_computes_only_the_missing_configurations(tmp_path, scheduler, calls):
    ran, _ = calls
    out = tmp_path / "s.jsonl"
    tiny_sweep([C1, C2], out, scheduler)
    assert sorted(ran, key=str) == sorted([C1, C2], key=str)
    before = lines(out)
    ran.clear()
    records = tiny_sweep([C1, C2, C3], out, scheduler)
    assert ran == [C3]
    assert lines(out)[:2] == before  # earlier records untouched (same dates and wall times)
    assert [Dataset(**r["config"]) for r in records] == [C1, C2, C3]
    ran.clear()
    tiny_sweep([C1, C2, C3], out, scheduler)
    assert ran == []


def test_a_failed_task_loses_nothing_and_is_retried(tmp_path, scheduler, calls):
    ran, fail = calls
    out = tmp_path / "s.jsonl"
    fail.add(C3)
    with pytest.warns(SweepWarning, match="d4_K2_N10_var2_seed1 failed"), \
            pytest.raises(SweepError, match="1 of 3 configurations failed"):
        tiny_sweep([C1, C2, C3], out, scheduler)
    assert {Dataset(**r["config"]) for r in load_sweep(out)} == {C1, C2}
    fail.clear()
    ran.clear()
    tiny_sweep([C1, C2, C3], out, scheduler)
    assert ran == [C3] and len(load_sweep(out)) == 3


def test_corrupted_and_foreign_records_are_reported_and_not_used(tmp_path, scheduler, calls):
    ran, _ = calls
    out = tmp_path / "s.jsonl"
    good = tiny_sweep([C1, C2], out, scheduler)
    foreign = dict(good[1], settings=dict(good[1]["settings"], train_config=dict(
        good[1]["settings"]["train_config"], steps=999)))
    other = dict(good[0], config=dict(good[0]["config"], seed=7), settings=dict(good[0]["settings"], seed=7))
    out.write_text("\n".join([json.dumps(good[0]), "{not json", json.dumps({"config": {"d": 3}}),
                              json.dumps(foreign), json.dumps(other)]) + "\n")
    with pytest.warns(SweepWarning) as seen:
        assert len(load_sweep(out)) == 3  # the corrupted lines are skipped
    assert len(seen) == 2
    ran.clear()
    with pytest.warns(SweepWarning) as seen:
        records = tiny_sweep([C1, C2], out, scheduler)
    text = "\n".join(str(w.message) for w in seen)
    assert "s.jsonl:2: not JSON" in text and "s.jsonl:3: missing fields" in text
    assert "d3_K2_N12_var0.5_seed0 was made with other settings" in text
    assert "train_config.steps: 999 stored, 40 requested" in text
    assert "1 record(s) of configurations outside this grid" in text
    assert ran == [C2]  # the foreign record was recomputed, C1 reused
    assert records[1]["settings"]["train_config"]["steps"] == 40
    # The rewritten file holds the valid records only; the dropped lines are kept aside.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = load_sweep(out)
    assert [Dataset(**r["config"]) for r in kept] == [C1, C2, Dataset(3, 2, 10, seed=7)]
    rejected = lines(tmp_path / "s.jsonl.rejected")
    assert rejected[0] == "{not json" and len(rejected) == 3 and '"steps":999' in rejected[2]


def test_records_are_written_as_each_configuration_finishes(tmp_path, scheduler, monkeypatch):
    out = tmp_path / "s.jsonl"
    sizes = []
    real = sweep._write_jsonl_atomic

    def spy(path, records):
        sizes.append(len(records))
        real(path, records)

    monkeypatch.setattr(sweep, "_write_jsonl_atomic", spy)
    tiny_sweep([C1, C2], out, scheduler)
    assert sizes == [1, 2]
    assert not list(tmp_path.glob("*.tmp"))


def test_each_worker_of_the_local_cluster_computes_on_its_own_gpu(scheduler, monkeypatch):
    """Worker i of the local cluster (named i) runs its tasks on cuda:i (CUDA faked here)."""
    from distributed import Client, get_worker

    pinned = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", pinned.append)
    monkeypatch.setattr(sweep._device, "resolve", torch.device)
    monkeypatch.setattr(sweep, "run_config", lambda c, s, t, e, device, **kw: (get_worker().name, device))
    with Client(scheduler) as client:
        futures = [client.submit(sweep._task, Dataset(3, 2, 10, seed=i), "ci", None, None, None,
                                 10, None, True, pure=False) for i in range(6)]
        results = client.gather(futures)
    assert results and all(device == f"cuda:{name}" for name, device in results)
    assert sorted(pinned) == sorted(name for name, _ in results)


def test_a_killed_command_resumes_without_redoing_or_losing_work(tmp_path):
    """SIGKILL the command (and its workers) once a record is written, then rerun it."""
    out = tmp_path / "ci.jsonl"
    cmd = [sys.executable, "-m", "gmmmem", "sweep", "--grid", "ci", "--workers", "1",
           "--device", "cpu", "--no-progress", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and out.read_text().strip()) and time.monotonic() < deadline:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and the workers it started
        proc.wait()
    first = lines(out)
    assert 1 <= len(first) < 3
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"3 configurations, {len(first)} already in" in rerun.stdout
    assert lines(out)[: len(first)] == first
    assert len(load_sweep(out)) == 3
    assert not (tmp_path / "ci.jsonl.checkpoints").exists() and not list(tmp_path.glob("*.tmp"))


# ------------------------------------------------------------------ arguments


def test_grids():
    assert GRID_NAMES == tuple(sweep.GRIDS)
    paper, seeds, default, ci = (sweep.GRIDS[g] for g in ("paper", "paper-seeds", "default", "ci"))
    assert len(paper.configs) == 64 and paper.scale == "default"
    assert {c.N for c in paper.configs} == {50, 100, 150, 200} and {c.var for c in paper.configs} == {1.0}
    assert {(c.d, c.K, c.N) for c in seeds.configs} <= {(c.d, c.K, c.N) for c in paper.configs}
    assert len(seeds.configs) == 16 and {c.seed for c in seeds.configs} == {1, 2}
    for field in ("d", "K", "N"):  # each value of the paper's grid appears twice per seed
        counts = collections.Counter(getattr(c, field) for c in seeds.configs)
        assert len(counts) == 4 and set(counts.values()) == {4}
    assert len(default.configs) == 14 and default.scale == "default"
    assert TrainConfig.preset("default", **default.train).steps == 30_000
    assert {c.var for c in default.configs} == {0.5, 1.0, 2.0} and {c.N for c in default.configs} == {50, 100}
    assert len(ci.configs) == 3 and max(c.N for c in ci.configs) <= 20


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:8786", "localhost:8786", "tls://[::1]:8786",
                                     "inproc://10.0.0.1/123/4", "tcp://node-3.cluster:40000"])
def test_good_scheduler_addresses(address):
    assert sweep.check_scheduler(address) == address


@pytest.mark.parametrize("address", ["tcp://127.0.0.1", "http://host:8786", "host:99999", "a b:1",
                                     "", "tcp://", "missing.json"])
def test_bad_scheduler_addresses(address):
    with pytest.raises(ValueError, match="scheduler"):
        sweep.check_scheduler(address)


@pytest.mark.parametrize(
    "kw,word",
    [(dict(grid="huge"), "unknown grid 'huge': choose one of paper, paper-seeds, default, ci"),
     (dict(grid=[]), "no configuration"), (dict(grid=[C1, C1]), "twice"),
     (dict(grid=[(3, 2, 10)]), "list of Dataset"),
     (dict(scheduler="tcp://nowhere"), "bad scheduler address"),
     (dict(scheduler="tcp://localhost:8786", n_workers=2), "local cluster"),
     (dict(n_workers=0), "n_workers"), (dict(scale="huge"), "scale"),
     (dict(train={"seed": 3}), "seed"), (dict(train={"steps": 0}), "steps"),
     (dict(device="gpu7"), "device"), (dict(out="."), "not a file")],
)
def test_bad_arguments(tmp_path, kw, word):
    args = dict(grid=[C1], out=tmp_path / "s.jsonl", device="cpu", progress=False) | kw
    with pytest.raises(ValueError, match=word):
        run_sweep(**args)
    assert not (tmp_path / "s.jsonl").exists()


@pytest.mark.parametrize("kw", [dict(N=1), dict(var=0.0), dict(var=-1.0), dict(d=0), dict(seed=-1),
                                dict(var="1")])
def test_bad_configurations(kw):
    with pytest.raises(ValueError):
        Dataset(**dict(d=3, K=2, N=10) | kw)


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "CONNECT_TIMEOUT", 1)
    with pytest.raises(ConnectionError, match="could not reach the Dask scheduler tcp://127.0.0.1:9"):
        run_sweep([C1], tmp_path / "s.jsonl", scheduler="tcp://127.0.0.1:9", **TINY)


def test_command_line(tmp_path, capsys, scheduler, monkeypatch):
    out = tmp_path / "s.jsonl"
    # The real ci grid runs through the command line in the kill test; a smaller one here.
    monkeypatch.setitem(sweep.GRIDS, "ci", sweep.Grid((C1, C2), "ci", train=TRAIN, eval_config=EVAL))
    with pytest.raises(SystemExit):
        main(["sweep", "--grid", "huge", "--out", str(out)])
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", "--grid", "ci", "--scheduler", "not an address", "--out", str(out)])
    assert "bad scheduler address 'not an address'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", "--grid", "ci", "--workers", "0", "--out", str(out)])
    assert "n_workers (--workers) must be an integer >= 1" in capsys.readouterr().err
    main(["sweep", "--grid", "ci", "--scheduler", scheduler, "--device", "cpu", "--no-progress",
          "--out", str(out)])
    printed = capsys.readouterr().out
    assert "2 configurations, 0 already in" in printed and "d=3 K=2 N=12 var=0.5 seed=0: start" in printed
    assert [r["settings"]["train_config"]["steps"] for r in load_sweep(out)] == [40] * 2


def test_table_matches_the_records_looked_up_by_size():
    """SweepTable against a lookup by model size: the coarse sizes are round(k N / 10)."""
    recs = load_sweep(ROOT / "data" / "sweeps" / "paper_grid.jsonl")[:6]
    a = sweep.SweepTable.from_records(recs)
    assert len(a) == 6 and a.sizes.shape == (6, 10) and a.pmem.shape == (6, 10, 26) and a.gen.shape == (6, 26)
    for i, r in enumerate(recs):
        N = r["config"]["N"]
        assert (a.d[i], a.K[i], a.N[i]) == (r["config"]["d"], r["config"]["K"], N)
        assert a.row(*a.configs[i]) == i and a.records[i] is r
        assert a.measured[i] == pytest.approx(r["midpoint"] / N)
        for k in range(1, 11):
            j = r["model_sizes"].index(round(k * N / 10))
            assert a.sizes[i, k - 1] == pytest.approx(round(k * N / 10) / N)
            assert np.array_equal(a.pmem[i, k - 1], r["reference"]["pmem_train"][j])
        assert np.array_equal(a.gen[i], r["reference"]["true_train"])
        assert np.allclose(a.interval[i], r["midpoint_interval_over_N"])
        lo, hi = r["midpoint_interval_over_N"]
        assert a.standard_error[i] == pytest.approx((hi - lo) / (2 * 1.959963984540054))
    with pytest.raises(KeyError):
        a.row(1, 2, 3)
    # A record made before intervals were stored gets the same interval, recomputed.
    old = [{k: v for k, v in r.items() if k not in ("midpoint_interval_over_N", "midpoint_status")}
           for r in recs]
    b = sweep.SweepTable.from_records(old)
    assert np.allclose(b.interval, a.interval) and (b.status == "measured").all()
    bad = [dict(recs[0]), dict(recs[1], times=recs[1]["times"][:-1])]
    with pytest.raises(ValueError, match="time grid"):
        sweep.SweepTable.from_records(bad)


def test_table_training_seeds_are_the_recorded_ones():
    """train_seed: each row's recorded training seed (the sweep trains with the data's seed)."""
    recs = load_sweep(ROOT / "data" / "sweeps" / "paper_seeds.jsonl")
    a = sweep.SweepTable.from_records(recs)
    assert a.train_seed.dtype.kind == "i" and a.train_seed.shape == (len(recs),)
    assert a.train_seed.tolist() == [r["settings"]["train_config"]["seed"] for r in recs] == a.seed.tolist()
    assert set(a.seed.tolist()) == {1, 2}
    assert a.rows([2, 0]).train_seed.tolist() == [a.train_seed[2], a.train_seed[0]]
