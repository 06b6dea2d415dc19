"""The ``image-folder`` dataset: every image below a folder, decoded by Pillow into uint8.

The reading itself is :mod:`imgclust.io.images`: files found in sorted order, decoded in a
process pool into a memory-mapped cache entry that later runs reuse while the folder is
unchanged, sub-folder names as labels, unreadable files skipped and listed.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

from imgclust.errors import SettingsError
from imgclust.kit import (
    DEFAULT_EXTENSIONS,
    FileListing,
    FolderReading,
    check_fit,
    check_limit,
    check_max_pixels,
    check_mode,
    check_size,
    check_workers,
    hookimpl,
    normalise_extensions,
)


class ImageFolderDataset:
    """Every image below a folder (PNG, JPEG, BMP, GIF, TIFF, WebP) as uint8, ids = relative paths.

    Parameters
    ----------
    path : str
        The folder holding the images.
    size : tuple[int, int] | None
        Resize every image to H x W, e.g. 28x28 (default: the first image's size).
        Without it, images of another size than the first are an error that names them.
        How each image reaches this size is ``fit``.
    mode : str
        ``grayscale`` (one channel) or ``rgb`` (three channels); transparency is dropped.
    recursive : bool
        Look in sub-folders too.
    extensions : tuple[str, ...]
        File endings read as images (case-insensitive); other files are ignored.
    labels : str
        ``auto`` (sub-folder names are labels when every image sits in one) or ``none``.
    limit : int | None
        Read only the first ``limit`` files in sorted order.
    strict : bool
        Stop with an error on an unreadable file instead of skipping it.
    workers : int | None
        Decoding processes (default: every available core; 1 decodes in this process).
    cache : bool
        Keep decoded images in a memory-mapped cache reused while the folder is unchanged.
    cache_dir : str | None
        Cache folder (default: FOLDER/.imgclust-cache if writable, else ~/.cache/imgclust).
        The user cache folder honours $XDG_CACHE_HOME. A folder holding other files is never
        cleaned.
    cache_check : str
        How a cached entry is known to be current: ``content`` (a digest of every file's bytes)
        or ``stat`` (sizes, modification and change times and inodes; no reading, trusts them).
    cache_max_gib : float | None
        Refuse a cache entry larger than this many GiB (none: only the free disk space bounds it).
    max_pixels : int | None
        Refuse larger images as possible decompression bombs (default: Pillow's limit, 89 M).
    fit : str
        How an image reaches ``size``: ``stretch`` (aspect ratio lost), ``pad`` (aspect kept,
        padded with the median colour of its edge), ``pad-black`` or ``crop`` (aspect kept,
        centre crop).
    follow_links : bool
        Also read files through links that lead out of the folder (off: such links are skipped
        with a warning, so a folder from someone else cannot pull in files from elsewhere on
        the machine; links to files inside the folder are always followed).
    """

    splits = ("all",)

    def __init__(
        self,
        path: str,
        size: tuple[int, int] | None = None,
        mode: Literal["grayscale", "rgb"] = "grayscale",
        recursive: bool = True,
        extensions: tuple[str, ...] = DEFAULT_EXTENSIONS,
        labels: Literal["auto", "none"] = "auto",
        limit: int | None = None,
        strict: bool = False,
        workers: int | None = None,
        cache: bool = True,
        cache_dir: str | None = None,
        max_pixels: int | None = None,
        cache_check: Literal["content", "stat"] = "content",
        cache_max_gib: float | None = 256.0,
        fit: Literal["stretch", "pad", "pad-black", "crop"] = "stretch",
        follow_links: bool = False,
    ) -> None:
        self.path = Path(path).expanduser()
        self.fit = check_fit(fit)
        max_pixels = check_max_pixels(max_pixels)
        self.size = check_size(size, max_pixels)
        self.mode = check_mode(mode)
        self.recursive = recursive
        self.extensions = normalise_extensions(extensions)
        if labels not in ("auto", "none"):
            raise SettingsError(
                f"dataset 'image-folder' labels must be auto or none, not {labels!r}."
            )
        self.labels = labels
        self.limit = check_limit(limit, "dataset 'image-folder'")
        self.strict = strict
        self.workers = check_workers(workers)
        self.cache = cache
        self.cache_dir = cache_dir
        self.max_pixels = max_pixels
        if cache_check not in ("content", "stat"):
            raise SettingsError(
                f"dataset 'image-folder' cache_check must be content or stat, not {cache_check!r}."
            )
        self.cache_check = cache_check
        if cache_max_gib is not None and not cache_max_gib > 0:
            raise SettingsError("dataset 'image-folder' needs cache_max_gib > 0 (or none).")
        self.cache_max_gib = cache_max_gib
        self.follow_links = follow_links

    def load(self, split: str = "all") -> Any:
        return self._reading().load()

    def list_files(self) -> FileListing:
        """The files ``load`` would decode, none decoded (a Dask run decodes them on workers)."""
        return self._reading().list_files()

    def _reading(self) -> FolderReading:
        return FolderReading(**{f.name: getattr(self, f.name) for f in fields(FolderReading)})


@hookimpl
def register_datasets(register):
    register(
        "image-folder",
        ImageFolderDataset,
        summary="every image below a folder (PNG, JPEG, BMP, GIF, TIFF, WebP), "
        "labels from sub-folders",
    )
