"""The ``arrays`` dataset: images (and optional labels) from a ``.npy`` or ``.npz`` file."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Literal

from imgclust.errors import DataError, SettingsError
from imgclust.hookspecs import hookimpl


class ArraysDataset:
    """Images from ``.npy`` (memory-mapped) or ``.npz``: (N, H, W), (N, H, W, C) or (N, C, H, W).

    Parameters
    ----------
    path : str
        The ``.npy`` or ``.npz`` file.
    images_key : str
        Key of the images in an ``.npz`` (default: ``x``, ``images``, ``x_train`` or the only array).
    labels_key : str
        Key of the labels in an ``.npz`` (default: ``y``, ``labels`` or ``y_train`` when present).
    channels : str
        ``last`` (N, H, W, C), ``first`` (N, C, H, W) or ``auto`` (first when dim 1 is 1 or 3 and
        the last is not).
    """

    splits = ("all",)

    def __init__(
        self,
        path: str,
        images_key: str | None = None,
        labels_key: str | None = None,
        channels: Literal["auto", "last", "first"] = "auto",
    ) -> None:
        self.path = Path(path)
        self.images_key = images_key
        self.labels_key = labels_key
        self.channels = channels

    def load(self, split: str = "all") -> Any:
        from imgclust.interfaces import ImageSet

        images, labels = self._read()
        images = to_nhwc(images, self.channels, str(self.path))
        return ImageSet(images, labels, None, None, {"source": str(self.path)})

    def _read(self) -> tuple[Any, Any]:
        import numpy as np

        path = self.path
        if not path.exists():
            raise DataError(f"array file {str(path)!r} does not exist.")
        if path.suffix not in (".npy", ".npz"):
            raise SettingsError(f"array file {str(path)!r} must end in .npy or .npz.")
        try:
            if path.suffix == ".npy":
                return np.load(path, mmap_mode="r", allow_pickle=False), None
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.files)
                images_key = self.images_key or _pick(keys, ("x", "images", "x_train", "arr_0"), only=True)
                if images_key not in keys:
                    raise DataError(
                        f"{str(path)!r} has no array {images_key!r}; it has {', '.join(keys)}: "
                        "set dataset.images_key."
                    )
                labels_key = self.labels_key or _pick(keys, ("y", "labels", "y_train"))
                if self.labels_key and labels_key not in keys:
                    raise DataError(f"{str(path)!r} has no array {labels_key!r}; it has {', '.join(keys)}.")
                labels = archive[labels_key] if labels_key else None
                return archive[images_key], labels
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise DataError(f"cannot read array file {str(path)!r}: {exc}") from None


def _pick(keys: list[str], preferred: tuple[str, ...], only: bool = False) -> str | None:
    for key in preferred:
        if key in keys:
            return key
    if only and len(keys) == 1:
        return keys[0]
    return None


def to_nhwc(images: Any, channels: str, source: str) -> Any:
    """(N, H, W) / (N, H, W, C) / (N, C, H, W) to (N, H, W, C) uint8 or float32, clearly."""
    import numpy as np

    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(
            f"{source}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W); got {images.shape}."
        )
    first = channels == "first" or (
        channels == "auto" and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3)
    )
    if first:
        images = np.moveaxis(images, 1, -1)
    if images.dtype == np.uint8 or images.dtype == np.float32:
        pass
    elif np.issubdtype(images.dtype, np.integer) or images.dtype == np.bool_:
        if images.size and (images.min() < 0 or images.max() > 255):
            raise DataError(f"{source}: integer images must lie in 0..255.")
        images = images.astype(np.uint8)
    elif np.issubdtype(images.dtype, np.floating):
        images = images.astype(np.float32)
    else:
        raise DataError(f"{source}: images of dtype {images.dtype} are not supported; use uint8 or float.")
    if images.dtype == np.float32 and images.size:
        if not np.isfinite(images).all():
            raise DataError(f"{source}: images contain NaN or infinite values.")
        low, high = float(images.min()), float(images.max())
        if low < 0 or high > 1:
            if low >= 0 and high <= 255:
                images = images / np.float32(255.0)
            else:
                raise DataError(f"{source}: float images must lie in [0, 1] (or 0..255); got {low}..{high}.")
    return images


@hookimpl
def register_datasets(register):
    register("arrays", ArraysDataset, summary="images from a .npy or .npz file (labels from an .npz key)")
