"""New images to assign, read as a fitted pipeline expects them: image files, ``.npy``/``.npz``
arrays and folders of either, each brought to the pipeline's input shape.

Image files are read as the pipeline was fitted (its height and width, grayscale or RGB); arrays
must already match, and hold a stack of images (N, H, W[, C]) or one image (H, W) or (H, W, C).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.errors import DataError
from imgclust.io.arrays import arrange, check_labels, read_arrays
from imgclust.io.images import (
    DEFAULT_EXTENSIONS,
    FITS,
    FolderReading,
    check_workers,
    load_image_files,
    scan_folder,
)
from imgclust.io.paths import check_input_file

ARRAY_SUFFIXES = (".npy", ".npz")


@dataclass
class Batch:
    """Images from one input, named by ``ids``, with labels when the input has them."""

    source: str
    ids: list[str]
    images: np.ndarray
    labels: np.ndarray | None = None


# Reading inputs ----------------------------------------------------------------------------
def read_inputs(inputs: list[str], saved: Any) -> Iterator[Batch]:
    """Each input as a batch of images prepared as the pipeline was fitted (one at a time)."""
    check_inputs(inputs)
    size, mode = file_reading(saved)
    loose: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_file() and path.suffix.lower() not in ARRAY_SUFFIXES:
            loose.append(path)
            continue
        if loose:
            yield _image_files(loose, size, mode, saved)
            loose = []
        if path.is_dir():
            yield from _folder(path, text, size, mode, saved)
        else:
            yield _array_file(path, text, saved)
    if loose:
        yield _image_files(loose, size, mode, saved)


def check_inputs(inputs: list[str]) -> None:
    """Every input is a file or a folder that exists, before any is opened (a FIFO named
    ``x.npy`` would block the reader forever)."""
    for text in inputs:
        if not os.path.lexists(text):
            raise DataError(
                f"input {text!r} does not exist: give image files, folders or .npy/.npz."
            )
        check_input_file(text, "input", folders=True)


def file_reading(saved: Any) -> tuple[tuple[int, int], str | None]:
    """The size and colour mode image files are read with: the fitted height, width, channels."""
    height, width, channels = saved.input_shape
    return (height, width), {1: "grayscale", 3: "rgb"}.get(channels)


def _fit_setting(saved: Any) -> str:
    """How the run brought its image files to size (``image-folder``'s ``fit``; else stretch)."""
    preprocessing = (saved.manifest or {}).get("preprocessing") or {}
    dataset = preprocessing.get("dataset") or {}
    fit = dataset.get("fit", "stretch") if isinstance(dataset, dict) else "stretch"
    if fit not in FITS:
        raise DataError(
            f"the run's manifest names an unknown image fit {str(fit)[:40]!r} (one of "
            f"{', '.join(FITS)}): the pipeline folder was altered."
        )
    return fit


def need_mode(mode: str | None, saved: Any, what: str) -> str:
    if mode is None:
        raise DataError(
            f"this pipeline was fitted on images with {saved.input_shape[2]} channels; image "
            f"files ({what}) can only be read as grayscale or RGB: give arrays instead."
        )
    return mode


def _image_files(files: list[Path], size: tuple[int, int], mode: str | None, saved: Any) -> Batch:
    """Image files named one by one: each must be readable."""
    mode = need_mode(mode, saved, str(files[0]))
    bad = [str(f) for f in files if f.suffix.lower() not in DEFAULT_EXTENSIONS]
    if bad:
        raise DataError(
            f"input {bad[0]!r} is neither an image ({', '.join(DEFAULT_EXTENSIONS)}) nor an array "
            "(.npy, .npz) nor a folder."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_image_files(files, None, size, mode, workers=1, fit=_fit_setting(saved))
    skipped = data.info.get("skipped") or []
    if skipped:
        raise DataError(f"cannot read image {skipped[0]}")
    name = str(files[0]) if len(files) == 1 else f"{len(files)} image files"
    return Batch(name, [str(f) for f in files], saved.prepare(data.images, "image files"))


def _image_folder(
    folder: Path, text: str, size: tuple[int, int], mode: str | None, saved: Any
) -> Batch:
    """Every image below a folder, read as ``image-folder`` reads them (unreadable ones skipped)."""
    mode = need_mode(mode, saved, text)
    fit = _fit_setting(saved)
    reading = FolderReading(folder, size, mode, cache=False, workers=check_workers(None), fit=fit)
    data = reading.load()
    ids = [(Path(text) / name).as_posix() for name in data.ids]
    labels = None
    if data.labels is not None and data.class_names is not None:
        labels = np.asarray([data.class_names[int(i)] for i in data.labels], dtype=object)
    return Batch(text, ids, saved.prepare(data.images, f"images in {text!r}"), labels)


def _folder(
    folder: Path, text: str, size: tuple[int, int], mode: str | None, saved: Any
) -> Iterator[Batch]:
    """A folder's arrays (``.npy``/``.npz`` below it, one batch), then its image files."""
    arrays = folder_arrays(folder, text, saved)
    if arrays is not None:
        yield arrays
    if arrays is None or files_below(folder, DEFAULT_EXTENSIONS):
        yield _image_folder(folder, text, size, mode, saved)


def files_below(folder: Path, suffixes: tuple[str, ...]) -> list[Any]:
    """The files below ``folder`` ending in ``suffixes`` (as ``scan_folder`` finds them), or []."""
    try:
        return scan_folder(folder, True, suffixes)
    except DataError:  # it says so when there are none
        return []


def folder_arrays(folder: Path, text: str, saved: Any) -> Batch | None:
    """Every array file below a folder as one batch (None when it has none): ``dir/x.npy`` for a
    file holding one image, ``dir/x.npy:i`` for the images of a stack."""
    found = files_below(folder, ARRAY_SUFFIXES)
    if not found:
        return None
    batches = [_array_file(Path(f.path), (Path(text) / f.name).as_posix(), saved) for f in found]
    with_labels = all(batch.labels is not None for batch in batches)
    labels = np.concatenate([b.labels for b in batches]) if with_labels else None
    return Batch(
        text,
        [image_id for batch in batches for image_id in batch.ids],
        np.concatenate([batch.images for batch in batches]),
        labels,
    )


def _array_file(path: Path, text: str, saved: Any) -> Batch:
    """A ``.npy``/``.npz``: a stack of images, or one image shaped as the pipeline's input."""
    raw, labels, _ = read_arrays(path, key_hint=PREDICT_KEYS)
    single = _is_one_image(raw.shape, saved.input_shape)
    images, _ = arrange(raw[None] if single else raw, "last", text)
    images = saved.prepare(images, f"images in {text!r}")
    ids = [text] if single else [f"{text}:{i}" for i in range(len(images))]
    if labels is not None:
        labels = np.asarray(labels).reshape(-1) if single else labels
        try:
            labels = np.asarray(check_labels(labels, len(images), text))
        except DataError:
            labels = None  # labels that do not fit the images are not scored
    return Batch(text, ids, images, labels)


def _is_one_image(shape: tuple[int, ...], input_shape: tuple[int, int, int]) -> bool:
    """Whether an array of ``shape`` is one image of the pipeline's (H, W, C), not a stack."""
    height, width, channels = input_shape
    return tuple(shape) == (height, width) or tuple(shape) == (height, width, channels)


# what predict says when an .npz holds no array it reads as images (it has no key option)
PREDICT_KEYS = "name the images x, images, x_train or arr_0 in the .npz"
