"""``map.png``: the clustered features in 2-D, coloured by cluster and, beside it, by true label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from imgclust.report.plots.colours import NOISE_COLOUR, matched_colours
from imgclust.report.plots.figure import SkipPlot, new_figure, save_png, thousands
from imgclust.report.plots.inputs import NOISE, PlotInputs, cluster_order
from imgclust.report.plots.options import PlotOptions
from imgclust.report.plots.projection import Projection, shared_projection
from imgclust.results.metrics import hungarian_match

MAX_MARKED = 40  # clusters or classes named on the map at their median point


def point_size(count: int) -> float:
    """Marker area that keeps 500 and 20,000 points both readable."""
    return float(np.clip(30_000 / max(count, 1), 1.0, 12.0))


def mark_groups(axes: Any, xy: np.ndarray, groups: np.ndarray, names: dict[Any, str]) -> None:
    """Write each group's name on its point nearest the group's median (on the group even
    when it is split in two, where the median itself may fall in empty space).
    """
    if len(names) > MAX_MARKED:
        return
    from matplotlib import patheffects

    outline = [patheffects.withStroke(linewidth=3, foreground="white")]
    for key, name in names.items():
        points = xy[groups == key]
        if len(points):
            middle = np.median(points, axis=0)
            x, y = points[np.argmin(((points - middle) ** 2).sum(axis=1))]
            axes.text(
                x,
                y,
                name,
                fontsize=10,
                weight="bold",
                ha="center",
                va="center",
                path_effects=outline,
            )


def scatter(axes: Any, projection: Projection, colours: np.ndarray, title: str) -> None:
    """Draw the points with per-point colours, noise underneath."""
    xy = projection.xy
    axes.scatter(xy[:, 0], xy[:, 1], c=colours, s=point_size(len(xy)), linewidths=0, alpha=0.75)
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(projection.axis_labels[0])
    axes.set_ylabel(projection.axis_labels[1])
    if projection.method == "UMAP":  # UMAP's axes have no units worth reading
        axes.set_xticks([])
        axes.set_yticks([])


def map_title(inputs: PlotInputs, projection: Projection, width: int) -> str:
    """Says what was projected, how, and how many of the points are drawn."""
    drawn = len(projection.index)
    how = {"UMAP": "by UMAP", "PCA": "by PCA", "features": "as they are"}[projection.method]
    title = f"The clustered features ({width} numbers per image) in 2-D {how}: "
    if drawn < inputs.n:
        title += f"{thousands(drawn)} of {thousands(inputs.n)} points "
        title += f"(random sample, seed {inputs.seed})"
    else:
        title += f"all {thousands(inputs.n)} points"
    return title + (f"\n{projection.note}" if projection.note else "")


def plot_map(inputs: PlotInputs, folder: Path, options: PlotOptions) -> list[Path]:
    """Write ``map.png`` and return its path."""
    if inputs.features is None:
        raise SkipPlot("the features are not available")
    projection = shared_projection(inputs, options)
    underneath = np.argsort(inputs.clusters[projection.index] != NOISE, kind="stable")
    projection.xy, projection.index = projection.xy[underneath], projection.index[underneath]
    clusters = inputs.clusters[projection.index]
    order, _ = cluster_order(inputs.clusters)
    found = [c for c in order if c != NOISE]
    names = inputs.label_names()
    classes = inputs.label_order()
    matching = (
        {c: str(v) for c, v in hungarian_match(inputs.clusters, names.astype(str)).items()}
        if names is not None
        else {}
    )
    by_cluster, by_class = matched_colours(found, classes, matching)
    cluster_colours = np.array([by_cluster.get(c, NOISE_COLOUR) for c in clusters.tolist()])

    panels = 2 if names is not None else 1
    figure = new_figure(6.5 * panels, 6.8)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    noise = int((clusters == NOISE).sum())
    title = f"coloured by cluster ({len(found)} clusters, named at their middle"
    title += f"; grey: {thousands(noise)} noise points)" if noise else ")"
    scatter(axes[0], projection, cluster_colours, title)
    mark_groups(axes[0], projection.xy, clusters, {c: str(c) for c in found})
    if names is not None:
        sampled = names[projection.index]
        class_colours = np.array([by_class[str(v)] for v in sampled.tolist()])
        scatter(
            axes[1],
            projection,
            class_colours,
            "coloured by true label (in the colour of its matched cluster)",
        )
        mark_groups(axes[1], projection.xy, sampled, {c: c for c in classes})
    width = int(np.prod(inputs.features.shape[1:]))
    figure.suptitle(map_title(inputs, projection, width), fontsize=11)
    return [save_png(figure, folder / "map.png")]
