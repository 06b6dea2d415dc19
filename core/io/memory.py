"""The bound on what one allocation may take, checked before anything large is allocated.

Like Pillow's decompression-bomb limit, sizes that come from settings, file headers, archives or
manifests are checked against :func:`max_bytes` before memory is reserved for them, so a hostile
or mistaken input fails in one line instead of being killed by the operating system.
``IMGCLUST_MAX_BYTES`` sets the bound (bytes, or with a K, M, G or T suffix in powers of 1024);
the default is a quarter of this machine's physical memory (later stages make float32 copies,
four bytes for each uint8 one), and at least 1 GiB.

Compressed archive members get a second, classic zip-bomb check: one that inflates more than
:data:`MAX_RATIO` times its compressed size past :data:`RATIO_FLOOR` bytes is refused.
"""

from __future__ import annotations

import os
import re

from imgclust.errors import DataError, SettingsError

ENV_VAR = "IMGCLUST_MAX_BYTES"
MIN_DEFAULT = 2**30  # the default bound is never below 1 GiB
FALLBACK = 4 * 2**30  # when the machine's memory cannot be read
MAX_RATIO = 100  # a compressed member may inflate at most this many times its size ...
RATIO_FLOOR = 64 * 2**20  # ... once it inflates past this many bytes
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def physical_memory() -> int | None:
    """This machine's physical memory in bytes, or None where the system does not say."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return int(pages) * int(page_size) if pages > 0 and page_size > 0 else None


def default_max_bytes() -> int:
    """A quarter of physical memory, at least 1 GiB (4 GiB where memory cannot be read)."""
    total = physical_memory()
    return FALLBACK if total is None else max(MIN_DEFAULT, total // 4)


def parse_bytes(text: str) -> int:
    """'4000000', '512M', '2G' or '1.5T' as a positive number of bytes; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(text)
    value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if value < 1:
        raise ValueError(text)
    return value


def max_bytes() -> int:
    """The bound in bytes: ``IMGCLUST_MAX_BYTES`` when set, else :func:`default_max_bytes`."""
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return default_max_bytes()
    try:
        return parse_bytes(text)
    except (ValueError, OverflowError):
        raise SettingsError(
            f"{ENV_VAR}={text!r} is not a size: give bytes, e.g. 8000000000 or 8G."
        ) from None


def human(nbytes: int) -> str:
    """A byte count for people: '1.5 GiB', '12 MiB', '300 bytes'."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit}"
    return f"{nbytes} bytes"


def nbytes_of(shape: tuple[int, ...], itemsize: int) -> int:
    """Bytes an array of ``shape`` and ``itemsize`` takes, in Python integers (no overflow)."""
    total = int(itemsize)
    for size in shape:
        total *= int(size)
    return total


def check_bytes(nbytes: int, what: str, advice: str = "") -> None:
    """Refuse, in one line, to allocate ``nbytes`` for ``what`` when that passes the bound."""
    limit = max_bytes()
    if nbytes > limit:
        hint = f"{advice}, or raise" if advice else "raise"
        raise DataError(
            f"{what} would take {human(nbytes)} of memory, more than the {human(limit)} allowed: "
            f"{hint} {ENV_VAR} if this machine can hold it."
        )


def check_inflation(inflated: int, compressed: int, what: str, advice: str = "") -> None:
    """Refuse a compressed member that inflates like a decompression bomb, or past the bound."""
    if inflated > RATIO_FLOOR and inflated > MAX_RATIO * max(1, compressed):
        hint = f": {advice}" if advice else ""
        raise DataError(
            f"{what} inflates from {human(compressed)} to {human(inflated)}, more than "
            f"{MAX_RATIO} times, like a decompression bomb; it is not read{hint}."
        )
    check_bytes(inflated, f"{what} (inflated)", advice)


def inflation_cap(compressed: int) -> int:
    """The most bytes worth inflating from ``compressed`` bytes before one of the checks fails."""
    return min(max_bytes(), max(RATIO_FLOOR, MAX_RATIO * max(1, compressed)))
