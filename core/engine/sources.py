"""Where chunks read their images: a memory-mapped file, this process's memory, or image files
that each worker decodes itself; ``LazyImages`` stands for a dataset's images without holding them.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from imgclust.errors import DataError, SettingsError
from imgclust.io.images import (
    CHANNELS,
    FITS,
    Decoding,
    check_max_pixels,
    check_size,
    decode_into,
)
from imgclust.stages.interfaces import FileListing


@dataclass(frozen=True)
class MemmapSource:
    """Images in a file every worker can map: a ``.npy`` (or stored ``.npz`` member) or a cache."""

    filename: str
    offset: int
    shape: tuple[int, ...]
    dtype: str

    def __len__(self) -> int:
        return self.shape[0]

    def _array(self) -> np.ndarray:
        try:
            return np.memmap(self.filename, self.dtype, "r", self.offset, self.shape)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot map the images in {self.filename!r}: {exc}.") from None

    def read(self, start: int, stop: int) -> tuple[np.ndarray, list[str]]:
        return np.array(self._array()[start:stop]), [""] * (stop - start)

    def take(self, index: np.ndarray) -> np.ndarray:
        return np.array(self._array()[np.asarray(index, dtype=np.int64)])


@dataclass(frozen=True)
class MemorySource:
    """Images held in this process (any other dataset): chunks travel with their tasks."""

    images: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, list[str]]:
        return np.asarray(self.images[start:stop]), [""] * (stop - start)

    def part(self, start: int, stop: int) -> MemorySource:
        """Only the rows one chunk needs (what a task to a worker carries)."""
        return MemorySource(np.asarray(self.images[start:stop]))

    def take(self, index: np.ndarray) -> np.ndarray:
        return np.asarray(self.images[np.asarray(index, dtype=np.int64)])


def for_workers(path: str) -> str:
    """``path`` made absolute here: a worker runs in a working directory of its own."""
    return os.path.abspath(path)


@dataclass(frozen=True)
class FilesSource:
    """Image files decoded where they are read, as ``image-folder`` decodes them; their paths
    are made absolute here, as a worker runs in a working directory of its own."""

    paths: tuple[str, ...]
    size: tuple[int, int]
    mode: str
    max_pixels: int | None
    fit: str = "stretch"

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", tuple(for_workers(p) for p in self.paths))

    @classmethod
    def of(cls, listing: FileListing) -> FilesSource:
        """The files a dataset listed (``ListsFiles``), decoded as it would decode them; a
        listing that could not be decoded as it says is refused here, in one line."""
        if not isinstance(listing, FileListing):
            raise DataError(
                f"list_files() must return a FileListing, not {type(listing).__name__}."
            )
        paths = tuple(str(path) for path in listing.paths)
        wrong = []
        if len(listing.names) != len(paths):
            wrong.append(f"{len(listing.names)} names for {len(paths)} paths")
        if listing.labels is not None and len(listing.labels) != len(paths):
            wrong.append(f"{len(listing.labels)} labels for {len(paths)} paths")
        if listing.mode not in CHANNELS:
            wrong.append(f"mode {listing.mode!r} (grayscale or rgb)")
        if listing.fit not in FITS:
            wrong.append(f"fit {listing.fit!r} ({', '.join(FITS)})")
        try:
            size = check_size(listing.size, check_max_pixels(listing.max_pixels))
        except SettingsError as exc:
            wrong.append(str(exc).rstrip("."))
            size = None
        if wrong or size is None:
            reason = "; ".join(wrong) or "no size"
            raise DataError(f"list_files() gave a listing that cannot be decoded: {reason}.")
        return cls(paths, size, listing.mode, listing.max_pixels, listing.fit)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), self.size[0], self.size[1], CHANNELS[self.mode])

    def read(self, start: int, stop: int) -> tuple[np.ndarray, list[str]]:
        """The decodable images of ``paths[start:stop]`` and one status per file ("" = read)."""
        return self._decode(self.paths[start:stop])

    def take(self, index: np.ndarray) -> np.ndarray:
        images, statuses = self._decode([self.paths[int(i)] for i in index])
        if len(images) != len(statuses):
            bad = next(s for s in statuses if s)
            raise DataError(f"an image could not be read a second time: {bad}.")
        return images

    def _decode(self, paths: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        from PIL import Image

        limit = self.max_pixels if self.max_pixels is not None else Image.MAX_IMAGE_PIXELS
        out = np.zeros((len(paths), *self.shape[1:]), dtype=np.uint8)
        how = Decoding(self.size, self.mode, limit, True, self.fit)
        statuses = decode_into(paths, how, out)
        return out[[i for i, s in enumerate(statuses) if s == ""]], statuses


class LazyImages:
    """Stands for a dataset's images without holding them: rows are read from the source on use.

    Plots take a few hundred images of a run; with a file source only those are decoded.
    """

    def __init__(self, source: Any, rows: np.ndarray | None = None) -> None:
        self.source = source
        self.rows = rows  # source position of each image (files that decoded), None: all
        n = len(source) if rows is None else len(rows)
        self.shape = (n, *_source_shape(source)[1:])
        self.dtype = np.dtype(_source_dtype(source))
        self.ndim = 4

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        positions = np.arange(len(self))[index]
        if self.rows is not None:
            positions = self.rows[positions]
        single = np.ndim(positions) == 0
        images = self.source.take(np.atleast_1d(positions))
        return images[0] if single else images


def _source_shape(source: Any) -> tuple[int, ...]:
    if isinstance(source, MemorySource):
        return tuple(source.images.shape)
    return tuple(source.shape)


def _source_dtype(source: Any) -> str:
    if isinstance(source, MemorySource):
        return str(source.images.dtype)
    return "uint8" if isinstance(source, FilesSource) else source.dtype


def memmap_source(images: Any) -> MemmapSource | None:
    """The file and byte offset of a C-ordered memory-mapped array (a view of one too), or None."""
    mm = getattr(images, "_mmap", None)
    filename = getattr(images, "filename", None)
    if not isinstance(images, np.memmap) or mm is None or not filename:
        return None
    if not images.flags.c_contiguous:
        return None
    try:
        base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    except (TypeError, ValueError):
        return None
    start = images.offset - images.offset % mmap.ALLOCATIONGRANULARITY
    offset = start + images.ctypes.data - base
    return MemmapSource(str(filename), int(offset), tuple(images.shape), str(images.dtype))


def source_of(images: Any) -> Any:
    """Where chunks of these images are read from: their file when mapped, else memory."""
    if isinstance(images, LazyImages):
        return images.source if images.rows is None else MemorySource(np.asarray(images[:]))
    return memmap_source(images) or MemorySource(images)
