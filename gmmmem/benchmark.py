"""The trainer's speed files (``data/benchmarks/train_*.json``, ``benchmarks/train.py``): named
timing figures, the device they were measured on, the settings and provenance.

``benchmarks/train.py`` writes them with :func:`write_train_benchmark`; :func:`load_train_benchmark`
reads them back.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import files, provenance

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TrainBenchmark:
    """One speed file: ``figures`` by name (ms or seconds per step, GFLOP/s, fractions,
    extrapolated seconds; which ones depends on what was measured), the ``device_name``, the
    torch threads and the load average (1, 5, 15 minutes) at the start where recorded (None
    otherwise), the settings and the provenance."""

    figures: dict[str, float]
    device_name: str
    torch_threads: int | None
    load_average_before: tuple[float, float, float] | None
    settings: dict[str, Any]
    provenance: dict[str, Any]

    def figure(self, name: str) -> float:
        """The figure ``name``; ValueError naming those measured if there is none."""
        if name not in self.figures:
            raise ValueError(f"no figure {name!r} in this benchmark; it has {sorted(self.figures)}")
        return self.figures[name]


def write_train_benchmark(path: str | Path, figures: dict[str, float], settings: dict[str, Any],
                          device: "torch.device", seconds: float) -> dict[str, Any]:
    """Write ``figures`` with the provenance of ``settings`` (``benchmark: "train"``) on
    ``device`` after ``seconds``; returns what was written."""
    if settings.get("benchmark") != "train":
        raise ValueError(f"settings must name the benchmark 'train', got {settings.get('benchmark')!r}")
    payload = {"figures": figures, "provenance": provenance.record(settings, device, seconds)}
    files.write_json(path, payload)
    return payload


def load_train_benchmark(path: str | Path) -> TrainBenchmark:
    """The speed file ``path`` written by :func:`write_train_benchmark`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no benchmark file at {path}")
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a train benchmark file: not JSON ({err})") from None
    try:
        prov = payload["provenance"]
        settings = prov["settings"]
        if settings.get("benchmark") != "train":
            raise ValueError(f"its benchmark is {settings.get('benchmark')!r}, not 'train'")
        figures = payload["figures"]
        bad = [k for k, v in figures.items() if isinstance(v, bool) or not isinstance(v, numbers.Real)]
        if bad:
            raise ValueError(f"figures that are not numbers: {bad}")
        load = settings.get("load_average_before")
        threads = settings.get("torch_threads")
        return TrainBenchmark(
            figures={k: float(v) for k, v in figures.items()}, device_name=str(prov["device_name"]),
            torch_threads=None if threads is None else int(threads),
            load_average_before=None if load is None else tuple(float(x) for x in load),
            settings=settings, provenance=prov)
    except (TypeError, KeyError, ValueError, AttributeError) as err:
        raise ValueError(f"{path} is not a train benchmark file: malformed "
                         f"({type(err).__name__}: {err})") from None
