"""Every committed result records the command that remakes it, the command still parses and
gives the settings the result records, and data/README.md lists every file with its command."""

import functools
import importlib.util
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gmmmem import config
from gmmmem.provenance import upgraded

DATA = config.data_dir()
ROOT = DATA.parent
NAME = re.compile(r"[\w./{},=-]+\.jsonl?")

#: Committed files whose records were computed into another file, as data/README.md says.
COPIES = {"sweeps/paper_grid_cuda.jsonl": "sweeps/paper_grid.jsonl"}

#: Settings a run measures rather than is given (not derivable from its command).
MEASURED = {"train_seconds"}


def _expand(pattern: str) -> list[str]:
    """Brace alternatives expanded (``seed{0,1}``); a brace with one capital (``{L}``) is any text."""
    parts = re.split(r"(\{[^{}]*\})", pattern)
    options = []
    for part in parts:
        if part.startswith("{") and "," in part:
            options.append([re.escape(p) for p in part[1:-1].split(",")])
        elif re.fullmatch(r"\{[A-Z]\}", part):
            options.append([r"[^/]+"])
        else:
            options.append([re.escape(part)])
    return ["".join(choice) for choice in itertools.product(*options)]


def _patterns(text: str) -> list[re.Pattern]:
    names = [name.removeprefix("data/") for name in NAME.findall(text)]  # paths from the repository root
    return [re.compile(r"(^|.*/)" + p + "$") for name in names for p in _expand(name)]


def _tracked() -> list[str]:
    """The committed results, relative to data/."""
    tracked = subprocess.run(["git", "ls-files", "--", "."], cwd=DATA, capture_output=True, text=True,
                             check=True).stdout.split()
    return [f for f in tracked if f.endswith((".json", ".jsonl"))]


def _records(name: str) -> list[dict]:
    text = (DATA / name).read_text()
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return [json.loads(text)]


@functools.cache
def _commands() -> dict[str, list[tuple[str, list[dict]]]]:
    """By committed file: each distinct recorded command with the records it made."""
    out = {}
    for name in _tracked():
        by_command: dict[str, list[dict]] = {}
        for record in _records(name):
            by_command.setdefault(record["provenance"].get("command"), []).append(record)
        out[name] = list(by_command.items())
    return out


def test_every_committed_result_is_named_in_the_data_readme():
    files = _tracked()
    assert files, "no committed results found"
    patterns = _patterns((DATA / "README.md").read_text())
    missing = [f for f in files if not any(p.match(f) for p in patterns)]
    assert not missing, f"data/README.md does not name {missing}"


def test_the_name_patterns_mean_what_they_say():
    (p,) = _patterns("`runs/lr{L}_seed{0,1}.json`")[:1]
    assert p.match("runs/lr0.01_seed0.json") and p.match("data/runs/lr3_seed0.json")
    assert not p.match("runs/lr0.01_seed2.json") and not p.match("other/lr1_seed0.json")


def test_every_committed_result_records_its_command():
    missing = [name for name, commands in _commands().items() for command, _ in commands if not command]
    assert not missing, f"records without provenance['command']: {missing}"


def _out(words: list[str]) -> str:
    """The ``--out`` of a command, relative to data/."""
    assert words.count("--out") == 1, f"no single --out in {shlex.join(words)}"
    return words[words.index("--out") + 1].removeprefix("data/")


def _script(path: str):
    """The run file ``path`` (relative to the repository root) as a module."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _comparable(settings: dict) -> dict:
    """Settings in today's form, without what a run measures."""
    return {k: v for k, v in upgraded(settings).items() if k not in MEASURED}


def _check(name: str, command: str, records: list[dict]) -> None:
    """``command`` parses today, writes ``name`` and gives the settings of its ``records``."""
    from gmmmem.__main__ import build_parser, recorded_settings

    words = shlex.split(command)
    out = _out(words)
    recorded = [_comparable(r["provenance"]["settings"]) for r in records]
    if words[:3] == ["python", "-m", "gmmmem"]:
        args = build_parser().parse_args(words[3:])
        if args.command == "predict-check":  # a folder: predictions.json and measured.jsonl
            assert Path(name).parent.as_posix() == out, f"{name}: {command}"
        else:
            assert out == COPIES.get(name, name), f"{name} records a command writing {out}"
        if args.command == "fit-weights":
            return  # trains nothing: test_the_weights_are_remade_by_their_command reruns it
        expected = [_comparable(s) for s in recorded_settings(args)]
    else:
        assert words[0] == "python" and words[1].startswith(("runs/", "benchmarks/")), command
        assert (ROOT / words[1]).is_file(), f"{name}: no {words[1]}"
        assert out == name, f"{name} records a command writing {out}"
        if not words[1].startswith("runs/"):
            return  # a benchmark: its settings are what it measured
        module = _script(words[1])
        expected = [_comparable(module.settings(module.build_parser().parse_args(words[2:])))]
    for settings in recorded:
        assert settings in expected, (
            f"{name}: the settings recorded differ from those `{command}` gives today: "
            + "; ".join(f"{k}: {settings.get(k)!r} recorded, {e.get(k)!r} today"
                        for e in expected[:1] for k in sorted(settings.keys() | e.keys())
                        if settings.get(k) != e.get(k)))
    if len(expected) == 1 and name not in COPIES:
        assert len(recorded) == 1


@pytest.mark.parametrize("name", _tracked())
def test_the_recorded_command_gives_the_recorded_settings(name):
    """A command that no longer parses, writes another file or, run today, would train with
    other settings (a preset changed and the command does not pin it) fails here."""
    for command, records in _commands()[name]:
        assert command, f"{name}: a record without a command"
        _check(name, command, records)


def test_the_check_sees_a_command_that_trains_otherwise():
    from gmmmem.__main__ import build_parser, recorded_settings

    name = "phase_transition/recipe/long_d30_K4_N100_seed0.json"
    (command, records), = _commands()[name]
    _check(name, command, records)
    with pytest.raises(AssertionError, match="adam_beta2|train_config"):
        _check(name, command.replace(" --beta2 0.999", ""), records)  # today's preset: beta2 0.9
    with pytest.raises(AssertionError, match="writing"):
        _check(name, command.replace("seed0.json", "seed1.json"), records)
    args = build_parser().parse_args(shlex.split(command)[3:] + ["--warmup", "0.5"])
    assert recorded_settings(args)[0]["train_config"]["warmup_frac"] == 0.5


def test_the_weights_are_remade_by_their_command(tmp_path):
    """``python -m gmmmem fit-weights`` as recorded (to another file) writes the same weights."""
    from gmmmem.__main__ import main

    committed = _records("weights/default.json")[0]
    words = shlex.split(committed["provenance"]["command"])
    out = tmp_path / "weights.json"
    words[words.index("--out") + 1] = str(out)
    assert main(words[3:]) == 0
    remade = json.loads(out.read_text())
    prov, made = committed.pop("provenance"), remade.pop("provenance")
    assert remade.keys() == committed.keys()
    # the same numbers up to rounding (the fit's arithmetic may be regrouped between versions)
    new, old = _leaves(remade), _leaves(committed)
    assert new.keys() == old.keys()
    numbers = [k for k, v in old.items() if isinstance(v, float)]
    assert {k: v for k, v in new.items() if k not in numbers} == {k: v for k, v in old.items() if k not in numbers}
    assert [new[k] for k in numbers] == pytest.approx([old[k] for k in numbers], rel=1e-9, abs=1e-12)
    assert made["settings"] == prov["settings"]


def _leaves(x, prefix=""):
    """Nested dicts and lists as one flat dict of leaves, for pytest.approx."""
    if isinstance(x, dict):
        return {k: v for key, val in x.items() for k, v in _leaves(val, f"{prefix}{key}/").items()}
    if isinstance(x, list):
        return {k: v for i, val in enumerate(x) for k, v in _leaves(val, f"{prefix}{i}/").items()}
    return {prefix: x}


def test_the_readme_lists_every_file_with_its_command():
    readme = _script("runs/data_readme.py")
    text = (DATA / "README.md").read_text()
    assert readme.HEADING in text
    assert text == readme.rewritten(text, DATA), (
        "data/README.md's list of files and commands is out of date: "
        "python runs/data_readme.py --out data/README.md")
    listing = text[text.index(readme.HEADING):]
    for name, commands in _commands().items():
        assert f"`{name}`" in listing
        assert all(f"`{command}`" in listing for command, _ in commands)


def test_a_run_file_records_its_command_line_and_runs_on_one_thread(monkeypatch):
    from gmmmem import provenance
    from gmmmem.config import COMMAND_VARIABLE

    monkeypatch.setattr(sys, "argv", ["runs/example.py", "--out", "data/x y.json"])
    monkeypatch.delenv(COMMAND_VARIABLE, raising=False)
    threads = torch.get_num_threads()
    try:
        args = provenance.start_run_file(provenance.run_file_parser("An example.\n\nMore."), None)
        assert args.out == "data/x y.json"
        assert os.environ[COMMAND_VARIABLE] == "python runs/example.py --out 'data/x y.json'"
        assert torch.get_num_threads() == 1
        # arguments given in Python are what it records
        provenance.start_run_file(provenance.run_file_parser("An example."), ["--out", "a.json"])
        assert os.environ[COMMAND_VARIABLE] == "python runs/example.py --out a.json"
        with pytest.raises(SystemExit):
            provenance.start_run_file(provenance.run_file_parser("An example."), [])
    finally:
        torch.set_num_threads(threads)
        os.environ.pop(COMMAND_VARIABLE, None)
