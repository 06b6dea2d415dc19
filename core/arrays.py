"""Helpers stages share for turning images into float matrices in batches, never float64."""

from __future__ import annotations

from typing import Iterator

import numpy as np

BATCH = 4096


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 images to float32 in [0, 1]; float input is returned as float32."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    return np.asarray(images, dtype=np.float32)


def flat_batches(images: np.ndarray, batch: int = BATCH) -> Iterator[np.ndarray]:
    """(n, D) float32 batches of images (or features) in order."""
    for start in range(0, len(images), batch):
        chunk = to_float(np.asarray(images[start : start + batch]))
        yield chunk.reshape(len(chunk), -1)


def as_matrix(images: np.ndarray) -> np.ndarray:
    """All images (or features) as one (N, D) float32 matrix, converted batch by batch."""
    n = len(images)
    width = int(np.prod(images.shape[1:]))
    out = np.empty((n, width), dtype=np.float32)
    for start, chunk in zip(range(0, n, BATCH), flat_batches(images)):
        out[start : start + len(chunk)] = chunk
    return out
