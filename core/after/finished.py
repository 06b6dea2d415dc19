"""A finished run folder read back for the commands that act on it (export, similar,
duplicates): its ids, clusters and labels, its features, and its images, either the original
files of an ``image-folder`` run or the arrays reloaded through the dataset in config.toml.

Everything in the folder is untrusted input: an id names a file only when the image folder still
holds a file of that name, and features are read without unpickling and checked for shape.
"""

from __future__ import annotations

import difflib
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.after.rundata import read_features, reload_images
from imgclust.engine.config import read_toml, validate
from imgclust.errors import ContentChangedError, DataError, ImgclustError
from imgclust.io.bounded import read_json
from imgclust.io.content import (
    ContentCheck,
    check_files,
    check_images,
    file_digest,
    read_record,
)
from imgclust.io.images import normalise_extensions, scan_folder
from imgclust.io.outputs import read_assignments
from imgclust.io.runfolder import INCOMPLETE, check_self_contained, is_run_folder
from imgclust.stages.host import get_registry

IMAGE_FOLDER = "image-folder"
SUGGESTIONS = 3  # nearest ids named when an id is unknown


@dataclass
class FinishedRun:
    """What ``imgclust run`` wrote: ids, clusters, label names when known, and the config."""

    path: Path
    ids: list[str]
    clusters: np.ndarray
    labels: np.ndarray | None
    config: dict[str, Any]
    _rows: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def dataset(self) -> str:
        return str(self.config["dataset"]["name"])

    def row_of(self, image_id: str) -> int:
        """The row of ``image_id``; an unknown id is one line naming the nearest known ids."""
        if not self._rows:
            self._rows = {name: row for row, name in enumerate(self.ids)}
        row = self._rows.get(image_id)
        if row is None:
            close = nearest_ids(image_id, self.ids)
            hint = f"; nearest: {', '.join(close)}" if close else ""
            raise DataError(
                f"no image {image_id!r} in run {self.path.name!r}{hint} "
                "(ids are in its assignments.csv)."
            )
        return row


def nearest_ids(image_id: str, ids: list[str], count: int = SUGGESTIONS) -> list[str]:
    """The ids most like ``image_id`` (ids that contain it first, then by spelling)."""
    text = image_id.strip()
    if not text:
        return ids[:count]
    holding = [name for name in ids if text in name][:count]
    if len(holding) >= count:
        return holding
    spelled = difflib.get_close_matches(text, ids, n=count, cutoff=0.5)
    return list(dict.fromkeys([*holding, *spelled]))[:count]


def check_finished(run: Path, command: str) -> Path:
    """Refuse what is not a finished run folder, before anything is read or written."""
    run = Path(run)
    if not run.is_dir():
        what = "is not a folder" if run.exists() else "does not exist"
        raise DataError(f"run folder {str(run)!r} {what}: give a folder `imgclust run` wrote.")
    if run.name.endswith(INCOMPLETE) or run.resolve().name.endswith(INCOMPLETE):
        raise DataError(
            f"{str(run)!r} is a run that is not finished: resume it with "
            f"`imgclust run --resume {shlex.quote(str(run))}` or wait for it to finish, "
            f"then {command} it."
        )
    if not is_run_folder(run):
        raise DataError(
            f"{str(run)!r} is not an imgclust run folder (it lacks config.toml, summary.json or "
            "assignments.csv): give a folder `imgclust run` wrote."
        )
    check_self_contained(run)
    return run


#: dataset settings that name what a run read: no output may go there
SOURCE_SETTINGS = ("path", "labels_path")


def run_sources(run: Path) -> list[Path]:
    """The run folder and the files and folders its config.toml says the run read (an image
    folder, an array or labels file): places no command's output may go."""

    sources = [Path(run)]
    try:
        dataset = read_toml(Path(run) / "config.toml").get("dataset")
    except ImgclustError:
        return sources
    if isinstance(dataset, dict):
        for key in SOURCE_SETTINGS:
            value = dataset.get(key)
            if isinstance(value, str) and value.strip():
                sources.append(Path(value).expanduser())
    return sources


def open_run(run: Path, command: str, registry: Any = None) -> FinishedRun:
    """A finished run's assignments and resolved config (checked against installed plugins)."""

    run = check_finished(run, command)
    if registry is None:
        registry = get_registry()
    ids, clusters, labels = read_assignments(run / "assignments.csv")
    if len(set(ids)) != len(ids):
        raise DataError(f"{run / 'assignments.csv'} names an image twice: the run is damaged.")
    config = validate(registry, read_toml(run / "config.toml"))
    return FinishedRun(run, ids, clusters, labels, config)


def read_run_features(finished: FinishedRun) -> np.ndarray:
    """embeddings.npy as (N, D) float32, one row per id, finite; one line when it is not."""

    path = finished.path / "embeddings.npy"
    features = read_features(path, len(finished.ids))
    if features is None:
        raise DataError(
            f"{str(finished.path)!r} has no embeddings.npy: rerun it with this imgclust."
        )
    if features.ndim != 2 or features.shape[1] == 0 or features.dtype.kind not in "fiu":
        raise DataError(
            f"{path} holds {features.dtype} numbers of shape {features.shape}, not one row of "
            "features per image: the run is damaged."
        )
    out = np.empty(features.shape, dtype=np.float32)
    step = max(1, 2**24 // max(1, features.shape[1]))
    for start in range(0, len(features), step):
        out[start : start + step] = features[start : start + step]
    if not np.isfinite(out).all():
        raise DataError(f"{path} holds NaN or infinite features: the run is damaged.")
    return out


# Images ------------------------------------------------------------------------------------
def original_files(finished: FinishedRun) -> tuple[Path, list[Path]] | None:
    """For an image-folder run, its folder and each id's file there (None for other datasets).

    The folder is scanned again as the dataset scans it, so an id only ever names a file the
    folder holds (never ``..`` or a path elsewhere); a file that is gone is one line.
    """
    if finished.dataset != IMAGE_FOLDER:
        return None

    stage = finished.config["dataset"]
    root = Path(str(stage["path"])).expanduser()
    extensions = normalise_extensions(stage["extensions"])
    found = scan_folder(root, bool(stage.get("recursive", True)), extensions)
    where = {item.name: Path(item.path) for item in found}
    missing = [name for name in finished.ids if name not in where]
    if missing:
        raise DataError(
            f"image folder {str(root)!r} no longer holds {len(missing)} of this run's images "
            f"(first: {missing[0]!r}): put them back, or export from a new run."
        )
    return root, [where[name] for name in finished.ids]


def run_images(finished: FinishedRun, registry: Any = None) -> Any:
    """The clustered images through the run's dataset, checked to be the same ids in order."""

    if registry is None:
        registry = get_registry()
    data = reload_images(registry, finished.config, finished.ids)
    recorded = recorded_shape(finished.path)
    if recorded is not None and tuple(data.shape) != recorded:
        raise DataError(
            f"dataset {finished.dataset!r} now gives {_size(data.shape)} images but the run "
            f"clustered {_size(recorded)} ones: it no longer holds the run's images."
        )
    return data


def recorded_shape(run: Path) -> tuple[int, ...] | None:
    """The image shape (H, W, C) summary.json recorded, when it holds a sound one."""

    try:
        summary = read_json(run / "summary.json")
    except (OSError, DataError):
        return None
    shape = summary.get("image_shape") if isinstance(summary, dict) else None
    if isinstance(shape, list) and len(shape) == 3 and all(type(v) is int for v in shape):
        return tuple(shape)
    return None


def _size(shape: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in shape)


@dataclass
class RunImages:
    """A run's images as found now, checked against what the run clustered: the original files
    of an image-folder run (with their digests now), else the images its dataset loads again."""

    check: Any  # content.ContentCheck
    files: list[Path] | None = None
    digests: list[str] | None = None  # of the files now
    data: Any = None
    root: Path | None = None  # the image folder
    recorded: list[str] | None = None  # the files' digests when the run clustered them

    @property
    def changed_rows(self) -> set[int]:
        """Rows of images that changed since the run (files only; chunks name no rows)."""
        return set(self.check.changed) if self.files is not None else set()


def verified_images(
    finished: FinishedRun,
    command: str,
    allow_changed: bool,
    registry: Any = None,
    *,
    files_only: bool = False,
) -> RunImages:
    """The run's images, refused in one line when they differ from the digests the run recorded
    (or when it recorded none), unless ``allow_changed``; what changed is in ``check``.

    Image-folder runs are compared file by file (their bytes now); other datasets are loaded
    again and compared a chunk of rows at a time. ``files_only``: do not load other datasets.
    """

    record = read_record(finished.path, len(finished.ids))
    try:
        originals = original_files(finished)
        if originals is None and not files_only:
            data = run_images(finished, registry)
    except ContentChangedError:
        raise
    except ImgclustError as exc:  # the images are gone or are others: changed, too
        if not allow_changed:
            raise ContentChangedError(
                f"{str(exc).rstrip('.')}; or pass --allow-changed to go on without them (reported)."
            ) from None
        gone = ContentCheck(0, [], "image", recorded=False, allowed=True, reason=str(exc))
        return RunImages(gone)
    if originals is not None:
        digests = [file_digest(path) for path in originals[1]]
        check = check_files(finished.path, record, digests, finished.ids, command, allow_changed)
        recorded = record.files if record is not None else None
        return RunImages(check, originals[1], digests, root=originals[0], recorded=recorded)
    if files_only:
        return RunImages(None)
    return RunImages(check_images(finished.path, record, data, command, allow_changed), data=data)
