"""The refiner stage kind: its hook, config tables, the pipeline's use of it, saving and loading."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

import imgclust
from imgclust.engine.config import resolve_config, to_toml
from imgclust.errors import SettingsError
from imgclust.results.metrics import external_scores
from imgclust.stages.host import get_host
from imgclust.testing import check_refiner, sample_images


class NearestCentre:
    """Move each point to the cluster whose mean feature vector is nearest (one k-means step)."""

    def __init__(self, steps: int = 1) -> None:
        self.steps = steps

    def fit_predict(self, images, features, labels):
        for _ in range(self.steps):
            clusters = np.unique(labels[labels >= 0])
            self.centres_ = np.stack([features[labels == c].mean(axis=0) for c in clusters])
            self.clusters_ = clusters
            labels = self.predict(images, features)
        return labels

    def predict(self, images, features):
        distances = ((features[:, None, :] - self.centres_[None]) ** 2).sum(axis=2)
        return self.clusters_[distances.argmin(axis=1)].astype(np.int64)

    def save(self, directory):
        np.save(directory / "centres.npy", self.centres_)
        np.save(directory / "clusters.npy", self.clusters_)

    def load(self, directory):
        self.centres_ = np.load(directory / "centres.npy")
        self.clusters_ = np.load(directory / "clusters.npy")
        return self


class Renamer(NearestCentre):
    """Breaks the contract: returns cluster numbers it was never given."""

    def predict(self, images, features):
        return super().predict(images, features) + 100


@pytest.fixture
def nearest_centre():
    """The test refiner, registered as plugin 'test-refiners' under the name nearest-centre."""

    @imgclust.hookimpl
    def register_refiners(register):
        register("nearest-centre", NearestCentre)

    get_host().register(SimpleNamespace(register_refiners=register_refiners), "test-refiners")
    return "nearest-centre"


def test_refiners_are_a_registered_kind(nearest_centre, cli):
    registry = get_host().registry
    assert "nearest-centre" in registry.names("refiners")
    listed = cli("list", "refiners", "--json")
    assert listed.exit_code == 0, listed.stderr
    (item,) = [i for i in json.loads(listed.stdout) if i["name"] == "nearest-centre"]
    assert item["settings"][0]["name"] == "steps"


def test_config_refiner_tables_resolve_set_and_write(nearest_centre, registry):
    recipe = {
        "dataset": {"name": "digits"},
        "encoder": [{"name": "pca", "n_components": 10}],
        "clusterer": {"name": "kmeans", "n_clusters": 10},
        "refiner": [{"name": "nearest-centre"}],
    }
    registry.register("recipes", "test")("with-refiner", recipe)
    config = resolve_config(registry, recipe="with-refiner", sets=["refiner.steps=3"])
    assert config["refiner"] == [{"name": "nearest-centre", "steps": 3}]
    text = to_toml(config)
    assert text.index("[clusterer]") < text.index("[[refiner]]")
    with pytest.raises(SettingsError, match="refiner 'nearest-centre'.*steps"):
        resolve_config(registry, recipe="with-refiner", sets=["refiner.steps=many"])
    with pytest.raises(SettingsError, match="this run has no refiner"):
        resolve_config(registry, recipe="pixels-kmeans", sets=["refiner.steps=3"])


def test_pipeline_refines_predicts_saves_and_loads(nearest_centre, tmp_path):
    digits = imgclust.get_dataset("digits").load("all")
    pipeline = imgclust.Pipeline(
        [imgclust.get_encoder("pca", n_components=10)],
        imgclust.get_clusterer("kmeans", n_clusters=10, n_init=1, max_iter=2, seed=0),
        refiners=[imgclust.get_refiner(nearest_centre, steps=5)],
    )
    labels = pipeline.fit_predict(digits.images)
    before = external_scores(digits.labels, pipeline.clusterer_labels_)["acc"]
    after = external_scores(digits.labels, labels)["acc"]
    assert after > before  # more k-means steps than the two the clusterer was allowed
    assert pipeline.name.endswith("kmeans -> nearest-centre")
    np.testing.assert_array_equal(pipeline.predict(digits.images), labels)
    saved = pipeline.save(tmp_path / "saved")
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["refiners"][0]["dir"] == "refiner-0-nearest-centre"
    loaded = imgclust.load(saved)
    assert [r.name for r in loaded.refiners] == ["nearest-centre"]
    np.testing.assert_array_equal(loaded.predict(digits.images[:50]), labels[:50])


def test_a_refiner_lets_a_clusterer_that_cannot_predict_predict(nearest_centre, tmp_path):
    images = sample_images(200)
    pipeline = imgclust.Pipeline(
        ["flatten"],
        {"name": "agglomerative", "n_clusters": 5},
        refiners=[nearest_centre],
    ).fit(images)
    assert pipeline.can_predict
    loaded = imgclust.load(pipeline.save(tmp_path / "saved"))
    np.testing.assert_array_equal(loaded.predict(images), pipeline.labels_)


class FitOnly(NearestCentre):
    """A refiner that says it cannot assign images it was not fitted on."""

    can_predict = False


@pytest.mark.parametrize("refiners, predicts", [(["fit-only"], False), (["fit-only", "nc"], True)])
def test_one_rule_says_whether_a_refined_pipeline_predicts(
    nearest_centre, refiners, predicts, tmp_path
):
    """The last refiner assigns new images: the pipeline, its saved manifest and the loaded
    pipeline agree on whether it can, by the same rule as for clusterers."""

    @imgclust.hookimpl
    def register_refiners(register):
        register("fit-only", FitOnly)

    get_host().register(SimpleNamespace(register_refiners=register_refiners), "test-fit-only")
    names = {"fit-only": "fit-only", "nc": nearest_centre}
    images = sample_images(120)
    pipeline = imgclust.Pipeline(
        ["flatten"], {"name": "kmeans", "n_clusters": 4}, refiners=[names[r] for r in refiners]
    ).fit(images)
    assert pipeline.can_predict is predicts
    saved = pipeline.save(tmp_path / "saved")
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["can_predict"] is predicts
    loaded = imgclust.load(saved)
    if predicts:
        np.testing.assert_array_equal(loaded.predict(images), pipeline.labels_)
    else:
        assert "cannot assign images it was not fitted on" in manifest["reason"]
        for fitted in (pipeline, loaded):
            with pytest.raises(imgclust.ImgclustError, match="^this pipeline cannot predict: "):
                fitted.predict(images)


def test_run_with_a_refiner_records_what_it_gained(nearest_centre, cli, runs_dir, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(
        '[dataset]\nname = "digits"\n[[encoder]]\nname = "pca"\nn_components = 10\n'
        '[clusterer]\nname = "kmeans"\nn_clusters = 10\nn_init = 1\nmax_iter = 2\n'
        '[[refiner]]\nname = "nearest-centre"\nsteps = 5\n'
    )
    result = cli("run", "--config", config, "--runs-dir", runs_dir, "--no-plots", "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["metrics"]["acc"] > record["metrics"]["before_refiners"]["acc"]
    folder = next(runs_dir.iterdir())
    assert "[[refiner]]" in (folder / "config.toml").read_text()
    new_images = tmp_path / "new.npy"
    np.save(new_images, imgclust.get_dataset("digits").load("all").images[:20])
    again = cli("predict", folder, new_images, "--json")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["n_images"] == 20


def test_check_refiner_passes_a_sound_refiner_and_names_a_broken_one(tmp_path):
    check_refiner(NearestCentre, fast=True, tmp_path=tmp_path)
    with pytest.raises(AssertionError, match="refiner 'Renamer'.*numbers it was not given"):
        check_refiner(Renamer, fast=True, tmp_path=tmp_path)


def test_a_damaged_refiners_entry_is_one_line(nearest_centre, tmp_path):
    pipeline = imgclust.Pipeline(["flatten"], "kmeans", refiners=[nearest_centre])
    saved = pipeline.fit(sample_images(100)).save(tmp_path / "saved")
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["refiners"] = "oops"
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(imgclust.DataError, match="'refiners' is \"oops\""):
        imgclust.load(saved)


def test_new_recipes_resolve_and_one_is_recommended(registry, cli):
    names = ("umap-gmm-selflabel", "umap-gmm-recluster", "pca-kmeans-recluster", "pca-kmeans-dcec")
    for name in ("umap-gmm", *names):
        config = resolve_config(registry, recipe=name, dataset="digits")
        assert config["dataset"]["name"] == "digits" and config["split"] == "all"
    assert resolve_config(registry, recipe="umap-gmm-selflabel")["refiner"][0]["keep"] == 0.8
    listed = json.loads(cli("list", "recipes", "--json").stdout)
    runs = {item["name"]: item["runs"] for item in listed}
    for name in names:  # the outline shows the refiner too
        assert runs[name].split(" -> ")[-1].startswith(("self-label", "dec")), runs[name]
    recommended = [i["name"] for i in listed if i["summary"].startswith("recommended")]
    assert recommended == ["sym-umap-gmm-recluster"]
