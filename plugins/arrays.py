"""The ``arrays`` dataset: images (and optional labels) from a ``.npy`` or ``.npz`` file.

The reading itself is :mod:`imgclust.io.arrays`: memory-mapped where the format allows, checked
before any data is read, converted a chunk at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from imgclust.errors import SettingsError
from imgclust.kit import IN_MEMORY, InMemoryImages, check_limit, hookimpl, load_arrays


class ArraysDataset:
    """Images from ``.npy`` or ``.npz`` (memory-mapped): (N, H, W), (N, H, W, C) or (N, C, H, W).

    Parameters
    ----------
    path : str
        The ``.npy`` or ``.npz`` file.
    images_key : str | None
        Key of the images in an ``.npz`` (default: x, images, x_train, arr_0 or the only one).
    labels_key : str | None
        Key of the labels in an ``.npz`` (default: y, labels or y_train when present).
    labels_path : str | None
        A ``.npy`` file of labels, one per image (for images in a ``.npy``).
    channels : str
        ``last`` (N, H, W, C), ``first`` (N, C, H, W) or ``auto`` (guess; the guess is reported).
    limit : int | None
        Keep only the first ``limit`` images (quick experiments).
    class_names : str | None
        Names of the integer labels 0, 1, 2...: comma-separated (``cat,dog,owl``) or a ``.txt``
        file with one name per line (default: an ``.npz``'s ``class_names`` text array, if any).
    """

    splits = ("all",)

    def __init__(
        self,
        path: str,
        images_key: str | None = None,
        labels_key: str | None = None,
        labels_path: str | None = None,
        channels: Literal["auto", "last", "first"] = "auto",
        limit: int | None = None,
        class_names: str | None = None,
    ) -> None:
        if channels not in ("auto", "last", "first"):
            raise SettingsError(
                f"dataset 'arrays' channels must be auto, last or first, not {channels!r}."
            )
        self.path = Path(path).expanduser()
        self.images_key = images_key
        self.labels_key = labels_key
        self.labels_path = Path(labels_path).expanduser() if labels_path else None
        self.channels = channels
        self.limit = check_limit(limit, "dataset 'arrays'")
        self.class_names = class_names

    def load(self, split: str = "all") -> Any:
        return load_arrays(
            self.path,
            self.images_key,
            self.labels_key,
            self.labels_path,
            self.channels,
            self.limit,
            self.class_names,
        )


@hookimpl
def register_datasets(register):
    register(
        "arrays",
        ArraysDataset,
        summary="images from a .npy or .npz file, memory-mapped (labels from a key or a file)",
    )
    register(
        IN_MEMORY,
        InMemoryImages,
        summary="arrays given to imgclust.run(images=...) from Python (that session only)",
    )
