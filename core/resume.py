"""Resuming an interrupted run: ``imgclust run --resume RUN`` continues in its ``.incomplete``
folder from the encoders' last checkpoints, with the configuration saved there.

A run that fails or is interrupted keeps its ``NAME.incomplete`` folder when ``checkpoints/``
holds something; :func:`remember_kept` notes it so the CLI can say how to go on.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from .errors import DataError, SettingsError
from .runfolder import INCOMPLETE

_kept: Path | None = None


def remember_kept(folder: Path) -> None:
    """Note the incomplete run folder a failed or interrupted run left for resuming."""
    global _kept
    _kept = Path(folder)


def kept_folder() -> Path | None:
    """The folder the last failed run in this process kept, if any."""
    return _kept


def interrupted_message() -> str:
    """'Interrupted.' and, when a run can go on, the command that resumes it."""
    if _kept is None or not _kept.is_dir():
        return "Interrupted."
    return f"Interrupted. Resume with: imgclust run --resume {shlex.quote(str(_kept))}"


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
    return config, folder
