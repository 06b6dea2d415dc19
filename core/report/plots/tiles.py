"""Images as something to show: RGB floats in [0, 1], and grids of them as one array, so a
figure draws hundreds of images with one ``imshow`` instead of hundreds of axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from imgclust.kit.arrays import to_float

BACKGROUND = 0.82  # light grey between and around tiles, distinct from black and white pixels


def take(images: np.ndarray, index: Sequence[int] | np.ndarray) -> np.ndarray:
    """Some images of a (possibly memory-mapped) array, read in sorted order, in ``index`` order."""
    index = np.asarray(index, dtype=np.int64)
    if len(index) == 0:
        return np.asarray(images[:0])
    order = np.argsort(index, kind="stable")
    picked = np.asarray(images[index[order]])
    out = np.empty_like(picked)
    out[order] = picked
    return out


def as_rgb(images: np.ndarray) -> np.ndarray:
    """(n, H, W[, C]) uint8 or float images as (n, H, W, 3) float32 in [0, 1]."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    x = np.clip(to_float(x), 0.0, 1.0)
    channels = x.shape[-1]
    if channels >= 3:
        return np.ascontiguousarray(x[..., :3])
    return np.repeat(x[..., :1], 3, axis=-1)


def grid(rows: Sequence[np.ndarray], columns: int, pad: int = 1) -> np.ndarray:
    """Rows of (k, H, W, 3) images (k <= columns) laid out as one (R, C, 3) array; short rows
    are left as background.
    """
    if not rows:
        raise ValueError("no rows of images to lay out")
    height, width = (
        next(r.shape[1:3] for r in rows if len(r)) if any(len(r) for r in rows) else (1, 1)
    )
    out = np.full(
        (len(rows) * (height + pad) + pad, columns * (width + pad) + pad, 3),
        BACKGROUND,
        dtype=np.float32,
    )
    for r, row in enumerate(rows):
        top = pad + r * (height + pad)
        for c, image in enumerate(row[:columns]):
            left = pad + c * (width + pad)
            out[top : top + height, left : left + width] = image
    return out


def upscale(height: int, target: int = 56) -> int:
    """Whole-number factor that brings a tile of ``height`` pixels to about ``target``."""
    return max(1, int(round(target / max(1, height))))
