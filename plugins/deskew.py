"""The ``deskew`` encoder: straighten slanted strokes and centre each image by its mass.

Handwriting slants by writer. Deskewing (a shear chosen from each image's second moments, the
classic preprocessing for MNIST) removes that nuisance, so that neighbours in pixel space are
more often the same digit. It learns nothing and returns images of the input's shape and dtype,
so any encoder can follow it (``--encoder deskew --encoder pca --encoder umap``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from imgclust.errors import DataError, SettingsError
from imgclust.kit import hookimpl, read_json

BATCH = 2048


class DeskewEncoder:
    """Shear each image upright about its centre of mass and move that centre to the middle.

    Parameters
    ----------
    center : bool
        Also shift each image so its centre of mass lies in the middle.
    max_shear : float
        Largest shear applied (pixels of horizontal shift per pixel of height), for stability.
    """

    def __init__(self, center: bool = True, max_shear: float = 1.0) -> None:
        if not max_shear >= 0:
            raise SettingsError("encoder 'deskew' needs max_shear >= 0.")
        self.center = center
        self.max_shear = max_shear

    def fit(self, images: np.ndarray, validation: np.ndarray | None = None) -> DeskewEncoder:
        self.input_shape_ = _image_shape(images)
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Deskewed images, same shape and dtype as the input (uint8 or float32 in [0, 1])."""
        _image_shape(images)
        out = np.empty(images.shape, dtype=images.dtype)
        for start in range(0, len(images), BATCH):
            chunk = np.asarray(images[start : start + BATCH])
            out[start : start + len(chunk)] = deskew(chunk, self.center, self.max_shear)
        return out

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "deskew.json").write_text(json.dumps({"input_shape": self.input_shape_}))

    def load(self, directory: Path) -> DeskewEncoder:
        meta = read_json(Path(directory) / "deskew.json", "encoder 'deskew': deskew.json")
        self.input_shape_ = tuple(meta["input_shape"])
        return self


def _image_shape(images: np.ndarray) -> tuple[int, ...]:
    if images.ndim != 4:
        raise DataError(
            f"encoder 'deskew' needs images (N, H, W, C); got shape {tuple(images.shape)}: "
            "put it first in the chain."
        )
    return tuple(int(v) for v in images.shape[1:])


def deskew(images: np.ndarray, center: bool = True, max_shear: float = 1.0) -> np.ndarray:
    """Deskew a batch (N, H, W, C) by bilinear resampling; the dtype is kept."""
    n, height, width, channels = images.shape
    floats = images.astype(np.float32)
    if images.dtype == np.uint8:
        floats /= 255.0
    mass = floats.mean(axis=3)  # (N, H, W)
    rows = np.arange(height, dtype=np.float32)[None, :, None]
    cols = np.arange(width, dtype=np.float32)[None, None, :]
    total = mass.sum(axis=(1, 2)) + 1e-8
    mean_r = (mass * rows).sum(axis=(1, 2)) / total
    mean_c = (mass * cols).sum(axis=(1, 2)) / total
    dr = rows - mean_r[:, None, None]
    dc = cols - mean_c[:, None, None]
    var_r = (mass * dr**2).sum(axis=(1, 2)) / total
    cov = (mass * dr * dc).sum(axis=(1, 2)) / total
    shear = np.clip(cov / (var_r + 1e-8), -max_shear, max_shear)
    mid_r, mid_c = (height - 1) / 2, (width - 1) / 2
    shift_r = (mean_r - mid_r) if center else np.zeros(n, np.float32)
    shift_c = (mean_c - mid_c) if center else np.zeros(n, np.float32)
    # Output pixel (r, c) reads the input at (r + shift_r, c + shear * (r - mid_r) + shift_c),
    # mid_r being where the centre of mass lands (or stays).
    grid_r = np.broadcast_to(rows, (n, height, width))
    src_r = grid_r + shift_r[:, None, None]
    src_c = cols + shear[:, None, None] * (grid_r - mid_r) + shift_c[:, None, None]
    if not center:
        src_c = cols + shear[:, None, None] * (grid_r - mean_r[:, None, None])
    out = _bilinear(floats, src_r, src_c)
    if images.dtype == np.uint8:
        return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
    return np.clip(out, 0.0, 1.0).astype(images.dtype)


def _bilinear(images: np.ndarray, src_r: np.ndarray, src_c: np.ndarray) -> np.ndarray:
    """Sample (N, H, W, C) images at fractional (N, H, W) positions; outside reads as 0."""
    n, height, width, channels = images.shape
    r0 = np.floor(src_r).astype(np.int64)
    c0 = np.floor(src_c).astype(np.int64)
    fr = (src_r - r0)[..., None].astype(np.float32)
    fc = (src_c - c0)[..., None].astype(np.float32)
    batch = np.arange(n)[:, None, None]
    out = np.zeros(images.shape, dtype=np.float32)
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            r, c = r0 + dr, c0 + dc
            inside = ((r >= 0) & (r < height) & (c >= 0) & (c < width))[..., None]
            values = images[batch, np.clip(r, 0, height - 1), np.clip(c, 0, width - 1)]
            out += np.where(inside, values, 0.0) * (wr * wc)
    return out


@hookimpl
def register_encoders(register):
    register(
        "deskew",
        DeskewEncoder,
        summary="straighten slanted strokes, centre by mass (images in, images out; no learning)",
    )
