"""A cache of decoded images: one uint8 ``.npy`` per folder and decode settings, memory-mapped.

An entry is keyed on every image file's relative path, size and a fingerprint of its content
(a digest of its bytes by default, or its stat times) plus the decode settings, so it is reused
exactly while the folder's images are unchanged. Entries are written under a temporary name and
renamed when whole; a newer entry for the same folder and settings replaces the older one.

imgclust deletes only what it made: a cache folder is marked with a ``CACHEDIR.TAG`` (the Cache
Directory Tagging format, with imgclust's own line) when imgclust creates it or finds it empty,
and clean-up runs only in a marked folder and only on names of imgclust's exact patterns. A
folder that holds other files and no imgclust tag is used for new entries, but nothing in it is
ever deleted or replaced.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import math
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from imgclust.errors import DataError
from imgclust.io import atomic
from imgclust.io.bounded import read_json

FOLDER_CACHE = ".imgclust-cache"
FORMAT = 1
COPY_ROWS = 8192
READ_BYTES = 1 << 20
CHECKS = ("content", "stat")

TAG_NAME = "CACHEDIR.TAG"
TAG_SIGNATURE = "Signature: 8a477f597d28d172789f06886806bc55"
TAG_OWNER = "# imgclust decoded-image cache: imgclust deletes only its own files here."
TAG_TEXT = (
    f"{TAG_SIGNATURE}\n"
    "# This file is a cache directory tag created by imgclust.\n"
    f"{TAG_OWNER}\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)
TAG_MAX_BYTES = 4096
GITIGNORE_TEXT = "# decoded-image cache of imgclust\n*\n"

# imgclust's own names, and only these, are ever deleted (and only in a marked folder).
ENTRY_PATTERN = r"[0-9a-f]{16}-[0-9a-f]{32}\.(?:npy|json)"
ENTRY_NAME = re.compile(ENTRY_PATTERN)
TEMP_NAME = re.compile(
    rf"\.(?:{ENTRY_PATTERN}|CACHEDIR\.TAG|\.gitignore|imgclust-probe)\.[a-z0-9_]{{8}}\.tmp"
)
ABANDONED_SECONDS = 60  # an unlocked temporary file this old has lost its writer
STALE_TEMP_SECONDS = 6 * 3600  # ... or this old where files cannot be locked

GIB = 1 << 30
MAX_ENTRY_GIB = 256.0  # default bound on one entry (dataset.cache_max_gib)
FREE_RESERVE_BYTES = GIB  # an entry must leave at least this much of the disk free


@dataclass(frozen=True)
class FileStamp:
    """What identifies one image file's content: its relative path, size and a fingerprint."""

    name: str
    size: int
    fingerprint: str


class StampedFile(Protocol):
    """What :func:`stamp_files` needs of a listed file (read only, so a NamedTuple fits)."""

    @property
    def name(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def mtime_ns(self) -> int: ...
    @property
    def ctime_ns(self) -> int: ...
    @property
    def inode(self) -> int: ...


def stamp_files(files: Sequence[StampedFile], check: str = "content") -> list[FileStamp]:
    """Stamps of listed files: ``content`` digests their bytes, ``stat`` trusts their stat."""
    if check == "content":
        return [FileStamp(f.name, f.size, content_fingerprint(f.path)) for f in files]
    if check == "stat":
        return [
            FileStamp(f.name, f.size, f"stat:{f.mtime_ns}:{f.ctime_ns}:{f.inode}") for f in files
        ]
    raise ValueError(f"unknown cache check {check!r}")


def content_fingerprint(path: str | Path) -> str:
    """A BLAKE2b digest of the file's bytes; an unreadable file gets the reason instead."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as file:
            while chunk := file.read(READ_BYTES):
                digest.update(chunk)
    except OSError as error:
        return f"unreadable:{type(error).__name__}"
    return "blake2b:" + digest.hexdigest()


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/imgclust``, or ``~/.cache/imgclust``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imgclust"


SECRET_FILE = "entry-key"
SECRET_PATTERN = re.compile(r"[0-9a-f]{64}")
_secrets: dict[Path, str] = {}


def entry_secret() -> str:
    """This user's random key, mixed into every entry's name.

    An image folder may come from a stranger, and so may the ``.imgclust-cache`` inside it:
    without a key, anyone could compute an entry's name from the files and plant pixels that
    imgclust would cluster in place of the files. The key lives in the user cache dir, readable
    by its owner only; where it cannot be kept, a key for this process alone (entries are then
    not reused across processes, never trusted wrongly).
    """
    path = user_cache_dir() / SECRET_FILE
    if path not in _secrets:
        _secrets[path] = _read_secret(path) or _new_secret(path)
    return _secrets[path]


def _read_secret(path: Path) -> str | None:
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return None
        with open(path, "rb") as handle:
            text = handle.read(128).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if SECRET_PATTERN.fullmatch(text) else None


def _new_secret(path: Path) -> str:
    import secrets

    key = secrets.token_hex(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".entry-key.", dir=path.parent)  # mode 0600
        with os.fdopen(handle, "w") as out:
            out.write(key + "\n")
        os.replace(temporary, path)
    except OSError:
        pass
    return _read_secret(path) or key


# Reading a run someone else may have written ---------------------------------------------------
# While a command reads a finished run (report, evaluate, export, duplicates, predict), the run's
# config.toml is data: it may not choose where caches go, and what it makes imgclust decode is
# bounded by what the image files hold.
RUN_DECODE_FLOOR_BYTES = 64 * 2**20  # any run may decode this much
RUN_DECODE_RATIO = 64  # ... or this many times the bytes of its image files
_reading_run: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "imgclust_reading_run", default=False
)


_cache_dir_given: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "imgclust_cache_dir_given", default=False
)


@contextlib.contextmanager
def reading_a_run(cache_dir_given: bool = False) -> Iterator[None]:
    """Within it, decoded-image caches go only under :func:`user_cache_dir` (never where a run's
    ``cache_dir`` says, nor into its image folder) and decoding is bounded by
    :func:`check_run_decoding`. ``cache_dir_given``: the user named the cache folder on the
    command line (``--set dataset.cache_dir=...``), so it is theirs and is used."""
    tokens = (_reading_run.set(True), _cache_dir_given.set(cache_dir_given))
    try:
        yield
    finally:
        _cache_dir_given.reset(tokens[1])
        _reading_run.reset(tokens[0])


def is_reading_a_run() -> bool:
    """Whether the current command reads a finished run (see :func:`reading_a_run`)."""
    return _reading_run.get()


def check_run_decoding(needed: int, file_bytes: int, count: int) -> None:
    """While reading a run, refuse to decode images into more than the larger of 64 MiB and 64
    times their files' bytes: a run's dataset ``size`` cannot make a tiny PNG a 12 MB array."""
    if not is_reading_a_run():
        return
    bound = max(RUN_DECODE_FLOOR_BYTES, RUN_DECODE_RATIO * file_bytes)
    if needed > bound:
        mib = 2**20
        raise DataError(
            f"the run's dataset settings would decode {count} image files of "
            f"{file_bytes / mib:,.1f} MiB into {needed / mib:,.0f} MiB, more than "
            f"{RUN_DECODE_RATIO} times their size: a run folder's config.toml cannot ask for "
            "that; check its dataset.size and repeat the run with a config of your own."
        )


# The cache folder and its mark ----------------------------------------------------------------
@dataclass(frozen=True)
class CacheFolder:
    """A usable cache folder; ``managed`` when it carries imgclust's tag (clean-up allowed)."""

    path: Path
    managed: bool


def is_marked(directory: Path) -> bool:
    """Whether ``directory`` carries imgclust's ``CACHEDIR.TAG`` (a plain file, not a link)."""
    tag = Path(directory) / TAG_NAME
    try:
        info = tag.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > TAG_MAX_BYTES:
            return False
        text = tag.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return text.startswith(TAG_SIGNATURE) and TAG_OWNER in text.splitlines()


def is_imgclust_name(name: str) -> bool:
    """Whether a file name is one imgclust gives cache entries or its temporary files."""
    return bool(ENTRY_NAME.fullmatch(name) or TEMP_NAME.fullmatch(name))


def open_cache(directory: Path, inside: bool = False) -> CacheFolder | None:
    """The folder made if needed and probed for writing; None when it cannot be used.

    A new or empty folder, or one holding only imgclust's names, gets imgclust's tag (and, inside
    an image folder, a ``.gitignore``); a folder with anything else in it and no tag is used but
    never cleaned.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not directory.is_dir():
            return None
        _probe(directory)
        managed = is_marked(directory) or _adopt(directory, inside)
    except OSError:
        return None
    if managed:
        if inside:
            _ignore_in_git(directory)
        sweep(directory)
    return CacheFolder(directory, managed)


def _probe(directory: Path) -> None:
    """Raise OSError unless a file can be made (and removed) in ``directory``."""
    handle, name = tempfile.mkstemp(prefix=".imgclust-probe.", suffix=".tmp", dir=directory)
    os.close(handle)
    os.unlink(name)


def _adopt(directory: Path, inside: bool) -> bool:
    """Tag a folder that holds nothing but imgclust's own files; False when it holds others."""
    with os.scandir(directory) as listing:
        names = [entry.name for entry in listing]
    for name in names:
        if is_imgclust_name(name) or name == SECRET_FILE:  # the key is never cleaned: no pattern
            continue
        if name == ".gitignore" and inside and _reads(directory / name, GITIGNORE_TEXT):
            continue
        return False
    atomic.write_text(directory / TAG_NAME, TAG_TEXT)
    return True


def _reads(path: Path, text: str) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode) and path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        return False


def cache_location(
    folder: Path, cache_dir: str | Path | None = None
) -> tuple[CacheFolder | None, str]:
    """Where a folder's entries go, and the scope that tells folders sharing that place apart.

    ``cache_dir`` when given; else ``FOLDER/.imgclust-cache`` when the folder is writable; else the
    user cache dir. (None, "") when none of them can be written. While a command reads a
    finished run (:func:`reading_a_run`), only the user cache dir.
    """
    folder = Path(folder).resolve()
    given = cache_dir not in (None, "")
    if is_reading_a_run() and not (given and _cache_dir_given.get()):
        candidates = [user_cache_dir()]  # a run's config.toml does not choose where imgclust writes
    elif given:
        candidates = [Path(str(cache_dir)).expanduser()]
    else:
        candidates = [folder / FOLDER_CACHE, user_cache_dir()]
    for directory in candidates:
        inside = _same(directory, folder / FOLDER_CACHE)
        if directory == folder / FOLDER_CACHE and os.path.islink(directory):
            continue  # a link planted in the image folder must not send writes elsewhere
        opened = open_cache(directory, inside)
        if opened is not None:
            return opened, "" if inside else str(folder)
    return None, ""


def _same(one: Path, other: Path) -> bool:
    try:
        return one.resolve() == other.resolve()
    except OSError:
        return False


def _ignore_in_git(directory: Path) -> None:
    """A cache inside an image folder tells git to ignore it, in case the folder is a repo."""
    marker = directory / ".gitignore"
    if not os.path.lexists(marker):
        try:
            atomic.write_text(marker, GITIGNORE_TEXT)
        except OSError:
            pass


# Entries --------------------------------------------------------------------------------------
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
    prefix = _digest(entry_secret(), scope, described)[:16]
    sha = hashlib.sha256(prefix.encode())
    for stamp in stamps:
        line = f"{stamp.name}\0{stamp.size}\0{stamp.fingerprint}\n"
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
        meta = read_json(
            meta_path,
        )
        images = np.load(array_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, DataError):
        return None
    whole = isinstance(meta, dict) and meta.get("format") == FORMAT and meta.get("key") == key
    if not whole or len(meta.get("ids", ())) != len(images):
        return None
    return CachedImages(images, meta, array_path)


def may_write(folder: CacheFolder, prefix: str, key: str) -> bool:
    """Whether the entry's names are free, or the folder is imgclust's so they may be replaced."""
    if folder.managed:
        return True
    return not any(os.path.lexists(p) for p in _paths(folder.path, prefix, key))


def check_entry_size(
    directory: Path, shape: tuple[int, ...], max_gib: float | None = MAX_ENTRY_GIB
) -> int:
    """The bytes an entry of ``shape`` needs; a one-line error when over the bound or the disk."""
    needed = math.prod(shape) + 4096  # uint8 rows and the .npy header
    described = " x ".join(str(n) for n in shape)
    if max_gib is not None and needed > max_gib * GIB:
        raise DataError(
            f"the decoded images ({described} bytes = {needed / GIB:,.1f} GiB) exceed the cache "
            f"limit of {max_gib:g} GiB: set a smaller dataset.size or dataset.limit, or raise "
            "dataset.cache_max_gib."
        )
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return needed
    if needed > free - FREE_RESERVE_BYTES:
        raise DataError(
            f"the decoded images ({described} bytes = {needed / GIB:,.1f} GiB) do not fit in the "
            f"cache folder's free space ({free / GIB:,.1f} GiB, keeping 1 GiB free): set a smaller "
            "dataset.size or dataset.limit, another dataset.cache_dir, or dataset.cache=false."
        )
    return needed


class PendingEntry:
    """A new entry being filled: a uint8 ``.npy`` under a temporary name, opened as a memory map.

    Writers (this process or decoding workers given :attr:`temp_path`) fill rows of
    :attr:`array`; :meth:`commit` keeps the rows that decoded and renames the file into place.
    The size is checked against ``max_gib`` and the free disk space before any file is made;
    temporary files are held locked while written and removed on failure, Ctrl-C and SIGTERM.
    """

    def __init__(
        self,
        directory: Path | CacheFolder,
        prefix: str,
        key: str,
        shape: tuple[int, ...],
        max_gib: float | None = MAX_ENTRY_GIB,
    ) -> None:
        if not isinstance(directory, CacheFolder):
            directory = CacheFolder(Path(directory), is_marked(Path(directory)))
        self.folder = directory
        self.directory = directory.path
        self.prefix, self.key = prefix, key
        check_entry_size(self.directory, shape, max_gib)
        self._temps: list[_Temporary] = []
        self.temp_path, self.array = self._new_array(shape)

    def _new_array(self, shape: tuple[int, ...]) -> tuple[Path, np.memmap]:
        """A locked temporary ``.npy`` of ``shape`` (header written, rows sparse), mapped."""
        temporary = _Temporary.create(self.directory, f"{self.prefix}-{self.key}.npy")
        self._temps.append(temporary)
        try:
            array = np.lib.format.open_memmap(
                temporary.path, mode="w+", dtype=np.uint8, shape=shape
            )
        except BaseException as error:
            self.discard()
            if isinstance(error, (OSError, ValueError)):
                raise DataError(
                    f"could not make a cache file in {self.directory} ({error}): free some space,"
                    " set another dataset.cache_dir, or dataset.cache=false."
                ) from None
            raise
        return temporary.path, array

    def commit(self, meta: Mapping[str, Any], keep: np.ndarray | None = None) -> CachedImages:
        """Keep rows ``keep`` (all when None), move the file into place, record ``meta``."""
        try:
            return self._commit(meta, keep)
        except BaseException as error:
            self.discard()
            if isinstance(error, OSError):
                reason = error.strerror or str(error)
                raise DataError(
                    f"could not write the cache entry in {self.directory} ({reason}): free some "
                    "space, set another dataset.cache_dir, or dataset.cache=false."
                ) from None
            raise

    def _commit(self, meta: Mapping[str, Any], keep: np.ndarray | None) -> CachedImages:
        source = self.array
        final_temp = self.temp_path
        if keep is not None and len(keep) != len(source):
            final_temp, target = self._new_array((len(keep), *source.shape[1:]))
            for start in range(0, len(keep), COPY_ROWS):
                target[start : start + COPY_ROWS] = source[keep[start : start + COPY_ROWS]]
            target.flush()
            del target
        source.flush()
        del source
        self.array = None  # type: ignore[assignment]
        if not may_write(self.folder, self.prefix, self.key):
            raise FileExistsError(
                f"entry {self.prefix}-{self.key} appeared in a folder imgclust does not manage"
            )
        array_path, meta_path = _paths(self.directory, self.prefix, self.key)
        os.replace(final_temp, array_path)
        try:
            atomic.write_json(meta_path, {**meta, "format": FORMAT, "key": self.key})
        except BaseException:
            array_path.unlink(missing_ok=True)  # placed by this call a moment ago
            raise
        self._release()
        prune(self.directory, self.prefix, keep_key=self.key)
        found = lookup(self.directory, self.prefix, self.key)
        if found is None:  # pragma: no cover - only if another process removed it just now
            raise OSError(f"cache entry {array_path} vanished after writing")
        return found

    def discard(self) -> None:
        """Drop the unfinished entry: every temporary file it made."""
        self.array = None  # type: ignore[assignment]
        for temporary in self._temps:
            temporary.remove()
        self._temps = []

    def _release(self) -> None:
        """The entry is in place: let go of the temporary files (unlinking what is left)."""
        self.discard()


class _Temporary:
    """A temporary file of imgclust's naming, locked while this process writes it.

    The lock (where the platform has one) lets :func:`sweep` prove a temporary file abandoned
    when its writer died without cleaning up (SIGKILL, power loss); the path is also removed if
    this process gets SIGTERM.
    """

    def __init__(self, path: Path, handle: int) -> None:
        self.path, self.handle = path, handle

    @classmethod
    def create(cls, directory: Path, final_name: str) -> _Temporary:
        handle, name = tempfile.mkstemp(prefix=f".{final_name}.", suffix=".tmp", dir=directory)
        try:
            os.chmod(name, 0o666 & ~atomic.current_umask())
            _lock(handle)
        except BaseException:
            os.close(handle)
            os.unlink(name)
            raise
        temporary = cls(Path(name), handle)
        _on_terminate.add(temporary.path, handle)
        return temporary

    def remove(self) -> None:
        """Unlink the file (if still there) and drop the lock."""
        _on_terminate.discard(self.path)
        self.path.unlink(missing_ok=True)
        if self.handle >= 0:
            os.close(self.handle)
            self.handle = -1


def _lock(handle: int) -> None:
    """Hold an exclusive lock on an open file, where the platform offers one."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # pragma: no cover - a file system without locks: age decides instead
        pass


def _abandoned(path: Path, now: float) -> bool:
    """Whether a temporary file's writer is gone: unlocked and over a minute old (or 6 h)."""
    try:
        info = path.lstat()
    except OSError:
        return False
    if not stat.S_ISREG(info.st_mode):
        return False
    age = now - info.st_mtime
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return age > STALE_TEMP_SECONDS
    if age <= ABANDONED_SECONDS:
        return False
    try:
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its writer holds it
    except OSError:  # pragma: no cover - no locks on this file system
        return age > STALE_TEMP_SECONDS
    finally:
        os.close(handle)
    return True


# Clean-up -------------------------------------------------------------------------------------
def prune(directory: Path, prefix: str, keep_key: str) -> None:
    """In a marked folder, remove older entries of the same folder and settings, and abandoned
    temporary files; only files named by imgclust's exact patterns are ever touched."""
    directory = Path(directory)
    if not is_marked(directory):
        return
    keep = {f"{prefix}-{keep_key}.npy", f"{prefix}-{keep_key}.json"}
    for entry in _listing(directory):
        name = entry.name
        if ENTRY_NAME.fullmatch(name) and name.startswith(f"{prefix}-") and name not in keep:
            _remove_regular(directory / name)
    sweep(directory)


def sweep(directory: Path) -> None:
    """In a marked folder, remove imgclust's temporary files whose writers are gone."""
    directory = Path(directory)
    if not is_marked(directory):
        return
    now = time.time()
    for entry in _listing(directory):
        if TEMP_NAME.fullmatch(entry.name) and _abandoned(directory / entry.name, now):
            _remove_regular(directory / entry.name)


def _listing(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as listing:
            return list(listing)
    except OSError:
        return []


def _remove_regular(path: Path) -> None:
    """Unlink ``path`` if it is a plain file (never a link, folder or device)."""
    try:
        if stat.S_ISREG(path.lstat().st_mode):
            path.unlink()
    except OSError:
        pass


def _paths(directory: Path, prefix: str, key: str) -> tuple[Path, Path]:
    stem = Path(directory) / f"{prefix}-{key}"
    return stem.with_suffix(".npy"), stem.with_suffix(".json")


# SIGTERM --------------------------------------------------------------------------------------
class _TerminationCleanup:
    """While temporary files are being written, SIGTERM removes them before the process ends.

    The handler is installed only from the main thread over the default or a Python handler,
    restored when the last temporary file is gone, and never runs in forked children.
    """

    def __init__(self) -> None:
        self.paths: dict[Path, int] = {}  # temporary file -> the handle holding its lock
        self.previous: Any = None
        self.installed = False
        self.owner = os.getpid()

    def add(self, path: Path, handle: int) -> None:
        self.paths[path] = handle
        if self.installed or threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if previous in (signal.SIG_IGN, None):
            return
        signal.signal(signal.SIGTERM, self._handle)
        self.previous, self.installed, self.owner = previous, True, os.getpid()

    def discard(self, path: Path) -> None:
        self.paths.pop(path, None)
        if not self.paths:
            self._restore()

    def _restore(self) -> None:
        if self.installed and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) == self._handle:
                signal.signal(signal.SIGTERM, self.previous)
            self.installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() == self.owner:
            for path in list(self.paths):
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    pass
            self.paths.clear()
        previous = self.previous if self.installed else signal.SIG_DFL
        signal.signal(signum, previous)
        self.installed = False
        if callable(previous):
            previous(signum, frame)
        else:
            os.kill(os.getpid(), signum)

    def after_fork(self) -> None:
        """A forked child (a decoding worker) keeps the handler it had before the cache's, and
        lets go of the inherited locks, so that they end with the writer that took them."""
        for handle in self.paths.values():
            try:
                os.close(handle)
            except OSError:
                pass
        if self.installed:
            try:
                signal.signal(signal.SIGTERM, self.previous)
            except ValueError:  # pragma: no cover - forked from another thread
                pass
            self.installed = False
        self.paths = {}


_on_terminate = _TerminationCleanup()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_on_terminate.after_fork)
