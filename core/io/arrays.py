"""Reading images from ``.npy`` and ``.npz`` files, and arranging arrays as (N, H, W, C) images.

Arrays stay on disk where the format allows: a ``.npy`` is always memory-mapped, and so is an
``.npz`` member stored uncompressed (``np.savez``), at its offset inside the zip file. Only a
compressed member (``np.savez_compressed``) or a dtype that must be converted is read into
memory, and conversions run a chunk at a time, never through float64. Headers are read and
checked before any data.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.console import note
from imgclust.errors import DataError, ImgclustError, SettingsError, one_line
from imgclust.io.bounded import NpyHeader, check_npy_payload, read_npy, read_npy_header, read_npz
from imgclust.io.memory import check_bytes, check_inflation, nbytes_of
from imgclust.io.paths import check_input_file
from imgclust.stages.interfaces import ImageSet, check_scale

IMAGE_KEYS = ("x", "images", "x_train", "arr_0")
LABEL_KEYS = ("y", "labels", "y_train")
CHANNEL_SIZES = (1, 3, 4)
CHUNK = 8192  # images per chunk when checking or converting


def load_arrays(
    path: Path,
    images_key: str | None = None,
    labels_key: str | None = None,
    labels_path: Path | None = None,
    channels: str = "auto",
    limit: int | None = None,
    class_names: str | None = None,
) -> Any:
    """An ImageSet from a ``.npy`` or ``.npz`` file (see the ``arrays`` dataset's settings).

    ``class_names`` (comma-separated, or a text file of one name a line) names integer labels;
    without it an ``.npz``'s own ``class_names`` text member does."""

    images, labels, info = read_arrays(path, images_key, labels_key)
    if labels_path is not None:
        labels = read_labels(labels_path)
    source = path.name
    count = len(images) if images.ndim else 0
    if limit is not None and images.ndim:
        images = images[:limit]
    images, layout = arrange(images, channels, source)
    if labels is not None:
        labels = check_labels(labels, count, source)
    names = _class_names(path, class_names)
    if names is not None and labels is None and class_names is None:
        names = None  # names stored beside unlabelled images have nothing to name
    if names is not None:
        check_class_names(names, labels, source)
    if labels is not None:
        labels = labels[: len(images)]
    info.update(layout)
    if layout.get("channels_assumed") and not _plainly_channel_last(layout["input_shape"]):
        _note(
            f"{source}: read images of shape {tuple(layout['input_shape'])} as channel-"
            f"{layout['channels']}; set dataset.channels=first or last if that is wrong"
        )
    return ImageSet(images, labels, None, names, info)


def read_arrays(
    path: Path,
    images_key: str | None = None,
    labels_key: str | None = None,
    key_hint: str = "set dataset.images_key",
) -> tuple[Any, Any, dict[str, Any]]:
    """(images, labels or None, info) from a ``.npy`` or ``.npz``, memory-mapped where possible.

    Headers are read and checked before any data: a damaged header, an object array or a member
    that would inflate past :func:`imgclust.io.memory.max_bytes` is refused in one line.
    ``key_hint`` ends the message for an ``.npz`` without images: what the caller can do.
    """
    if not path.exists():
        raise DataError(f"array file {str(path)!r} does not exist.")
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a folder: use the image-folder dataset for folders.")
    if path.suffix.lower() not in (".npy", ".npz"):
        raise SettingsError(f"array file {str(path)!r} must end in .npy or .npz.")
    check_input_file(path, "array file")
    if path.suffix.lower() == ".npy" and (images_key or labels_key):
        raise SettingsError(
            f"{path.name} is a .npy holding one array: drop images_key/labels_key "
            "(use labels_path for labels)."
        )
    try:
        if path.suffix.lower() == ".npy":
            return _read_npy(path)
        return _read_npz(path, images_key, labels_key, key_hint)
    except ImgclustError:
        raise
    except MemoryError:
        raise DataError(f"array file {str(path)!r} does not fit in memory.") from None
    except Exception as exc:  # any library failure on an untrusted file is one line
        raise DataError(f"cannot read array file {str(path)!r}: {one_line(exc)}") from None


def _read_npy(path: Path) -> tuple[Any, Any, dict[str, Any]]:
    """A ``.npy`` file, memory-mapped after its header is checked against the file's length."""
    import numpy as np

    source = path.name
    with open(path, "rb") as handle:
        header = read_npy_header(handle, source)
        check_npy_payload(header, path.stat().st_size - header.data_offset, source)
    images = np.load(path, mmap_mode="r", allow_pickle=False)
    return images, None, {"source": str(path), "memory_mapped": isinstance(images, np.memmap)}


def _read_npz(
    path: Path, images_key: str | None, labels_key: str | None, key_hint: str
) -> tuple[Any, Any, dict[str, Any]]:
    """An ``.npz``'s images (memory-mapped when stored uncompressed) and labels."""
    with zipfile.ZipFile(path) as archive:
        keys = [n[: -len(".npy")] for n in archive.namelist() if n.endswith(".npy")]
        key = images_key or _pick([k for k in keys if k != NAMES_KEY], IMAGE_KEYS, only=True)
        if key is None or key not in keys:
            what = f"no array {key!r}" if key else "no array named x, images, x_train or arr_0"
            raise DataError(
                f"{path.name} has {what}; it has {', '.join(keys) or 'none'}: {key_hint}."
            )
        label_key = labels_key or _pick(keys, LABEL_KEYS)
        if labels_key and labels_key not in keys:
            raise DataError(
                f"{path.name} has no array {labels_key!r}; it has {', '.join(keys)}: "
                "set dataset.labels_key."
            )
        headers = {k: npz_member_header(archive, k, path.name) for k in (key, label_key) if k}
    images = npz_member_memmap(path, key)
    info: dict[str, Any] = {"source": str(path)}
    info.update(images_key=key, labels_key=label_key, memory_mapped=images is not None)
    if images is None:
        check_bytes(headers[key].nbytes, f"{path.name}: array {key!r}", "save it with np.savez")
    if label_key:
        check_bytes(headers[label_key].nbytes, f"{path.name}: labels {label_key!r}")
    if images is None:
        _note(
            f"{path.name}: {key!r} is compressed, so it is read into memory; "
            "save with np.savez (or as .npy) to memory-map it"
        )
    wanted = tuple(k for k in (key if images is None else None, label_key) if k)
    arrays = read_npz(path, path.name, wanted) if wanted else {}
    images = arrays[key] if images is None else images
    labels = arrays[label_key] if label_key else None
    return images, labels, info


def npz_member_header(archive: zipfile.ZipFile, key: str, source: str) -> NpyHeader:
    """The checked ``.npy`` header of an ``.npz`` member, read without inflating its data.

    The zip's own record of the member's inflated size bounds what reading it may allocate:
    the header's array must fit in it, and neither may pass the memory bound.
    """
    member = archive.getinfo(f"{key}.npy")
    what = f"{source}: array {key!r}"
    if member.compress_type != zipfile.ZIP_STORED:
        advice = "save it with np.savez or as .npy"
        check_inflation(member.file_size, member.compress_size, what, advice)
    with archive.open(member) as handle:
        header = read_npy_header(handle, what)
    check_npy_payload(header, member.file_size - header.data_offset, what)
    return header


def npz_member_memmap(path: Path, key: str) -> Any:
    """A read-only memory map of an uncompressed ``.npz`` member, or None when it cannot be one.

    ``np.savez`` stores each array as a ``.npy`` file inside a zip without compression, so its
    bytes lie contiguously in the file: past the zip's local header sits the ``.npy`` header, then
    the data. Compressed, encrypted, object, damaged or empty arrays cannot be mapped.
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
        start = member.header_offset + 30 + name_length + extra_length
        handle.seek(start)
        try:
            header = read_npy_header(handle, f"{path.name}: array {key!r}")
        except DataError:
            return None
        offset = start + header.data_offset
    shape = header.shape
    if 0 in shape or offset + header.nbytes > start + member.compress_size:
        return None
    if offset + header.nbytes > path.stat().st_size:
        return None
    return np.memmap(
        path,
        dtype=header.dtype,
        mode="r",
        offset=offset,
        shape=shape,
        order="F" if header.fortran else "C",
    )


def read_labels(path: Path) -> Any:
    """Labels from a ``.npy`` file, its header checked before the data is read."""
    check_input_file(path, "labels file")
    try:
        with open(path, "rb") as handle:
            header = read_npy_header(handle, path.name)
            check_npy_payload(header, path.stat().st_size - header.data_offset, path.name)
        check_bytes(header.nbytes, f"labels file {path.name}")
        return read_npy(path, f"labels file {path.name}")
    except ImgclustError:
        raise
    except Exception as exc:  # any library failure on an untrusted file is one line
        raise DataError(f"cannot read labels file {str(path)!r}: {one_line(exc)}") from None


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


def _plainly_channel_last(shape: list[int]) -> bool:
    """Whether a 4-d shape can only be channel-last ((N, 28, 28, 1), not (N, 3, 3, 3)): then
    reading it so needs no note."""
    return shape[-1] in CHANNEL_SIZES and shape[1] not in CHANNEL_SIZES


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
    if 0 in images.shape[1:]:
        raise DataError(
            f"{source}: images of shape {shape} hold no pixels (a side of 0): save real images."
        )
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
        check_scale(images, source)  # floats are in [0, 1] or refused: never divided here
        if dtype == np.float32:
            return images
        return _convert(images, np.float32, lambda c: c.astype(np.float32))
    raise DataError(
        f"{source}: images of dtype {dtype} are not supported; use uint8 (0..255) or float (0..1)."
    )


def _range(images: Any) -> tuple[float, float]:
    """Smallest and largest value, read a chunk at a time."""
    low, high = float("inf"), float("-inf")
    for start in range(0, len(images), CHUNK):
        chunk = images[start : start + CHUNK]
        low, high = min(low, chunk.min().item()), max(high, chunk.max().item())
    return low, high


def _convert(images: Any, dtype: Any, function: Any) -> Any:
    """A new in-memory array of ``dtype``, filled a chunk at a time."""
    import numpy as np

    check_bytes(
        nbytes_of(images.shape, np.dtype(dtype).itemsize),
        f"converting {tuple(images.shape)} images of {images.dtype} to {np.dtype(dtype)}",
        "save them as uint8 (0..255) or float32 (0..1) to memory-map them",
    )
    out = np.empty(images.shape, dtype=dtype)
    for start in range(0, len(images), CHUNK):
        out[start : start + CHUNK] = function(np.asarray(images[start : start + CHUNK]))
    return out


def _note(message: str) -> None:
    """A one-line note on stderr, in the run log's style."""

    note(message)


# Class names ---------------------------------------------------------------------------------
def _class_names(path: Path, setting: str | None) -> list[str] | None:
    """The ``class_names`` setting, else the names stored in the ``.npz``, else None."""
    if setting is not None and str(setting).strip():
        return parse_class_names(str(setting))
    if path.suffix.lower() == ".npz":
        return read_npz_class_names(path)
    return None


NAMES_KEY = "class_names"  # the .npz member that may name the classes
MAX_NAMES_BYTES = 16 * 2**20  # a names file or member larger than this is not a list of names


def parse_class_names(value: str) -> list[str]:
    """Names from ``cat,dog,owl``, or from a ``.txt`` file (one per line) when the value ends in
    ``.txt``, contains a path separator, or names a file that exists."""
    path = Path(value).expanduser()
    if value.lower().endswith(".txt") or "/" in value or path.is_file():
        return read_names_file(path)
    return check_names([part.strip() for part in value.split(",")], "dataset.class_names")


def read_names_file(path: Path) -> list[str]:
    """One name per line of a UTF-8 text file; blank lines at the end are ignored."""
    where = f"class names file {str(path)!r}"
    if path.exists():
        check_input_file(path, "class names file")
    try:
        if path.stat().st_size > MAX_NAMES_BYTES:
            raise DataError(f"{where} is larger than {MAX_NAMES_BYTES >> 20} MiB: not a name list.")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{where} does not exist: give a .txt file or names like a,b,c.") from None
    except UnicodeDecodeError:
        raise DataError(f"{where} is not UTF-8 text: save it as UTF-8.") from None
    except OSError as exc:
        raise DataError(f"cannot read {where}: {exc.strerror or exc}.") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return check_names(lines, where)


def read_npz_class_names(path: Path) -> list[str] | None:
    """The ``class_names`` member of an ``.npz`` (a 1-D NumPy text array), read without pickle;
    None when there is none."""
    try:
        with zipfile.ZipFile(path) as archive:
            if f"{NAMES_KEY}.npy" not in archive.namelist():
                return None
            where = f"{path.name}: array {NAMES_KEY!r}"
            try:
                header = npz_member_header(archive, NAMES_KEY, path.name)
            except DataError as exc:
                if "object array" not in str(exc):
                    raise
                header = None
        if header is None or header.dtype.kind != "U" or len(header.shape) != 1:
            found = "Python objects" if header is None else f"{header.dtype} {tuple(header.shape)}"
            raise DataError(
                f"{where} must be a 1-D array of text (np.array(['cat', 'dog'])), not "
                f"{found}: save the names as text or rename it."
            )
        if header.nbytes > MAX_NAMES_BYTES:
            raise DataError(f"{where} is larger than {MAX_NAMES_BYTES >> 20} MiB: not a name list.")
        names = read_npz(path, where, (NAMES_KEY,))[NAMES_KEY]
    except ImgclustError:
        raise
    except Exception as exc:  # any library failure on an untrusted file is one line
        raise DataError(f"cannot read {NAMES_KEY!r} of {str(path)!r}: {one_line(exc)}") from None
    return check_names([str(n).strip() for n in names.tolist()], where)


def check_names(names: list[str], where: str) -> list[str]:
    """Names must be non-empty and distinct."""
    if not names or any(not n for n in names):
        raise DataError(f"{where}: every class name must be non-empty (no blank names).")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"{where}: the class name {name[:60]!r} is given twice.")
        seen.add(name)
    return names


def check_class_names(names: list[str], labels: Any, source: str) -> None:
    """Class names name integer labels 0..len-1: every label must have one."""
    import numpy as np

    if labels is None:
        raise DataError(
            f"{source}: class names were given but there are no labels to name: "
            "set dataset.labels_key or dataset.labels_path."
        )
    if labels.dtype.kind == "U":
        raise DataError(
            f"{source}: the labels are text, so they name themselves: drop dataset.class_names "
            "(class names name the integer labels 0, 1, 2...)."
        )
    if labels.dtype.kind not in "iu":
        raise DataError(
            f"{source}: class names name integer labels 0, 1, 2..., not {labels.dtype} labels: "
            "save the labels as integers or drop dataset.class_names."
        )
    if len(labels):
        low, high = int(np.min(labels)), int(np.max(labels))
        if low < 0 or high >= len(names):
            raise DataError(
                f"{source}: labels run from {low} to {high} but {len(names)} class names name "
                f"0 to {len(names) - 1}: give one name per label."
            )


IN_MEMORY = "in-memory"


class InMemoryImages:
    """Arrays handed to ``imgclust.run(images=...)``: a dataset that lives in one Python process.

    A run folder names it as its dataset; read anywhere else (``imgclust report``, ``export``,
    ``--config``), it has no images to give and says so in one line.
    """

    splits = ("all",)

    def __init__(self) -> None:
        self.data: Any = None

    def load(self, split: str = "all") -> Any:
        if self.data is None:
            raise DataError(
                f"dataset {IN_MEMORY!r} holds the arrays given to imgclust.run(images=...) "
                "in that Python session only: save them with numpy.save and use dataset "
                "'arrays' (path=...) to read them again."
            )
        return self.data


def in_memory_images(images: Any, labels: Any = None, ids: Any = None) -> Any:
    """Arrays from Python as a checked ImageSet: images (N, H, W), (N, H, W, C) or (N, C, H, W);
    labels one number or text per image, or None; ids one unique name per image, or None."""

    source = "imgclust.run(images=...)"
    if not hasattr(images, "shape") or not hasattr(images, "dtype"):
        try:
            images = np.asarray(images)
        except Exception as exc:  # ragged lists and other non-arrays
            raise DataError(f"{source}: images must be one array, not {one_line(exc)}.") from None
    if images.dtype.kind not in "biuf":
        raise DataError(f"{source}: images must hold numbers, not {images.dtype}.")
    arranged, layout = arrange(images, "auto", source)
    n = len(arranged)
    if labels is not None:
        labels = check_labels(labels, n, source)
    if ids is not None:
        if isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__"):
            raise DataError(f"{source}: ids must be a list of names, one per image.")
        ids = [str(i) for i in ids]
        if len(ids) != n:
            raise DataError(f"{source}: {n} images but {len(ids)} ids.")
        if len(set(ids)) != n:
            raise DataError(f"{source}: ids must name each image once; some repeat.")
    return ImageSet(arranged, labels, ids, None, dict(layout)).validate(source)
