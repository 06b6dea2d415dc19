"""Faults in chunked runs: a killed worker is retried; a run missing a chunk is never finished."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imgclust.errors import ImgclustError
from tests.agreement import assert_runs_agree
from tests.test_chunks import digits_arrays, finished, run_args


@dataclass(frozen=True)
class KillsItsWorkerOnce:
    """A chunk source that kills the worker process reading chunk 1, the first time only."""

    inner: Any
    marker: str

    def __len__(self) -> int:
        return len(self.inner)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, list[str]]:
        if start > 0 and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.read(start, stop)

    def take(self, index: np.ndarray) -> np.ndarray:
        return self.inner.take(index)


@dataclass(frozen=True)
class NeverReads:
    """A chunk source whose chunk 2 always fails to read."""

    inner: Any

    def __len__(self) -> int:
        return len(self.inner)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, list[str]]:
        if start >= 1400:
            raise OSError("the disk went away")
        return self.inner.read(start, stop)


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_the_run_completes(cli, tmp_path, monkeypatch):
    pytest.importorskip("distributed", reason='needs the dask extra: pip install "imgclust[dask]"')
    import cloudpickle

    from imgclust.engine import chunks

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    marker = tmp_path / "killed"
    real = chunks.source_of
    monkeypatch.setattr(chunks, "source_of", lambda images: KillsItsWorkerOnce(
        real(images), str(marker)))  # fmt: skip
    x, y = digits_arrays(tmp_path / "data")
    try:
        remote = cli(*run_args(x, y, tmp_path / "dask", "--dask", "local:2"))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert remote.exit_code == 0, remote.stderr
    assert marker.exists()  # a worker was killed mid-run
    monkeypatch.setattr(chunks, "source_of", real)
    local = cli(*run_args(x, y, tmp_path / "local"))
    (a,), (b,) = finished(tmp_path / "local"), finished(tmp_path / "dask")
    assert_runs_agree(a, b)
    assert local.exit_code == 0


def test_a_chunk_that_fails_leaves_no_finished_run(cli, tmp_path, monkeypatch):
    from imgclust.engine import chunks

    real = chunks.source_of
    monkeypatch.setattr(chunks, "source_of", lambda images: NeverReads(real(images)))
    x, y = digits_arrays(tmp_path / "data")
    result = cli(*run_args(x, y, tmp_path / "runs"))
    assert result.exit_code != 0
    assert "the disk went away" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "runs").exists() or not finished(tmp_path / "runs")


def test_a_missing_chunk_stops_the_run(tmp_path):
    """Chunks written, one lost: assembling refuses instead of presenting a partial run."""
    import imgclust
    from imgclust.engine import chunks

    images = np.load(digits_arrays(tmp_path / "data", 500)[0])
    pipeline = imgclust.Pipeline([{"name": "pca", "n_components": 5}], "kmeans")
    pipeline.fit(images)
    saved = pipeline.save(tmp_path / "pipeline")
    store = tmp_path / "chunks"
    store.mkdir()
    tasks = chunks.make_tasks(chunks.MemorySource(images), 200, saved, store)
    done = {r.index: r for r in chunks.run_serially(tasks, lambda message: None)}
    (store / "chunk-000001.clusters.npy").unlink()
    with pytest.raises(ImgclustError, match=r"1 of 3 chunks were not written \(first: chunk 1\)"):
        chunks.collect(store, tasks, done, tmp_path / "embeddings.npy")
    assert not (tmp_path / "embeddings.npy").exists()


class TouchesWhenUnpickled:
    """A pickle payload: unpickling it creates a file (what an attacker's code could do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def saved_hdbscan(folder: Path) -> Path:
    """A fitted pca -> hdbscan pipeline: hdbscan's model is saved only as a pickle."""
    import imgclust

    images = np.load(digits_arrays(folder / "data", 300)[0])
    pipeline = imgclust.Pipeline([{"name": "pca", "n_components": 5}], "hdbscan").fit(images)
    return pipeline.save(folder / "pipeline")


def test_chunks_load_the_runs_own_pickled_pipeline_by_its_digests(tmp_path):
    """The bytes the run saved are loaded with trust (hdbscan's pickle); nothing else is, and
    the private copy is gone after loading."""
    import tempfile

    from imgclust.engine import chunks

    saved = saved_hdbscan(tmp_path)
    with pytest.raises(ImgclustError, match="pickled"):
        chunks.cached_pipeline(str(saved))
    before = set(Path(tempfile.gettempdir()).glob("imgclust-pipeline-*"))
    loaded = chunks.cached_pipeline(str(saved), digests=chunks.pipeline_digests(saved))
    assert loaded.clusterer.name == "hdbscan"
    assert set(Path(tempfile.gettempdir()).glob("imgclust-pipeline-*")) == before


@pytest.mark.parametrize("change", ["pickle swapped", "file added", "file removed", "link"])
def test_a_pipeline_changed_after_the_run_saved_it_is_never_loaded(tmp_path, change):
    """A chunk refuses, in one line, a pipeline folder that no longer holds exactly the bytes
    the run saved, before any of it is unpickled."""
    import pickle

    from imgclust.engine import chunks

    saved = saved_hdbscan(tmp_path)
    digests = chunks.pipeline_digests(saved)
    model = saved / "clusterer-hdbscan" / "model.pkl"
    marker = tmp_path / "code-ran"
    if change == "pickle swapped":
        model.write_bytes(pickle.dumps(TouchesWhenUnpickled(marker)))
    elif change == "file added":
        (saved / "clusterer-hdbscan" / "extra.pkl").write_bytes(b"")
    elif change == "file removed":
        (saved / "encoder-0-pca" / "pca.npz").unlink()
    else:
        copy = tmp_path / "model.pkl"
        copy.write_bytes(model.read_bytes())
        model.unlink()
        model.symlink_to(copy)
    with pytest.raises(ImgclustError, match=r"the run's pipeline in .* changed after the run"):
        chunks.cached_pipeline(str(saved), digests=digests)
    assert not marker.exists()
