"""What a run clustered, by content: a digest of every image file (image-folder runs) or of every
chunk of rows of the image array (other datasets), recorded in ``RUN/content.json``.

Commands that act on a finished run (export, duplicates, similar, evaluate) compare the data they
find now with this record, so images that changed since the run are never reported under the
run's clusters, and export copies only files whose bytes are the ones the run clustered. The
digest is BLAKE2b (16 bytes), the fingerprint the decode cache already takes of each file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgclust.errors import ContentChangedError, DataError
from imgclust.io import atomic

CONTENT_FILE = "content.json"
FORMAT = "imgclust-content"
FORMAT_VERSION = 1
ROWS_PER_CHUNK = 4096  # rows of the image array behind one digest
READ_BYTES = 1 << 20
PREFIX = "blake2b:"
DIGEST_CHARS = len(PREFIX) + 32
ALLOW_HINT = "or pass --allow-changed to go on with the data as it is now (reported)"


def new_hasher() -> Any:
    """The hash every content digest uses: BLAKE2b with a 16-byte digest (fast, not keyed)."""
    return hashlib.blake2b(digest_size=16)


def bytes_digest(data: bytes) -> str:
    """The digest of bytes already read."""
    hasher = new_hasher()
    hasher.update(data)
    return PREFIX + hasher.hexdigest()


def file_digest(path: str | Path) -> str:
    """The digest of a file's bytes, read in blocks; an unreadable file is one line."""
    hasher = new_hasher()
    try:
        with open(path, "rb") as handle:
            # a buffer the size of a small file, reused: no block allocated per read
            buffer = bytearray(min(READ_BYTES, os.fstat(handle.fileno()).st_size + 1))
            view = memoryview(buffer)
            while count := handle.readinto(buffer):
                hasher.update(view[:count])
    except OSError as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc.strerror or exc}.") from None
    return PREFIX + hasher.hexdigest()


def rows_digest(rows: Any) -> str:
    """The digest of a block of image rows: their type and shape, then their bytes."""
    import numpy as np

    array = np.ascontiguousarray(rows)
    hasher = new_hasher()
    hasher.update(f"{array.dtype.str}{array.shape}".encode())
    hasher.update(array.data.cast("B"))
    return PREFIX + hasher.hexdigest()


def image_digests(images: Any) -> list[str]:
    """One digest per image (its pixels, type and shape): equal only for equal images."""
    return [rows_digest(image) for image in images]


def chunk_digests(images: Any, rows_per_chunk: int = ROWS_PER_CHUNK) -> list[str]:
    """One digest per ``rows_per_chunk`` rows of an image array or memory map, read a chunk at a
    time (a memory map is never loaded whole)."""
    return [
        rows_digest(images[start : start + rows_per_chunk])
        for start in range(0, len(images), rows_per_chunk)
    ]


# The record --------------------------------------------------------------------------------
@dataclass
class ContentRecord:
    """A run's digests: one per image file in id order, or one per chunk of array rows."""

    n_images: int
    files: list[str] | None = None
    chunks: list[str] | None = None
    rows_per_chunk: int = ROWS_PER_CHUNK

    def to_json(self) -> dict[str, Any]:
        """The record as written into ``content.json``."""
        record: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "digest": "blake2b-128",
            "n_images": self.n_images,
        }
        if self.files is not None:
            record["files"] = self.files
        if self.chunks is not None:
            record["rows_per_chunk"] = self.rows_per_chunk
            record["chunks"] = self.chunks
        return record


def record_of(data: Any) -> ContentRecord:
    """The record of an ImageSet a run clustered: its files' digests when the dataset read files
    (``info["file_digests"]``), else the digests of its rows, a chunk at a time."""
    files = (getattr(data, "info", None) or {}).get("file_digests")
    if files is not None:
        if len(files) != len(data):
            raise DataError(
                f"the dataset gave {len(files)} file digests for {len(data)} images: it is "
                "inconsistent."
            )
        return ContentRecord(len(data), files=[str(d) for d in files])
    return ContentRecord(len(data), chunks=chunk_digests(data.images))


def write_record(folder: Path, data: Any) -> ContentRecord:
    """Write ``content.json`` for the images of a run (atomically)."""

    record = record_of(data)
    atomic.write_json(Path(folder) / CONTENT_FILE, record.to_json())
    return record


def read_record(run: Path, n_images: int) -> ContentRecord | None:
    """The run's record, checked against its number of images; None for a run written before
    imgclust recorded content. A damaged record is one line."""
    path = Path(run) / CONTENT_FILE
    if not path.exists() and not path.is_symlink():
        return None
    bound = 4096 + (DIGEST_CHARS + 16) * (n_images + 1)
    try:
        if path.is_symlink() or not path.is_file():
            raise ValueError("not a regular file")
        with open(path, "rb") as handle:
            raw = handle.read(bound + 1)
        if len(raw) > bound:
            raise ValueError(f"larger than {n_images} images need")
        data = json.loads(raw.decode("utf-8"))
        return _parse(data, n_images)
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise ContentChangedError(
            f"{CONTENT_FILE} of run {Path(run).name!r} is damaged ({exc}): run it again."
        ) from None


def _parse(data: Any, n_images: int) -> ContentRecord:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("not an imgclust content record")
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"format version {data.get('format_version')!r}")
    if data.get("n_images") != n_images:
        raise ValueError(f"it records {data.get('n_images')!r} images, assignments.csv {n_images}")
    files, chunks = data.get("files"), data.get("chunks")
    if (files is None) == (chunks is None):
        raise ValueError("it must hold either files or chunks")
    if files is not None:
        _check_digests(files, n_images)
        return ContentRecord(n_images, files=files)
    rows = data.get("rows_per_chunk")
    if type(rows) is not int or rows < 1:
        raise ValueError("rows_per_chunk is not a positive whole number")
    _check_digests(chunks, -(-n_images // rows))
    return ContentRecord(n_images, chunks=chunks, rows_per_chunk=rows)


def _check_digests(values: Any, count: int) -> None:
    if not isinstance(values, list) or len(values) != count:
        raise ValueError(f"it does not hold {count} digests")
    if not all(isinstance(v, str) and len(v) == DIGEST_CHARS for v in values):
        raise ValueError("it holds something other than digests")


# Checking ----------------------------------------------------------------------------------
@dataclass
class ContentCheck:
    """How the data found now compares with the run's record."""

    checked: int  # files or chunks compared
    changed: list[int]  # image rows (files) or chunk numbers that differ
    unit: str  # "image" or "chunk"
    recorded: bool = True  # False: the run predates content records, or its images are gone
    allowed: bool = False  # --allow-changed was given
    reason: str = ""  # why the images could not be had at all

    @property
    def ok(self) -> bool:
        return self.recorded and not self.changed

    def describe(self) -> str:
        """A short phrase for the command's output ('' when the data is unchanged)."""
        if self.reason:
            return f"images not checked, {self.reason.rstrip('.')} (--allow-changed)"
        if not self.recorded:
            return "content not verified: the run predates content digests (--allow-changed)"
        if not self.changed:
            return ""
        return (
            f"{len(self.changed)} of {self.checked} {self.unit}s changed since the run "
            "(--allow-changed)"
        )


def missing_record(run: Path, command: str, allow_changed: bool) -> ContentCheck:
    """A run without ``content.json``: refused in one line, unless ``allow_changed``."""
    if not allow_changed:
        raise ContentChangedError(
            f"run {Path(run).name!r} records no digests of what it clustered (it predates them), "
            f"so {command} cannot tell whether its images changed: run it again, {ALLOW_HINT}."
        )
    return ContentCheck(0, [], "image", recorded=False, allowed=True)


def compare(
    run: Path,
    recorded: Sequence[str],
    found: Iterable[str],
    unit: str,
    ids: Sequence[str] | None,
    allow_changed: bool,
    rows_per_chunk: int = ROWS_PER_CHUNK,
) -> ContentCheck:
    """Compare digests found now with the recorded ones; a difference is one line naming the
    first changed image (or chunk), unless ``allow_changed``."""
    found = list(found)
    changed = [i for i, (a, b) in enumerate(zip(recorded, found, strict=True)) if a != b]
    check = ContentCheck(len(recorded), changed, unit, allowed=allow_changed)
    if changed and not allow_changed:
        first = changed[0]
        if ids is not None and unit == "image":
            what = f"image {ids[first]!r}"
        else:
            what = f"rows from {first * rows_per_chunk} of the images"
        raise ContentChangedError(
            f"{len(changed)} of {len(recorded)} {unit}s of run {Path(run).name!r} changed since "
            f"it ran (first: {what}), so its clusters do not describe them: run it again, "
            f"{ALLOW_HINT}."
        )
    return check


def check_files(
    run: Path,
    record: ContentRecord | None,
    digests: Sequence[str],
    ids: Sequence[str],
    command: str,
    allow_changed: bool,
) -> ContentCheck:
    """The run's image files (their digests now, in id order) against the record."""
    if record is None:
        return missing_record(run, command, allow_changed)
    if record.files is None:
        raise DataError(
            f"{CONTENT_FILE} of run {Path(run).name!r} records arrays, not files: the run is "
            "damaged."
        )
    return compare(run, record.files, digests, "image", ids, allow_changed)


def check_images(
    run: Path,
    record: ContentRecord | None,
    data: Any,
    command: str,
    allow_changed: bool,
) -> ContentCheck:
    """An ImageSet loaded again through the run's dataset against the record: by file digests
    when the dataset reports them, else by chunks of rows."""
    if record is None:
        return missing_record(run, command, allow_changed)
    files = (getattr(data, "info", None) or {}).get("file_digests")
    if record.files is not None:
        if files is None:
            raise ContentChangedError(
                f"run {Path(run).name!r} recorded image files but its dataset now reads none: "
                "the data is not the run's."
            )
        return compare(run, record.files, files, "image", list(data.ids), allow_changed)
    assert record.chunks is not None
    found = chunk_digests(data.images, record.rows_per_chunk)
    if len(found) != len(record.chunks):
        raise ContentChangedError(
            f"dataset of run {Path(run).name!r} now gives {len(data)} images, not "
            f"{record.n_images}: it no longer holds the run's images."
        )
    return compare(run, record.chunks, found, "chunk", None, allow_changed, record.rows_per_chunk)
