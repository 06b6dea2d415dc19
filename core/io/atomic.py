"""Files written whole or not at all: write under a temporary name, then rename."""

from __future__ import annotations

import io
import json
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np


def write_bytes(path: Path, data: bytes, *, overwrite: bool = True, sync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (a reader never sees a half-written file); with
    ``overwrite=False`` raise FileExistsError rather than replace a file that is there. With
    ``sync=False`` the data is not forced to disk first: still whole or absent if the process
    dies, but not after a power loss, and no wait on a busy disk (checkpoints)."""
    return write_parts(path, (data,), overwrite=overwrite, sync=sync)


def write_parts(
    path: Path, parts: Iterable[bytes], *, overwrite: bool = True, sync: bool = True
) -> Path:
    """Write ``parts`` one after another to ``path`` atomically, as :func:`write_bytes` does,
    without holding them all in memory at once (long outputs are streamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes files private; give it the usual mode
        os.chmod(temporary, 0o666 & ~current_umask())
        with os.fdopen(handle, "wb") as file:
            for data in parts:
                file.write(data)
            file.flush()
            if sync:
                os.fsync(file.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            _move_to_new(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _move_to_new(temporary: str, path: Path) -> None:
    """Give the written file its name only if no file has that name (a hard link cannot
    replace one); where links are not supported, check just before renaming."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError:
        if os.path.lexists(path):
            raise FileExistsError(path) from None
        os.replace(temporary, path)
    else:
        os.unlink(temporary)


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, for giving files made private by ``mkstemp`` the usual mode.

    Read from ``/proc`` where it can be: setting the umask to read it would, for that moment,
    change the mode of files other threads create. Elsewhere it is read that way, under a lock
    and with the most private mask set in between.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def write_text(path: Path, text: str, *, overwrite: bool = True, sync: bool = True) -> Path:
    """Write UTF-8 text atomically."""
    return write_bytes(path, text.encode("utf-8"), overwrite=overwrite, sync=sync)


def write_json(path: Path, data: Any, *, sync: bool = True) -> Path:
    """Write indented JSON atomically."""
    return write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n", sync=sync)


def write_npy(path: Path, array: np.ndarray) -> Path:
    """Write one array as ``.npy`` atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return write_bytes(path, buffer.getvalue())


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write named arrays as an uncompressed ``.npz`` atomically."""
    buffer = io.BytesIO()
    # numpy's stub types the names with its keyword allow_pickle (bool); any name is an array
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return write_bytes(path, buffer.getvalue())


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
