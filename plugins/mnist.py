"""The ``mnist`` dataset: 70,000 handwritten digits from local IDX or ``.npz`` files, or Keras.

Where it looks, in order: the ``path`` setting; the ``IMGCLUST_MNIST`` environment variable;
Keras's cache (``$KERAS_HOME/datasets/mnist.npz`` or ``~/.keras/datasets/mnist.npz``); and only
then Keras's download. A path is either a folder holding the four IDX files (gzipped or not) or an
``.npz`` with Keras's keys ``x_train``, ``y_train``, ``x_test``, ``y_test``.
"""

from __future__ import annotations

import gzip
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.errors import DataError, ImgclustError
from imgclust.kit import (
    ImageSet,
    check_inflation,
    check_limit,
    hookimpl,
    import_keras,
    inflation_cap,
)
from imgclust.kit import read_npz as read_bounded_npz

ENV_VAR = "IMGCLUST_MNIST"
#: IDX file stems of each split: (images, labels).
IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IDX_UBYTE = 0x08
CLASS_NAMES = [str(d) for d in range(10)]
HOW_TO_POINT = (
    "download mnist.npz or the four IDX files and set dataset.path "
    f"(--set dataset.path=DIR_OR_NPZ) or {ENV_VAR}"
)

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


class MnistDataset:
    """MNIST as uint8 (N, 28, 28, 1) images with int64 labels; ids like ``train-123``.

    Parameters
    ----------
    path : str | None
        Folder of the four IDX files (gzipped or not) or Keras's mnist.npz; default $IMGCLUST_MNIST.
    limit : int | None
        Keep only the first ``limit`` images of the split (quick experiments).
    """

    splits = ("train", "test", "all")

    def __init__(self, path: str | None = None, limit: int | None = None) -> None:
        self.path = path
        self.limit = check_limit(limit, "dataset 'mnist'")
        self._arrays: Arrays | None = None
        self.source: str | None = None

    def load(self, split: str = "all") -> Any:

        if split not in self.splits:
            raise DataError(f"mnist has no split {split!r}; it has {', '.join(self.splits)}.")
        arrays = self._load_arrays()
        parts = ["train", "test"] if split == "all" else [split]
        images: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        ids: list[str] = []
        for part in parts:
            x, y = arrays[part]
            images.append(x)
            labels.append(y)
            ids.extend(f"{part}-{i}" for i in range(len(x)))
        x = images[0] if len(images) == 1 else np.concatenate(images)
        y = labels[0] if len(labels) == 1 else np.concatenate(labels)
        if self.limit is not None:
            x, y, ids = x[: self.limit], y[: self.limit], ids[: self.limit]
        return ImageSet(x[..., None], y, ids, CLASS_NAMES, {"source": self.source})

    def _load_arrays(self) -> Arrays:
        """Both splits, read once per dataset object from the first source that exists."""
        if self._arrays is None:
            self._arrays = self._read()
        return self._arrays

    def _read(self) -> Arrays:
        if self.path:
            return self._read_location(Path(self.path).expanduser(), "dataset.path")
        if os.environ.get(ENV_VAR):
            return self._read_location(Path(os.environ[ENV_VAR]).expanduser(), ENV_VAR)
        for cached in keras_cache_files():
            if cached.is_file():
                self.source = str(cached)
                return read_npz(cached)
        return self._download()

    def _read_location(self, path: Path, given_by: str) -> Arrays:
        if not path.exists():
            raise DataError(
                f"MNIST path {str(path)!r} (from {given_by}) does not exist: {HOW_TO_POINT}."
            )
        self.source = str(path)
        return read_location(path)

    def _download(self) -> Arrays:
        try:
            (x_train, y_train), (x_test, y_test) = keras_load_data()
        except Exception as exc:  # Keras raises a bare Exception on "URL fetch failure"
            reason = " ".join(str(exc).split())[:160]
            raise DataError(
                f"MNIST is not available here and Keras could not download it ({reason}): "
                f"{HOW_TO_POINT}."
            ) from None
        self.source = "keras download"
        return {
            "train": check_split(x_train, y_train, "keras train"),
            "test": check_split(x_test, y_test, "keras test"),
        }


def keras_cache_files() -> list[Path]:
    """Where ``keras.datasets.mnist.load_data`` keeps its copy, in the order Keras looks."""
    places = []
    if os.environ.get("KERAS_HOME"):
        places.append(Path(os.environ["KERAS_HOME"]))
    places += [Path.home() / ".keras", Path("/tmp/.keras")]
    return [place / "datasets" / "mnist.npz" for place in places]


def keras_load_data() -> Any:
    """Keras's own download (and cache) of MNIST; imported only when nothing local exists."""

    return import_keras().datasets.mnist.load_data()


def read_location(path: Path) -> Arrays:
    """A folder of IDX files (or holding ``mnist.npz``), or an ``.npz`` file."""
    if path.is_file():
        return read_npz(path)
    found = {split: [find_idx(path, stem) for stem in stems] for split, stems in IDX_STEMS.items()}
    if all(p is not None for paths in found.values() for p in paths):
        return {split: read_idx_pair(*paths) for split, paths in found.items()}  # type: ignore[arg-type]
    if (path / "mnist.npz").is_file():
        return read_npz(path / "mnist.npz")
    missing = [
        stem
        for split, stems in IDX_STEMS.items()
        for stem, p in zip(stems, found[split], strict=True)
        if p is None
    ]
    raise DataError(
        f"MNIST folder {str(path)!r} lacks {', '.join(missing)}[.gz] (and has no mnist.npz): "
        "put the four IDX files there or point at an .npz."
    )


def find_idx(folder: Path, stem: str) -> Path | None:
    """``stem``, ``stem.gz`` or the dotted variant (``train-images.idx3-ubyte``) in ``folder``."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, f"{stem}.gz", dotted, f"{dotted}.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One split's images and labels from its two IDX files."""
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    return check_split(images, labels, f"{images_path.name} and {labels_path.name}")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX array (gzipped or not), checking its magic number and length."""
    name = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        if data[:2] == b"\x1f\x8b":
            data = gunzip_bounded(data, path.name)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"cannot read MNIST file {name!r}: {exc}; replace it.") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != IDX_UBYTE or data[3] != ndim:
        raise DataError(
            f"MNIST file {name!r} is not an unsigned-byte IDX file with {ndim} dimension(s) "
            f"(magic {data[:4].hex() or 'missing'}, expected 0000080{ndim}): is it the right file?"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"MNIST file {name!r} is truncated inside its header; replace it.")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"MNIST file {name!r} is {what}: header says {'x'.join(map(str, shape))} "
            f"({expected} bytes), file has {len(data)}; replace it."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def gunzip_bounded(data: bytes, source: str) -> bytes:
    """Inflate gzipped bytes, refusing (in one line) to inflate past the memory bound."""
    import io

    with gzip.GzipFile(fileobj=io.BytesIO(data)) as handle:
        inflated = handle.read(inflation_cap(len(data)) + 1)
    check_inflation(len(inflated), len(data), f"MNIST file {source}")
    return inflated


def read_npz(path: Path) -> Arrays:
    """Keras's ``mnist.npz`` layout: ``x_train``, ``y_train``, ``x_test``, ``y_test``."""
    name = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            files = [n.removesuffix(".npy") for n in archive.namelist()]
        missing = [key for key in NPZ_KEYS if key not in files]
        if missing:
            raise DataError(
                f"MNIST file {name!r} lacks {', '.join(missing)} (it has "
                f"{', '.join(files) or 'nothing'}): use Keras's mnist.npz layout."
            )
        arrays = read_bounded_npz(path, f"MNIST file {path.name}", NPZ_KEYS)
    except ImgclustError:
        raise
    except Exception as exc:  # any library failure on an untrusted file is one line
        reason = " ".join(str(exc).split())[:200]
        raise DataError(f"cannot read MNIST file {name!r}: {reason}; replace it.") from None
    return {
        "train": check_split(arrays["x_train"], arrays["y_train"], f"{name} (train)"),
        "test": check_split(arrays["x_test"], arrays["y_test"], f"{name} (test)"),
    }


def check_split(
    images: np.ndarray, labels: np.ndarray, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) uint8 images and N int64 labels in 0-9, or a clear :class:`DataError`."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or len(images) == 0:
        raise DataError(f"MNIST images in {source} must be (N, 28, 28); got {images.shape}.")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.integer) or images.min() < 0 or images.max() > 255:
            raise DataError(f"MNIST images in {source} must be bytes 0-255; got {images.dtype}.")
        images = images.astype(np.uint8)
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"MNIST in {source} has {len(images)} images but {labels.size} labels: "
            "the files do not match."
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 9:
        raise DataError(
            f"MNIST labels in {source} must be digits 0-9; found {labels.min()}..{labels.max()}."
        )
    return images, labels.astype(np.int64)


@hookimpl
def register_datasets(register):
    register(
        "mnist",
        MnistDataset,
        summary="70,000 handwritten digits 28x28 (train 60,000, test 10,000), IDX/.npz or Keras",
    )
