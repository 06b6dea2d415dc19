"""Run folders: named after what ran, built under ``NAME.incomplete`` and renamed when whole,
so that a run folder is never overwritten and never half-written.

A folder this process creates carries, until it is finished, a marker file (``.imgclust-run``)
holding a token only this process knows; :func:`discard` removes a folder only when it was created
here and its marker still holds that token, and then only the names imgclust writes. While a run
works in a folder it holds an exclusive lock on ``.imgclust-lock`` inside it, so that two
processes never work in one folder.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from imgclust.errors import DataError, ImgclustError
from imgclust.io.bounded import read_json

INCOMPLETE = ".incomplete"
MARKER = ".imgclust-run"
LOCK = ".imgclust-lock"
NAME_MAX = 255  # bytes in one path component on every common filesystem
# room for the "-NNN" a taken name gets and the ".incomplete" suffix
MAX_NAME = NAME_MAX - len(INCOMPLETE) - len("-999")
MAX_ATTEMPTS = 999

# what imgclust writes into a run or k-sweep folder: only these are ever removed by discard()
KNOWN_FILES = frozenset(
    {
        "config.toml",
        "skipped.txt",
        "clusters.md",
        "assignments.csv",
        "issues.csv",
        "label_review.csv",
        "content.json",
        "embeddings.npy",
        "summary.json",
        "metrics.json",
        "report.html",
        "k-sweep.csv",
        "k-sweep.json",
        "k-sweep.png",
        MARKER,
        LOCK,
    }
)
RUN_FILES = ("config.toml", "summary.json", "assignments.csv")  # in every finished run folder
KNOWN_DIRS = frozenset({"checkpoints", "pipeline", "plots", "chunks"})
# temporaries imgclust makes: atomic.write_bytes, persist.save_pipeline, Keras model saves
TEMPORARY_FILE = re.compile(r"^(\..+\.[A-Za-z0-9_]{8}\.tmp|\.tmp-.+\.keras)$")
TEMPORARY_DIR = re.compile(r"^\.pipeline\.[A-Za-z0-9_]{8}$")

_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}
_created: dict[Path, str] = {}  # folders this process created -> the token in their marker
_locks: dict[Path, int] = {}  # folders this process holds the lock of -> the lock file's fd


def run_name(
    config: Mapping[str, Any], now: datetime | None = None, *, kind: str | None = None
) -> str:
    """'2026-11-27T22-40-05-mnist-conv-ae-kmeans', then any refiners ('...-kmeans-self-label'),
    shortened to fit a file name if need be; ``kind`` follows the time stamp for folders other
    than runs ('...-k-sweep-mnist-...')."""
    stamp = (now or datetime.now()).strftime("%Y-%m-%dT%H-%M-%S")
    parts = [
        config["dataset"]["name"],
        *(e["name"] for e in config["encoder"]),
        config["clusterer"]["name"],
        *(r["name"] for r in config.get("refiner") or []),
    ]
    words = [stamp, *([kind] if kind else []), *parts]
    return fit_name(re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(words)))


def fit_name(name: str) -> str:
    """``name`` as a safe folder name short enough for ``-NNN.incomplete`` to fit NAME_MAX.

    A long name keeps its beginning (the time stamp and the first stages) and ends in a hash of
    the whole, so that two long names that differ only near the end stay different.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).lstrip(".") or "run"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: MAX_NAME - len(digest) - 1].rstrip('-.')}-{digest}"


def os_reason(exc: OSError) -> str:
    """The operating system's words for an OSError ('No space left on device')."""
    return exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc)) or type(exc).__name__


#: what to do about the operating-system errors a user can act on
OS_ERROR_HINTS = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EFBIG: "write elsewhere, or raise the file size limit",
    errno.EACCES: "check the permissions, or write elsewhere",
    errno.EPERM: "check the permissions, or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
}


def os_hint(exc: OSError) -> str:
    """What to do about an OSError ('free some space or write elsewhere')."""
    return OS_ERROR_HINTS.get(exc.errno or 0, "check the path and try again")


def os_error_line(exc: OSError) -> str:
    """One line for an OSError that reached the CLI: the system's words, the file, what to do."""
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    where = f" ({' -> '.join(repr(n) for n in names)})" if names else ""
    return f"{os_reason(exc)}{where}: {os_hint(exc)}."


def create_incomplete(runs_dir: Path, name: str) -> Path:
    """Make, mark and lock a fresh ``runs_dir/NAME[-N].incomplete`` folder no other run uses."""
    runs_dir = Path(runs_dir)
    name = fit_name(name)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImgclustError(
            f"cannot make the runs folder {str(runs_dir)!r}: {os_reason(exc)}; "
            "choose another --runs-dir."
        ) from None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        candidate = name if attempt == 1 else f"{name}-{attempt}"
        if (runs_dir / candidate).exists():
            continue
        path = runs_dir / f"{candidate}{INCOMPLETE}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise ImgclustError(
                f"cannot make a run folder in {str(runs_dir)!r}: {os_reason(exc)}; "
                "choose another --runs-dir or make it writable."
            ) from None
        _mark(path)
        return path
    raise ImgclustError(
        f"no free run folder name for {name!r} under {str(runs_dir)!r} "
        f"({MAX_ATTEMPTS} taken): move old runs away or choose another --runs-dir."
    )


def _mark(path: Path) -> None:
    """Write the marker that proves ``path`` is this process's, and take the folder's lock."""
    token = secrets.token_hex(16)
    _created[_key(path)] = token
    try:
        with open(path / MARKER, "x", encoding="utf-8") as handle:
            json.dump({"format": "imgclust-run", "pid": os.getpid(), "token": token}, handle)
        lock(path)
    except BaseException as exc:
        discard(path)
        if isinstance(exc, OSError):
            raise ImgclustError(
                f"cannot write the run folder {str(path)!r}: {os_reason(exc)}; "
                "choose another --runs-dir or free some space."
            ) from None
        raise


def _key(path: Path) -> Path:
    return Path(os.path.abspath(path))


def created_here(folder: Path) -> bool:
    """Whether this process created ``folder`` and its marker still holds this process's token."""
    token = _created.get(_key(folder))
    if token is None or (Path(folder) / MARKER).is_symlink():
        return False
    try:
        marker = read_json(
            Path(folder) / MARKER,
        )
    except (OSError, ValueError, DataError):
        return False
    return isinstance(marker, dict) and marker.get("token") == token


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` holds what ``imgclust run`` writes: config, summary and assignments."""
    path = Path(path)
    return all((path / name).is_file() for name in RUN_FILES)


# Locking ---------------------------------------------------------------------------------------
def lock(folder: Path) -> None:
    """Hold ``folder``'s lock for as long as this process works in it; one line if another does."""
    folder = Path(folder)
    key = _key(folder)
    if key in _locks:
        return
    path = folder / LOCK
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            raise ImgclustError(
                f"{str(folder)!r} is gone: another process finished or removed it."
            ) from None
        except OSError as exc:
            raise ImgclustError(
                f"cannot lock the run folder {str(folder)!r}: {os_reason(exc)}."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in _NO_LOCKS:  # a filesystem without locks: go on unguarded
                _locks[key] = fd
                return
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ImgclustError(
                    f"{str(folder)!r} is in use by another imgclust process"
                    f"{f' (pid {holder})' if holder else ''}: wait for it to finish."
                ) from None
            raise ImgclustError(
                f"cannot lock the run folder {str(folder)!r}: {os_reason(exc)}."
            ) from None
        if _same_file(fd, path):  # not a lock file another process unlinked meanwhile
            with contextlib.suppress(OSError):  # the pid only helps the message above
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            atexit.unregister(_unlock_all)  # once, however many folders are locked
            atexit.register(_unlock_all)  # an interruption before a run starts could leave it
            _locks[key] = fd
            return
        os.close(fd)
    raise ImgclustError(f"cannot lock the run folder {str(folder)!r}: it keeps changing.")


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
    except OSError:
        return False


def _unlock_all() -> None:
    for key in list(_locks):
        unlock(key)


def unlock(folder: Path) -> None:
    """Remove and release ``folder``'s lock if this process holds it (a no-op otherwise)."""
    fd = _locks.pop(_key(folder), None)
    if fd is None:
        return
    with contextlib.suppress(OSError):
        if _same_file(fd, Path(folder) / LOCK):
            os.unlink(Path(folder) / LOCK)
    os.close(fd)


# Clean-up --------------------------------------------------------------------------------------
@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold back Ctrl-C and SIGTERM (they arrive afterwards) while a folder changes name or goes."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, OSError, ValueError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def remove_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files and folders imgclust's own writers leave when killed midway."""
    removed = []
    for root, dirs, files in os.walk(folder):  # never follows links
        here = Path(root)
        for name in list(dirs):
            path = here / name
            if TEMPORARY_DIR.match(name) and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                dirs.remove(name)
                removed.append(path)
        for name in files:
            path = here / name
            if TEMPORARY_FILE.match(name) and not path.is_dir():
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
    return removed


CHECKPOINTS = "checkpoints"


def drop_checkpoints(folder: Path) -> str | None:
    """Remove a finished run's ``checkpoints/`` (they serve only ``--resume``); None when it is
    gone or was never there, else why some of it stays (the run is whole either way)."""
    path = Path(folder) / CHECKPOINTS
    if path.is_symlink() or not path.is_dir():
        return None  # imgclust makes no links: someone else put it there
    failures: list[str] = []

    def failed(function: Any, where: str, error: Any) -> None:
        exc = error[1] if isinstance(error, tuple) else error  # onerror: (type, value, tb)
        failures.append(os_reason(exc) if isinstance(exc, OSError) else str(exc))

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=failed)
    else:  # pragma: no cover - Python 3.10 and 3.11
        shutil.rmtree(path, onerror=failed)
    return f"{CHECKPOINTS}/ was not removed entirely: {failures[0]}" if failures else None


def finalise(incomplete: Path) -> Path:
    """Rename ``NAME.incomplete`` to ``NAME`` (or ``NAME-N`` if taken); return the final path."""
    incomplete = Path(incomplete)
    base = incomplete.name.removesuffix(INCOMPLETE)
    remove_temporaries(incomplete)
    made_here = created_here(incomplete)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        candidate = incomplete.parent / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise _write_error(incomplete, exc) from None
        with signals_deferred():
            try:
                candidate.rmdir()
                incomplete.rename(candidate)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    candidate.rmdir()
                raise _write_error(incomplete, exc) from None
            _created.pop(_key(incomplete), None)
            if made_here:  # a finished folder needs no proof of who made it
                with contextlib.suppress(OSError):
                    (candidate / MARKER).unlink()
            fd = _locks.pop(_key(incomplete), None)
            if fd is not None:
                _locks[_key(candidate)] = fd
                unlock(candidate)
        return candidate
    raise ImgclustError(
        f"no free name to finish {str(incomplete)!r} under ({MAX_ATTEMPTS} taken): "
        "move old runs away and resume it."
    )


def _write_error(folder: Path, exc: OSError) -> ImgclustError:
    return ImgclustError(f"cannot write the run folder {str(folder)!r}: {os_reason(exc)}.")


def discard(folder: Path) -> bool:
    """Remove a folder this process created, and only what imgclust writes into it.

    A folder this process did not create (a resumed one, or one whose marker changed) is left
    alone, and so is anything in it imgclust does not write; returns whether the folder is gone.
    """
    folder = Path(folder)
    with signals_deferred():
        if not created_here(folder):
            unlock(folder)
            return not folder.exists()
        unlock(folder)
        remove_temporaries(folder)
        for entry in _entries(folder):
            with contextlib.suppress(OSError):
                if entry.is_symlink():
                    continue  # imgclust makes no links: someone else put it there
                if entry.name in KNOWN_FILES and entry.is_file():
                    entry.unlink()
                elif entry.name in KNOWN_DIRS and entry.is_dir():
                    shutil.rmtree(entry)
        try:
            folder.rmdir()
        except OSError:
            return False  # something else is in it: keep it
        _created.pop(_key(folder), None)
        return True


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def check_self_contained(run: Path) -> None:
    """Refuse a run folder that reaches outside itself before reading it: a link that leads
    elsewhere (or nowhere), or an entry that is not a regular file or folder (a FIFO would block a
    reader, a device would read forever). Run folders come from strangers; every command that
    reads one walks it here first, so none opens a file outside it.
    """
    import stat

    run = Path(run)
    base = run.resolve()
    for folder, dirs, files in os.walk(run):  # never descends into links
        for name in [*dirs, *files]:
            path = Path(folder) / name
            rel = path.relative_to(run).as_posix()
            try:
                mode = os.lstat(path).st_mode
                if stat.S_ISLNK(mode):
                    try:
                        target = path.resolve(strict=True)
                    except (OSError, RuntimeError):  # dangling, or a loop
                        raise DataError(
                            f"{rel} in run folder {str(run)!r} is a link that leads nowhere: "
                            "refused; a run folder must hold its own files."
                        ) from None
                    if not target.is_relative_to(base):
                        raise DataError(
                            f"{rel} in run folder {str(run)!r} links to outside it: refused; a "
                            "run folder must hold its own files."
                        )
                    mode = os.stat(target).st_mode
            except OSError as exc:
                raise DataError(f"cannot read {rel} in {str(run)!r}: {os_reason(exc)}.") from None
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise DataError(
                    f"{rel} in run folder {str(run)!r} is not a regular file or folder: refused."
                )
