"""Image issues found from the pixels alone: near-constant (low information), very dark, very
bright, blurry (variance of the Laplacian, relative to the image's contrast), and exact copies of
an earlier image.

Each statistic is computed once per image, a block at a time, and each flag is set by Tukey's
far-out fence (three interquartile ranges past a quartile) on the run's own distribution, so
what counts as dark or blurry follows the image set instead of a constant tuned on one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ROWS_PER_BLOCK = 4096
FENCE = 3.0  # interquartile ranges past the quartile: Tukey's "far out"
FLAT = 1.0 / 255  # a pixel spread below one grey level is no information whatever the set
ISSUES = ("low_information", "dark", "bright", "blurry", "duplicate")


@dataclass
class ImageIssues:
    """Per image statistics and flags, and the fences that set the flags."""

    brightness: np.ndarray  # mean pixel in [0, 1]
    spread: np.ndarray  # standard deviation of the pixels in [0, 1]
    sharpness: np.ndarray  # variance of the grey image's Laplacian over the variance of its pixels
    duplicate_of: np.ndarray  # index of the first identical image, -1 if none
    flags: dict[str, np.ndarray] = field(default_factory=dict)  # issue -> (N,) bool
    fences: dict[str, float | None] = field(default_factory=dict)

    def issues_of(self, index: int) -> list[str]:
        """The issues of one image, in the order of :data:`ISSUES`."""
        return [name for name in ISSUES if self.flags[name][index]]

    def summary(self) -> dict[str, Any]:
        """Counts per issue and the fences, for metrics.json."""
        return {
            "counts": {name: int(self.flags[name].sum()) for name in ISSUES},
            "flagged": int(np.logical_or.reduce([self.flags[n] for n in ISSUES]).sum()),
            "fences": {k: None if v is None else round(v, 6) for k, v in self.fences.items()},
        }


def find_issues(images: np.ndarray) -> ImageIssues:
    """Statistics and flags of ``images`` (N, H, W, C), uint8 or floats in [0, 1]."""
    n = len(images)
    brightness = np.zeros(n)
    spread = np.zeros(n)
    sharpness = np.zeros(n)
    first_seen: dict[bytes, int] = {}
    duplicate_of = np.full(n, -1, np.int64)
    for start in range(0, n, ROWS_PER_BLOCK):
        block = np.asarray(images[start : start + ROWS_PER_BLOCK])
        for offset, image in enumerate(block):
            digest = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16)
            duplicate_of[start + offset] = first_seen.setdefault(digest.digest(), start + offset)
        scaled = _unit(block)
        grey = scaled.mean(axis=3)
        brightness[start : start + len(block)] = scaled.reshape(len(block), -1).mean(axis=1)
        spread[start : start + len(block)] = scaled.reshape(len(block), -1).std(axis=1)
        grey_spread = grey.reshape(len(block), -1).var(axis=1)
        sharpness[start : start + len(block)] = _laplacian_variance(grey) / np.maximum(
            grey_spread, 1e-12
        )  # over the contrast, so that faint images do not read as blurred ones
    duplicate_of[duplicate_of == np.arange(n)] = -1
    found = ImageIssues(brightness, spread, sharpness, duplicate_of)
    low_spread = _fence(spread, "low")
    dark, bright = _fence(brightness, "low"), _fence(brightness, "high")
    informative = spread > max(FLAT, low_spread if low_spread is not None else 0.0)
    log_sharpness = np.log(np.maximum(sharpness, 1e-12))
    blurry = _fence(log_sharpness[informative], "low") if informative.any() else None
    found.fences = {
        "low_information": low_spread,
        "dark": dark,
        "bright": bright,
        "blurry": None if blurry is None else float(np.exp(blurry)),
    }
    found.flags = {
        "low_information": ~informative,
        "dark": brightness < dark if dark is not None else np.zeros(n, bool),
        "bright": brightness > bright if bright is not None else np.zeros(n, bool),
        "blurry": informative & (log_sharpness < blurry)
        if blurry is not None
        else np.zeros(n, bool),
        "duplicate": duplicate_of >= 0,
    }
    return found


def _unit(block: np.ndarray) -> np.ndarray:
    """Pixels as float32 in [0, 1] (uint8 divided by 255)."""
    if block.dtype == np.uint8:
        return block.astype(np.float32) / 255
    return block.astype(np.float32, copy=False)


def _laplacian_variance(grey: np.ndarray) -> np.ndarray:
    """Variance of the 4-neighbour Laplacian of each (H, W) image; 0 for images under 3x3."""
    if grey.shape[1] < 3 or grey.shape[2] < 3:
        return np.zeros(len(grey))
    centre = grey[:, 1:-1, 1:-1]
    laplacian = (
        grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1] + grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:] - 4 * centre
    )
    return laplacian.reshape(len(grey), -1).var(axis=1).astype(np.float64)


def _fence(values: np.ndarray, side: str) -> float | None:
    """Tukey's far-out fence below the first or above the third quartile; None if too few."""
    if len(values) < 20:
        return None
    low, high = np.percentile(values, [25, 75])
    width = high - low
    return float(low - FENCE * width) if side == "low" else float(high + FENCE * width)
