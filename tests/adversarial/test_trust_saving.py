"""Saving never drops a fitted model silently: it saves without pickle where it can, and a
stage it cannot keep is recorded as not saved, so that predict says why in one line.
"""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClusterMixin

import imgclust
from imgclust.engine.manifest import read_manifest
from imgclust.engine.persist import save_pipeline
from imgclust.engine.pipeline import Pipeline, load_pipeline
from imgclust.engine.stage import Stage
from imgclust.errors import ImgclustError
from imgclust.kit.sklearn import SklearnClusterer, lazy_estimator
from imgclust.stages.hookspecs import hookimpl
from imgclust.stages.host import get_host
from imgclust.stages.interfaces import ImageSet


def birch(n_clusters: int = 10, threshold: float = 0.5) -> SklearnClusterer:
    """BIRCH from scikit-learn, written as docs/plugins.md shows."""
    make = lazy_estimator("sklearn.cluster", "Birch")
    return SklearnClusterer(make, {"n_clusters": n_clusters, "threshold": threshold}, name="birch")


class Boxed:
    """Data the model needs to predict, inside an object rather than an array."""

    def __init__(self, centres: np.ndarray) -> None:
        self.centres = centres


class Tangled(Boxed):
    """... that pickle cannot write either (as Birch's deep CF tree on large data)."""

    def __reduce__(self):
        raise RecursionError("maximum recursion depth exceeded while pickling an object")


class TangledCentroids(ClusterMixin, BaseEstimator):
    """Nearest of a few centres, kept only inside an object that cannot be saved."""

    def __init__(self, n_clusters: int = 3, picklable: bool = False) -> None:
        self.n_clusters = n_clusters
        self.picklable = picklable

    def fit(self, x, y=None):
        box = Boxed if self.picklable else Tangled
        self.tree_ = box(np.asarray(x[: self.n_clusters], dtype=np.float64))
        self.n_features_in_ = x.shape[1]
        self.labels_ = self.predict(x)
        return self

    def predict(self, x):
        distances = ((np.asarray(x)[:, None, :] - self.tree_.centres[None]) ** 2).sum(axis=2)
        return distances.argmin(axis=1)


def tangled(n_clusters: int = 3) -> SklearnClusterer:
    """A clusterer whose fitted model has neither arrays nor a pickle to save to."""
    return SklearnClusterer(TangledCentroids, {"n_clusters": n_clusters}, name="tangled")


def register(name: str, factory) -> None:
    get_host().register(
        SimpleNamespace(register_clusterers=hookimpl(lambda register: register(name, factory))),
        name=f"test-{name}",
    )


def blob_images(n: int, seed: int = 0) -> np.ndarray:
    """N 4x4 one-channel float images around ten centres."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.1, 0.9, size=(10, 16))
    rows = centres[rng.integers(0, 10, n)] + rng.normal(0, 0.03, (n, 16))
    return np.clip(rows, 0, 1).astype(np.float32).reshape(-1, 4, 4, 1)


def fit_and_save(folder: Path, name: str, factory, images: np.ndarray) -> Pipeline:
    from imgclust.plugins.basic_encoders import FlattenEncoder

    pipeline = Pipeline([Stage("flatten", FlattenEncoder())], Stage(name, factory(), {}))
    pipeline.fit(images)
    config = {"seed": 0, "split": "all", "dataset": {"name": "arrays", "path": "x.npy"}}
    save_pipeline(pipeline, folder, config, ImageSet(images))
    return pipeline


def test_birch_through_the_adapter_on_10000_points_saves_without_pickle_and_predicts(tmp_path):
    register("birch", birch)
    images = blob_images(10_000)
    pipeline = fit_and_save(tmp_path, "birch", birch, images)
    manifest = read_manifest(tmp_path)
    clusterer = manifest["clusterer"]
    assert clusterer["saved"] and clusterer["format"] == "native", clusterer
    assert manifest["can_predict"] and not manifest["needs_trust"], manifest["reason"]
    assert not list((tmp_path / "pipeline").rglob("*.pkl"))
    new = blob_images(500, seed=1)
    saved = load_pipeline(tmp_path)  # no trust needed: arrays and plain values only
    assert np.array_equal(saved.predict(new), pipeline.predict(new))
    assert np.array_equal(saved.predict(images[:500]), pipeline.labels_[:500])


def test_birch_run_from_the_cli_predicts_its_own_labels_after_reload(cli, runs_dir):
    register("birch", birch)
    result = cli(
        "run", "--dataset", "digits", "--encoder", "pca", "--clusterer", "birch",
        "--set", "clusterer.threshold=0.1", "--no-plots", "--runs-dir", runs_dir,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    [folder] = list(runs_dir.iterdir())
    with open(folder / "assignments.csv") as handle:
        expected = np.array([int(row["cluster"]) for row in csv.DictReader(handle)])
    from imgclust.plugins.digits import DigitsDataset

    images = DigitsDataset().load("all").images
    assert np.array_equal(imgclust.load(folder).predict(images), expected)


def test_a_model_that_cannot_be_saved_is_recorded_and_predict_says_why(tmp_path, cli):
    register("tangled", tangled)
    images = blob_images(300)
    fit_and_save(tmp_path, "tangled", tangled, images)
    manifest = read_manifest(tmp_path)
    clusterer = manifest["clusterer"]
    assert clusterer["saved"] is False and manifest["can_predict"] is False
    assert "estimator_" in clusterer["reason"] and "without pickle" in clusterer["reason"]
    assert "tree_" in clusterer["reason"]
    np.save(tmp_path / "x.npy", images[:5])
    for trust in ([], ["--trust"]):
        result = cli("predict", tmp_path, tmp_path / "x.npy", *trust)
        assert result.exit_code != 0
        [line] = result.stderr.strip().splitlines()
        assert "cannot predict" in line and "tangled" in line and "not fitted" not in line
    with pytest.raises(ImgclustError, match="could not be saved"):
        imgclust.load(tmp_path, trust=True).predict(images[:5])


def test_the_pickle_fallback_never_leaves_out_a_fitted_attribute():
    from imgclust.engine.persist import _picklable_state
    from imgclust.stages.host import get_registry

    register("tangled", tangled)
    instance = tangled()
    instance.fit_predict(blob_images(50).reshape(50, -1))
    state, problem = _picklable_state(get_registry(), "clusterers", Stage("tangled", instance))
    assert state is None and "estimator_" in problem


def test_a_fallback_pickle_is_recorded_with_what_it_left_out(tmp_path):
    """A model with no array form that pickles is kept as a pickle (needs --trust), and the
    attributes its factory rebuilds (a closure here) are named as left out.
    """

    def factory() -> SklearnClusterer:
        params = {"n_clusters": 3, "picklable": True}
        clusterer = SklearnClusterer(TangledCentroids, params, name="boxed")
        clusterer.check = lambda features: None  # rebuilt by the factory; pickle cannot write it
        return clusterer

    register("boxed", factory)
    images = blob_images(100)
    pipeline = fit_and_save(tmp_path, "boxed", factory, images)
    manifest = read_manifest(tmp_path)
    clusterer = manifest["clusterer"]
    assert clusterer["format"] == "pickle" and clusterer["needs_trust"] and manifest["needs_trust"]
    assert "without pickle" in clusterer["note"] and "check" in clusterer["note"]
    with pytest.raises(ImgclustError, match="--trust"):
        load_pipeline(tmp_path)
    new = blob_images(20, seed=1)
    assert np.array_equal(load_pipeline(tmp_path, trust=True).predict(new), pipeline.predict(new))
