"""The scale a chapter or a command runs at.

One environment variable, ``GMMMEM_SCALE``, chooses it for the whole book:

* ``ci``      -- tiny runs that check every claim in a few seconds (the CI setting);
* ``default`` -- the book's figures, minutes on a laptop CPU (the default);
* ``paper``   -- the authors' settings (long; meant for a GPU).
"""

from __future__ import annotations

import os
from pathlib import Path

SCALES = ("ci", "default", "paper")

#: Set by the command line (``python -m gmmmem ...``) to the command as typed: the provenance of
#: every result it writes stores it (:func:`gmmmem.provenance.record`), so a result names the
#: command that remakes it.
COMMAND_VARIABLE = "GMMMEM_COMMAND"


def check_scale(scale: str) -> str:
    """Return ``scale`` if it names a known scale, else raise ``ValueError``."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    return scale


def scale() -> str:
    """The scale named by ``GMMMEM_SCALE`` (``default`` when unset)."""
    return check_scale(os.environ.get("GMMMEM_SCALE", "default"))


def data_dir() -> Path:
    """Folder of the committed results: ``GMMMEM_DATA`` if set, else ``data/`` of the repository."""
    return Path(os.environ.get("GMMMEM_DATA", Path(__file__).resolve().parent.parent / "data"))
