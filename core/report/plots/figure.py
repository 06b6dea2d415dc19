"""Matplotlib, headless: select the Agg backend before anything imports pyplot, build figures
without pyplot (no global figure list to leak), and save them as PNG atomically.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

from imgclust.io import atomic

DPI = 100


class SkipPlot(Exception):
    """A plot that does not apply to this run (no labels, no autoencoder): a note, not a fault."""


def use_agg() -> None:
    """Select the Agg backend unless pyplot already runs with another one (a notebook's)."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")


def new_figure(width: float, height: float, **kwargs: Any) -> Any:
    """A matplotlib Figure of ``width`` x ``height`` inches with constrained layout."""
    use_agg()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained", **kwargs)


def save_png(figure: Any, path: Path) -> Path:
    """Render a figure to PNG and write it atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return atomic.write_bytes(path, buffer.getvalue())


def thousands(value: int) -> str:
    """10000 -> '10,000'."""
    return f"{int(value):,}"


def plural(count: int, word: str) -> str:
    """'1 image', '10,000 images'."""
    return f"{thousands(count)} {word}{'' if count == 1 else 's'}"


def mosaic_axes(
    shape: tuple[int, ...], image_inches: float, left: float, top: float, bottom: float = 0.15
) -> tuple[Any, Any]:
    """A figure holding one image of ``shape`` (rows, cols, ...) ``image_inches`` wide, with
    ``left``, ``top`` and ``bottom`` inches of margin for labels and titles (exact placement).
    """
    use_agg()
    from matplotlib.figure import Figure

    image_height = image_inches * shape[0] / shape[1]
    width, height = left + image_inches + 0.15, bottom + image_height + top
    figure = Figure(figsize=(width, height), dpi=DPI)
    axes = figure.add_axes(
        (left / width, bottom / height, image_inches / width, image_height / height)
    )
    return figure, axes
