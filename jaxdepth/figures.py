"""The package's one figure helper: matplotlib's object API on the Agg canvas.

Figures are `matplotlib.figure.Figure` objects drawn by `FigureCanvasAgg`, so importing a
plotting module switches no global backend and never loads `matplotlib.pyplot`; nothing
needs closing (an unreferenced Figure is garbage-collected).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 110


def figure(width: float, height: float) -> Figure:
    """An empty `width` x `height` inch figure on an Agg canvas."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def panels(n: int, width: float = 4.4, height: float = 3.8,
           min_width: float = 0.0) -> tuple[Figure, list]:
    """A figure of one row of max(n, 1) panels, each `width` x `height` inches (the whole
    figure at least `min_width` wide), and its list of axes."""
    n = max(n, 1)
    fig = figure(max(width * n, min_width), height)
    return fig, list(fig.subplots(1, n, squeeze=False)[0])


def save(fig: Figure, path, dpi: int = DPI) -> Path:
    """Write `fig` to `path` (parents created; format from the suffix), laid out tightly
    where possible (layout warnings, e.g. a long suptitle on a narrow figure, silenced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path
