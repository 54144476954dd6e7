"""Figures: one style for the course, labelled heatmaps, and (later) offline bertviz."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch

FIGURE_DPI = 90


def setup_plots(dpi: int = FIGURE_DPI) -> None:
    """Modest-size PNG figures (small notebooks) with a readable default style."""
    matplotlib.rcParams.update(
        {
            "figure.dpi": dpi,
            "savefig.dpi": dpi,
            "figure.figsize": (6.4, 4.0),
            "axes.grid": False,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "font.size": 9,
        }
    )
    try:  # inside IPython: emit PNG only (SVG would embed random ids and bloat notebooks)
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            from matplotlib_inline.backend_inline import set_matplotlib_formats

            set_matplotlib_formats("png")
    except ImportError:  # plain Python: nothing to configure
        pass


def _to_numpy(matrix: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().float().cpu().numpy()
    array = np.asarray(matrix)
    if array.ndim != 2:
        raise ValueError(f"heatmap expects a 2-D matrix, got shape {array.shape}")
    return array


def heatmap(
    matrix: torch.Tensor | np.ndarray,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str = "",
    ax: plt.Axes | None = None,
    xlabel: str = "key (attended to)",
    ylabel: str = "query (attending)",
    cmap: str = "viridis",
    annotate: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
) -> plt.Axes:
    """Draw a labelled heatmap of a ``(rows, cols)`` matrix; returns the axes.

    Defaults suit attention maps (rows = queries, columns = keys); pass other axis labels
    for other matrices. ``annotate`` writes each value in its cell (small matrices only).
    """
    array = _to_numpy(matrix)
    rows, cols = array.shape
    for labels, size, what in ((row_labels, rows, "row"), (col_labels, cols, "column")):
        if labels is not None and len(labels) != size:
            raise ValueError(f"{len(labels)} {what} labels for a matrix with {size} {what}s")
    if ax is None:
        width = min(10.0, 1.5 + 0.42 * cols)
        height = min(9.0, 1.2 + 0.38 * rows)
        _, ax = plt.subplots(figsize=(max(width, 3.5), max(height, 3.0)))
    image = ax.imshow(array, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    if col_labels is not None:
        ax.set_xticks(range(cols), labels=list(col_labels), rotation=60, ha="right")
    if row_labels is not None:
        ax.set_yticks(range(rows), labels=list(row_labels))
    if annotate:
        threshold = (np.nanmax(array) + np.nanmin(array)) / 2
        for i in range(rows):
            for j in range(cols):
                ax.text(
                    j, i, f"{array[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if array[i, j] > threshold else "white",
                )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return ax
