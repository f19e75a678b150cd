"""Where a result came from: settings, code version, machine and time.

Every file in ``data/`` carries such a record, so a number in the book can be traced to
the command, code and device that produced it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .config import COMMAND_VARIABLE


def git_commit() -> str:
    """The repository's HEAD commit, suffixed ``-dirty`` when gmmmem/ has uncommitted edits.

    ``GMMMEM_GIT_COMMIT`` names it instead, for a copy of the tree made without ``.git``.
    """
    if os.environ.get("GMMMEM_GIT_COMMIT"):
        return os.environ["GMMMEM_GIT_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "gmmmem"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def device_name(device: torch.device) -> str:
    """A readable name of the device: the GPU model, or the CPU and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_model()}, {torch.get_num_threads()} threads"


def _cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def record(settings: dict[str, Any], device: torch.device, seconds: float) -> dict[str, Any]:
    """The provenance record of a run with these ``settings`` (JSON-serializable); ``command``
    is the command line that made it (None for a run made from Python)."""
    return {
        "command": os.environ.get(COMMAND_VARIABLE),
        "settings": settings,
        "gmmmem_version": __version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "device": str(device),
        "device_name": device_name(device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(seconds, 2),
    }


def upgraded(settings: dict[str, Any]) -> dict[str, Any]:
    """Recorded settings in today's form: fields added since a record was made get the value
    they had then (``var`` of a phase-transition run 1, Adam's ``adam_beta2`` 0.999; a template
    continuation's one learning rate and length, its plan ``lr1e-3``)."""
    out = dict(settings)
    if out.get("experiment") == "template_continuation" and "plan" not in out:
        lr, steps, every = out.pop("lr"), out.pop("steps"), out.pop("every")
        out = {**out, "plan": "lr1e-3", "models": [[*m, lr, steps] for m in out["models"]],
               "measures": steps // every}
    if out.get("experiment") == "phase_transition" and "var" not in out:
        out["var"] = 1.0
    train = out.get("train_config")
    if isinstance(train, dict) and "adam_beta2" not in train:
        out["train_config"] = {**train, "adam_beta2": 0.999}
    return out


def run_file_parser(doc: str) -> argparse.ArgumentParser:
    """The command line of a run file of ``runs/`` whose module docstring is ``doc``: ``--out``,
    the JSON file it writes."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", required=True, help="output JSON file")
    return parser


def start_run_file(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse a run file's arguments ``argv`` (None: the command line), record its command line
    as the command of what it writes (:func:`record`) and run torch on one thread."""
    args = parser.parse_args(argv)
    os.environ[COMMAND_VARIABLE] = "python " + shlex.join([sys.argv[0], *(argv or sys.argv[1:])])
    torch.set_num_threads(1)
    return args
