"""``clusters.png``: one row per cluster, largest first (noise as its own last row), with its
size, what it holds when labels are known, and a fixed-seed sample of its images.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from imgclust.report.plots.figure import SkipPlot, mosaic_axes, plural, save_png, thousands
from imgclust.report.plots.inputs import NOISE, PlotInputs, cluster_order
from imgclust.report.plots.options import PlotOptions
from imgclust.report.plots.tiles import as_rgb, grid, take

IMAGE_INCHES = 9.0
LABEL_INCHES = 2.6
TITLE_INCHES = 0.45
MAX_TEXT = 36  # characters of a row's contents that fit beside it


def sample_members(
    clusters: np.ndarray, cluster: int, count: int, rng: np.random.Generator
) -> np.ndarray:
    """Sorted indices of up to ``count`` random members of one cluster."""
    members = np.flatnonzero(clusters == cluster)
    if len(members) > count:
        members = np.sort(rng.choice(members, size=count, replace=False))
    return members


def holds(names: np.ndarray | None, members: np.ndarray, top: int = 3) -> str:
    """What a cluster holds, largest class first: '980 x 4, 100 x 9, 30 x 7, ...'."""
    if names is None or len(members) == 0:
        return ""
    counts = Counter(names[members].tolist()).most_common()
    text = ", ".join(f"{thousands(n)} x {label}" for label, n in counts[:top])
    text += ", ..." if len(counts) > top else ""
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def row_label(cluster: int, size: int, what: str) -> str:
    """The text beside a row: its name, size and contents."""
    name = "noise" if cluster == NOISE else f"cluster {cluster}"
    return f"{name}: {plural(size, 'image')}" + (f"\n{what}" if what else "")


def plot_clusters(inputs: PlotInputs, folder: Path, options: PlotOptions) -> list[Path]:
    """Write ``clusters.png`` and return its path."""
    if inputs.images is None:
        raise SkipPlot("the images are not available")
    order, sizes = cluster_order(inputs.clusters)
    found = [c for c in order if c != NOISE]
    shown = found[: options.cluster_rows] + ([NOISE] if NOISE in sizes else [])
    rng = np.random.default_rng(inputs.seed)
    names = inputs.label_names()
    picks = [sample_members(inputs.clusters, c, options.per_row, rng) for c in shown]
    everything = np.concatenate(picks)
    tiles = as_rgb(take(inputs.images, everything))
    rows, start = [], 0
    for pick in picks:
        rows.append(tiles[start : start + len(pick)])
        start += len(pick)
    mosaic = grid(rows, options.per_row)

    title = (
        f"Clusters of {plural(inputs.n, 'image')} of {inputs.source}, largest first: "
        f"up to {options.per_row} random images of each"
    )
    if len(found) > options.cluster_rows:
        title += (
            f"\n{len(found) - options.cluster_rows:,} smaller clusters not shown here "
            f"({len(found):,} in all; one montage each in plots/clusters/)"
        )
    height_px = tiles.shape[1]
    top = TITLE_INCHES + 0.2 * title.count("\n")
    figure, axes = mosaic_axes(mosaic.shape, IMAGE_INCHES, LABEL_INCHES, top)
    axes.imshow(mosaic, interpolation="nearest")
    centres = [1 + (height_px + 1) * r + height_px / 2 for r in range(len(shown))]
    axes.set_yticks(
        centres,
        [row_label(c, sizes[c], holds(names, np.flatnonzero(inputs.clusters == c))) for c in shown],
        fontsize=9,
    )
    axes.tick_params(axis="y", length=0)
    axes.set_xticks([])
    for side in axes.spines.values():
        side.set_visible(False)
    axes.set_title(title, fontsize=11, loc="left")
    return [save_png(figure, folder / "clusters.png")]
