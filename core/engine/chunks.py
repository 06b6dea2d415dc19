"""Fit on a sample, then encode and assign every image chunk by chunk, in this process or on Dask.

A run with ``fit_sample = N`` (or ``dask = ...``) fits its encoders, clusterer and refiners on a
fixed-seed sample of N images (all images without ``fit_sample``), saves the fitted pipeline into
the run folder with the digest of each of its files, then reads and assigns the clustered images
in chunks of ``chunk_size`` through the pipeline's own ``assign`` (the last refiner's ``predict``
where there is one): each chunk's features and clusters (and, with refiners, the refiner's
probability and the clusterer's clusters) go to ``RUN/chunks/`` (one ``.npy`` each), and only
when every chunk is there are they assembled into ``embeddings.npy`` (a memory map) and the
chunks removed. The same chunks run in this process or on Dask workers
(:mod:`imgclust.engine.distributed`), so the same seed and configuration give the same fitted
stages and the same clusters either way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from imgclust.console import Log
from imgclust.engine.build import Splits, build_pipeline, build_stage
from imgclust.engine.config import DEFAULT_CHUNK_SIZE
from imgclust.engine.distributed import current_client, run_on_cluster
from imgclust.engine.manifest import MANIFEST, pipeline_dir
from imgclust.engine.persist import save_pipeline
from imgclust.engine.pipeline import load_pipeline
from imgclust.engine.sources import (
    FilesSource,
    LazyImages,
    MemorySource,
    for_workers,
    source_of,
)
from imgclust.engine.stage import check_labels, renumber, stage_boundary
from imgclust.errors import DataError, ImgclustError, SettingsError
from imgclust.io import atomic
from imgclust.io.content import file_digest, rows_digest
from imgclust.io.images import folder_labels
from imgclust.kit.arrays import sample_index
from imgclust.kit.sklearn import predicting_clusterers
from imgclust.stages.interfaces import (
    ImageSet,
    ListsFiles,
    UsesImageIds,
    can_predict,
    requested_clusters,
)

CHUNKS_DIR = "chunks"
_CHUNK_NAME = "chunk-{:06d}"


def is_chunked(config: Mapping[str, Any]) -> bool:
    """Whether a run fits on a sample and assigns in chunks rather than fitting on everything."""
    return bool(config.get("fit_sample") or config.get("dask"))


def load_for_chunks(
    registry: Any, config: Mapping[str, Any], log: Log, load_data: Callable[..., Any]
) -> Any:
    """The run's splits; on Dask an image folder is only listed here, decoded on the workers."""

    if is_chunked(config):  # refused before anything is read
        _check_can_sample(build_pipeline(registry, config), config.get("fit_sample"))
    stage = build_stage(registry, "datasets", config["dataset"])
    instance = stage.instance
    if not config.get("dask") or not isinstance(instance, ListsFiles):
        return load_data(registry, config, log)
    if config.get("validation_split"):
        raise SettingsError(
            "validation_split with --dask on an image folder would decode every image here: "
            "leave it unset."
        )
    log(f"listing {stage.name} ({config['split']})")
    with stage_boundary("dataset", stage):
        listing = instance.list_files()
        images = LazyImages(FilesSource.of(listing))
        info = {**listing.info, "files": list(listing.names), "read_on": "workers"}
    data = ImageSet(images, listing.labels, listing.names, listing.class_names, info)  # type: ignore[arg-type]
    return Splits(data, data, None)


# The chunked run -----------------------------------------------------------------------------
@dataclass
class ChunkTask:
    """One chunk's work: read rows ``start:stop``, encode, assign, write ``chunks/NAME.*.npy``."""

    index: int
    start: int
    stop: int
    source: Any
    pipeline_dir: str
    store: str
    trust: bool = False
    keep_features: bool = True
    first_row: int = 0  # the chunk's first row in the whole run (start is within its source)
    #: The digest of each file of the pipeline as this run saved it (loaded only if unchanged).
    pipeline_digests: dict[str, str] | None = None

    def __post_init__(self) -> None:
        self.pipeline_dir, self.store = for_workers(self.pipeline_dir), for_workers(self.store)


@dataclass
class ChunkDone:
    """What a chunk reports back: small, never the features; the content digest of each image
    file it read (file sources only)."""

    index: int
    rows: int
    statuses: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)


def run_chunk(task: ChunkTask) -> ChunkDone:
    """Read one chunk and assign it through the saved pipeline's own predict path (the last
    refiner, where there is one); write its features, clusters and what refining adds."""

    pipeline = cached_pipeline(task.pipeline_dir, task.trust, task.pipeline_digests)
    images, statuses = task.source.read(task.start, task.stop)
    store = Path(task.store)
    name = _CHUNK_NAME.format(task.index)
    if len(images):
        # one BLAS thread, as on a Dask worker: the same chunk gives the same bits in any
        # process (UMAP's transform turns last-bit differences into moved points)
        with threadpool_limits(1):
            labels, scores, features = pipeline.assign_with_features(images)
            extras = refined_extras(pipeline, features, scores)
    else:
        features = np.zeros((0, 0), dtype=np.float32)
        labels = np.zeros(0, dtype=np.int64)
        extras = {what: np.zeros(0, dtype) for what, dtype in expected_extras(pipeline).items()}
    digests: list[str] = []
    if isinstance(task.source, FilesSource):
        paths = task.source.paths[task.start : task.stop]
        digests = [file_digest(p) for p, s in zip(paths, statuses, strict=True) if s == ""]
    if task.keep_features:
        atomic.write_npy(store / f"{name}.features.npy", features)
    atomic.write_npy(store / f"{name}.clusters.npy", labels)
    for what, values in extras.items():
        atomic.write_npy(store / f"{name}.{what}.npy", values)
    # written last, the chunk is whole: its row range and the digests of what it holds
    record = chunk_record(task, images, features, labels)
    record.update({what: rows_digest(values) for what, values in extras.items()})
    atomic.write_json(store / f"{name}.json", record)
    return ChunkDone(task.index, len(images), [s for s in statuses], digests)


def chunk_record(
    task: ChunkTask, images: np.ndarray, features: np.ndarray, labels: np.ndarray
) -> dict[str, Any]:
    """What a chunk's files must hold: its number, row range and the digests of its images,
    features and clusters (checked when the chunks are collected)."""

    record = {
        "index": task.index,
        "start": task.first_row,
        "stop": task.first_row + task.stop - task.start,
        "rows": len(images),
        "images": rows_digest(images),
        "clusters": rows_digest(labels),
    }
    if task.keep_features:
        record["features"] = rows_digest(features)
    return record


#: What a chunk of a refined pipeline writes besides its clusters: the last refiner's
#: probability of each image's cluster, and the clusterer's own clusters (before refining).
REFINED_EXTRAS = {"probability": np.float64, "clusterer": np.int64}


def expected_extras(pipeline: Any) -> dict[str, Any]:
    """The extra arrays (name: dtype) every chunk of this pipeline writes: none without
    refiners; the refiner's probability where it scores images, the clusterer's clusters where
    the clusterer assigns new points."""
    if not pipeline.refiners:
        return {}
    extras = {}
    if callable(getattr(pipeline.refiners[-1].instance, "score_samples", None)):
        extras["probability"] = REFINED_EXTRAS["probability"]
    if can_predict(pipeline.clusterer.instance):
        extras["clusterer"] = REFINED_EXTRAS["clusterer"]
    return extras


def refined_extras(
    pipeline: Any, features: np.ndarray, scores: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """A refined chunk's extras: the refiner's probability (from the pipeline's own scores) and
    the clusterer's clusters of the same features, numbered as the run numbered them."""
    expected = expected_extras(pipeline)
    extras: dict[str, np.ndarray] = {}
    if "probability" in expected and "probability" in scores:
        extras["probability"] = np.asarray(scores["probability"], dtype=np.float64)
    if "clusterer" in expected:
        with stage_boundary("clusterer", pipeline.clusterer):
            found = pipeline.clusterer.instance.predict(features)
        labels = check_labels(pipeline.clusterer, found, len(features))
        extras["clusterer"] = renumber(labels, pipeline.cluster_order)
    return extras


_pipelines: dict[tuple[Any, ...], Any] = {}


def cached_pipeline(
    folder: str, trust: bool = False, digests: Mapping[str, str] | None = None
) -> Any:
    """A saved pipeline loaded once per process (a worker's tasks share it).

    With ``digests`` (the run's own pipeline, as :func:`pipeline_digests` recorded it when this
    run saved it) the folder is copied into a private temporary folder, every copied file is
    checked against its digest, and the copy is loaded with trust: a stage saved only as a
    pickle (``umap``, ``hdbscan``) is then loaded because it holds exactly the bytes this run
    wrote, never a file swapped in since.
    """

    root = pipeline_dir(folder)
    try:
        stamp = (root / MANIFEST).stat().st_mtime_ns
    except OSError as exc:
        raise DataError(f"cannot read the pipeline in {folder!r}: {exc.strerror}.") from None
    key = (str(root), trust, stamp, tuple(sorted((digests or {}).items())))
    if key not in _pipelines:
        _pipelines.clear()
        if digests is None:
            _pipelines[key] = load_pipeline(root, trust=trust)
        else:
            copy = _verified_copy(root, digests)
            try:
                _pipelines[key] = load_pipeline(copy, trust=True)
            finally:
                shutil.rmtree(copy, ignore_errors=True)
    return _pipelines[key]


def pipeline_digests(root: Path) -> dict[str, str]:
    """The digest of every file of a pipeline folder this run just saved, by relative path."""
    return {
        path.relative_to(root).as_posix(): file_digest(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def _verified_copy(root: Path, digests: Mapping[str, str]) -> Path:
    """A private copy of ``root`` whose files are exactly those ``digests`` names, with those
    digests; a pipeline changed since the run saved it stops the run in one line."""
    copy = Path(tempfile.mkdtemp(prefix="imgclust-pipeline-"))
    try:
        found = set()
        for path in sorted(root.rglob("*")):
            name = path.relative_to(root).as_posix()
            target = copy / name
            if path.is_dir() and not path.is_symlink():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if name not in digests or path.is_symlink():
                raise _changed(root, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target, follow_symlinks=False)
            if file_digest(target) != digests[name]:
                raise _changed(root, name)
            found.add(name)
        missing = sorted(set(digests) - found)
        if missing:
            raise _changed(root, missing[0])
    except BaseException:
        shutil.rmtree(copy, ignore_errors=True)
        raise
    return copy


def _changed(root: Path, name: str) -> ImgclustError:
    return ImgclustError(
        f"the run's pipeline in {str(root)!r} changed after the run saved it ({name!r}): "
        "run it again, and let nothing else write into its run folder."
    )


def chunk_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """(start, stop) of each chunk of ``size`` rows over ``n``."""
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def make_tasks(
    source: Any,
    size: int,
    pipeline_dir: Path,
    store: Path,
    *,
    keep_features: bool = True,
    digests: dict[str, str] | None = None,
) -> list[ChunkTask]:
    """One task per chunk; an in-memory source gives each task only its rows. ``digests``: the
    files of the pipeline this run saved (:func:`pipeline_digests`), which chunks then load."""
    tasks = []
    for index, (start, stop) in enumerate(chunk_bounds(len(source), size)):
        part, first, last = source, start, stop
        if isinstance(source, MemorySource):
            part, first, last = source.part(start, stop), 0, stop - start
        tasks.append(
            ChunkTask(
                index,
                first,
                last,
                part,
                str(pipeline_dir),
                str(store),
                False,
                keep_features,
                first_row=start,
                pipeline_digests=digests,
            )
        )
    return tasks


def run_serially(tasks: Sequence[ChunkTask], log: Log) -> Iterator[ChunkDone]:
    """Each chunk in this process, in order."""
    for task in tasks:
        yield run_chunk(task)
        log(f"assigned chunk {task.index + 1} of {len(tasks)}")


@dataclass
class Assigned:
    """Every image's features (a memory map of ``embeddings.npy``) and clusters, in order."""

    features: np.ndarray
    labels: np.ndarray
    kept: np.ndarray  # positions in the source of the images that were read (all but skipped)
    skipped: list[str]
    digests: list[str] | None = None  # content digest of each file read (file sources only)
    #: The last refiner's probability of each image's cluster, where every chunk has one.
    probability: np.ndarray | None = None
    #: The clusterer's clusters before refining, where every chunk has them.
    clusterer_labels: np.ndarray | None = None


def collect(
    store: Path, tasks: Sequence[ChunkTask], done: Mapping[int, ChunkDone], target: Path
) -> Assigned:
    """Check that every chunk was written, then assemble the features into ``target``.

    A missing or short chunk stops the run: nothing is presented as finished without it. Each
    chunk's files must match its record (row range, digests of its features and clusters), so
    chunk files swapped or replaced while the run went on are refused.
    """
    missing = [t.index for t in tasks if t.index not in done]
    records: dict[int, dict[str, Any]] = {}
    for task in tasks:
        name = _CHUNK_NAME.format(task.index)
        if task.index in missing:
            continue
        rows = done[task.index].rows
        record = _chunk_record(store, task, rows)
        for what in ("features", "clusters"):
            file = store / f"{name}.{what}.npy"
            if what == "features" and not task.keep_features:
                continue
            try:
                shape = np.load(file, mmap_mode="r", allow_pickle=False).shape
            except (OSError, ValueError):
                shape = None
            if record is None or shape is None or shape[0] != rows:
                missing.append(task.index)
                break
        if record is not None:
            records[task.index] = record
    if missing:
        raise ImgclustError(
            f"{len(missing)} of {len(tasks)} chunks were not written (first: chunk {min(missing)}):"
            " the run is not finished; resume it or run it again."
        )
    labels = np.concatenate([_load(store, t.index, "clusters", records) for t in tasks])
    extras = {what: _gathered(store, tasks, what, records) for what in REFINED_EXTRAS}
    kept, skipped = _kept_rows(tasks, done)
    features = _assemble(store, tasks, target, len(labels), records)
    digests = None
    if tasks and isinstance(tasks[0].source, FilesSource):
        digests = [d for t in tasks for d in done[t.index].digests]
    return Assigned(
        features, labels, kept, skipped, digests, extras["probability"], extras["clusterer"]
    )


def _gathered(
    store: Path, tasks: Sequence[ChunkTask], what: str, records: Mapping[int, Mapping[str, Any]]
) -> np.ndarray | None:
    """A refined run's ``what`` of every image, each chunk's checked against its record; None
    unless every chunk wrote one, one value per image it read."""
    if not tasks or any(what not in records[t.index] for t in tasks):
        return None
    parts = [_load(store, t.index, what, records) for t in tasks]
    for task, part in zip(tasks, parts, strict=True):
        if len(part) != records[task.index]["rows"]:
            raise ImgclustError(
                f"chunk {task.index}'s {what} do not cover its {records[task.index]['rows']} "
                "images: run it again."
            )
    return np.concatenate(parts)


MAX_CHUNK_RECORD_BYTES = 4096


def _chunk_record(store: Path, task: ChunkTask, rows: int) -> dict[str, Any] | None:
    """A chunk's record when it is the one this task wrote (its number, row range and row
    count), else None (the chunk counts as not written)."""
    import json

    path = store / f"{_CHUNK_NAME.format(task.index)}.json"
    try:
        with open(path, "rb") as handle:
            record = json.loads(handle.read(MAX_CHUNK_RECORD_BYTES + 1).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    expected = {
        "index": task.index,
        "start": task.first_row,
        "stop": task.first_row + task.stop - task.start,
        "rows": rows,
    }
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in expected.items()):
        return None
    return record


def _load(
    store: Path, index: int, what: str, records: Mapping[int, Mapping[str, Any]]
) -> np.ndarray:
    """A chunk's ``what`` array, refused when its content is not what the chunk recorded."""

    file = store / f"{_CHUNK_NAME.format(index)}.{what}.npy"
    array = np.load(file, mmap_mode="r", allow_pickle=False)
    if rows_digest(array) != records[index].get(what):
        raise ImgclustError(
            f"chunk {index}'s {what} are not what that chunk wrote (replaced or swapped while "
            "the run went on): run it again."
        )
    return array


def _kept_rows(
    tasks: Sequence[ChunkTask], done: Mapping[int, ChunkDone]
) -> tuple[np.ndarray, list[str]]:
    kept: list[np.ndarray] = []
    skipped: list[str] = []
    offset = 0
    for task in tasks:
        statuses = done[task.index].statuses
        ok = np.array([i for i, s in enumerate(statuses) if s == ""], dtype=np.int64)
        kept.append(offset + ok)
        skipped += [f"{i + offset}: {s}" for i, s in enumerate(statuses) if s]
        offset += len(statuses)
    return np.concatenate(kept) if kept else np.zeros(0, np.int64), skipped


def _assemble(
    store: Path,
    tasks: Sequence[ChunkTask],
    target: Path,
    n: int,
    records: Mapping[int, Mapping[str, Any]],
) -> np.ndarray:
    """Copy the feature chunks one at a time into one ``.npy`` memory map (atomic by rename),
    each checked against its chunk's record first."""
    width = None
    for task in tasks:
        part = np.load(store / f"{_CHUNK_NAME.format(task.index)}.features.npy", mmap_mode="r")
        if len(part):
            width = part.shape[1]
            break
    temporary = target.with_name(f".{target.name}.assemble.tmp")
    out = np.lib.format.open_memmap(temporary, "w+", np.float32, (n, width or 0))
    row = 0
    for task in tasks:
        part = _load(store, task.index, "features", records)
        if len(part):
            out[row : row + len(part)] = part
            row += len(part)
    out.flush()
    del out
    os.replace(temporary, target)
    return np.load(target, mmap_mode="r")


# Fit on a sample, assign in chunks ----------------------------------------------------------
def fit_and_assign(
    pipeline: Any,
    config: Mapping[str, Any],
    splits: Any,
    folder: Path,
    registry: Any,
    log: Log,
) -> tuple[Assigned, ImageSet]:
    """Fit on a sample (refiners on its images, features and clusters), save the pipeline,
    assign every image in chunks; what the chunks assigned, and the images they read."""

    data, fit_data, validation = splits.data, splits.fit, splits.validation
    assert data is not None and fit_data is not None
    seed = int(config["seed"])
    size = config.get("fit_sample")
    _check_can_sample(pipeline, size)
    fit_rows = sample_index(len(fit_data), size, seed)
    log(f"fitting on {len(fit_rows)} of {len(fit_data)} images")
    fit_images, fit_read = _take_read(fit_data.images, fit_rows)
    features = pipeline.fit_encoders(
        fit_images, None if validation is None else validation.images, log=log
    )
    sample, read = fit_images, fit_read
    if fit_data is not data:  # the clusterer learns from a sample of the clustered split
        sample, read = _take_read(data.images, sample_index(len(data), size, seed))
        features = pipeline.transform(sample)
    log(f"clustering {len(features)} feature vectors of {features.shape[1]} numbers")
    pipeline.fit_clusterer(features)
    if pipeline.refiners:  # as in memory: the sample's images, features and clusters
        ids = data.ids if data.ids is not None else range(len(data))
        for stage in pipeline.refiners:
            if isinstance(stage.instance, UsesImageIds):
                stage.instance.image_ids = [str(ids[int(i)]) for i in read]
        pipeline.fit_refiners(sample, features, log=log)
    del features, fit_images, sample
    pipeline_path = folder / "pipeline"
    save_pipeline(pipeline, folder, config, _described(data), registry=registry)
    store = folder / CHUNKS_DIR
    if store.exists():
        shutil.rmtree(store)
    store.mkdir()
    chunk = int(config.get("chunk_size") or DEFAULT_CHUNK_SIZE)
    digests = pipeline_digests(pipeline_path)
    tasks = make_tasks(source_of(data.images), chunk, pipeline_path, store, digests=digests)

    client = current_client()
    if client is None:
        results = run_serially(tasks, log)
    else:
        results = run_on_cluster(client, run_chunk, tasks, log)
    done = {result.index: result for result in results}
    assigned = collect(store, tasks, done, folder / "embeddings.npy")
    shutil.rmtree(store, ignore_errors=True)
    data = _kept_data(data, assigned)
    if data.info.get("skipped") and data.info.get("read_on") == "workers":
        atomic.write_text(folder / "skipped.txt", "\n".join(data.info["skipped"]) + "\n")
    return assigned, data


def _check_can_sample(pipeline: Any, size: int | None) -> None:
    """Chunks are assigned by the last refiner's ``predict``, or the clusterer's without
    refiners: refuse, in one line, a pipeline whose assigning stage cannot assign new images."""
    clusterer = pipeline.clusterer
    assigning = pipeline.assigning_stage  # one rule, as the pipeline's own predict asks it
    if pipeline.refiners and not can_predict(assigning.instance):
        raise SettingsError(
            f"refiner {assigning.name!r} cannot assign images it was not fitted on, which "
            "fit_sample and --dask need: end the run with a refiner that predicts, or run "
            "without fit_sample and --dask."
        )
    if not pipeline.refiners and not can_predict(clusterer.instance):
        raise SettingsError(
            f"clusterer {clusterer.name!r} cannot assign images it was not fitted on, which "
            f"fit_sample and --dask need; use one that can: {', '.join(predicting_clusterers())}."
        )
    k = requested_clusters(clusterer.instance)
    if size is not None and isinstance(k, int) and k > size:
        raise SettingsError(f"fit_sample ({size}) must be at least clusterer.n_clusters ({k}).")


def _take_read(images: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of an array, memory map or lazily read image set, as one array in memory, and the
    rows it holds (image files of the sample that cannot be decoded are left out)."""
    rows = np.asarray(rows, dtype=np.int64)
    if isinstance(images, LazyImages) and isinstance(images.source, FilesSource):
        source = images.source
        decoded, statuses = source._decode([source.paths[int(i)] for i in rows])
        return decoded, rows[[i for i, status in enumerate(statuses) if status == ""]]
    if len(rows) == len(images):
        return (images if isinstance(images, np.ndarray) else np.asarray(images[:])), rows
    return np.asarray(images[rows]), rows


def _described(data: ImageSet) -> ImageSet:
    """An image set ``save_pipeline`` can describe (shape and dtype) without reading it."""
    return data


def _kept_data(data: ImageSet, assigned: Assigned) -> ImageSet:
    """The clustered images without the files that could not be read on the workers."""
    if assigned.digests is not None:
        data.info["file_digests"] = assigned.digests
    if not assigned.skipped:
        data.info.pop("files", None)
        return data
    names = data.info.get("files") or list(data.ids or [])
    skipped = [f"{names[int(s.split(':', 1)[0])]}:{s.split(':', 1)[1]}" for s in assigned.skipped]
    if data.info.get("strict"):
        raise DataError(f"cannot read image {skipped[0]} (dataset.strict is set).")
    if len(assigned.kept) == 0:
        raise DataError("none of the image files could be read: check that they are images.")
    images = data.images
    rows = assigned.kept
    if isinstance(images, LazyImages):
        kept_images = LazyImages(images.source, rows)
    else:
        kept_images = images[rows]
    ids = [names[int(i)] for i in rows]
    labels, class_names = data.labels, data.class_names
    if labels is not None:
        labels, class_names = folder_labels(ids)
    info = {k: v for k, v in data.info.items() if k != "files"}
    info["skipped"] = skipped
    return ImageSet(kept_images, labels, ids, class_names, info)  # type: ignore[arg-type]
