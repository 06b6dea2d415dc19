"""``plots/clusters/cluster-<id>.png``: a larger sample of one cluster, written when there are
too many clusters for ``clusters.png`` to show them all. Drawn with Pillow: cheap per file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.io import atomic
from imgclust.report.plots.clusters import holds, row_label, sample_members
from imgclust.report.plots.figure import SkipPlot
from imgclust.report.plots.inputs import NOISE, PlotInputs, cluster_order
from imgclust.report.plots.options import PlotOptions
from imgclust.report.plots.tiles import as_rgb, grid, take, upscale

COLUMNS = 8
HEADER = 34


def montage_name(cluster: int) -> str:
    """'cluster-7.png', or 'noise.png'."""
    return "noise.png" if cluster == NOISE else f"cluster-{cluster}.png"


def caption_font() -> Any:
    """Pillow's scalable default font at a readable size (its bitmap font without FreeType)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=13)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def montage_png(tiles: np.ndarray, caption: str) -> bytes:
    """One cluster's images in a grid under a caption, as PNG bytes."""
    from PIL import Image, ImageDraw

    columns = min(COLUMNS, max(1, len(tiles)))
    rows = [tiles[i : i + columns] for i in range(0, len(tiles), columns)]
    mosaic = grid(rows, columns)
    factor = upscale(tiles.shape[1])
    picture = Image.fromarray(np.round(mosaic * 255).astype(np.uint8)).resize(
        (mosaic.shape[1] * factor, mosaic.shape[0] * factor), Image.Resampling.NEAREST
    )
    canvas = Image.new("RGB", (max(picture.width, 360), picture.height + HEADER), "white")
    canvas.paste(picture, (0, HEADER))
    draw = ImageDraw.Draw(canvas)
    font = caption_font()
    for line_number, line in enumerate(caption.splitlines()[:2]):
        draw.text((4, 2 + 15 * line_number), line, fill="black", font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def plot_montages(inputs: PlotInputs, folder: Path, options: PlotOptions) -> list[Path]:
    """Write one montage per cluster (the largest ``montage_limit``) when there are many."""
    order, sizes = cluster_order(inputs.clusters)
    found = [c for c in order if c != NOISE]
    if len(found) <= options.montage_threshold:
        raise SkipPlot(f"{len(found)} clusters all fit in clusters.png")
    if inputs.images is None:
        raise SkipPlot("the images are not available")
    target = folder / "clusters"
    if target.is_dir():  # montages of an earlier build of this run
        for old in [*target.glob("cluster-*.png"), *target.glob("noise.png")]:
            old.unlink()
    rng = np.random.default_rng(inputs.seed)
    names = inputs.label_names()
    written = []
    chosen = found[: options.montage_limit] + ([NOISE] if NOISE in sizes else [])
    for cluster in chosen:
        members = sample_members(inputs.clusters, cluster, options.montage_images, rng)
        tiles = as_rgb(take(inputs.images, members))
        what = holds(names, np.flatnonzero(inputs.clusters == cluster))
        caption = row_label(cluster, sizes[cluster], what).replace("\n", ": ", 1)
        caption = (
            f"{caption}\n{len(members)} random images shown"
            if len(members) < sizes[cluster]
            else caption
        )
        written.append(
            atomic.write_bytes(target / montage_name(cluster), montage_png(tiles, caption))
        )
    return written
