"""The device gmmmem computes on: CUDA when present, else the CPU.

``GMMMEM_DEVICE`` (for example ``cpu``, ``cuda`` or ``cuda:1``) overrides the choice.
Nothing else in gmmmem names a device.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from typing import Iterator

import torch


def default() -> torch.device:
    """``GMMMEM_DEVICE`` if set, else ``cuda`` when available, else ``cpu``."""
    name = os.environ.get("GMMMEM_DEVICE", "").strip()
    if name and name != "auto":
        try:
            return resolve(name)
        except ValueError as err:
            raise ValueError(f"GMMMEM_DEVICE: {err}") from None
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve(device: str | torch.device | None) -> torch.device:
    """Turn ``None`` / ``"auto"`` / a name into a usable device, with a clear error."""
    if device is None or device == "auto":
        return default()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}: expected auto, cpu, cuda or cuda:INDEX")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(dev)!r} requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(dev)!r} requested but only {torch.cuda.device_count()} "
                         "CUDA device(s) are present")
    return dev


def tune_cpu_allocator() -> None:
    """Keep freed memory in the process (glibc ``mallopt``), once per process.

    By default glibc hands every freed block of more than a few MiB back to the system, so
    the next tensor of that size pays a page fault per 4 KiB page: on a 2-core machine this
    made training steps about 1.5x slower. Setting a fixed mmap threshold of 32 MiB and a
    large trim threshold keeps such blocks for reuse. A no-op where glibc is absent.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return
    _allocator_tuned = True
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)
    libc.mallopt(M_TRIM_THRESHOLD, 2**30)


_allocator_tuned = False


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block with one intra-op CPU thread, restoring the previous count afterwards.

    For work made of many small tensor operations a second thread costs more in wake-ups than
    it saves (``benchmarks/train_templates.py``: one step of chapter 5's small template model,
    1.2 ms with one thread and 2.1 ms with two on an idle 2-core machine).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def for_training(device: str | torch.device | None) -> torch.device:
    """:func:`resolve`, with :func:`tune_cpu_allocator` where it is the CPU (every trainer)."""
    dev = resolve(device)
    if dev.type == "cpu":
        tune_cpu_allocator()
    return dev
