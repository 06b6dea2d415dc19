"""The three interfaces every stage implements, and the image container they share.

They are small, scikit-learn flavoured ``Protocol``s: a plugin needs no base class, only the
methods below. Arrays are NumPy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import DataError


@dataclass
class ImageSet:
    """Images with optional labels: what a dataset's ``load(split)`` returns.

    ``images`` is (N, H, W, C), uint8 or float32 in [0, 1], possibly a memory map.
    ``ids`` names each image (a relative path or an index), ``labels`` is (N,) or None.
    """

    images: np.ndarray
    labels: np.ndarray | None = None
    ids: Sequence[str] | None = None
    class_names: Sequence[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ids is None:
            self.ids = [str(i) for i in range(len(self.images))]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Height, width and channels of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def validate(self, name: str = "dataset") -> ImageSet:
        """Check shape, dtype and consistency; raise :class:`DataError` with one clear line."""
        images = self.images
        if len(images) == 0:
            raise DataError(f"{name} holds no images: point it at data that has some.")
        if images.ndim != 4:
            raise DataError(f"{name} images must be (N, H, W, C); got shape {tuple(images.shape)}.")
        if images.dtype != np.uint8 and images.dtype != np.float32:
            raise DataError(
                f"{name} images must be uint8 or float32 in [0, 1]; got {images.dtype}."
            )
        if self.labels is not None and len(self.labels) != len(images):
            raise DataError(f"{name} has {len(images)} images but {len(self.labels)} labels.")
        if self.ids is not None and len(self.ids) != len(images):
            raise DataError(f"{name} has {len(images)} images but {len(self.ids)} ids.")
        return self

    def subset(self, index: np.ndarray | slice) -> ImageSet:
        """A view of some of the images, with their labels and ids."""
        ids = np.asarray(self.ids, dtype=object)[index].tolist()
        labels = None if self.labels is None else self.labels[index]
        return ImageSet(self.images[index], labels, ids, self.class_names, dict(self.info))


@runtime_checkable
class Dataset(Protocol):
    """A source of images. ``splits`` names what ``load`` accepts, e.g. ("train", "test", "all")."""

    splits: Sequence[str]

    def load(self, split: str = "all") -> ImageSet: ...


@runtime_checkable
class Encoder(Protocol):
    """Turns images (or the previous encoder's features) into (N, D) float32 features."""

    def fit(self, images: np.ndarray, validation: np.ndarray | None = None) -> Encoder: ...

    def transform(self, images: np.ndarray) -> np.ndarray: ...

    def save(self, directory: Path) -> None: ...

    def load(self, directory: Path) -> Encoder: ...


@runtime_checkable
class Clusterer(Protocol):
    """Groups features; -1 means noise. ``predict`` exists only where new points can be assigned."""

    def fit_predict(self, features: np.ndarray) -> np.ndarray: ...

    def save(self, directory: Path) -> None: ...

    def load(self, directory: Path) -> Clusterer: ...


def can_predict(clusterer: object) -> bool:
    """Whether a clusterer can assign new points after fitting."""
    flag = getattr(clusterer, "can_predict", None)
    if flag is not None:
        return bool(flag)
    return callable(getattr(clusterer, "predict", None))
