"""Paths a user or a config names as input, checked before anything opens them.

Opening a FIFO blocks until someone writes to it, and a device can be read forever; an input is
therefore a regular file (or, where folders are accepted, a folder), whatever its name says.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from imgclust.errors import DataError


def check_input_file(path: Path | str, what: str = "input", *, folders: bool = False) -> None:
    """Refuse ``path`` in one line unless it is a regular file (or a folder, with ``folders``);
    links are followed, as the user's own inputs may be links."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{what} {str(path)!r} does not exist.") from None
    except OSError as exc:
        raise DataError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}.") from None
    if stat.S_ISREG(mode) or (folders and stat.S_ISDIR(mode)):
        return
    if stat.S_ISDIR(mode):
        raise DataError(f"{what} {str(path)!r} is a folder: give a file.")
    raise DataError(
        f"{what} {str(path)!r} is not a regular file (a FIFO, device or socket): refused, as "
        "reading it could block forever; give a file."
    )
