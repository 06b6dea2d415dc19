"""Resuming an interrupted run: ``imgclust run --resume RUN`` continues in its ``.incomplete``
folder from the encoders' last checkpoints, with the configuration saved there.

A run that fails or is interrupted keeps its ``NAME.incomplete`` folder when ``checkpoints/``
holds something, or when it was not created by this process; :func:`note_kept` marks the
exception with that folder so the CLI can say how to go on.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from imgclust.errors import DataError, SettingsError
from imgclust.io.runfolder import INCOMPLETE, lock

KEPT = "imgclust_kept_folder"


def note_kept(exc: BaseException, folder: Path) -> None:
    """Mark ``exc`` with the incomplete run folder a failed or interrupted run left for resuming."""
    try:
        setattr(exc, KEPT, Path(folder))
    except (AttributeError, TypeError):  # an exception that takes no attributes
        pass


def kept_folder(exc: BaseException | None) -> Path | None:
    """The folder a failed run kept, from ``exc`` or the exceptions it was raised from."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        folder = getattr(exc, KEPT, None)
        if folder is not None:
            return Path(folder)
        exc = exc.__cause__ or exc.__context__
    return None


def interrupted_message(exc: BaseException | None = None, what: str = "Interrupted.") -> str:
    """'Interrupted.' and, when a run can go on, the command that resumes it."""
    kept = kept_folder(exc)
    if kept is None or not (kept / "config.toml").is_file():
        return what
    return f"{what} Resume with: imgclust run --resume {shlex.quote(str(kept))}"


def find_incomplete(path: Path | str) -> Path:
    """The ``NAME.incomplete`` folder for ``path`` (given with or without the suffix)."""
    path = Path(path)
    if path.name.endswith(INCOMPLETE) and path.is_dir():
        return path
    sibling = path.with_name(path.name + INCOMPLETE)
    if sibling.is_dir():
        return sibling
    if path.is_dir() and (path / "metrics.json").is_file():
        raise DataError(
            f"{str(path)!r} is a finished run; nothing to resume. Repeat it with "
            f"`imgclust run --config {path / 'config.toml'}`."
        )
    if path.is_dir():
        raise DataError(
            f"{str(path)!r} is not an interrupted run folder (NAME{INCOMPLETE}): "
            "give the folder the interrupted run named."
        )
    raise DataError(f"no interrupted run at {str(path)!r} (looked for it and for {sibling.name}).")


def resume_config(path: Path | str, given: dict[str, Any]) -> tuple[Path, Path]:
    """The saved ``config.toml`` and the folder to continue in, for ``imgclust run --resume``.

    ``given`` holds the other run options; any of them set is an error, since a resumed run
    must repeat the configuration its checkpoints were made with.
    """
    clashing = [f"--{name}" for name, value in given.items() if value not in (None, [], ())]
    if clashing:
        raise SettingsError(
            f"--resume continues a run exactly as it was configured; drop {', '.join(clashing)}."
        )
    folder = find_incomplete(path)
    config = folder / "config.toml"
    if not config.is_file():
        raise DataError(f"{str(folder)!r} has no config.toml, so it cannot be resumed.")
    lock(folder)  # before any slow work: a second resume of the folder fails at once
    return config, folder
