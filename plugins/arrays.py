"""The ``arrays`` dataset: images (and optional labels) from a ``.npy`` or ``.npz`` file.

Arrays stay on disk where the format allows: a ``.npy`` is always memory-mapped, and so is an
``.npz`` member stored uncompressed (``np.savez``), at its offset inside the zip file. Only a
compressed member (``np.savez_compressed``) or a dtype that must be converted is read into
memory, and conversions run a chunk at a time, never through float64.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Any, Literal

from imgclust.errors import DataError, SettingsError
from imgclust.hookspecs import hookimpl

IMAGE_KEYS = ("x", "images", "x_train", "arr_0")
LABEL_KEYS = ("y", "labels", "y_train")
CHANNEL_SIZES = (1, 3, 4)
CHUNK = 8192  # images per chunk when checking or converting


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
    """

    splits = ("all",)

    def __init__(
        self,
        path: str,
        images_key: str | None = None,
        labels_key: str | None = None,
        labels_path: str | None = None,
        channels: Literal["auto", "last", "first"] = "auto",
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

    def load(self, split: str = "all") -> Any:
        from imgclust.interfaces import ImageSet

        images, labels, info = read_arrays(self.path, self.images_key, self.labels_key)
        if self.labels_path is not None:
            labels = read_labels(self.labels_path)
        source = self.path.name
        images, layout = arrange(images, self.channels, source)
        info.update(layout)
        if layout.get("channels_assumed"):
            _note(
                f"{source}: read images of shape {tuple(layout['input_shape'])} as channel-"
                f"{layout['channels']}; set dataset.channels=first or last if that is wrong"
            )
        if labels is not None:
            labels = check_labels(labels, len(images), source)
        return ImageSet(images, labels, None, None, info)


def read_arrays(
    path: Path, images_key: str | None = None, labels_key: str | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """(images, labels or None, info) from a ``.npy`` or ``.npz``, memory-mapped where possible."""
    import numpy as np

    if not path.exists():
        raise DataError(f"array file {str(path)!r} does not exist.")
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a folder: use the image-folder dataset for folders.")
    if path.suffix.lower() not in (".npy", ".npz"):
        raise SettingsError(f"array file {str(path)!r} must end in .npy or .npz.")
    info: dict[str, Any] = {"source": str(path)}
    try:
        if path.suffix.lower() == ".npy":
            if images_key or labels_key:
                raise SettingsError(
                    f"{path.name} is a .npy holding one array: drop images_key/labels_key "
                    "(use labels_path for labels)."
                )
            images = np.load(path, mmap_mode="r", allow_pickle=False)
            info["memory_mapped"] = isinstance(images, np.memmap)
            return images, None, info
        with zipfile.ZipFile(path) as archive:
            keys = [n[: -len(".npy")] for n in archive.namelist() if n.endswith(".npy")]
        key = images_key or _pick(keys, IMAGE_KEYS, only=True)
        if key is None or key not in keys:
            what = f"no array {key!r}" if key else "no array named x, images, x_train or arr_0"
            raise DataError(
                f"{path.name} has {what}; it has {', '.join(keys) or 'none'}: "
                "set dataset.images_key."
            )
        label_key = labels_key or _pick(keys, LABEL_KEYS)
        if labels_key and labels_key not in keys:
            raise DataError(
                f"{path.name} has no array {labels_key!r}; it has {', '.join(keys)}: "
                "set dataset.labels_key."
            )
        images = npz_member_memmap(path, key)
        info.update(images_key=key, labels_key=label_key, memory_mapped=images is not None)
        with np.load(path, allow_pickle=False) as archive:
            if images is None:
                _note(
                    f"{path.name}: {key!r} is compressed, so it is read into memory; "
                    "save with np.savez (or as .npy) to memory-map it"
                )
                images = archive[key]
            labels = archive[label_key] if label_key else None
        return images, labels, info
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, struct.error) as exc:
        if "Object arrays" in str(exc):
            raise DataError(
                f"{str(path)!r} holds an object array (images of different shapes, or Python "
                "objects): save one (N, H, W[, C]) array of numbers, or resize the images to one "
                "size with the image-folder dataset's size setting."
            ) from None
        raise DataError(f"cannot read array file {str(path)!r}: {exc}") from None


def npz_member_memmap(path: Path, key: str) -> Any:
    """A read-only memory map of an uncompressed ``.npz`` member, or None when it cannot be one.

    ``np.savez`` stores each array as a ``.npy`` file inside a zip without compression, so its
    bytes lie contiguously in the file: past the zip's local header sits the ``.npy`` header, then
    the data. Compressed, encrypted or object arrays cannot be mapped.
    """
    import numpy as np

    with zipfile.ZipFile(path) as archive:
        member = archive.getinfo(f"{key}.npy")
    if member.compress_type != zipfile.ZIP_STORED or member.flag_bits & 0x1:
        return None
    with open(path, "rb") as handle:
        handle.seek(member.header_offset)
        local = handle.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            return None
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        handle.seek(member.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            return None
        offset = handle.tell()
    if dtype.hasobject or 0 in shape:
        return None
    return np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
    )


def read_labels(path: Path) -> Any:
    """Labels from a ``.npy`` file."""
    import numpy as np

    if not path.exists():
        raise DataError(f"labels file {str(path)!r} does not exist.")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read labels file {str(path)!r}: {exc}") from None


def check_labels(labels: Any, n_images: int, source: str) -> Any:
    """Labels must be one per image, 1-D, numbers or text."""
    import numpy as np

    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{source}: labels must be one value per image (N,); got {labels.shape}.")
    if len(labels) != n_images:
        raise DataError(f"{source}: {n_images} images but {len(labels)} labels.")
    if labels.dtype.kind not in "biuU":
        raise DataError(
            f"{source}: labels of dtype {labels.dtype} are not supported; use integers or text."
        )
    return labels


def _pick(keys: list[str], preferred: tuple[str, ...], only: bool = False) -> str | None:
    for key in preferred:
        if key in keys:
            return key
    if only and len(keys) == 1:
        return keys[0]
    return None


def to_nhwc(images: Any, channels: str, source: str) -> Any:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) as (N, H, W, C) uint8 or float32 in [0, 1]."""
    return arrange(images, channels, source)[0]


def arrange(images: Any, channels: str, source: str) -> tuple[Any, dict[str, Any]]:
    """Images as (N, H, W, C) uint8 or float32 in [0, 1], and what was assumed about their layout.

    A uint8 or in-range float32 memory map stays one; other dtypes are converted chunk by chunk.
    """
    import numpy as np

    shape = tuple(int(v) for v in images.shape)
    layout: dict[str, Any] = {"input_shape": list(shape), "input_dtype": str(images.dtype)}
    if images.ndim == 3:
        images = images[..., None]
        layout["channels"] = "none (one channel added)"
    elif images.ndim == 4:
        first = channels == "first" or (
            channels == "auto" and shape[1] in CHANNEL_SIZES and shape[-1] not in CHANNEL_SIZES
        )
        layout["channels"] = "first" if first else "last"
        layout["channels_assumed"] = channels == "auto"
        if first:
            images = np.moveaxis(images, 1, -1)
    elif images.ndim == 2:
        raise DataError(
            f"{source}: images are {shape}, flat vectors, not pictures: reshape them to "
            "(N, H, W) or (N, H, W, C) before saving."
        )
    else:
        raise DataError(
            f"{source}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W); got {shape}."
        )
    if len(images) == 0:
        raise DataError(f"{source}: the array holds no images.")
    return _as_image_dtype(images, source), layout


def _as_image_dtype(images: Any, source: str) -> Any:
    """uint8 as is; float32 in [0, 1] as is; other numbers converted a chunk at a time."""
    import numpy as np

    dtype = images.dtype
    if dtype == np.uint8:
        return images
    if dtype == np.bool_:
        return _convert(images, np.uint8, lambda c: c.astype(np.uint8) * np.uint8(255))
    if dtype.kind in "iu":
        low, high = _range(images)
        if low < 0 or high > 255:
            raise DataError(
                f"{source}: integer images must lie in 0..255; got {low}..{high}. "
                "Scale them to 0..255 (uint8) or 0..1 (float)."
            )
        return _convert(images, np.uint8, lambda c: c.astype(np.uint8))
    if dtype.kind == "f":
        low, high = _range(images, finite=True, source=source)
        if low >= 0 and high <= 1:
            if dtype == np.float32:
                return images
            return _convert(images, np.float32, lambda c: c.astype(np.float32))
        if low >= 0 and high <= 255:
            return _convert(images, np.float32, lambda c: c.astype(np.float32) / np.float32(255))
        raise DataError(
            f"{source}: float images must lie in [0, 1] (or 0..255); got {low:g}..{high:g}."
        )
    raise DataError(
        f"{source}: images of dtype {dtype} are not supported; use uint8 (0..255) or float (0..1)."
    )


def _range(images: Any, finite: bool = False, source: str = "") -> tuple[float, float]:
    """Smallest and largest value, read a chunk at a time; non-finite values are an error."""
    import numpy as np

    low, high = np.inf, -np.inf
    for start in range(0, len(images), CHUNK):
        chunk = np.asarray(images[start : start + CHUNK])
        if finite and not np.isfinite(chunk).all():
            raise DataError(f"{source}: images contain NaN or infinite values.")
        low, high = min(low, chunk.min().item()), max(high, chunk.max().item())
    return low, high


def _convert(images: Any, dtype: Any, function: Any) -> Any:
    """A new in-memory array of ``dtype``, filled a chunk at a time."""
    import numpy as np

    out = np.empty(images.shape, dtype=dtype)
    for start in range(0, len(images), CHUNK):
        out[start : start + CHUNK] = function(np.asarray(images[start : start + CHUNK]))
    return out


def _note(message: str) -> None:
    """A one-line note on stderr, in the run log's style."""
    from imgclust.console import note

    note(message)


@hookimpl
def register_datasets(register):
    register(
        "arrays",
        ArraysDataset,
        summary="images from a .npy or .npz file, memory-mapped (labels from a key or a file)",
    )
