"""Reading image files: finding them below a folder, decoding them with Pillow into uint8, in a
process pool when that pays, into a memory-mapped cache entry (:mod:`imgclust.io.imagecache`)
that later reads reuse while the folder is unchanged.

Files are found recursively in sorted order; their paths relative to the folder are the ids, and
first-level sub-folder names become labels when every image sits in one. Unreadable files are
skipped and listed, or refused with ``strict``. :func:`load_image_files` reads a given list of
files the same way (for ``predict``).
"""

from __future__ import annotations

import io
import os
import stat
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from imgclust.console import note
from imgclust.errors import DataError, SettingsError
from imgclust.io import imagecache
from imgclust.io.content import PREFIX, bytes_digest, file_digest
from imgclust.io.imagecache import check_run_decoding
from imgclust.io.memory import check_bytes, nbytes_of
from imgclust.stages.interfaces import FileListing, ImageSet

DEFAULT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
CHANNELS = {"grayscale": 1, "rgb": 3}
FITS = ("stretch", "pad", "pad-black", "crop")  # how an image reaches the target size
POOL_SECONDS = 1.0  # use a process pool when serial decoding is expected to take longer
SECONDS_PER_FILE = 2e-4  # rough serial cost of one small file (open, decode, convert)
BYTES_PER_SECOND = 40e6  # rough serial decode rate of compressed bytes
SHOWN = 5  # mismatches or skipped files named in an error or warning
PILLOW_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # Pillow's default decompression-bomb limit
HASHED_IN_MEMORY = 64 * 2**20  # files up to this size are read once: hashed, then decoded


class ImageSkippedWarning(UserWarning):
    """Some image files could not be read and were left out."""


class ImageFile(NamedTuple):
    """One candidate file: its id (path relative to the folder, posix) and where it lies."""

    name: str
    path: str
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0


@dataclass
class Decoded:
    """What decoding produced: images of the files that decoded, which those were, what failed."""

    images: Any  # (n, H, W, C) uint8: an array or a memory map
    names: list[str]
    skipped: list[str]
    cache: str = "off"
    cache_path: str | None = None
    digests: list[str] | None = None  # content digest of each file that decoded (not cached)


@dataclass
class FolderReading:
    """How a folder of images is read (the ``image-folder`` dataset's checked settings); ``load``
    finds, decodes (through the cache when ``cache``) and labels the images."""

    path: Path
    size: tuple[int, int] | None = None
    mode: str = "grayscale"
    recursive: bool = True
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    labels: str = "auto"
    limit: int | None = None
    strict: bool = False
    workers: int = 1
    cache: bool = True
    cache_dir: str | None = None
    max_pixels: int | None = None
    cache_check: str = "content"
    cache_max_gib: float | None = 256.0
    fit: str = "stretch"
    follow_links: bool = False

    def load(self) -> Any:
        """The folder's images as an ImageSet: ids, sub-folder labels, what was skipped."""

        files = scan_folder(self.path, self.recursive, self.extensions, self.follow_links)
        if self.limit is not None:
            files = files[: self.limit]
        decoded, fingerprints = self._decode_cached(files)
        labels, class_names = (None, None)
        if self.labels == "auto":
            labels, class_names = folder_labels(decoded.names)
        info = {
            "source": str(self.path),
            "mode": self.mode,
            "skipped": decoded.skipped,
            "cache": decoded.cache,
            "cache_path": decoded.cache_path,
            "labels": "sub-folders" if labels is not None else "none",
            "file_digests": file_digests(files, decoded.names, fingerprints),
        }
        return ImageSet(decoded.images, labels, decoded.names, class_names, info)

    def list_files(self) -> FileListing:
        """The files ``load`` would decode, in its order and with its labels, none decoded: the
        size is ``size`` or, without it, the first readable file's."""
        files = scan_folder(self.path, self.recursive, self.extensions, self.follow_links)
        if self.limit is not None:
            files = files[: self.limit]
        names = [f.name for f in files]
        labels, class_names = folder_labels(names) if self.labels == "auto" else (None, None)
        return FileListing(
            paths=tuple(str(f.path) for f in files),
            size=self.size or _first_size(files, self.mode, self.max_pixels),
            mode=self.mode,
            names=names,
            max_pixels=self.max_pixels,
            fit=self.fit,
            labels=labels,
            class_names=class_names,
            info={"source": str(self.path), "mode": self.mode, "strict": self.strict},
        )

    def _decode_cached(self, files: list[ImageFile]) -> tuple[Decoded, dict[str, str]]:
        """Decoded images from the cache when the folder is unchanged, else decoded afresh;
        with the content fingerprints the cache took of the files (none without it)."""
        decoded, stamps = self._decode_stamped(files)
        fingerprints = {s.name: s.fingerprint for s in stamps if self.cache_check == "content"}
        if decoded.digests is not None:  # taken from the bytes that were decoded
            fingerprints.update(zip(decoded.names, decoded.digests, strict=True))
        return decoded, fingerprints

    def _decode_stamped(self, files: list[ImageFile]) -> tuple[Decoded, list[Any]]:
        source = str(self.path)
        settings = {"size": self.size, "mode": self.mode, "max_pixels": self.max_pixels}
        if self.fit != "stretch":  # entries made before ``fit`` existed stay valid
            settings["fit"] = self.fit
        folder, scope = (None, "")
        stamps: list[Any] = []
        if self.cache:
            folder, scope = imagecache.cache_location(self.path, self.cache_dir)
            if folder is None:
                _note(f"no writable cache folder for {source}: decoding into memory")
            elif not folder.managed:
                _note(
                    f"cache folder {folder.path} holds files imgclust did not make: entries are "
                    "added there but nothing is cleaned up (give a new or empty folder instead)"
                )
        if folder is not None:
            stamps = imagecache.stamp_files(files, self.cache_check)
            prefix, key = imagecache.entry_names(stamps, settings, scope)
            found = imagecache.lookup(folder.path, prefix, key)
            if found is not None:
                names, skipped = list(found.meta["ids"]), list(found.meta["skipped"])
                hit = Decoded(found.images, names, skipped, "hit", str(found.path))
                return check_skipped(hit, self.strict, source), stamps
            if not imagecache.may_write(folder, prefix, key):
                _note(f"not replacing a damaged cache entry in {folder.path}: decoding into memory")
                folder = None
        if folder is None:
            decoded = decode_files(
                files, self.size, self.mode, self.workers, self.max_pixels, fit=self.fit
            )
            return check_skipped(decoded, self.strict, source), stamps

        def allocate(shape: tuple[int, ...]) -> Any:
            return imagecache.PendingEntry(folder, prefix, key, shape, self.cache_max_gib)

        decoded = decode_files(
            files, self.size, self.mode, self.workers, self.max_pixels, allocate, self.fit
        )
        pending = decoded.images
        try:
            check_skipped(decoded, self.strict, source, warn=False)
        except BaseException:
            pending.discard()
            raise
        meta = {
            "ids": decoded.names,
            "skipped": decoded.skipped,
            "source": source,
            "settings": settings,
            "check": self.cache_check,
        }
        written = pending.commit(meta, decoded.kept)
        result = Decoded(written.images, decoded.names, decoded.skipped, "written")
        result.cache_path, result.digests = str(written.path), decoded.digests
        return check_skipped(result, self.strict, source), stamps


def file_digests(
    files: Sequence[ImageFile], names: Sequence[str], fingerprints: dict[str, str]
) -> list[str]:
    """The content digest of each decoded file, in ``names`` order: the cache's fingerprint
    where it took one (the same BLAKE2b digest), else read now."""
    where = {f.name: f.path for f in files}
    digests = []
    for name in names:
        known = fingerprints.get(name, "")
        digests.append(known if known.startswith(PREFIX) else file_digest(where[name]))
    return digests


def load_image_files(
    files: list[Path],
    root: Path | None,
    size: tuple[int, int] | None,
    mode: str,
    *,
    strict: bool = False,
    workers: int | None = None,
    max_pixels: int | None = None,
    fit: str = "stretch",
) -> Any:
    """Read the given image files as ``image-folder`` does, into memory (no cache).

    ids are the paths relative to ``root`` when given (posix separators), else the paths as
    given. Unreadable files are skipped and listed in ``info["skipped"]`` unless ``strict``.
    """

    mode = check_mode(mode)
    max_pixels = check_max_pixels(max_pixels)
    size = check_size(size, max_pixels)
    entries = []
    for file in files:
        path = Path(file)
        try:
            stat = path.stat()
        except OSError:
            stat = None
        if stat is None or not _is_regular(stat.st_mode):
            raise DataError(f"image file {str(path)!r} does not exist or is not a file.")
        name = _relative_name(path, root)
        entries.append(ImageFile(name, os.fspath(path), stat.st_size, stat.st_mtime_ns))
    if not entries:
        raise DataError("no image files were given.")
    source = str(root) if root is not None else "the given files"
    decoded = decode_files(
        entries, size, mode, check_workers(workers), max_pixels, fit=check_fit(fit)
    )
    check_skipped(decoded, strict, source, stacklevel=3)
    info = {
        "source": str(root) if root is not None else "",
        "mode": mode,
        "skipped": decoded.skipped,
        "cache": "off",
    }
    return ImageSet(decoded.images, None, decoded.names, None, info)


# Settings ------------------------------------------------------------------------------------
def check_size(size: Any, max_pixels: int | None = None) -> tuple[int, int] | None:
    """(H, W) with both positive and no more pixels than images may have, or None."""
    if size is None:
        return None
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError, OverflowError):
        raise SettingsError(f"image size must be H x W, e.g. 28x28; got {size!r}.") from None
    if height < 1 or width < 1:
        raise SettingsError(f"image size must be positive, e.g. 28x28; got {height}x{width}.")
    limit = max_pixels if max_pixels is not None else PILLOW_MAX_PIXELS
    if height * width > limit:
        raise SettingsError(
            f"image size {height}x{width} is {height * width:,} pixels per image, more than the "
            f"{limit:,} allowed (dataset.max_pixels): choose a smaller dataset.size."
        )
    return height, width


def check_max_pixels(max_pixels: Any) -> int | None:
    """The largest image in pixels: None (Pillow's limit) or a whole number of at least 1."""
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise SettingsError(
            f"dataset 'image-folder': max_pixels must be a whole number of at least 1 (or none "
            f"for Pillow's limit); got {max_pixels!r}."
        )
    return max_pixels


def check_fit(fit: str) -> str:
    """How an image reaches the target size: one of :data:`FITS`."""
    if fit not in FITS:
        raise SettingsError(
            f"dataset 'image-folder' fit must be one of {', '.join(FITS)}, not {fit!r}."
        )
    return fit


def check_mode(mode: str) -> str:
    if mode not in CHANNELS:
        raise SettingsError(f"image mode must be grayscale or rgb, not {mode!r}.")
    return mode


def check_workers(workers: int | None) -> int:
    """Decoding processes: the given number, or every core this process may use."""
    if workers is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not on Linux
            return max(1, os.cpu_count() or 1)
    if workers < 1:
        raise SettingsError("image decoding needs workers >= 1.")
    return int(workers)


def normalise_extensions(extensions: Sequence[str]) -> tuple[str, ...]:
    """Lower-case endings with a leading dot: ('png', '.JPG') -> ('.png', '.jpg')."""
    if isinstance(extensions, str):
        extensions = [extensions]
    result = tuple(
        e if e.startswith(".") else f".{e}" for e in (x.strip().lower() for x in extensions) if e
    )
    if not result:
        raise SettingsError("dataset 'image-folder' needs at least one file extension.")
    return result


# Finding files -------------------------------------------------------------------------------
def scan_folder(
    folder: Path, recursive: bool, extensions: Sequence[str], follow_links: bool = False
) -> list[ImageFile]:
    """Image files below ``folder`` by extension, sorted by relative path; hidden ones skipped.

    Hidden folders (the cache, .git, ...) and hidden files (such as macOS's "._x.jpg"
    companions) are not part of the collection. Links to folders are not followed; links to
    files are when they lead to a file inside ``folder``, or anywhere with ``follow_links``:
    a folder may come from someone else, and its links must not reach the user's other files.
    """
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"image folder {str(folder)!r} does not exist.")
    if not folder.is_dir():
        raise DataError(
            f"{str(folder)!r} is a file, not a folder: give the folder that holds the images "
            "(or use the arrays dataset for .npy/.npz)."
        )
    endings = tuple(extensions)
    found: list[ImageFile] = []
    leading_out: list[str] = []
    inside = os.path.realpath(folder)
    pending = [(os.fspath(folder), "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except OSError:
            continue  # unreadable sub-folder
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if recursive:
                        pending.append((entry.path, f"{prefix}{name}/"))
                    continue
                if not name.lower().endswith(endings):
                    continue
                stat = entry.stat()
                if not follow_links and entry.is_symlink() and not _within(entry.path, inside):
                    leading_out.append(prefix + name)
                    continue
            except OSError:
                continue  # vanished, or a broken link
            if _is_regular(stat.st_mode):
                found.append(
                    ImageFile(
                        prefix + name,
                        entry.path,
                        stat.st_size,
                        stat.st_mtime_ns,
                        stat.st_ctime_ns,
                        stat.st_ino,
                    )
                )
    if leading_out:
        warnings.warn(
            f"skipped {len(leading_out)} link(s) that lead out of {str(folder)!r} (first: "
            f"{min(leading_out)!r}): set dataset.follow_links=true to read them",
            ImageSkippedWarning,
            stacklevel=2,
        )
    if not found:
        where = "in it or its sub-folders" if recursive else "in it"
        links = f" ({len(leading_out)} links leading out of it were skipped)" if leading_out else ""
        raise DataError(
            f"no images in {str(folder)!r}: found no {', '.join(endings)} files {where}{links}."
        )
    found.sort()
    return found


def _within(path: str, root: str) -> bool:
    """Whether ``path``, links resolved, lies inside the folder whose real path is ``root``."""
    return os.path.commonpath([os.path.realpath(path), root]) == root


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _relative_name(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            pass
    return path.as_posix()


def folder_labels(names: Sequence[str]) -> tuple[Any, list[str] | None]:
    """Labels from first-level sub-folders when every image sits in one; else (None, None)."""
    import numpy as np

    if not names or any("/" not in name for name in names):
        return None, None
    folders = [name.split("/", 1)[0] for name in names]
    class_names = sorted(set(folders))
    index = {c: i for i, c in enumerate(class_names)}
    return np.array([index[f] for f in folders], dtype=np.int64), class_names


# Decoding ------------------------------------------------------------------------------------
_IMAGING: tuple[Any, Any, Any] | None = None


def _imaging() -> tuple[Any, Any, Any]:
    """numpy, PIL.Image and PIL.ImageOps, imported on first use (once, not once per image)."""
    global _IMAGING
    if _IMAGING is None:
        import numpy
        from PIL import Image, ImageOps

        _IMAGING = (numpy, Image, ImageOps)
    return _IMAGING


def decode_image(
    path: str | Path, size: tuple[int, int] | None, mode: str, fit: str = "stretch"
) -> Any:
    """One image as (H, W, C) uint8: first frame, EXIF orientation applied, converted, brought
    to ``size`` as ``fit`` says (see :data:`FITS`).

    Raises whatever Pillow raises for unreadable files; decompression-bomb warnings must be
    turned into errors by the caller (:func:`_bomb_guard`).
    """
    np, Image, ImageOps = _imaging()
    with Image.open(path) as image:
        if size is not None and image.format == "JPEG":
            side = max(size)
            image.draft("L" if mode == "grayscale" else "RGB", (side, side))
        if image.format in ("JPEG", "TIFF", "WEBP", "MPO"):
            ImageOps.exif_transpose(image, in_place=True)
        image = _convert(image, mode)
        if size is not None and image.size != (size[1], size[0]):
            image = _fit(image, size, fit)
        array = np.asarray(image, dtype=np.uint8)
    return array.reshape(array.shape[0], array.shape[1], CHANNELS[mode])


def _fit(image: Any, size: tuple[int, int], fit: str) -> Any:
    """Resize to (H, W): stretched, or aspect kept and padded (``pad``, ``pad-black``) or
    centre-cropped (``crop``)."""
    np, Image, ImageOps = _imaging()
    target = (size[1], size[0])
    method = Image.Resampling.BILINEAR
    if fit == "crop":
        return ImageOps.fit(image, target, method=method, centering=(0.5, 0.5))
    if fit in ("pad", "pad-black"):
        colour = _border_colour(np.asarray(image)) if fit == "pad" else 0
        if image.mode == "RGB" and not isinstance(colour, tuple):
            colour = (colour,) * 3
        return ImageOps.pad(image, target, method=method, color=colour, centering=(0.5, 0.5))
    return image.resize(target, method, reducing_gap=2.0)


def _border_colour(pixels: Any) -> Any:
    """The median colour of an image's outermost rows and columns: padding that blends in."""
    np, _, _ = _imaging()
    shape = pixels.shape[2:]
    edges = [pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]
    median = np.median(np.concatenate([e.reshape(-1, *shape) for e in edges]), axis=0)
    return tuple(int(v) for v in median) if np.ndim(median) else int(median)


def _convert(image: Any, mode: str) -> Any:
    """To 8-bit 'L' or 'RGB', scaling 16-bit and float images instead of clipping them."""
    np, Image, _ = _imaging()
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image)
        if image.mode.startswith("I;16"):
            values = values.astype(np.uint16) >> 8
        elif image.mode == "F" and values.size and float(np.nanmax(values)) <= 1.0:
            values = np.nan_to_num(values) * 255.0
        elif values.size and float(values.max()) > 255:
            top = float(values.max())
            values = values / (257.0 if top <= 65535 else top / 255.0)
        image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")
    target = "L" if mode == "grayscale" else "RGB"
    if image.mode == target:
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert(target)


class _bomb_guard:
    """Within it, Pillow refuses images over ``limit`` pixels: its warning becomes an error."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit

    def __enter__(self) -> _bomb_guard:
        from PIL import Image

        self._saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = self.limit
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.filterwarnings("ignore", module="PIL")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return self

    def __exit__(self, *exc: Any) -> None:
        from PIL import Image

        self._warnings.__exit__(*exc)
        Image.MAX_IMAGE_PIXELS = self._saved


def describe_failure(error: BaseException, path: Path) -> str:
    """One short reason for a skipped file, without this machine's absolute paths."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"refused as a possible decompression bomb ({error})"
    if isinstance(error, UnidentifiedImageError):
        return "not a readable image (unknown format or corrupt header)"
    if isinstance(error, FileNotFoundError):
        return "file vanished while reading"
    if isinstance(error, PermissionError):
        return "permission denied"
    text = str(error).replace(str(path), path.name) or type(error).__name__
    return f"{text} ({type(error).__name__})" if type(error).__name__ not in text else text


# Status of one file after decoding: "" decoded, "size:HxW" another size than the first, else why
# it was skipped.
class Decoding(NamedTuple):
    """How every file of one load is decoded: to ``size`` (resized as ``fit`` says when
    ``fixed``, else only checked), in ``mode``, refusing images over ``limit`` pixels."""

    size: tuple[int, int]
    mode: str
    limit: int | None
    fixed: bool
    fit: str = "stretch"


def decode_into(
    paths: Sequence[str | Path], how: Decoding, out: Any, digests: list[str] | None = None
) -> list[str]:
    """Decode ``paths`` into the rows of ``out``; one status per file, and with ``digests``
    each file's content digest appended to it (taken from the bytes that were decoded)."""
    statuses = []
    with _bomb_guard(how.limit):
        for row, path in enumerate(paths):
            try:
                source: Any = path
                if digests is not None:
                    digests.append("")
                    source, digests[-1] = read_for_decoding(path)
                array = decode_image(source, how.size if how.fixed else None, how.mode, how.fit)
            except Exception as error:  # any Pillow failure means "unreadable"
                statuses.append(describe_failure(error, Path(path)))
                continue
            if array.shape[:2] != tuple(how.size):
                statuses.append(f"size:{array.shape[0]}x{array.shape[1]}")
                continue
            out[row] = array
            statuses.append("")
    return statuses


def read_for_decoding(path: str | Path) -> tuple[Any, str]:
    """What to hand Pillow for ``path`` and the file's content digest: a file up to
    HASHED_IN_MEMORY bytes is read once, hashed, and decoded from those bytes; a larger one is
    hashed as it is read in blocks, then decoded from disk."""
    size = os.stat(path).st_size
    if size > HASHED_IN_MEMORY:
        return path, file_digest(path)
    with open(path, "rb") as handle:
        data = handle.read(size + 1)
    if len(data) > size:  # it grew since: hash it as a stream
        return path, file_digest(path)
    return io.BytesIO(data), bytes_digest(data)


def _decode_chunk(task: tuple[Any, ...]) -> tuple[int, list[str], Any, list[str]]:
    """Worker: decode a chunk into rows of a shared ``.npy`` file, or return the rows; with the
    files' digests."""
    import numpy as np

    start, paths, how, target = task
    digests: list[str] = []
    if target is not None:
        array = np.load(target, mmap_mode="r+")
        rows = array[start : start + len(paths)]
        statuses = decode_into(paths, how, rows, digests)
        del array, rows
        return start, statuses, None, digests
    rows = np.zeros((len(paths), how.size[0], how.size[1], CHANNELS[how.mode]), dtype=np.uint8)
    return start, decode_into(paths, how, rows, digests), rows, digests


@dataclass
class _Decoding(Decoded):
    kept: Any = None  # indices of the files that decoded (into the allocated rows)


def decode_files(
    files: Sequence[ImageFile],
    size: tuple[int, int] | None,
    mode: str,
    workers: int,
    max_pixels: int | None = None,
    allocate: Callable[[tuple[int, ...]], Any] | None = None,
    fit: str = "stretch",
) -> _Decoding:
    """Decode ``files`` into uint8 rows, in a process pool when that pays.

    Without ``allocate`` the rows go into memory (only the decoded ones are kept). With it, it
    is called with the full shape and returns an object whose ``array`` is filled in place
    (workers write to its ``temp_path``); the caller keeps the rows ``kept``.
    """
    import numpy as np
    from PIL import Image

    limit = max_pixels if max_pixels is not None else Image.MAX_IMAGE_PIXELS
    fixed = size is not None
    shape_hw = size if size is not None else _first_size(files, mode, limit)
    shape = (len(files), shape_hw[0], shape_hw[1], CHANNELS[mode])
    check_bytes(
        nbytes_of(shape, 1),
        f"{len(files)} images of {shape_hw[0]}x{shape_hw[1]}x{shape[3]}",
        "use fewer images (dataset.limit) or a smaller dataset.size",
    )

    check_run_decoding(nbytes_of(shape, 1), sum(f.size for f in files), len(files))
    pending = allocate(shape) if allocate is not None else None
    out = pending.array if pending is not None else np.zeros(shape, dtype=np.uint8)
    target = str(pending.temp_path) if pending is not None else None
    digests = [""] * len(files)
    try:
        how = Decoding(shape_hw, mode, limit, fixed, fit)
        statuses = _run(files, how, out, target, workers, digests)
    except BaseException:
        if pending is not None:
            pending.discard()
        raise
    pairs = list(zip(files, statuses, strict=True))
    mismatched = [(f.name, s[5:]) for f, s in pairs if s.startswith("size:")]
    kept = np.array([i for i, s in enumerate(statuses) if s == ""], dtype=np.int64)
    skipped = [f"{f.name}: {s}" for f, s in pairs if s and not s.startswith("size:")]
    names = [files[i].name for i in kept]
    if mismatched:
        if pending is not None:
            pending.discard()
        first = next(f.name for f, s in pairs if s == "")
        listed = ", ".join(f"{name} is {hw}" for name, hw in mismatched[:SHOWN])
        more = f" and {len(mismatched) - SHOWN} more" if len(mismatched) > SHOWN else ""
        raise DataError(
            f"images differ in size: {first} is {shape_hw[0]}x{shape_hw[1]} but {listed}{more}; "
            "set dataset.size=HxW (e.g. 28x28) to resize them all."
        )
    kept_digests = [digests[i] for i in kept]
    if pending is not None:
        return _Decoding(pending, names, skipped, kept=kept, digests=kept_digests)
    images = out if len(kept) == len(files) else out[kept]
    return _Decoding(images, names, skipped, kept=kept, digests=kept_digests)


def _first_size(files: Sequence[ImageFile], mode: str, limit: int | None) -> tuple[int, int]:
    """(H, W) of the first file that decodes; all unreadable is a clear error."""
    reasons = []
    with _bomb_guard(limit):
        for file in files:
            try:
                array = decode_image(file.path, None, mode)
            except Exception as error:
                reasons.append(f"{file.name}: {describe_failure(error, Path(file.path))}")
                if len(reasons) == len(files):
                    break
                continue
            return int(array.shape[0]), int(array.shape[1])
    raise DataError(
        f"none of the {len(files)} image files could be read (first: {reasons[0]}): "
        "check that they are images."
    )


def _run(
    files: Sequence[ImageFile],
    how: Decoding,
    out: Any,
    target: str | None,
    workers: int,
    digests: list[str],
) -> list[str]:
    """Decode every file into ``out`` in order, serially or in a pool; statuses in file order,
    and each file's content digest into ``digests``."""
    paths = [f.path for f in files]
    statuses: list[str] = [""] * len(paths)
    estimate = len(paths) * SECONDS_PER_FILE + sum(f.size for f in files) / BYTES_PER_SECOND
    with _progress(len(paths)) as advance:
        if workers > 1 and estimate > POOL_SECONDS and len(paths) > 1:
            done = _run_pool(paths, how, out, target, workers, statuses, digests, advance)
        else:
            done = 0
        step = 256
        for start in range(done, len(paths), step):  # serial, or what a broken pool left
            part = paths[start : start + step]
            found: list[str] = []
            statuses[start : start + len(part)] = decode_into(
                part, how, out[start : start + len(part)], found
            )
            digests[start : start + len(part)] = found
            advance(len(part))
    return statuses


def _run_pool(
    paths: Sequence[str | Path],
    how: Decoding,
    out: Any,
    target: str | None,
    workers: int,
    statuses: list[str],
    digests: list[str],
    advance: Callable[[int], None],
) -> int:
    """Decode in ``workers`` processes; return how many leading files are done (all, normally)."""
    import concurrent.futures as futures
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    # fork (Linux) starts in milliseconds and never re-imports the caller's main module; the
    # workers only run Pillow and NumPy. Elsewhere spawn, which needs the usual main guard.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    chunk = max(64, min(2048, len(paths) // (workers * 16) or 64))
    tasks = [
        (start, paths[start : start + chunk], how, target) for start in range(0, len(paths), chunk)
    ]
    finished = [False] * len(tasks)
    try:
        context = multiprocessing.get_context(method)
        with (
            warnings.catch_warnings(),
            futures.ProcessPoolExecutor(
                workers, mp_context=context, initializer=_end_with_parent, initargs=(os.getpid(),)
            ) as pool,
        ):
            warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
            pending = [pool.submit(_decode_chunk, task) for task in tasks]
            for future in futures.as_completed(pending):
                start, chunk_statuses, rows, chunk_digests = future.result()
                if rows is not None:
                    out[start : start + len(rows)] = rows
                statuses[start : start + len(chunk_statuses)] = chunk_statuses
                digests[start : start + len(chunk_digests)] = chunk_digests
                finished[start // chunk] = True
                advance(len(chunk_statuses))
    except (OSError, BrokenProcessPool) as error:
        _note(f"decoding in parallel failed ({type(error).__name__}); going on in this process")
    done = 0
    for flag in finished:
        if not flag:
            break
        done += 1
    return min(len(paths), done * chunk)


def _end_with_parent(parent: int) -> None:
    """Worker: on Linux, end when the process that started the pool ends, even by SIGKILL, so
    that no orphan goes on decoding into (and holding the disk space of) a cache file."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no C library to ask
        return
    if os.getppid() != parent:  # it ended before the request took hold
        os._exit(1)


class _progress:
    """A rich progress bar on stderr while decoding (only on a terminal); yields ``advance(n)``."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if self.total < 200 or not sys.stderr.isatty():
            return lambda n: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("decoding images"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.bar.start()
        task = self.bar.add_task("decode", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


def check_skipped(
    decoded: Decoded, strict: bool, source: str, *, warn: bool = True, stacklevel: int = 4
) -> Decoded:
    """Apply the skipping rules: nothing decoded is an error; skipped files are an error under
    ``strict``, else a warning naming the first ones."""
    skipped = decoded.skipped
    if skipped and not decoded.names:
        raise DataError(
            f"none of the {len(skipped)} image files in {source} could be read "
            f"(first: {skipped[0]}): check that they are images."
        )
    if skipped and strict:
        raise DataError(
            f"{len(skipped)} unreadable image file(s) in {source} (first: {skipped[0]}): "
            "remove or fix them, or set dataset.strict=false to skip them."
        )
    if skipped and warn:
        listed = "; ".join(skipped[:SHOWN])
        if len(skipped) > SHOWN:
            listed += f"; and {len(skipped) - SHOWN} more"
        warnings.warn(
            f"skipped {len(skipped)} unreadable image file(s) in {source}: {listed}",
            ImageSkippedWarning,
            stacklevel=stacklevel,
        )
    return decoded


def _note(message: str) -> None:
    """A one-line note on stderr, in the run log's style."""

    note(message)
