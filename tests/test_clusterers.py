"""The bundled clusterers through the one scikit-learn adapter: fit, noise, predict, save/load,
and their failure modes (k > N, NaN features, predict where a method cannot)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imgclust.errors import DataError, ImgclustError, SettingsError
from imgclust.kit.sklearn import SklearnClusterer
from imgclust.results.metrics import clustering_accuracy

ALL = ["kmeans", "minibatch-kmeans", "gmm", "agglomerative", "spectral", "dbscan", "hdbscan"]
PREDICTING = ["kmeans", "minibatch-kmeans", "gmm", "hdbscan"]
WITH_K = ["kmeans", "minibatch-kmeans", "gmm", "agglomerative", "spectral"]
SETTINGS = {"dbscan": {"eps": 1.5}, "hdbscan": {"min_cluster_size": 20}}


@pytest.fixture(scope="module")
def blobs():
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=600, centers=4, n_features=5, cluster_std=0.6, random_state=3)
    return x.astype(np.float32), y


def make(registry, name: str, **settings):
    values = {**SETTINGS.get(name, {}), **settings}
    if name in WITH_K:
        values.setdefault("n_clusters", 4)
    return registry.get("clusterers", name).target(**values)


@pytest.mark.parametrize("name", ALL)
def test_each_clusterer_finds_well_separated_blobs(registry, blobs, name):
    x, y = blobs
    clusterer = make(registry, name)
    assert isinstance(clusterer, SklearnClusterer)
    labels = clusterer.fit_predict(x)
    assert labels.shape == (len(x),) and labels.dtype == np.int64
    assert clustering_accuracy(y, labels) > 0.95
    assert clusterer.can_predict == (name in PREDICTING)


def test_gmm_maps_n_clusters_onto_n_components(registry, blobs):
    clusterer = make(registry, "gmm", n_clusters=3, covariance_type="diag", n_init=2, seed=5)
    assert clusterer.n_clusters == 3
    clusterer.fit_predict(blobs[0])
    estimator = clusterer.estimator_
    assert estimator.n_components == 3 and estimator.covariance_type == "diag"
    assert estimator.n_init == 2 and estimator.random_state == 5


@pytest.mark.parametrize("name", ["kmeans", "minibatch-kmeans", "gmm"])
def test_array_format_round_trip_predicts_identically(registry, blobs, tmp_path, name):
    x, _ = blobs
    clusterer = make(registry, name)
    clusterer.fit_predict(x[:500])
    expected = clusterer.predict(x[500:])
    clusterer.save(tmp_path)
    assert json.loads((tmp_path / "estimator.json").read_text())["format"] == "arrays"
    assert not list(tmp_path.glob("*.pkl"))
    loaded = make(registry, name).load(tmp_path)
    np.testing.assert_array_equal(loaded.predict(x[500:]), expected)
    np.testing.assert_array_equal(loaded.labels_, clusterer.labels_)


def test_hdbscan_marks_noise_and_predicts_with_approximate_predict(registry, blobs):
    x, y = blobs
    far = np.full((3, x.shape[1]), 100.0, dtype=np.float32)
    clusterer = make(registry, "hdbscan")
    labels = clusterer.fit_predict(np.vstack([x, far]))
    assert (labels[-3:] == -1).all()
    assert clusterer.estimator_.prediction_data_ is not None
    predicted = clusterer.predict(x[:50])
    np.testing.assert_array_equal(predicted, labels[:50])
    assert (clusterer.predict(far) == -1).all()


def test_hdbscan_sizes_are_a_count_or_a_fraction_of_the_images(registry, blobs):
    x, _ = blobs
    counted = make(registry, "hdbscan", min_cluster_size=30, min_samples=5)
    counted.fit_predict(x)
    assert (counted.estimator_.min_cluster_size, counted.estimator_.min_samples) == (30, 5)
    shared = make(registry, "hdbscan", min_cluster_size=0.05, min_samples=0.01)
    labels = shared.fit_predict(x)
    assert (shared.estimator_.min_cluster_size, shared.estimator_.min_samples) == (30, 6)
    assert len(set(labels) - {-1}) == 4
    for bad in ({"min_cluster_size": 1.5}, {"min_cluster_size": 0.0}, {"min_samples": -0.5}):
        with pytest.raises(SettingsError, match="a count >= .* a fraction between 0 and 1"):
            make(registry, "hdbscan", **bad)


def test_hdbscan_pickle_loads_only_with_trust(registry, blobs, tmp_path):
    x, _ = blobs
    clusterer = make(registry, "hdbscan")
    clusterer.fit_predict(x)
    clusterer.save(tmp_path)
    assert json.loads((tmp_path / "estimator.json").read_text())["format"] == "pickle"
    with pytest.raises(ImgclustError, match="refusing to unpickle.*trust") as caught:
        make(registry, "hdbscan").load(tmp_path)
    assert "\n" not in str(caught.value)
    loaded = make(registry, "hdbscan").load(tmp_path, trust=True)
    np.testing.assert_array_equal(loaded.predict(x[:40]), clusterer.predict(x[:40]))


@pytest.mark.parametrize("name", ["agglomerative", "spectral", "dbscan"])
def test_predict_where_a_method_cannot_names_those_that_can(registry, blobs, name):
    x, _ = blobs
    clusterer = make(registry, name)
    clusterer.fit_predict(x)
    with pytest.raises(ImgclustError, match="cannot assign new images") as caught:
        clusterer.predict(x[:5])
    named = str(caught.value).split("can: ")[1].rstrip(".").split(", ")
    assert sorted(named) == sorted(PREDICTING)


def test_non_predicting_clusterer_saves_labels_only(registry, blobs, tmp_path):
    x, _ = blobs
    clusterer = make(registry, "agglomerative")
    labels = clusterer.fit_predict(x)
    clusterer.save(tmp_path)
    assert json.loads((tmp_path / "estimator.json").read_text())["format"] == "labels"
    loaded = make(registry, "agglomerative").load(tmp_path)
    np.testing.assert_array_equal(loaded.labels_, labels)
    assert not loaded.can_predict
    with pytest.raises(ImgclustError, match="cannot assign"):
        loaded.predict(x[:3])


def test_predict_before_fit_says_so(registry, blobs):
    with pytest.raises(ImgclustError, match="not fitted"):
        make(registry, "kmeans").predict(blobs[0][:3])


def test_predict_with_the_wrong_width_is_one_clear_line(registry, blobs):
    clusterer = make(registry, "gmm")
    clusterer.fit_predict(blobs[0])
    with pytest.raises(DataError, match="fitted on 5 features"):
        clusterer.predict(np.zeros((3, 7), dtype=np.float32))


@pytest.mark.parametrize("name", WITH_K)
def test_more_clusters_than_points_is_refused(registry, blobs, name):
    with pytest.raises(DataError, match="only 20 images"):
        make(registry, name, n_clusters=50).fit_predict(blobs[0][:20])


@pytest.mark.parametrize("name", ALL)
def test_nan_features_are_refused(registry, blobs, name):
    x = blobs[0].copy()
    x[7, 2] = np.nan
    with pytest.raises(DataError, match="1 of 600 feature rows have NaN"):
        make(registry, name).fit_predict(x)


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("kmeans", {"n_clusters": 0}),
        ("gmm", {"reg_covar": -1.0}),
        ("dbscan", {"eps": 0.0}),
        ("hdbscan", {"min_cluster_size": 1}),
        ("agglomerative", {"connectivity": -2}),
    ],
)
def test_bad_settings_are_refused_when_built(registry, name, settings):
    with pytest.raises(SettingsError):
        make(registry, name, **settings)


def test_agglomerative_refuses_a_distance_matrix_that_cannot_fit(registry, monkeypatch):
    from imgclust.plugins import sklearn_clusterers

    monkeypatch.setattr(sklearn_clusterers, "MEMORY_SHARE", 1e-9)
    clusterer = make(registry, "agglomerative")
    with pytest.raises(DataError, match="connectivity=15"):
        clusterer.fit_predict(np.random.default_rng(0).normal(size=(200, 3)))


def test_agglomerative_with_connectivity_clusters_sparsely(registry, blobs):
    x, y = blobs
    labels = make(registry, "agglomerative", connectivity=10).fit_predict(x)
    assert clustering_accuracy(y, labels) > 0.95


def test_noise_gets_its_own_row_and_counts_as_wrong(cli, runs_dir):
    result = cli(
        "run",
        "--dataset",
        "digits",
        "--encoder",
        "pca",
        "--clusterer",
        "dbscan",
        "--set",
        "encoder.n_components=10",
        "--set",
        "clusterer.eps=0.8",
        "--set",
        "clusterer.min_samples=10",
        "--runs-dir",
        runs_dir,
        "--json",
        "--no-plots",
    )
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    noise = [c for c in record["clusters"] if c["cluster"] == -1]
    assert noise and record["metrics"]["noise"] == noise[0]["size"] > 0
    assert record["clusters"][-1]["cluster"] == -1
    assert record["metrics"]["acc"] <= 1 - noise[0]["size"] / record["n_images"] + 1e-9
    folder = next(runs_dir.iterdir())
    clusters_md = (folder / "clusters.md").read_text()
    assert "| noise |" in clusters_md and "- noise:" in clusters_md


def test_list_clusterers_shows_every_method_and_whether_it_predicts(cli):
    result = cli("list", "clusterers", "--json")
    assert result.exit_code == 0, result.stderr
    items = {item["name"]: item for item in json.loads(result.stdout)}
    assert set(ALL) <= set(items)
    for name in PREDICTING:
        assert "(assigns new points" in items[name]["summary"]
    for name in set(ALL) - set(PREDICTING):
        assert "cannot assign new points" in items[name]["summary"]
    gmm_settings = {s["name"] for s in items["gmm"]["settings"]}
    assert {"n_clusters", "covariance_type", "n_init", "seed"} <= gmm_settings


def test_a_saved_hdbscan_run_predicts_only_with_trust(cli, runs_dir, tmp_path):
    from sklearn.datasets import load_digits

    run = cli("run", "--dataset", "digits", "--encoder", "pca", "--clusterer", "hdbscan",
              "--runs-dir", runs_dir, "--no-plots", "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    record = json.loads(run.stdout)
    images = np.round(load_digits().images[:30] * (255 / 16)).astype(np.uint8)
    np.save(tmp_path / "new.npy", images)
    refused = cli("predict", record["run"], tmp_path / "new.npy")
    assert refused.exit_code != 0 and "model.pkl" in refused.stderr and "--trust" in refused.stderr
    trusted = cli("predict", record["run"], tmp_path / "new.npy", "--trust")
    assert trusted.exit_code == 0, trusted.stderr
    predicted = [int(line.split(",")[1]) for line in trusted.stdout.strip().splitlines()[1:]]
    fitted = [c["cluster"] for c in record["clusters"]]
    assert len(predicted) == 30 and set(predicted) <= set(fitted) | {-1}


def test_a_saved_gmm_run_predicts_without_trust(cli, runs_dir, tmp_path):
    from sklearn.datasets import load_digits

    run = cli("run", "--dataset", "digits", "--encoder", "pca", "--clusterer", "gmm",
              "--set", "clusterer.covariance_type=diag", "--runs-dir", runs_dir,
              "--no-plots")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    folder = next(runs_dir.iterdir())
    labels = [int(r.split(",")[1]) for r in (folder / "assignments.csv").read_text().split()[1:]]
    images = np.round(load_digits().images[:40] * (255 / 16)).astype(np.uint8)
    np.save(tmp_path / "same.npy", images)
    result = cli("predict", folder, tmp_path / "same.npy")
    assert result.exit_code == 0, result.stderr
    predicted = [int(line.split(",")[1]) for line in result.stdout.strip().splitlines()[1:]]
    assert predicted == labels[:40]


def test_minibatch_kmeans_stopping_settings_reach_the_estimator():
    import imgclust

    stage = imgclust.get_clusterer(
        "minibatch-kmeans", n_clusters=3, max_no_improvement=2, tol=0.01, init_size=90
    )
    features = np.random.default_rng(0).normal(size=(600, 4)).astype(np.float32)
    stage.instance.fit_predict(features)
    estimator = stage.instance.estimator_
    assert (estimator.max_no_improvement, estimator.tol, estimator.init_size) == (2, 0.01, 90)
    with pytest.raises(imgclust.errors.SettingsError, match="max_no_improvement >= 1"):
        imgclust.get_clusterer("minibatch-kmeans", max_no_improvement=0)
    with pytest.raises(imgclust.errors.SettingsError, match="init_size >= 1"):
        imgclust.get_clusterer("minibatch-kmeans", init_size=0)


def test_minibatch_kmeans_documents_every_setting_that_bounds_its_time():
    """Each setting is in the docstring, which is what `imgclust list` and the docs show."""
    import inspect

    from imgclust.plugins.sklearn_clusterers import minibatch_kmeans

    doc = inspect.getdoc(minibatch_kmeans) or ""
    for name in inspect.signature(minibatch_kmeans).parameters:
        assert f"\n{name} : " in doc, name
