"""How the book's chapters show their results: claims checked line by line, tables rendered.

A chapter's check cell states each claim it verifies with :func:`claim`, which prints one
line per claim ("✓ no copies up to M = 60") and raises :class:`AssertionError` when the claim
does not hold, so a failing claim still fails the book build and the chapter's test.
Tables are shown with :func:`table`, which renders a Markdown table in the notebook (and so
an HTML table in the book) instead of printed text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def claim(holds, text: str) -> None:
    """Print ``✓ text`` if ``holds`` is true; raise ``AssertionError("✗ text")`` otherwise.

    ``holds`` is anything with a truth value (a bool, a NumPy bool); an array must be reduced
    first (``np.all``), as with ``assert``.
    """
    if not bool(holds):
        raise AssertionError(f"✗ {text}")
    print(f"✓ {text}")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A Markdown table with the given column names; cells are converted with ``str``."""
    header = [str(h).replace("|", "\\|") for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(c).replace("|", "\\|") for c in row]
        if len(cells) != len(header):
            raise ValueError(f"row has {len(cells)} cells, the header {len(header)}: {cells}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(header: Sequence[str], rows: Iterable[Sequence], caption: str | None = None) -> None:
    """Display a table in the notebook, rendered from Markdown.

    ``caption``, when given, is shown in bold above the table.
    """
    from IPython.display import Markdown, display

    text = markdown_table(header, rows)
    display(Markdown((f"**{caption}**\n\n" if caption else "") + text))


def markdown(text: str) -> None:
    """Display Markdown text (for instance a table already written as Markdown) in the notebook."""
    from IPython.display import Markdown, display

    display(Markdown(text))
