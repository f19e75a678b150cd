"""data/README.md names every committed result, so a reader can find the command behind it."""

import itertools
import json
import re
import shlex
import subprocess

from gmmmem import config

DATA = config.data_dir()
NAME = re.compile(r"[\w./{},=-]+\.jsonl?")


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


def test_every_committed_result_is_named_in_the_data_readme():
    tracked = subprocess.run(["git", "ls-files", "--", "."], cwd=DATA, capture_output=True, text=True,
                             check=True).stdout.split()
    files = [f for f in tracked if f.endswith((".json", ".jsonl"))]
    assert files, "no committed results found"
    patterns = _patterns((DATA / "README.md").read_text())
    missing = [f for f in files if not any(p.match(f) for p in patterns)]
    assert not missing, f"data/README.md does not name {missing}"


def test_the_name_patterns_mean_what_they_say():
    (p,) = _patterns("`runs/lr{L}_seed{0,1}.json`")[:1]
    assert p.match("runs/lr0.01_seed0.json") and p.match("data/runs/lr3_seed0.json")
    assert not p.match("runs/lr0.01_seed2.json") and not p.match("other/lr1_seed0.json")


#: Committed files whose records were computed into another file, as data/README.md says.
COPIES = {"sweeps/paper_grid_cuda.jsonl": "sweeps/paper_grid.jsonl"}


def _recorded_commands():
    """(file, command) for every committed result whose provenance records its command."""
    tracked = subprocess.run(["git", "ls-files", "--", "."], cwd=DATA, capture_output=True, text=True,
                             check=True).stdout.split()
    for name in tracked:
        if name.endswith(".jsonl"):
            records = [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]
        elif name.endswith(".json"):
            records = [json.loads((DATA / name).read_text())]
        else:
            continue
        for command in {r.get("provenance", {}).get("command") for r in records if isinstance(r, dict)} - {None}:
            yield name, command


def test_every_recorded_command_still_parses_and_writes_its_own_file():
    from gmmmem.__main__ import build_parser

    seen = list(_recorded_commands())
    assert len(seen) >= 10, "the results made since commands are recorded"
    for name, command in seen:
        words = shlex.split(command)
        assert words[:3] == ["python", "-m", "gmmmem"], f"{name}: {command}"
        args = build_parser().parse_args(words[3:])  # the command still runs as recorded
        out = str(args.out).removeprefix("data/")
        assert out == COPIES.get(name, name), f"{name} records a command writing {args.out}"
