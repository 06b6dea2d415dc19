"""``imgclust predict --dask``: new images assigned on a Dask cluster, each worker reading its
chunks (image files, a folder of arrays, a memory-mapped array) and loading the run's pipeline
once, through the chunked engine's sources and tasks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.engine.chunks import cached_pipeline, chunk_bounds
from imgclust.engine.config import DEFAULT_CHUNK_SIZE
from imgclust.engine.distributed import current_client, import_distributed
from imgclust.engine.sources import (
    FilesSource,
    MemmapSource,
    MemorySource,
    for_workers,
    memmap_source,
)
from imgclust.errors import DataError, ImgclustError
from imgclust.io.images import (
    DEFAULT_EXTENSIONS,
    folder_labels,
    scan_folder,
)
from imgclust.io.inputs import (
    ARRAY_SUFFIXES,
    file_reading,
    files_below,
    folder_arrays,
    need_mode,
    read_inputs,
)


# Predict on a cluster -----------------------------------------------------------------------
@dataclass
class AssignTask:
    """Clusters (and scores) of rows ``start:stop`` of a source, with a run's saved pipeline."""

    start: int
    stop: int
    source: Any
    run: str
    trust: bool

    def __post_init__(self) -> None:
        self.run = for_workers(self.run)


def assign_chunk(task: AssignTask) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    """On a worker: read one chunk of new images and assign them; small results only."""
    pipeline = cached_pipeline(task.run, task.trust)
    images, statuses = task.source.read(task.start, task.stop)
    if not len(images):
        return np.zeros(0, np.int64), {}, statuses
    labels, scores = pipeline.assign(images)
    return labels, scores, statuses


def predict_sources(
    saved: Any, inputs: list[str]
) -> Iterator[tuple[str, Any, list[str], Any, bool]]:
    """Each input as (name, source, ids, labels, strict): files are read where they are assigned."""
    size, mode = file_reading(saved)
    for text in inputs:
        path = Path(text)
        source: MemmapSource | MemorySource | FilesSource
        if path.is_dir():
            arrays = folder_arrays(path, text, saved)  # read here, as array files are
            if arrays is not None:
                source = memmap_source(arrays.images) or MemorySource(arrays.images)
                yield text, source, arrays.ids, arrays.labels, True
            if arrays is not None and not files_below(path, DEFAULT_EXTENSIONS):
                continue
            files = scan_folder(path, True, DEFAULT_EXTENSIONS)
            mode = need_mode(mode, saved, text)
            source = FilesSource(tuple(f.path for f in files), size, mode, None)
            names = [(Path(text) / f.name).as_posix() for f in files]
            labels, classes = folder_labels([f.name for f in files])
            named = None
            if labels is not None and classes is not None:  # the two come together
                named = np.asarray([classes[int(i)] for i in labels], dtype=np.object_)
            yield text, source, names, named, False
        elif path.is_file() and path.suffix.lower() not in ARRAY_SUFFIXES:
            source = FilesSource((str(path),), size, need_mode(mode, saved, text), None)
            yield text, source, [str(path)], None, True
        else:
            for batch in read_inputs([text], saved):  # arrays: prepared here, mapped if they can be
                source = memmap_source(batch.images) or MemorySource(batch.images)
                yield text, source, batch.ids, batch.labels, True


def predict_on_cluster(
    saved: Any, run: Path, inputs: list[str], trust: bool, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> tuple[list[str], list[list[Any]]]:
    """``imgclust predict --dask``: the CSV header and rows, chunks assigned on the workers."""

    client = current_client()
    distributed = import_distributed()
    batches = []
    for _name, source, ids, labels, strict in predict_sources(saved, inputs):
        tasks = []
        for start, stop in chunk_bounds(len(source), chunk_size):
            part, first, last = source, start, stop
            if isinstance(source, MemorySource):
                part, first, last = source.part(start, stop), 0, stop - start
            tasks.append(AssignTask(first, last, part, str(run), trust))
        futures = client.map(assign_chunk, tasks, pure=False)
        try:
            parts = client.gather(futures)
        except ImgclustError:
            raise
        except Exception as exc:
            if isinstance(exc, distributed.KilledWorker):
                raise ImgclustError("a chunk's workers died repeatedly: lower the load.") from None
            raise ImgclustError(f"a Dask worker failed on a chunk: {exc}".splitlines()[0]) from None
        statuses = [s for _, _, st in parts for s in st]
        bad = [f"{ids[i]}: {s}" for i, s in enumerate(statuses) if s]
        if bad and strict:
            raise DataError(f"cannot read image {bad[0]}")
        keep = [i for i, s in enumerate(statuses) if not s]
        found = np.concatenate([p[0] for p in parts])
        names = sorted({k for _, scores, _ in parts for k in scores})
        scores = {k: np.concatenate([p[1][k] for p in parts if len(p[0])]) for k in names}
        batches.append(
            (
                [ids[i] for i in keep],
                found,
                scores,
                None if labels is None else [labels[i] for i in keep],
            )
        )
    return _rows(batches)


def _rows(
    batches: list[tuple[list[str], np.ndarray, dict[str, np.ndarray], Any]],
) -> tuple[list[str], list[list[Any]]]:
    """CSV header and rows as ``imgclust predict`` writes them without Dask."""
    score_names = sorted({name for _, _, scores, _ in batches for name in scores})
    with_labels = any(labels is not None for *_, labels in batches)
    header = ["id", "cluster", *score_names, *(["label"] if with_labels else [])]
    rows: list[list[Any]] = []
    for ids, found, scores, labels in batches:
        for i, image_id in enumerate(ids):
            row: list[Any] = [image_id, int(found[i])]
            row += [round(float(scores[n][i]), 6) if n in scores else "" for n in score_names]
            if with_labels:
                value = "" if labels is None else labels[i]
                row.append(value.item() if hasattr(value, "item") else value)
            rows.append(row)
    return header, rows
