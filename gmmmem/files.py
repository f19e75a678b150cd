"""Files that must not be lost: output paths checked before any work, durable atomic writes,
checkpoints that survive damage, and exclusive locks on files written by one run at a time."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

#: Permissions of every file gmmmem writes (read for all, write for the owner).
FILE_MODE = 0o644


class CheckpointWarning(UserWarning):
    """A checkpoint could not be read; it was moved aside and the run starts from scratch."""


class RunError(RuntimeError):
    """A run stopped for a reason its user can act on (reported in one line by the CLI)."""


class LockedError(RunError):
    """Another process is writing the same output file."""


def check_output(path: str | Path, name: str = "out", *, checkpoint: str | Path | None = None) -> Path:
    """``path`` if a file can be written there: not a folder, not the checkpoint, in a folder
    that exists and is writable or can be made in one. Raises ``ValueError`` naming ``name``."""
    text = str(path)
    path = Path(path)
    if text.endswith(os.sep) or path.is_dir():
        raise ValueError(f"{name} must be a file path, but {text} is a folder, not a file")
    if path.exists() and not path.is_file():
        raise ValueError(f"{name} must be a file path, but {text} exists and is not a regular file")
    if checkpoint is not None and _same_file(path, Path(checkpoint)):
        raise ValueError(f"{name} and the checkpoint are the same file ({text}); "
                         "the checkpoint is removed once the result is written")
    _probe_folder(path.parent, name)
    return path


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (whether or not it exists yet)."""
    return a.resolve() == b.resolve()


def _probe_folder(folder: Path, name: str) -> None:
    """Write then remove a file in ``folder``, or in its nearest existing parent when it does
    not exist yet (nothing is created), or raise ``ValueError``."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot write {name} in the folder {folder}: {existing} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".gmmmem-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"cannot write {name} in the folder {folder}: {err.strerror or err}") from None


def check_default_output(path: Path, option: str = "--out") -> None:
    """Refuse to replace the committed file ``path`` written by default (``--force`` allows it)."""
    if path.exists():
        raise ValueError(f"{path} exists (a committed result); give {option} to write elsewhere, "
                         "or --force to replace it")


def write_atomic(path: str | Path, write: Callable[[Any], None], *, binary: bool = False) -> Path:
    """Write ``path`` through ``write(file)`` atomically and durably: a temporary file in the
    same folder, fsync, mode :data:`FILE_MODE`, rename, fsync of the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def write_json(path: str | Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON to ``path`` (:func:`write_atomic`)."""
    return write_atomic(path, lambda f: json.dump(payload, f, indent=1))


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(state: dict, path: str | Path) -> None:
    """``torch.save`` the training state to ``path`` atomically and durably."""
    import torch

    write_atomic(path, lambda f: torch.save(state, f), binary=True)


def load_checkpoint(path: str | Path, map_location: Any, needed: tuple[str, ...]) -> dict | None:
    """The state saved at ``path``, or None when it cannot be read or lacks a key of
    ``needed``: the damaged file is then moved aside, with a :class:`CheckpointWarning`."""
    import torch

    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch and pickle raise many types on a damaged file
        why = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}"
    else:
        if isinstance(state, dict) and all(k in state for k in needed):
            return state
        why = "not a gmmmem training checkpoint"
    set_aside(path, why)
    return None


def set_aside(path: Path, why: str) -> Path:
    """Rename the damaged checkpoint ``path`` to ``path.damaged`` and warn that the run restarts."""
    aside = path.with_name(path.name + ".damaged")
    os.replace(path, aside)
    warnings.warn(f"checkpoint {path} is damaged ({why}); moved to {aside}, training starts "
                  "from scratch", CheckpointWarning, stacklevel=3)
    return aside


@contextlib.contextmanager
def exclusive(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on writing ``path`` (the file ``path.lock``) for the block;
    raises :class:`LockedError` at once if another process holds it."""
    lock = Path(path).with_name(Path(path).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock, Path(path))
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def _acquire(lock: Path, path: Path) -> int:
    """Open and lock ``lock``, retrying if a releasing holder removed it meanwhile."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise LockedError(f"another process (pid {holder}) is writing {path}; wait for it "
                                  f"to finish or write elsewhere (lock: {lock})") from None
            raise
        if _still_linked(fd, lock):
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return fd
        os.close(fd)


def _still_linked(fd: int, lock: Path) -> bool:
    """Whether the open file ``fd`` is still the file at ``lock`` (not removed meanwhile)."""
    try:
        return os.stat(lock).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
