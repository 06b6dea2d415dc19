"""Bounded reads of files that may come from a stranger: ``.npz`` files, zip members (a ``.keras``
file's ``config.json``), ``.npy`` files and the JSON files stages and runs keep.

Every member's declared size is checked before any of its data is read: against the memory
bound (:func:`imgclust.io.memory.check_bytes`), against its compressed size (a decompression bomb
inflates far past it), and, for arrays, against what the ``.npy`` header claims. Each member is
then inflated once, straight into the array that keeps it, and must hold exactly what it
declared. This is the one way imgclust reads ``np.load``-style files it did not just write.
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from imgclust.errors import DataError, ImgclustError, one_line
from imgclust.io.memory import check_bytes, check_inflation, human, nbytes_of

MAX_MEMBERS = 4096  # members an archive may list (each costs a header read)
TEXT_BYTES = 16 * 2**20  # a JSON member (config.json) larger than this is not a config
READ_BYTES = 2**20  # inflated a block at a time, straight into the array


def read_member(path: Path, name: str, where: str, limit: int = TEXT_BYTES) -> bytes:
    """The bytes of one zip member, read once after its sizes are checked: at most ``limit``
    inflated, not a bomb, exactly as long as declared."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = _member(archive, name, where)
            if info.file_size > limit:
                raise DataError(
                    f"{where} is {human(info.file_size)} inflated, more than the "
                    f"{human(limit)} it may hold: refused."
                )
            _check_sizes(info, where)
            with archive.open(info) as handle:
                data = handle.read(info.file_size + 1)
    except ImgclustError:
        raise
    except (OSError, EOFError, ValueError, RuntimeError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {where}: {one_line(exc)}") from None
    if len(data) != info.file_size:
        raise DataError(f"{where} does not hold the {info.file_size:,} bytes it declares.")
    return data


def read_text(path: Path, where: str, limit: int = TEXT_BYTES) -> str:
    """A UTF-8 text file that may come from a stranger, whole: its kind and size are checked
    before a byte is read (a FIFO is not waited on, no buffer larger than the file is made), and
    anything but a regular file of at most ``limit`` bytes of UTF-8 is one :class:`DataError`
    naming ``where``. A missing file raises ``FileNotFoundError``."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(descriptor, "rb") as handle:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                raise DataError(f"{where} is not a regular file.")
            data = handle.read(min(info.st_size, limit) + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise DataError(f"cannot read {where}: {exc.strerror or one_line(exc)}.") from None
    if len(data) > limit:
        raise DataError(f"{where} is larger than {human(limit)}, more than such a file holds.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where} is not UTF-8 text (byte {exc.start}).") from None


def read_json(path: Path, where: str | None = None, limit: int = TEXT_BYTES) -> Any:
    """A JSON file read by :func:`read_text` and parsed without a traceback: not JSON, or nested
    past what the parser can follow, is one :class:`DataError` naming ``where`` (the file by
    default). A missing file raises ``FileNotFoundError``."""
    what = where or str(path)
    text = read_text(path, what, limit)
    try:
        return json.loads(text)
    except RecursionError:
        raise DataError(f"{what} is nested too deep to be a file imgclust wrote.") from None
    except ValueError as exc:
        raise DataError(f"{what} is not valid JSON ({one_line(exc)}).") from None


def read_npz(path: Path, where: str, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The arrays of an ``.npz`` (only ``keys`` when given), each read once without pickle,
    after every member's header and sizes are checked and their total bounded."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_MEMBERS:
                raise DataError(f"{where} lists {len(infos):,} members: not an array file.")
            members = {info.filename.removesuffix(".npy"): info for info in infos}
            wanted = keys if keys is not None else tuple(members)
            missing = [key for key in wanted if key not in members]
            if missing:
                raise DataError(
                    f"{where} lacks {', '.join(missing)} (it has "
                    f"{', '.join(members) or 'nothing'}): it is damaged or not this kind of file."
                )
            headers = {}
            for key in wanted:
                info = members[key]
                _check_sizes(info, f"{where}: {key!r}")
                with archive.open(info) as handle:
                    header = read_npy_header(handle, f"{where}: {key!r}")
                check_npy_payload(header, info.file_size - header.data_offset, f"{where}: {key!r}")
                headers[key] = header
            check_bytes(sum(h.nbytes for h in headers.values()), where)
            return {key: _read_data(archive, members[key], headers[key]) for key in wanted}
    except ImgclustError:
        raise
    except FileNotFoundError:
        raise DataError(f"{where} is missing.") from None
    except (OSError, EOFError, ValueError, RuntimeError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {where}: {one_line(exc)}") from None


def read_npy(path: Path, where: str) -> np.ndarray:
    """A ``.npy`` file read without pickle, its header checked against the file's length and
    the memory bound first."""
    try:
        with open(path, "rb") as handle:
            header = read_npy_header(handle, where)
            check_npy_payload(header, Path(path).stat().st_size - header.data_offset, where)
            check_bytes(header.nbytes, where)
            return _fill(handle, header, where)
    except ImgclustError:
        raise
    except FileNotFoundError:
        raise DataError(f"{where} is missing.") from None
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(f"cannot read {where}: {one_line(exc)}") from None


def _member(archive: zipfile.ZipFile, name: str, where: str) -> zipfile.ZipInfo:
    try:
        return archive.getinfo(name)
    except KeyError:
        raise DataError(f"{where} is missing from its archive.") from None


def _check_sizes(info: zipfile.ZipInfo, where: str) -> None:
    """A member's declared inflated size, bounded in itself and against its compressed size."""
    if info.flag_bits & 0x1:
        raise DataError(f"{where} is encrypted: refused.")
    check_bytes(info.file_size, where)
    if info.compress_type != zipfile.ZIP_STORED:
        check_inflation(info.file_size, info.compress_size, where)
    elif info.file_size != info.compress_size:
        raise DataError(f"{where} is stored but declares two sizes: the file is damaged.")


def _read_data(archive: zipfile.ZipFile, info: zipfile.ZipInfo, header: Any) -> np.ndarray:
    with archive.open(info) as handle:
        handle.read(header.data_offset)
        return _fill(handle, header, info.filename)


def _fill(handle: Any, header: Any, where: str) -> np.ndarray:
    """Read exactly the header's array from ``handle`` into a new array (one copy, no more)."""
    order: Literal["C", "F"] = "F" if header.fortran else "C"
    array = np.empty(header.shape, dtype=header.dtype, order=order)
    view = array.reshape(-1, order="A").view(np.uint8).data
    done = 0
    while done < header.nbytes:
        got = handle.readinto(view[done : done + READ_BYTES])  # a block at a time: no copies
        if not got:
            raise DataError(f"{where} ends before the {header.nbytes:,} bytes its header gives.")
        done += got
    return array


# Reading .npy headers before any data ---------------------------------------------------------
@dataclass
class NpyHeader:
    """What a ``.npy`` header says: shape, dtype, order, where the data starts, and its bytes."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    data_offset: int

    @property
    def nbytes(self) -> int:
        return nbytes_of(self.shape, self.dtype.itemsize)


def read_npy_header(handle: IO[bytes], source: str) -> NpyHeader:
    """The checked header of a ``.npy`` stream positioned at its start; the stream is left at the
    data. A damaged header, a negative size or an object dtype is a one-line :class:`DataError`."""
    start = handle.tell()
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError, EOFError) as exc:
        detail = " ".join(str(exc).split())[:160]
        raise DataError(f"cannot read {source}: it is not a valid .npy array ({detail}).") from None
    shape = tuple(int(v) for v in shape)
    if dtype.hasobject:
        raise DataError(
            f"{source} holds an object array (images of different shapes, or Python objects): "
            "save one (N, H, W[, C]) array of numbers."
        )
    if any(v < 0 for v in shape):
        raise DataError(f"{source} is damaged: its header gives the shape {shape}.")
    return NpyHeader(shape, dtype, bool(fortran), handle.tell() - start)


def check_npy_payload(header: NpyHeader, available: int, source: str) -> None:
    """The header's array must fit in the ``available`` bytes that follow it."""
    if header.nbytes > available:
        raise DataError(
            f"{source} is truncated or damaged: its header says {header.shape} of "
            f"{header.dtype} ({human(header.nbytes)}) but only {human(max(0, available))} follow."
        )
