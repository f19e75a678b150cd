"""Rewrite the list of committed results and their commands that ends data/README.md.

    python runs/data_readme.py --out data/README.md

The list is made from the results themselves: every JSON file under data/ tracked by git, with
the command its provenance records (``provenance["command"]``) and, where that command was
added after the run, the record's note on how. Everything above the list's heading is kept.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from gmmmem import config

HEADING = "## Every file and its command\n"
INTRO = (
    "Generated from the files' provenance by `python runs/data_readme.py --out data/README.md`"
    " (`tests/test_data_readme.py` checks it is up to date, that each command still parses and"
    " that it gives the settings the file records). Commands run from the repository root;"
    " a command marked *added later* was reconstructed after the run, as its record's"
    " `command_added` says.\n"
)


def _records(path: Path) -> list[dict]:
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return [json.loads(text)]


def listing(data: Path) -> str:
    """The heading, its introduction and, by folder, every committed result with its command."""
    names = subprocess.run(["git", "ls-files", "--", "."], cwd=data, capture_output=True,
                           text=True, check=True).stdout.split()
    names = sorted(n for n in names if n.endswith((".json", ".jsonl")))
    lines, folder = [HEADING, "\n", INTRO], None
    for name in names:
        top = name.split("/")[0]
        if top != folder:
            folder = top
            lines += ["\n", f"### `{top}/`\n", "\n"]
        records = _records(data / name)
        commands: dict[str, list[dict]] = {}
        for record in records:
            commands.setdefault(record["provenance"].get("command") or "(none recorded)", []).append(record)
        lines.append(f"- `{name}`" + (f" ({len(records)} records)" if len(records) > 1 else "") + "\n")
        for command, made in commands.items():
            later = sum("command_added" in r["provenance"] for r in made)
            note = ""
            if later:
                note = " *added later*" + (f" ({later} of these records)" if later < len(made) else "")
            which = f"{len(made)} records: " if len(commands) > 1 else ""
            lines.append(f"  - {which}`{command}`{note}\n")
    return "".join(lines)


def rewritten(text: str, data: Path) -> str:
    """``text`` (a README) with its list, from :data:`HEADING` on, made anew."""
    head = text[:text.index(HEADING)] if HEADING in text else text.rstrip("\n") + "\n\n"
    return head + listing(data)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the README to rewrite (data/README.md)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    out.write_text(rewritten(out.read_text(), config.data_dir()))


if __name__ == "__main__":
    main()
