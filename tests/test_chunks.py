"""Fit on a sample and assign in chunks (``fit_sample``, ``chunk_size``), without Dask."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from imgclust.engine.config import resolve_config
from imgclust.errors import SettingsError


def digits_arrays(folder: Path, n: int = 3000) -> tuple[Path, Path]:
    """``n`` 8x8 digits (the 1,797 repeated) as a ``.npy`` of images and one of labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    repeat = -(-n // len(digits.images))
    images = np.tile((digits.images * 16).clip(0, 255).astype(np.uint8), (repeat, 1, 1))[:n]
    labels = np.tile(digits.target, repeat)[:n]
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "x.npy", images[..., None])
    np.save(folder / "y.npy", labels)
    return folder / "x.npy", folder / "y.npy"


def run_args(x: Path, y: Path, runs: Path, *extra: str) -> list[str]:
    """A PCA 20 -> k-means 10 run of the arrays, fitted on 600 of them, in chunks of 700."""
    return [
        "run", "-d", "arrays", "-s", f"dataset.path={x}", "-s", f"dataset.labels_path={y}",
        "-e", "pca", "-s", "encoder.n_components=20", "-k", "kmeans",
        "-s", "clusterer.n_clusters=10", "-s", "fit_sample=600", "-s", "chunk_size=700",
        "--no-plots", "--runs-dir", str(runs), *extra,
    ]  # fmt: skip


def finished(runs: Path) -> list[Path]:
    return sorted(p for p in runs.iterdir() if not p.name.endswith(".incomplete"))


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("fit_sample", "many", "whole number"),
        ("fit_sample", "0", "at least 1"),
        ("chunk_size", "-5", "whole number"),
        ("chunk_size", "100000000", "at most"),
        ("dask", "ftp:/nowhere", "scheduler address"),
        ("dask", "local:0", "local:N"),
    ],
)
def test_bad_scale_settings_are_one_line(registry, key, value, words):
    with pytest.raises(SettingsError, match=words):
        resolve_config(registry, dataset="digits", encoders=["pca"], clusterer="kmeans",
                       sets=[f"{key}={value}"])  # fmt: skip


def test_scale_settings_are_kept_in_the_config(registry):
    config = resolve_config(
        registry, dataset="digits", encoders=["pca"], clusterer="kmeans",
        sets=["fit_sample=500", "chunk_size=1_000", "dask=tcp://sched:8786"],
    )  # fmt: skip
    assert (config["fit_sample"], config["chunk_size"], config["dask"]) == (
        500, 1000, "tcp://sched:8786"
    )  # fmt: skip


def test_fit_on_sample_assigns_every_image_with_the_fitted_pipeline(cli, tmp_path):
    """The stages are fitted on the seeded sample; every image is assigned by predict."""
    import imgclust
    from imgclust.kit.arrays import sample_index

    x, y = digits_arrays(tmp_path / "data")
    result = cli(*run_args(x, y, tmp_path / "runs"))
    assert result.exit_code == 0, result.stderr
    (run,) = finished(tmp_path / "runs")
    assert not (run / "chunks").exists()
    images = np.load(x)
    embeddings = np.load(run / "embeddings.npy")
    assert embeddings.shape == (3000, 20)
    saved = imgclust.load(run)
    sample = sample_index(3000, 600, 0)
    pca = imgclust.get_encoder("pca", n_components=20, seed=0)
    pca.fit(images[sample].astype(np.float32) / 255)
    np.testing.assert_allclose(saved.transform(images[:50]), pca.transform(
        images[:50].astype(np.float32) / 255), rtol=1e-4, atol=1e-5)  # fmt: skip
    # the same fitted stages; BLAS may block a chunk's product differently from the whole array's
    np.testing.assert_allclose(embeddings, saved.transform(images), rtol=1e-5, atol=1e-6)
    clusters = np.loadtxt(run / "assignments.csv", delimiter=",", skiprows=1, usecols=1)
    np.testing.assert_array_equal(clusters, saved.predict(images))


def test_a_clusterer_that_cannot_predict_is_refused(cli, tmp_path):
    x, y = digits_arrays(tmp_path / "data", 300)
    args = run_args(x, y, tmp_path / "runs")
    args[args.index("kmeans")] = "agglomerative"
    result = cli(*args)
    assert result.exit_code != 0
    assert "cannot assign images it was not fitted on" in result.stderr
    assert "loading" not in result.stderr  # refused before anything is read


def test_missing_dask_is_one_line(cli, tmp_path, monkeypatch):
    """Without the extra, --dask says how to install it, and no run folder is left."""
    for name in ("dask", "dask.distributed", "distributed"):
        monkeypatch.setitem(sys.modules, name, None)
    x, y = digits_arrays(tmp_path / "data", 300)
    result = cli(*run_args(x, y, tmp_path / "runs", "--dask", "local:2"))
    assert result.exit_code != 0
    assert result.stderr.strip() == (
        "Error: --dask needs Dask, which is not installed: install it with: "
        'pip install "imgclust[dask]".'
    )
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


class NoPredict:
    """A refiner that relabels the images it learns from but cannot assign new ones."""

    def fit_predict(self, images, features, labels):
        return labels

    def save(self, directory):
        (Path(directory) / "nothing.txt").write_text("")

    def load(self, directory):
        return self


@pytest.fixture
def refiners():
    """The test refiners nearest-centre (k-means steps; it predicts) and no-predict."""
    from types import SimpleNamespace

    import imgclust
    from imgclust.stages.host import get_host
    from tests.test_refiners import NearestCentre

    @imgclust.hookimpl
    def register_refiners(register):
        register("nearest-centre", NearestCentre)
        register("no-predict", NoPredict)

    get_host().register(SimpleNamespace(register_refiners=register_refiners), "test-refiners")


def test_a_refiner_learns_the_sample_and_assigns_every_chunk(cli, tmp_path, refiners):
    """The refiner learns the fit sample's features and clusters, never the other images; the
    chunks' clusters are its predictions; the clusterer's clusters of every image are scored
    as what the refiner gained."""
    import json

    import imgclust
    from imgclust.engine.stage import renumber
    from imgclust.kit.arrays import sample_index
    from imgclust.results.metrics import external_scores
    from tests.test_refiners import NearestCentre

    x, y = digits_arrays(tmp_path / "data")
    unfinished = ["-s", "clusterer.max_iter=2", "-s", "clusterer.n_init=1"]  # left to refine
    refiner = ["--refiner", "nearest-centre", "-s", "refiner.steps=5"]
    result = cli(*run_args(x, y, tmp_path / "runs", *unfinished, *refiner))
    assert result.exit_code == 0, result.stderr
    (run,) = finished(tmp_path / "runs")
    assert not (run / "chunks").exists()
    images, labels = np.load(x), np.load(y)
    saved = imgclust.load(run).pipeline
    sample = images[sample_index(3000, 600, 0)]
    features = saved.transform(sample)
    first = renumber(saved.clusterer.instance.predict(features), saved.cluster_order)
    refiner = NearestCentre(steps=5)
    refiner.fit_predict(sample, features, first)  # the same steps from the same start
    np.testing.assert_allclose(saved.refiners[0].instance.centres_, refiner.centres_, atol=1e-5)
    clusters = np.loadtxt(run / "assignments.csv", delimiter=",", skiprows=1, usecols=1)
    np.testing.assert_array_equal(clusters, saved.predict(images))
    everything = saved.transform(images)
    before = renumber(saved.clusterer.instance.predict(everything), saved.cluster_order)
    assert not np.array_equal(before, clusters)  # the refiner moved some images
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["before_refiners"] == pytest.approx(external_scores(labels, before))
    assert metrics["acc"] == pytest.approx(external_scores(labels, clusters)["acc"])
    sizes = np.bincount(clusters.astype(np.int64))
    table = (run / "clusters.md").read_text()
    assert all(f"| {c} | {n} |" in table for c, n in enumerate(sizes))  # the refined clusters


def test_a_refiner_lets_a_clusterer_that_cannot_predict_run_in_chunks(cli, tmp_path, refiners):
    """Chunks are assigned by the last refiner, so the clusterer need not predict."""
    import json

    x, y = digits_arrays(tmp_path / "data", 900)
    args = run_args(x, y, tmp_path / "runs", "--refiner", "nearest-centre")
    args[args.index("kmeans")] = "agglomerative"
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    (run,) = finished(tmp_path / "runs")
    assert (run / "assignments.csv").read_text().count("\n") == 901
    assert "before_refiners" not in json.loads((run / "metrics.json").read_text())


def test_a_refiner_that_cannot_predict_is_refused_before_reading(cli, tmp_path, refiners):
    x, y = digits_arrays(tmp_path / "data", 300)
    result = cli(*run_args(x, y, tmp_path / "runs", "--refiner", "no-predict"))
    assert result.exit_code != 0
    assert result.stderr.startswith(
        "Error: refiner 'no-predict' cannot assign images it was not fitted on, which "
        "fit_sample and --dask need"
    )
    assert len(result.stderr.strip().splitlines()) == 1
    assert "loading" not in result.stderr
