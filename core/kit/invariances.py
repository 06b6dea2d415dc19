"""Which transformations an image set is invariant to, measured from the images alone.

For each candidate transformation ``t`` a held-back sample Q of the images is compared with a
reference sample R of the others: the mean distance from each ``t(q)`` to its nearest neighbour
in R, divided by the same mean for the untransformed ``q``. A ratio near 1 says transformed
images look like the data (a mirror on photos of objects seen from either side); a ratio well
above 1 says they do not (a mirrored digit). No label is read. The samples are bounded, and
images are shrunk to at most :data:`SIDE` pixels a side first, so the cost stays at a second
or two on any number of images.

The thresholds come from measurements on several sets (docs/guide.md). Exact transformations
(mirror, vertical flip, quarter turn) of sets that hold them gave 0.98 to 1.03 (MNIST mirrored or
turned at random, digits mirrored at random, natural objects seen from either side); those of
sets that do not gave 1.19 to 3.2 (MNIST, digits, and the other exact transformations of the
mirrored and turned sets): :data:`THRESHOLD` 1.1 lies in the gap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imgclust.errors import SettingsError

#: every transformation measured, in the order reports list them
TRANSFORMS = ("mirror", "vertical-flip", "quarter-turn", "rotation", "shift", "scale", "brightness")
#: the transformations that map an image onto an exact rearrangement of its pixels
DISCRETE = ("mirror", "vertical-flip", "quarter-turn")
#: a ratio at or below this keeps an exact transformation (mirror, flip, quarter turn)
THRESHOLD = 1.1
#: a ratio at or below this keeps a small one (rotation, shift, scale, brightness): any small
#: change moves an image off its nearest neighbour a little (interpolation, displacement), and
#: the self-label CNN's augmentation with these sizes helps on sets that measure up to 1.60
SMALL_THRESHOLD = 1.75
#: images in the held-back sample Q, and at most in the reference sample R
QUERIES = 500
REFERENCES = 5000
#: images are shrunk by whole-block means until no side is longer than this
SIDE = 32
#: fewest images the measurement needs; with fewer nothing is kept
MIN_IMAGES = 40
#: the size of the small transformations: degrees, share of the side, zoom factor, contrast
SMALL_ROTATION = 15.0
SMALL_SHIFT = 0.1
SMALL_SCALE = 0.15
BRIGHTNESS = 0.2


@dataclass
class Invariances:
    """The kept transformations, the measured ratios (empty when forced) and how it was chosen."""

    kept: tuple[str, ...]
    ratios: dict[str, float] = field(default_factory=dict)
    mode: str = "auto"  # "auto" (measured), "forced" (a list was given) or "none"

    def as_metrics(self) -> dict[str, Any]:
        """The record written to metrics.json."""
        record: dict[str, Any] = {"mode": self.mode, "kept": list(self.kept)}
        if self.ratios:
            record["ratios"] = {
                k: round(v, 4) if math.isfinite(v) else None for k, v in self.ratios.items()
            }
            record["threshold"] = {"exact": THRESHOLD, "small": SMALL_THRESHOLD}
        return record


def check_setting(value: Any) -> str | list[str]:
    """The ``invariances`` run setting: "auto", "none", or a list (or comma text) of names."""
    if value is None:
        return "auto"
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("auto", "none", ""):
            return text or "none"
        value = [part.strip() for part in text.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SettingsError(
            f'invariances must be "auto", "none" or a list of {", ".join(TRANSFORMS)}; '
            f"got {value!r:.60}."
        )
    unknown = [v for v in value if v not in TRANSFORMS]
    if unknown:
        raise SettingsError(
            f"invariances: unknown transformation(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(TRANSFORMS)}."
        )
    return list(dict.fromkeys(value))


def decide(images: np.ndarray, setting: Any = "auto", seed: int = 0) -> Invariances:
    """The invariances a run uses: measured on ``images`` for "auto", else as the setting says."""
    setting = check_setting(setting)
    if setting == "none":
        return Invariances((), mode="none")
    if setting != "auto":
        return Invariances(tuple(setting), mode="forced")
    ratios = measure(images, seed=seed)
    kept = tuple(name for name, ratio in ratios.items() if ratio <= threshold_of(name))
    return Invariances(kept, ratios, mode="auto")


def threshold_of(name: str) -> float:
    """The largest ratio that keeps a transformation: strict for exact ones, looser for small."""
    return THRESHOLD if name in DISCRETE else SMALL_THRESHOLD


def measure(
    images: np.ndarray,
    transforms: Sequence[str] = TRANSFORMS,
    seed: int = 0,
    queries: int = QUERIES,
    references: int = REFERENCES,
) -> dict[str, float]:
    """The nearest-neighbour distance ratio of each transformation (empty with too few images).

    Only ``queries + references`` images are read, so a memory-mapped set stays on disk.
    """
    n = len(images)
    if n < MIN_IMAGES:
        return {}
    rng = np.random.default_rng(seed)
    n_queries = min(queries, n // 4)
    n_references = min(references, n - n_queries)
    chosen = np.sort(rng.choice(n, n_queries + n_references, replace=False))
    sample = shrink(_as_unit(np.asarray(images[chosen])))
    order = rng.permutation(len(sample))
    query, reference = sample[order[:n_queries]], sample[order[n_queries:]]
    flat_reference = reference.reshape(len(reference), -1)
    base = _nearest_distance(query.reshape(n_queries, -1), flat_reference).mean()
    ratios = {}
    for name in transforms:
        moved = transform(query, name, rng)
        if moved.shape != query.shape:  # a quarter turn of a non-square image leaves the set
            ratios[name] = math.inf
            continue
        distance = _nearest_distance(moved.reshape(n_queries, -1), flat_reference).mean()
        ratios[name] = float(distance / base) if base > 0 else math.inf
    return ratios


def transform(images: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    """``images`` (N, H, W, C) float in [0, 1] under one transformation (random where small)."""
    if name == "mirror":
        return images[:, :, ::-1]
    if name == "vertical-flip":
        return images[:, ::-1]
    if name == "quarter-turn":
        turns = rng.choice([1, 3], size=len(images))
        return np.stack(
            [np.rot90(image, k, axes=(0, 1)) for image, k in zip(images, turns, strict=True)]
        )
    from scipy import ndimage

    out = np.empty_like(images)
    for i, image in enumerate(images):
        sign = rng.choice([-1.0, 1.0])
        if name == "rotation":
            out[i] = ndimage.rotate(image, sign * SMALL_ROTATION, axes=(1, 0), reshape=False,
                                    order=1, mode="nearest")  # fmt: skip
        elif name == "shift":
            angle = rng.uniform(0, 2 * np.pi)
            offset = SMALL_SHIFT * np.array([image.shape[0] * np.sin(angle),
                                             image.shape[1] * np.cos(angle), 0])  # fmt: skip
            out[i] = ndimage.shift(image, offset, order=1, mode="nearest")
        elif name == "scale":
            out[i] = _zoom(image, 1 + sign * SMALL_SCALE)
        elif name == "brightness":
            contrast = 1 + sign * BRIGHTNESS
            mean = image.mean()
            out[i] = np.clip((image - mean) * contrast + mean + rng.uniform(-0.1, 0.1), 0, 1)
        else:
            raise SettingsError(f"unknown transformation {name!r}; known: {', '.join(TRANSFORMS)}.")
    return out


def _zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` zoomed about its centre by ``factor``, same size (edges repeated)."""
    from scipy import ndimage

    height, width = image.shape[:2]
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    matrix = np.diag([1 / factor, 1 / factor])
    offset = centre - matrix @ centre
    channels = [
        ndimage.affine_transform(image[..., c], matrix, offset, order=1, mode="nearest")
        for c in range(image.shape[2])
    ]
    return np.stack(channels, axis=-1)


def shrink(images: np.ndarray, side: int = SIDE) -> np.ndarray:
    """Block means that bring the longer side to at most ``side`` pixels (a view when small)."""
    height, width = images.shape[1:3]
    factor = max(1, math.ceil(max(height, width) / side))
    if factor == 1:
        return images
    height, width = height // factor * factor, width // factor * factor
    blocks = images[:, :height, :width].reshape(
        len(images), height // factor, factor, width // factor, factor, images.shape[3]
    )
    return blocks.mean(axis=(2, 4), dtype=np.float32)


def _as_unit(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) float32 in [0, 1]."""
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255
    return images.astype(np.float32)


def _nearest_distance(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Euclidean distance from each query row to its nearest reference row."""
    reference_norms = np.einsum("ij,ij->i", references, references)
    best = np.empty(len(queries), dtype=np.float64)
    for start in range(0, len(queries), 256):
        chunk = queries[start : start + 256]
        squared = (
            np.einsum("ij,ij->i", chunk, chunk)[:, None]
            - 2 * chunk @ references.T
            + reference_norms[None, :]
        )
        best[start : start + len(chunk)] = np.sqrt(np.maximum(squared.min(axis=1), 0))
    return best


def from_metrics(record: Mapping[str, Any]) -> tuple[str, ...]:
    """The kept transformations of a metrics.json ``invariances`` record (unknown names dropped)."""
    kept = record.get("kept") if isinstance(record, Mapping) else None
    if not isinstance(kept, list):
        return ()
    return tuple(name for name in kept if isinstance(name, str) and name in TRANSFORMS)


#: an exact rearrangement of an image's pixels: mirror it (or not), then turn it k quarter turns
Element = tuple[int, bool]


def apply_element(images: np.ndarray, element: Element) -> np.ndarray:
    """(N, H, W, C) images mirrored (when ``element[1]``) and then turned ``element[0]`` times."""
    turns, mirrored = element
    out = images[:, :, ::-1] if mirrored else images
    return np.rot90(out, turns, axes=(1, 2)) if turns % 4 else out


def symmetry_group(kept: Sequence[str], square: bool = True) -> list[Element]:
    """Every rearrangement made by composing the kept mirror, vertical flip and quarter turn
    (the identity first): the orbit a symmetrised feature averages over. A quarter turn of a
    non-square image is dropped, as it changes the image's shape."""
    probe = np.arange(16, dtype=np.int64).reshape(1, 4, 4, 1)
    elements: list[Element] = [(k, m) for m in (False, True) for k in range(4)]
    code = {apply_element(probe, e).tobytes(): e for e in elements}
    generators = [(0, True)] if "mirror" in kept else []
    generators += [(2, True)] if "vertical-flip" in kept else []
    generators += [(1, False)] if "quarter-turn" in kept and square else []
    group = [(0, False)]
    frontier = list(group)
    while frontier:  # close the set under composition with each generator
        element = frontier.pop()
        for generator in generators:
            moved = apply_element(apply_element(probe, element), generator)
            found = code[moved.tobytes()]
            if found not in group:
                group.append(found)
                frontier.append(found)
    return group
