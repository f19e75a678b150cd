"""The trainer's speed files read back typed (gmmmem.benchmark)."""

import json

import pytest
import torch

from gmmmem import benchmark, config

BENCH = config.data_dir() / "benchmarks"


def test_the_committed_cpu_benchmark_loads_typed():
    b = benchmark.load_train_benchmark(BENCH / "train_cpu-2-cores.json")
    assert b.torch_threads == 1 and len(b.load_average_before) == 3
    assert all(isinstance(v, float) for v in b.figures.values())
    assert b.figure("step_ms_paper_padded") > b.figure("step_ms_paper_packed") > 0
    assert 0 < b.figure("matmul_fraction_default") < 1 and b.device_name.startswith("AMD EPYC")
    with pytest.raises(ValueError, match="no figure 'step_ms_other'.*step_ms_paper_packed"):
        b.figure("step_ms_other")


def test_a_benchmark_without_threads_or_load_reads_none():
    g = benchmark.load_train_benchmark(BENCH / "train_nvidia-h200.json")
    assert g.torch_threads is None and g.load_average_before is None and "H200" in g.device_name
    assert g.figure("step_seconds_loop_10_sizes") > g.figure("step_seconds_batched_10_sizes")


def test_wrong_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="no benchmark file"):
        benchmark.load_train_benchmark(tmp_path / "absent.json")
    with pytest.raises(ValueError, match="not a train benchmark file: malformed .*'train_templates', not 'train'"):
        benchmark.load_train_benchmark(BENCH / "template_train_cpu-2-cores.json")
    with pytest.raises(ValueError, match="not a train benchmark file: malformed"):
        benchmark.load_train_benchmark(config.data_dir() / "weights" / "default.json")
    payload = json.loads((BENCH / "train_cpu-2-cores.json").read_text())
    payload["figures"]["step_ms_paper_packed"] = "fast"
    (tmp_path / "b.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="figures that are not numbers: \\['step_ms_paper_packed'\\]"):
        benchmark.load_train_benchmark(tmp_path / "b.json")


def test_written_benchmarks_read_back(tmp_path):
    settings = {"benchmark": "train", "torch_threads": 2, "load_average_before": [0.5, 0.25, 0.125]}
    benchmark.write_train_benchmark(tmp_path / "b.json", {"step_ms": 1.5}, settings, torch.device("cpu"), 0.1)
    b = benchmark.load_train_benchmark(tmp_path / "b.json")
    assert b.figures == {"step_ms": 1.5} and b.torch_threads == 2 and b.load_average_before == (0.5, 0.25, 0.125)
    with pytest.raises(ValueError, match="name the benchmark 'train'"):
        benchmark.write_train_benchmark(tmp_path / "c.json", {}, {"benchmark": "x"}, torch.device("cpu"), 0.1)
