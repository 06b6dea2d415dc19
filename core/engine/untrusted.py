"""What in a saved pipeline could run code when loaded, found before anything is loaded:
pickles (plain or inside a compressed stream), Keras Lambda layers and serialized functions, and
folders that reach outside themselves. Loading refuses them unless the caller trusts the folder.
"""

from __future__ import annotations

import bz2
import json
import lzma
import pickletools
import zipfile
import zlib
from pathlib import Path
from typing import Any

from imgclust.engine.manifest import PIPELINE_DIR
from imgclust.errors import DataError, ImgclustError
from imgclust.io.bounded import read_member
from imgclust.io.runfolder import check_self_contained

TRUST_HINT = "pass --trust (trust=True) only if you trust where this run folder came from"
KERAS_CONFIG_BYTES = 8 * 2**20  # a .keras config.json inflated past this is refused
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pkz")
# Pickle opcodes that import or call something: a stream that reaches one can run code.
_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}


def check_contained(root: Path, given: Path) -> None:
    """Refuse a pipeline folder that reaches outside itself: a symlink to elsewhere, or an entry
    that is not a regular file or folder (a FIFO would block a reader forever).
    """
    base = root.resolve()
    if given.resolve() != base and not base.is_relative_to(given.resolve()):
        raise DataError(
            f"{PIPELINE_DIR}/ of {str(given)!r} points outside the run folder: copy the real "
            "folder instead of linking to it."
        )

    # the whole run folder when one was given (the walk every command that reads a run makes)
    check_self_contained(Path(given) if given.is_dir() and base != given.resolve() else root)


def audit(root: Path) -> None:
    """Refuse, before anything is loaded, files that could run code: pickles (plain or in a
    compressed stream) and Keras Lambdas.
    """
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root.parent).as_posix()
        if file.suffix.lower() in _PICKLE_SUFFIXES or _looks_pickled(file):
            raise ImgclustError(
                f"{rel} holds pickled Python objects, which can run code when loaded; {TRUST_HINT}."
            )
        if file.suffix.lower() == ".keras" and _keras_has_code(file):
            raise ImgclustError(
                f"{rel} holds a Keras Lambda layer or serialized Python function, which can run "
                f"code when loaded; {TRUST_HINT}."
            )


def needs_trust(folder: Path) -> bool:
    """Whether loading a saved stage's files needs ``trust`` (what :func:`audit` refuses)."""
    try:
        audit(folder)
    except ImgclustError:
        return True
    return False


def _looks_pickled(file: Path) -> bool:
    """Whether a file starts as a pickle, or is a zlib, gzip, bz2 or lzma stream of one (what
    joblib writes), so that no library that unpickles such files is ever handed one unseen.
    """
    with open(file, "rb") as handle:
        head = handle.read(1 << 16)
    if _pickle_head(head, protocol_0=False):
        return True
    inner = _decompressed_head(head)
    return inner is not None and _pickle_head(inner, protocol_0=True)


def _pickle_head(data: bytes, protocol_0: bool) -> bool:
    """A pickle's protocol 2+ header, or (for decompressed data) opcodes that import or call."""
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return True
    if not protocol_0:
        return False
    try:
        for opcode, _, _ in pickletools.genops(data):
            if opcode.name in _CODE_OPCODES:
                return True
            if opcode.name == "STOP":
                return False
    except Exception:  # not (or no longer) a pickle stream
        return False
    return False


def _decompressed_head(head: bytes, size: int = 4096) -> bytes | None:
    """The first bytes of a zlib, gzip, bz2, xz or lzma stream, or None if it is none of these."""
    try:
        if len(head) >= 2 and head[0] == 0x78 and (head[0] << 8 | head[1]) % 31 == 0:
            return zlib.decompressobj().decompress(head, size)
        if head[:2] == b"\x1f\x8b":
            return zlib.decompressobj(wbits=31).decompress(head, size)
        if head[:3] == b"BZh":
            return bz2.BZ2Decompressor().decompress(head, max_length=size)
        if head[:6] == b"\xfd7zXZ\x00":
            return lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(head, max_length=size)
        if head[:1] == b"\x5d":
            return lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(head, max_length=size)
    except (zlib.error, OSError, EOFError, ValueError, lzma.LZMAError):
        return None
    return None


def _keras_has_code(file: Path) -> bool:
    """Whether a ``.keras`` archive's config holds a Lambda layer or a serialized function.

    config.json is read once, bounded (:data:`KERAS_CONFIG_BYTES` inflated, no bomb): one that
    is larger is refused here, before Keras would read it whole."""
    try:
        with zipfile.ZipFile(file) as archive:
            if "config.json" not in archive.namelist():
                return False  # not a .keras file: Keras itself will refuse it clearly
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    data = read_member(file, "config.json", f"{file.name}'s config.json", KERAS_CONFIG_BYTES)
    try:
        config = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False  # not a readable .keras config: Keras itself will refuse it clearly

    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            if node.get("class_name") in ("Lambda", "__lambda__", "__function__"):
                return True
            if node.get("function_type") == "lambda":
                return True
            return any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return False

    return walk(config)
