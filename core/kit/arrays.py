"""Helpers stages share for turning images into float matrices in batches, never float64.

Images may be a uint8 memory map far larger than memory: these helpers read them a batch at a
time, so only one batch is ever held as floats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from imgclust.errors import DataError

BATCH = 4096
BATCH_BYTES = 64 * 2**20  # at most this many bytes of float32 per batch
SAMPLE_BYTES = 512 * 2**20  # at most this many bytes of float32 in a fitting sample


def row_width(images: np.ndarray) -> int:
    """Numbers per image (or feature row) once flattened."""
    return int(np.prod(images.shape[1:], dtype=np.int64)) if images.ndim > 1 else 1


def batch_rows(images: np.ndarray, batch: int | None = None) -> int:
    """Rows per batch: ``batch`` if given, else up to :data:`BATCH` within :data:`BATCH_BYTES`."""
    if batch is not None:
        return max(1, int(batch))
    return max(1, min(BATCH, BATCH_BYTES // (4 * max(1, row_width(images)))))


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 images to float32 in [0, 1]; float input is returned as float32."""
    if images.dtype == np.uint8:
        out = images.astype(np.float32)
        out /= np.float32(255.0)
        return out
    return np.asarray(images, dtype=np.float32)


def flat_batches(images: np.ndarray, batch: int | None = None) -> Iterator[np.ndarray]:
    """(n, D) float32 batches of images (or features) in order, read one batch at a time."""
    rows = batch_rows(images, batch)
    for start in range(0, len(images), rows):
        chunk = to_float(np.asarray(images[start : start + rows]))
        yield chunk.reshape(len(chunk), -1)


def map_batches(
    images: np.ndarray,
    function: Callable[[np.ndarray], np.ndarray],
    width: int,
    batch: int | None = None,
) -> np.ndarray:
    """Apply ``function`` to (n, D) float32 batches; gather its (n, width) outputs as float32.

    The output is allocated once; only one input batch is held as floats at a time.
    """
    out = np.empty((len(images), width), dtype=np.float32)
    start = 0
    for chunk in flat_batches(images, batch):
        result = np.asarray(function(chunk))
        out[start : start + len(chunk)] = result.reshape(len(chunk), width)
        start += len(chunk)
    return out


def as_matrix(images: np.ndarray) -> np.ndarray:
    """All images (or features) as one (N, D) float32 matrix, converted batch by batch."""
    return map_batches(images, lambda chunk: chunk, row_width(images))


def check_finite(values: np.ndarray, what: str, advice: str) -> None:
    """Refuse NaN or infinite values in one line that counts the rows holding them:
    '3 of 100 {what} have NaN or infinite values: {advice}.'"""
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.inexact) or np.isfinite(values).all():
        return
    bad = int((~np.isfinite(values.reshape(len(values), -1))).any(axis=1).sum())
    raise DataError(f"{bad} of {len(values)} {what} have NaN or infinite values: {advice}.")


def sample_index(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """Sorted int64 indices of a fixed-seed sample of at most ``limit`` of ``n`` rows (all if
    fewer, or if ``limit`` is None, 0 or less)."""
    if limit is None or n <= limit or limit <= 0:
        return np.arange(n, dtype=np.int64)
    chosen = np.random.default_rng(seed).choice(n, size=limit, replace=False)
    return np.sort(chosen).astype(np.int64)


def sample_matrix(
    images: np.ndarray, limit: int, seed: int = 0, max_bytes: int = SAMPLE_BYTES
) -> np.ndarray:
    """A fixed-seed sample of rows as a float32 (n, D) matrix, within ``max_bytes`` of floats.

    Rows are read in sorted order, which a memory map serves sequentially.
    """
    cap = max(1, max_bytes // (4 * max(1, row_width(images))))
    index = sample_index(len(images), min(limit, cap), seed)
    width = row_width(images)
    out = np.empty((len(index), width), dtype=np.float32)
    rows = batch_rows(images)
    for start in range(0, len(index), rows):
        part = index[start : start + rows]
        out[start : start + len(part)] = to_float(np.asarray(images[part])).reshape(len(part), -1)
    return out
