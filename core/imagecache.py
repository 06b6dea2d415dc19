"""A cache of decoded images: one uint8 ``.npy`` per folder and decode settings, memory-mapped.

An entry is keyed on every image file's relative path, size and modification time plus the
decode settings, so it is reused exactly while the folder has not changed. Entries are written
under a temporary name and renamed when whole; a newer entry for the same folder and settings
replaces the older one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import atomic

FOLDER_CACHE = ".imgclust-cache"
FORMAT = 1
COPY_ROWS = 8192
STALE_TEMP_SECONDS = 6 * 3600


@dataclass(frozen=True)
class FileStamp:
    """What identifies one image file's content cheaply: its relative path, size and mtime."""

    name: str
    size: int
    mtime_ns: int


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/imgclust``, or ``~/.cache/imgclust``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imgclust"


def _usable(directory: Path) -> bool:
    """Whether ``directory`` exists (or can be made) and accepts new files."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=".probe.", dir=directory)
    except OSError:
        return False
    os.close(handle)
    os.unlink(name)
    return True


def cache_location(folder: Path, cache_dir: str | Path | None = None) -> tuple[Path | None, str]:
    """Where a folder's entries go, and the scope that tells folders sharing that place apart.

    ``cache_dir`` when given; else ``FOLDER/.imgclust-cache`` when the folder is writable; else the
    user cache dir. (None, "") when none of them can be written.
    """
    folder = Path(folder).resolve()
    if cache_dir not in (None, ""):
        candidates = [Path(str(cache_dir)).expanduser()]
    else:
        candidates = [folder / FOLDER_CACHE, user_cache_dir()]
    for directory in candidates:
        if _usable(directory):
            inside = directory.resolve() == (folder / FOLDER_CACHE).resolve()
            if inside:
                _ignore_in_git(directory)
            return directory, "" if inside else str(folder)
    return None, ""


def _ignore_in_git(directory: Path) -> None:
    """A cache inside an image folder tells git to ignore it, in case the folder is a repo."""
    marker = directory / ".gitignore"
    if not marker.exists():
        try:
            atomic.write_text(marker, "# decoded-image cache of imgclust\n*\n")
        except OSError:
            pass


def _digest(*parts: str) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part.encode("utf-8", "surrogateescape"))
        sha.update(b"\0")
    return sha.hexdigest()


def entry_names(
    stamps: Iterable[FileStamp], settings: Mapping[str, Any], scope: str = ""
) -> tuple[str, str]:
    """(prefix, key) of an entry: the prefix names the folder and settings, the key its files."""
    described = json.dumps({"format": FORMAT, **settings}, sort_keys=True, default=str)
    prefix = _digest(scope, described)[:16]
    sha = hashlib.sha256(prefix.encode())
    for stamp in stamps:
        line = f"{stamp.name}\0{stamp.size}\0{stamp.mtime_ns}\n"
        sha.update(line.encode("utf-8", "surrogateescape"))
    return prefix, sha.hexdigest()[:32]


@dataclass
class CachedImages:
    """A cache entry read back: the images (a read-only memory map) and what was recorded."""

    images: np.ndarray
    meta: dict[str, Any]
    path: Path


def lookup(directory: Path, prefix: str, key: str) -> CachedImages | None:
    """The entry for ``key`` if it is there and whole; None otherwise."""
    array_path, meta_path = _paths(directory, prefix, key)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        images = np.load(array_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    whole = meta.get("format") == FORMAT and meta.get("key") == key
    if not whole or len(meta.get("ids", ())) != len(images):
        return None
    return CachedImages(images, meta, array_path)


class PendingEntry:
    """A new entry being filled: a uint8 ``.npy`` under a temporary name, opened as a memory map.

    Writers (this process or decoding workers given :attr:`temp_path`) fill rows of
    :attr:`array`; :meth:`commit` keeps the rows that decoded and renames the file into place.
    """

    def __init__(self, directory: Path, prefix: str, key: str, shape: tuple[int, ...]) -> None:
        self.directory = Path(directory)
        self.prefix, self.key = prefix, key
        self.temp_path = self._temporary()
        self.array = np.lib.format.open_memmap(
            self.temp_path, mode="w+", dtype=np.uint8, shape=shape
        )

    def _temporary(self) -> Path:
        handle, name = tempfile.mkstemp(
            prefix=f".{self.prefix}-{self.key}.", suffix=".npy.tmp", dir=self.directory
        )
        os.close(handle)
        return Path(name)

    def commit(self, meta: Mapping[str, Any], keep: np.ndarray | None = None) -> CachedImages:
        """Keep rows ``keep`` (all when None), move the file into place, record ``meta``."""
        source = self.array
        final_temp = self.temp_path
        if keep is not None and len(keep) != len(source):
            final_temp = self._temporary()
            target = np.lib.format.open_memmap(
                final_temp, mode="w+", dtype=np.uint8, shape=(len(keep), *source.shape[1:])
            )
            for start in range(0, len(keep), COPY_ROWS):
                target[start : start + COPY_ROWS] = source[keep[start : start + COPY_ROWS]]
            target.flush()
            del target
        source.flush()
        del source
        self.array = None  # type: ignore[assignment]
        if final_temp != self.temp_path:
            self.temp_path.unlink(missing_ok=True)
        array_path, meta_path = _paths(self.directory, self.prefix, self.key)
        os.replace(final_temp, array_path)
        atomic.write_json(meta_path, {**meta, "format": FORMAT, "key": self.key})
        prune(self.directory, self.prefix, keep_key=self.key)
        found = lookup(self.directory, self.prefix, self.key)
        if found is None:  # pragma: no cover - only if another process removed it just now
            raise OSError(f"cache entry {array_path} vanished after writing")
        return found

    def discard(self) -> None:
        """Drop the unfinished entry."""
        self.array = None  # type: ignore[assignment]
        self.temp_path.unlink(missing_ok=True)


def prune(directory: Path, prefix: str, keep_key: str) -> None:
    """Remove older entries of the same folder and settings, and long-abandoned temp files."""
    now = time.time()
    for path in Path(directory).glob(f"{prefix}-*"):
        if path.name.split(".")[0] != f"{prefix}-{keep_key}":
            path.unlink(missing_ok=True)
    for path in Path(directory).glob(".*.tmp"):
        try:
            if now - path.stat().st_mtime > STALE_TEMP_SECONDS:
                path.unlink(missing_ok=True)
        except OSError:
            pass


def _paths(directory: Path, prefix: str, key: str) -> tuple[Path, Path]:
    stem = Path(directory) / f"{prefix}-{key}"
    return stem.with_suffix(".npy"), stem.with_suffix(".json")
