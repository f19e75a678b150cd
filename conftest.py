"""Collect the book's chapters (`chapters/*.md`, jupytext MyST notebooks) as tests.

Each chapter is converted to a notebook in memory by jupytext and handed to
nbval's collector, so every code cell becomes one test item, run in order in a
fresh kernel whose working directory is `chapters/` (as in the book build).
Semantics are those of `--nbval-lax`, whether or not it is given: cells are
executed, outputs are not compared (the .md files carry none), and a cell fails
only if it raises -- chapters check the paper's claims with `assert`.

The kernel is always the interpreter running pytest (nbval's "current env"
kernel), never whatever `python3` kernelspec happens to be registered.
"""

import types
from pathlib import Path

import jupytext
import nbval.plugin
from nbval.kernel import CURRENT_ENV_KERNEL_NAME, RunningKernel


def _is_jupytext_notebook(path: Path) -> bool:
    """True if the file opens with YAML front matter holding a jupytext/kernelspec header."""
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return False
    end = text.find("\n---", 3)
    header = text[:end] if end != -1 else ""
    return "jupytext:" in header or "kernelspec:" in header


class MystNotebookFile(nbval.plugin.IPyNbFile):
    """nbval's notebook collector, reading a jupytext MyST file instead of .ipynb."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.compare_outputs = False  # --nbval-lax semantics

    def collect(self):
        # IPyNbFile.collect() starts with `nbformat.read(path)`; let it read the
        # notebook jupytext made instead, then restore nbval's nbformat.
        nb = jupytext.read(self.path)
        real_nbformat = nbval.plugin.nbformat
        nbval.plugin.nbformat = types.SimpleNamespace(read=lambda *a, **k: nb)
        try:
            cells = list(super().collect())
        finally:
            nbval.plugin.nbformat = real_nbformat
        if not self._markup():
            for cell in cells:
                cell.colors = nbval.plugin.nocolors
        return cells

    def setup(self):
        self.kernel = RunningKernel(
            CURRENT_ENV_KERNEL_NAME,
            cwd=str(self.path.parent),
            startup_timeout=self.config.option.nbval_kernel_startup_timeout,
        )
        self.setup_sanitize_files()
        if not self._markup():
            # Plain IPython tracebacks in logs (CI), not ANSI escape codes.
            msg_id = self.kernel.execute_cell_input("%colors nocolor")
            self.kernel.await_reply(msg_id, timeout=60)
            self.kernel.await_idle(msg_id, timeout=60)

    def _markup(self) -> bool:
        """Whether pytest colours its output (a terminal, or --color=yes)."""
        return self.config.get_terminal_writer().hasmarkup


def pytest_collect_file(file_path: Path, parent):
    chapters = Path(parent.config.rootpath) / "chapters"
    if (
        file_path.suffix == ".md"
        and file_path.parent == chapters
        and _is_jupytext_notebook(file_path)
    ):
        return MystNotebookFile.from_parent(parent, path=file_path)
    return None
