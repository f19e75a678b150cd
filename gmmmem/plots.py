"""The book's plot style in one place: theme, shared axis labels and the common figures.

Every chapter calls :func:`use_style` once; figures then share the seaborn theme set here,
the axis labels of :data:`LABELS` and the helpers below, so that a figure of a common kind is
one call in a chapter:

* :func:`transition` -- memorization ratio against model size relative to the training set,
  the figure of the phase transition;
* :func:`grid_heatmap` -- a value for each cell of a grid of configurations (for instance the
  measured transition midpoint over dimension and training-set size), drawn by seaborn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Axis labels shared by the chapters, in words (symbols in parentheses).
LABELS = {
    "M/N": "model size relative to training set size, M/N",
    "fraction memorized": "fraction of training points memorized, M/N",
    "ratio": "memorization ratio",
    "time": "diffusion time t (noise scale)",
    "N": "training set size N",
    "params": "number of trained parameters",
    "loss": "denoising loss (clean-point units)",
    "midpoint": "transition midpoint M_pt / N",
}


def use_style() -> None:
    """Set the book's theme for every later figure: seaborn's white grid, readable sizes."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="deep", font_scale=0.9)
    mpl.rcParams.update({
        "figure.dpi": 100,
        "savefig.dpi": 100,
        "axes.titlesize": "medium",
        "legend.fontsize": "small",
        "legend.frameon": True,
        "grid.alpha": 0.5,
    })


def transition(ax, frac: Sequence[float], ratio: Sequence[float], label: str | None = None,
               **style):
    """Plot a memorization-ratio curve against M/N on ``ax`` with the book's labels and limits.

    ``style`` goes to ``ax.plot`` (default: circles joined by lines). Returns the line.
    """
    style = {"marker": "o", "ms": 4, **style}
    (line,) = ax.plot(np.asarray(frac), np.asarray(ratio), label=label, **style)
    ax.set(xlabel=LABELS["M/N"], ylabel=LABELS["ratio"], ylim=(-0.03, 1.03))
    return line


def grid_heatmap(values, row_labels: Sequence, col_labels: Sequence, ax=None, *,
                 row_name: str = "", col_name: str = "", value_name: str = "", fmt: str = ".3f",
                 cmap: str = "viridis", center: float | None = None,
                 vmin: float | None = None, vmax: float | None = None, cbar: bool = True):
    """Draw ``values`` (rows x columns; NaN for empty cells) as an annotated seaborn heatmap.

    Returns the axes. ``value_name`` labels the colour bar, ``row_name`` and ``col_name`` the
    axes; ``center`` centres a diverging colour map on that value; ``vmin`` and ``vmax`` fix the
    colour scale (so that several panels share one); ``cbar=False`` leaves the colour bar out.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    values = np.asarray(values, dtype=float)
    if values.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"values have shape {values.shape}, labels {len(row_labels)} x {len(col_labels)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(1.1 * len(col_labels) + 2.5, 0.6 * len(row_labels) + 1.5))
    sns.heatmap(values, annot=True, fmt=fmt, cmap=cmap, center=center, vmin=vmin, vmax=vmax, ax=ax,
                cbar=cbar,
                xticklabels=[str(c) for c in col_labels], yticklabels=[str(r) for r in row_labels],
                mask=np.isnan(values), cbar_kws={"label": value_name} if cbar else None, linewidths=0.5)
    ax.set(xlabel=col_name, ylabel=row_name)
    return ax
