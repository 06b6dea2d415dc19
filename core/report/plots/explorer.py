"""``plots/explorer/``: what report.html's explorer embeds: the map's 2-D points (the projection
map.png draws, not a second one) and the images as thumbnails packed into a few sprite sheets.

The images are only in memory while a run (or ``imgclust report``) holds them, so the plotting
stage writes them here for the page to embed; the page reads ids, clusters and labels from
``assignments.csv``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from imgclust.errors import DataError
from imgclust.io import atomic
from imgclust.io.bounded import read_json
from imgclust.kit.arrays import sample_index
from imgclust.report.plots.figure import SkipPlot
from imgclust.report.plots.inputs import PlotInputs
from imgclust.report.plots.options import PlotOptions
from imgclust.report.plots.projection import shared_projection
from imgclust.report.plots.tiles import as_rgb, take

FOLDER = "explorer"
POINTS = "points.json"
MAX_TILE = 32  # thumbnails larger than this many pixels a side are scaled down to it
SHEET_COLUMNS = 64  # tiles per row of a sprite sheet
SHEET_ROWS = 64  # rows of tiles per sheet: 4,096 thumbnails a sheet
MAP_SCALE = 4095  # map coordinates are stored as whole numbers 0..MAP_SCALE (12 bits each)


def sheet_name(number: int) -> str:
    """'thumbs-0.png', 'thumbs-1.png', ..."""
    return f"thumbs-{number}.png"


def tile_size(height: int, width: int) -> int:
    """Side of a square thumbnail: the image's own size up to :data:`MAX_TILE` pixels."""
    return max(1, min(MAX_TILE, max(height, width)))


def thumbnail_limit(options: PlotOptions, tile: int, channels: int) -> int:
    """How many thumbnails fit the page budget: colour and large tiles cost more pixels each."""
    return max(1, options.explorer_bytes // (tile * tile * channels))


def thumbnails(images: np.ndarray, index: np.ndarray, tile: int) -> tuple[np.ndarray, int]:
    """The images of ``index`` as (n, tile, tile[, 3]) uint8 squares, and their channel count."""
    from PIL import Image

    picked = take(images, index)
    grey = picked.ndim == 3 or (picked.ndim == 4 and picked.shape[-1] == 1)
    if picked.dtype == np.uint8 and grey and picked.shape[1:3] == (tile, tile):
        return picked.reshape(len(picked), tile, tile), 1  # as they are: most datasets
    rgb = as_rgb(picked)
    squares = np.empty((len(rgb), tile, tile, 3), dtype=np.uint8)
    for i, image in enumerate((rgb * 255).round().astype(np.uint8)):
        if image.shape[:2] == (tile, tile):
            squares[i] = image
        else:  # letterbox to a square, then scale to the tile
            side = max(image.shape[:2])
            canvas = np.zeros((side, side, 3), dtype=np.uint8)
            top, left = (side - image.shape[0]) // 2, (side - image.shape[1]) // 2
            canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
            resized = Image.fromarray(canvas).resize((tile, tile), Image.Resampling.BOX)
            squares[i] = np.asarray(resized)
    return (squares[..., 0], 1) if grey else (squares, 3)


def sheets(squares: np.ndarray) -> list[bytes]:
    """Thumbnails laid out row by row, :data:`SHEET_COLUMNS` wide, as PNG sprite sheets."""
    from PIL import Image

    per_sheet = SHEET_COLUMNS * SHEET_ROWS
    tile = squares.shape[1]
    out = []
    for start in range(0, len(squares), per_sheet):
        chunk = squares[start : start + per_sheet]
        rows = -(-len(chunk) // SHEET_COLUMNS)
        columns = SHEET_COLUMNS if rows > 1 else len(chunk)
        padded = np.zeros((rows * SHEET_COLUMNS, *chunk.shape[1:]), dtype=np.uint8)
        padded[: len(chunk)] = chunk
        grid = padded.reshape(rows, SHEET_COLUMNS, tile, tile, *chunk.shape[3:])
        grid = grid.swapaxes(1, 2).reshape(rows * tile, SHEET_COLUMNS * tile, *chunk.shape[3:])
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(grid[:, : columns * tile])).save(
            buffer, format="PNG", compress_level=6
        )
        out.append(buffer.getvalue())
    return out


def map_points(inputs: PlotInputs, options: PlotOptions) -> dict[str, object] | None:
    """The map's points as rows and 12-bit coordinates, or None without features."""
    if inputs.features is None:
        return None
    projection = shared_projection(inputs, options)
    xy = projection.xy.astype(np.float64)
    low, high = xy.min(axis=0), xy.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    scaled = np.rint((xy - low) / span * MAP_SCALE).astype(np.int64)
    return {
        "index": projection.index.astype(np.int64).tolist(),
        "x": scaled[:, 0].tolist(),
        "y": scaled[:, 1].tolist(),
        "method": projection.method,
        "axes": list(projection.axis_labels),
        "note": projection.note,
    }


def earlier_thumbs(path: Path, n: int) -> object:
    """The thumbnails an earlier drawing of this run recorded (their sheets are kept), if any."""
    try:
        earlier = read_json(path)
    except (OSError, DataError):
        return None
    return earlier.get("thumbs") if isinstance(earlier, dict) and earlier.get("n") == n else None


def plot_explorer(inputs: PlotInputs, folder: Path, options: PlotOptions) -> list[Path]:
    """Write ``plots/explorer/points.json`` and the thumbnail sheets; return their paths."""
    if inputs.features is None and inputs.images is None:
        raise SkipPlot("neither the features nor the images are available")
    out = Path(folder) / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, object] = {"n": inputs.n, "seed": inputs.seed, "map": None, "thumbs": None}
    record["map"] = map_points(inputs, options)
    written: list[Path] = []
    if inputs.images is None or len(inputs.images) != inputs.n or inputs.images.ndim < 3:
        record["thumbs"] = earlier_thumbs(out / POINTS, inputs.n)  # images not reloaded
    else:
        for stale in out.glob("thumbs-*.png"):
            stale.unlink()
        shape = inputs.images.shape
        tile = tile_size(int(shape[1]), int(shape[2]) if len(shape) > 2 else 1)
        channels = 3 if len(shape) == 4 and shape[-1] >= 3 else 1
        index = sample_index(inputs.n, thumbnail_limit(options, tile, channels), inputs.seed)
        squares, channels = thumbnails(inputs.images, index, tile)
        names = []
        for number, data in enumerate(sheets(squares)):
            written.append(atomic.write_bytes(out / sheet_name(number), data))
            names.append(sheet_name(number))
        record["thumbs"] = {
            "index": index.astype(np.int64).tolist(),
            "tile": tile,
            "columns": SHEET_COLUMNS,
            "per_sheet": SHEET_COLUMNS * SHEET_ROWS,
            "channels": channels,
            "sheets": names,
        }
    written.append(atomic.write_text(out / POINTS, json.dumps(record, separators=(",", ":"))))
    return written
