"""The sweep's batched path (``run_sweep(batch=...)``, ``--batch-configs``): many
configurations trained as one program in this process, with the records of the Dask path."""

import functools
import json

import numpy as np
import pytest
import torch

from gmmmem import experiments, sweep
from gmmmem.__main__ import main
from gmmmem.experiments import EvalConfig
from gmmmem.sweep import Dataset, SweepError, SweepWarning, load_sweep, run_config, run_configs, run_sweep
from gmmmem.train import TrainConfig, train_gmm
from gmmmem.train_many import train_many

F64 = torch.float64
TRAIN = {"steps": 40, "peak_lr": 3e-2, "final_lr": 3e-5, "num_draws": 2}
EVAL = EvalConfig(num_samples=10, loss_draws=1)
TINY = dict(scale="ci", train=TRAIN, eval_config=EVAL, device="cpu", progress=False)
C1, C2, C3 = Dataset(3, 2, 10), Dataset(3, 2, 12, var=0.5), Dataset(4, 2, 10, var=2.0, seed=1)


def test_a_batch_gives_the_records_of_one_configuration_at_a_time(monkeypatch):
    """In float64 (float32's rounding differences grow over training, as between devices) the
    batch's models are those trained alone, so the measured curves and both stages agree."""
    monkeypatch.setattr(sweep, "train_many", functools.partial(train_many, dtype=F64))
    monkeypatch.setattr(experiments, "train_gmm", functools.partial(train_gmm, dtype=F64))
    train = TrainConfig.preset("ci", **TRAIN)
    batched = run_configs([C2, C3], "ci", train, EVAL, "cpu")
    for c, b in zip([C2, C3], batched):
        a = run_config(c, "ci", train, EVAL, "cpu")
        assert a.keys() == b.keys() and a["stages"].keys() == b["stages"].keys()
        for key in ("config", "settings", "model_sizes", "stage", "memorization_ratio", "start",
                    "end", "midpoint", "midpoint_interval", "midpoint_status", "times"):
            assert a[key] == b[key], key
        for key in ("train_loss", "test_loss", "learned_var"):
            assert np.allclose(a[key], b[key], rtol=1e-6, atol=0), key
        assert a["reference"] == b["reference"]  # data, start and evaluation noise: the same
        for stage in a["stages"]:
            assert a["stages"][stage]["model_sizes"] == b["stages"][stage]["model_sizes"]
    assert "fine" in batched[0]["stages"]  # the fine stage trains the configurations that need it


def test_batched_sweep_records_resumes_and_cleans_up(tmp_path, monkeypatch):
    out = tmp_path / "s.jsonl"
    batches = []
    real = sweep.run_configs

    def counted(configs, *args, **kwargs):
        batches.append(list(configs))
        return real(configs, *args, **kwargs)

    monkeypatch.setattr(sweep, "run_configs", counted)
    records = run_sweep([C1, C2, C3], out, batch=2, **TINY)
    assert batches == [[C1, C2], [C3]]
    assert [Dataset(**r["config"]) for r in records] == [C1, C2, C3] == \
        [Dataset(**r["config"]) for r in load_sweep(out)]
    assert not (tmp_path / "s.jsonl.checkpoints").exists()
    batches.clear()
    assert run_sweep([C1, C2, C3], out, batch=2, **TINY) == records and batches == []


def test_an_interrupted_batch_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """Interrupt the training of the second batch; the rerun keeps the first batch's records
    and resumes the second from its checkpoint, ending as an uninterrupted sweep."""
    monkeypatch.setattr(sweep, "train_many", functools.partial(train_many, checkpoint_every=10))
    whole = run_sweep([C1, C3], tmp_path / "whole.jsonl", batch=1, **TINY)
    out = tmp_path / "s.jsonl"
    real_lr, real_run, armed = TrainConfig.lr, sweep.run_configs, []

    def arm(configs, *args, **kwargs):  # the batch of C3 is interrupted
        armed.append(C3 in configs)
        return real_run(configs, *args, **kwargs)

    def interrupt(self, step):
        if armed[-1] and step == 25:
            raise KeyboardInterrupt
        return real_lr(self, step)

    monkeypatch.setattr(sweep, "run_configs", arm)
    monkeypatch.setattr(TrainConfig, "lr", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_sweep([C1, C3], out, batch=1, **TINY)
    monkeypatch.setattr(TrainConfig, "lr", real_lr)
    assert [Dataset(**r["config"]) for r in load_sweep(out)] == [C1]
    saved = list((tmp_path / "s.jsonl.checkpoints").glob("batch-*.pt"))
    assert len(saved) == 1 and torch.load(saved[0], weights_only=False)["step"] == 20
    resumed = run_sweep([C1, C3], out, batch=1, **TINY)
    keys = ("model_sizes", "memorization_ratio", "train_loss", "learned_var", "reference")
    assert [{k: r[k] for k in keys} for r in resumed] == [{k: r[k] for k in keys} for r in whole]
    assert not (tmp_path / "s.jsonl.checkpoints").exists()


def test_a_failed_batch_loses_nothing_else(tmp_path, monkeypatch):
    out = tmp_path / "s.jsonl"
    real = sweep.run_configs

    def failing(configs, *args, **kwargs):
        if C3 in configs:
            raise RuntimeError("out of memory")
        return real(configs, *args, **kwargs)

    monkeypatch.setattr(sweep, "run_configs", failing)
    with pytest.warns(SweepWarning, match="the batch of d4_K2_N10_var2_seed1 failed"), \
            pytest.raises(SweepError, match="1 of 2 configurations failed"):
        run_sweep([C1, C3], out, batch=1, **TINY)
    assert [Dataset(**r["config"]) for r in load_sweep(out)] == [C1]


@pytest.mark.parametrize("kw,word", [
    (dict(batch=0), "batch"), (dict(batch=2, n_workers=2), "cannot be used with"),
    (dict(batch=2, scheduler="tcp://localhost:8786"), "cannot be used with")])
def test_bad_batch_arguments(tmp_path, kw, word):
    with pytest.raises(ValueError, match=word):
        run_sweep([C1], tmp_path / "s.jsonl", **TINY | kw)
    assert not (tmp_path / "s.jsonl").exists()


def test_command_line_batches(tmp_path, capsys, monkeypatch):
    out = tmp_path / "s.jsonl"
    monkeypatch.setitem(sweep.GRIDS, "ci", sweep.Grid((C1,), "ci", train=TRAIN, eval_config=EVAL))
    main(["sweep", "--grid", "ci", "--batch-configs", "2", "--device", "cpu", "--no-progress",
          "--out", str(out)])
    printed = capsys.readouterr().out
    assert "1 batch(es) of up to 2 configurations" in printed and "1 records in" in printed
    assert [r["settings"]["train_config"]["steps"] for r in load_sweep(out)] == [40]
    assert json.loads(out.read_text().splitlines()[0])["provenance"]["command"] is not None
