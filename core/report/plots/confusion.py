"""``confusion.png``: clusters (rows, largest first) against true labels (columns, in the order
the Hungarian matching pairs them with the rows, so agreement lies on the diagonal), with counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imgclust.report.plots.figure import SkipPlot, new_figure, save_png, thousands
from imgclust.report.plots.inputs import NOISE, PlotInputs, cluster_order
from imgclust.report.plots.options import PlotOptions
from imgclust.results.metrics import hungarian_match


def confusion_table(inputs: PlotInputs) -> tuple[np.ndarray, list[int], list[str], dict[int, str]]:
    """Counts of (cluster, class) with rows largest cluster first (noise last) and columns in
    matched order (unmatched classes last); also the matching itself.
    """
    names = inputs.label_names()
    if names is None:
        raise SkipPlot("the images have no labels")
    names = names.astype(str)
    matching = {c: str(v) for c, v in hungarian_match(inputs.clusters, names).items()}
    rows, _ = cluster_order(inputs.clusters)
    columns = [matching[c] for c in rows if c in matching]
    columns += [c for c in inputs.label_order() if c not in columns]
    row_of = {c: i for i, c in enumerate(rows)}
    column_of = {c: j for j, c in enumerate(columns)}
    table = np.zeros((len(rows), len(columns)), dtype=np.int64)
    np.add.at(
        table,
        (
            np.fromiter((row_of[c] for c in inputs.clusters.tolist()), np.int64, inputs.n),
            np.fromiter((column_of[c] for c in names.tolist()), np.int64, inputs.n),
        ),
        1,
    )
    return table, rows, columns, matching


def plot_confusion(inputs: PlotInputs, folder: Path, options: PlotOptions) -> list[Path]:
    """Write ``confusion.png`` and return its path."""
    table, rows, columns, matching = confusion_table(inputs)
    sizes = table.sum(axis=1)
    share = table / np.maximum(sizes[:, None], 1)
    matched = sum(table[i, columns.index(matching[c])] for i, c in enumerate(rows) if c in matching)
    row_height = float(np.clip(18 / len(rows), 0.08, 0.5))
    column_width = float(np.clip(11 / len(columns), 0.08, 0.6))
    counted = row_height >= 0.22 and column_width >= 0.3
    width = max(8.0, 2.8 + column_width * len(columns) + 1.4)
    figure = new_figure(width, 2.1 + row_height * len(rows))
    axes = figure.add_subplot()
    image = axes.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    if counted:
        size = 8 if min(row_height, column_width) >= 0.4 else 6
        for i, j in zip(*np.nonzero(table), strict=True):
            axes.text(
                j,
                i,
                thousands(table[i, j]),
                ha="center",
                va="center",
                fontsize=size,
                color="white" if share[i, j] > 0.55 else "black",
            )
    from matplotlib.patches import Rectangle

    for i, cluster in enumerate(rows):  # outline the pairs the matching chose
        if cluster in matching:
            j = columns.index(matching[cluster])
            outline = Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#c0392b", lw=1.5)
            axes.add_patch(outline)
    row_names = [
        ("noise" if c == NOISE else str(c)) + f" ({thousands(s)})"
        for c, s in zip(rows, sizes, strict=True)
    ]
    if row_height >= 0.12:
        axes.set_yticks(range(len(rows)), row_names, fontsize=8 if row_height >= 0.18 else 6)
    if column_width >= 0.12:
        axes.set_xticks(
            range(len(columns)),
            columns,
            fontsize=8,
            rotation=90 if max(map(len, columns)) > 3 else 0,
        )
    axes.set_xlabel("true label, in the order the Hungarian matching pairs them with the clusters")
    axes.set_ylabel("cluster (its images), largest first")
    axes.xaxis.set_label_position("top")
    axes.xaxis.tick_top()
    figure.colorbar(image, ax=axes, shrink=0.6, label="share of the cluster's images")
    title = (
        f"Clusters against true labels: {thousands(matched)} of {thousands(inputs.n)} images "
        f"({matched / max(inputs.n, 1):.1%}) fall on the matched pairs (outlined)"
    )
    if not counted:
        title += "\n(too many cells to print counts: colour shows each cluster's share)"
    figure.suptitle(title, fontsize=11)
    return [save_png(figure, folder / "confusion.png")]
