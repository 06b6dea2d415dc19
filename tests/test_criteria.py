"""Neighbour information (the unsupervised criterion that compares clusterings) and the Gaussian
mixture whose start it chooses: it keeps groups whole where likelihood merges two and splits a
third, and the kept start saves, loads and predicts like any mixture."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import imgclust
from imgclust.errors import SettingsError
from imgclust.kit import NeighbourSelected, neighbour_information, neighbour_pairs
from imgclust.kit.starts import MARGIN, kept_start
from imgclust.plugins.sklearn_clusterers import gmm


@pytest.fixture
def digits(digits_pca: dict) -> dict:
    """Digits' images, PCA 30 features, k-means labels and true classes (conftest)."""
    return digits_pca


@pytest.fixture(scope="module")
def blobs_and_arc() -> tuple[np.ndarray, np.ndarray]:
    """Two round groups side by side and, far off, a thin arc: a mixture's likelihood is higher
    with the two groups as one component and the arc cut in two than with the true three."""
    rng = np.random.default_rng(0)
    left = rng.normal([0, 0], 0.5, (300, 2))
    right = rng.normal([3.0, 0], 0.5, (300, 2))
    angle = rng.uniform(0, 1.5 * np.pi, 600)
    arc = np.stack([30 + 3 * np.cos(angle), 3 * np.sin(angle)], axis=1)
    arc += rng.normal(0, 0.3, arc.shape)
    return np.vstack([left, right, arc]), np.repeat([0, 1, 2], [300, 300, 600])


def test_the_criterion_prefers_the_true_digits_and_punishes_merging(digits):
    """Neighbour information ranks the true classes above k-means (whose boundaries cut through
    dense regions) and falls when clusters merge, down to 0 for one cluster."""
    pairs = neighbour_pairs(digits["features"], seed=0)
    truth, kmeans = digits["truth"], digits["kmeans"]
    score = {
        "truth": neighbour_information(truth, pairs),
        "kmeans": neighbour_information(kmeans, pairs),
        "merged": neighbour_information(np.where(truth == 9, 4, truth), pairs),
        "halves": neighbour_information(truth % 5, pairs),
        "one": neighbour_information(np.zeros_like(truth), pairs),
    }
    assert score["truth"] > score["kmeans"] > score["halves"], score
    assert score["truth"] > score["merged"] > score["halves"] > score["one"] == 0, score


def test_the_criterion_looks_at_a_bounded_sample():
    features = np.random.default_rng(0).normal(size=(12_000, 3)).astype(np.float32)
    pairs = neighbour_pairs(features, seed=1)
    assert pairs.shape == (5000 * 10, 2)
    assert np.array_equal(pairs, neighbour_pairs(features, seed=1))  # the same every time
    assert not np.any(pairs[:, 0] == pairs[:, 1])


def test_the_criterion_of_a_single_point_is_zero():
    pairs = neighbour_pairs(np.zeros((1, 3)), seed=0)
    assert pairs.shape == (0, 2)
    assert neighbour_information(np.zeros(1, dtype=np.int64), pairs) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_neighbours_keep_the_groups_that_likelihood_merges_and_splits(blobs_and_arc, seed):
    points, truth = blobs_and_arc
    settings = dict(n_clusters=3, n_init=10, init="random_from_data", seed=seed)
    by_likelihood = gmm(**settings).fit_predict(points)
    by_neighbours = gmm(**settings, select="neighbours").fit_predict(points)
    assert adjusted_rand_score(truth, by_likelihood) < 0.6
    assert adjusted_rand_score(truth, by_neighbours) > 0.95


def start(information: float, score: float) -> dict[str, float]:
    return {"neighbour_information": information, "score": score}


def test_the_likeliest_start_stays_unless_another_has_clearly_more_information():
    likeliest = start(2.0, 16.0)
    near = start(2.0 * (1 + MARGIN / 2), 15.0)  # a near-equal partition: likelihood decides
    assert kept_start([near, likeliest]) == 1
    clear = start(2.0 * (1 + 2 * MARGIN), 15.5)
    clearer = start(2.0 * (1 + 3 * MARGIN), 14.0)
    assert kept_start([near, likeliest, clear]) == 2
    assert kept_start([clearer, near, likeliest, clear]) == 0  # then the most information
    assert kept_start([start(2.1, 14.0), start(2.1, 15.0), likeliest]) == 1  # a tie: the score
    assert kept_start([near, likeliest], margin=0) == 0  # no margin: the most information


def test_the_kept_start_is_recorded_and_is_a_plain_mixture(blobs_and_arc):
    points, _ = blobs_and_arc
    clusterer = gmm(n_clusters=3, n_init=6, init="random_from_data", select="neighbours", seed=3)
    assert isinstance(clusterer, NeighbourSelected)
    labels = clusterer.fit_predict(points)
    starts = clusterer.starts_
    assert len(starts) == 6 and len({s["seed"] for s in starts}) == 6
    kept = [s for s in starts if s["kept"]]
    assert len(kept) == 1 and kept[0] is starts[kept_start(starts)]
    information = neighbour_information(labels, neighbour_pairs(points, seed=3))
    assert information == pytest.approx(kept[0]["neighbour_information"])
    assert clusterer.estimator_.n_init == 1  # the kept start is a plain one-start mixture
    again = gmm(n_clusters=3, n_init=6, init="random_from_data", select="neighbours", seed=3)
    assert np.array_equal(again.fit_predict(points), labels)  # the seed decides every start


def test_the_kept_start_saves_loads_and_predicts_alike(blobs_and_arc, tmp_path):
    points, _ = blobs_and_arc
    clusterer = gmm(n_clusters=3, n_init=4, select="neighbours", seed=0)
    labels = clusterer.fit_predict(points)
    clusterer.save(tmp_path)
    loaded = gmm(n_clusters=3, n_init=4, select="neighbours", seed=0).load(tmp_path)
    assert np.array_equal(loaded.predict(points), labels)
    assert np.array_equal(clusterer.predict(points), labels)


def test_an_unknown_selection_is_one_line():
    with pytest.raises(SettingsError, match="select 'best'.*likelihood or neighbours"):
        gmm(select="best")  # type: ignore[arg-type]


def test_a_run_with_neighbour_selection_reports_like_any_run(tmp_path):
    result = imgclust.run(
        dataset="digits",
        encoders=[{"name": "pca", "n_components": 10}],
        clusterer={"name": "gmm", "n_clusters": 10, "n_init": 3, "select": "neighbours"},
        runs_dir=tmp_path,
        plots=False,
    )
    assert result.metrics["acc"] > 0.6
    starts = json.loads((result.path / "metrics.json").read_text())["clusterer_starts"]
    assert len(starts) == 3 and sum(start["kept"] for start in starts) == 1
    assert {"seed", "neighbour_information", "score"} <= set(starts[0])
    images = result.data.images[:50]
    assert np.array_equal(imgclust.load(result.path).predict(images), result.labels[:50])
