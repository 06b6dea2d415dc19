"""Per-image confidence and outlier scores: they rank what they claim to rank, on real digits."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits

import imgclust
from imgclust.results.confidence import cluster_quality, image_scores, outlier_threshold
from imgclust.results.metrics import hungarian_match


@pytest.fixture(scope="module")
def digits_kmeans() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    features = digits.data.astype(np.float32) / 16
    labels = KMeans(10, n_init=4, random_state=0).fit_predict(features)
    return features, labels.astype(np.int64), digits.target


def test_confident_images_are_more_often_right(digits_kmeans) -> None:
    features, labels, truth = digits_kmeans
    scores = image_scores(features, labels)
    match = hungarian_match(labels, truth)
    right = np.array([match.get(int(c)) == t for c, t in zip(labels, truth, strict=True)])
    order = np.argsort(scores.confidence)
    low, high = order[: len(order) // 4], order[-len(order) // 4 :]
    assert right[high].mean() > right[low].mean() + 0.15
    assert scores.source == "margin"
    assert ((scores.confidence >= 0) & (scores.confidence <= 1)).all()


def test_planted_noise_images_score_as_outliers(digits_kmeans) -> None:
    features, _, _ = digits_kmeans
    rng = np.random.default_rng(0)
    planted = rng.random((20, features.shape[1])).astype(np.float32)  # uniform noise "images"
    mixed = np.vstack([features, planted])
    labels = KMeans(10, n_init=4, random_state=0).fit_predict(mixed).astype(np.int64)
    scores = image_scores(mixed, labels)
    top = set(np.argsort(scores.outlier)[-40:])
    found = sum(index in top for index in range(len(features), len(mixed)))
    assert found >= 16  # at least 80% of the planted images in the top 40 of 1,817
    flagged = np.flatnonzero(scores.outlier > outlier_threshold(scores.outlier))
    assert len(flagged) < len(mixed) * 0.05


def test_noise_points_get_no_confidence_and_clusters_list_their_confusions() -> None:
    features = np.array([[0.0], [0.1], [1.0], [1.1], [5.0]])
    labels = np.array([0, 0, 1, 1, -1])
    scores = image_scores(features, labels)
    assert scores.confidence[-1] == 0
    assert list(scores.runner_up[:2]) == [1, 1]
    quality = cluster_quality(labels, scores)
    assert [q["cluster"] for q in quality] == [0, 1]
    assert quality[0]["confused_with"][0]["cluster"] == 1


def test_a_refiner_probability_becomes_the_confidence(digits_kmeans) -> None:
    features, labels, _ = digits_kmeans
    probability = np.linspace(0, 1, len(labels))
    scores = image_scores(features, labels, probability)
    assert scores.source == "refiner probability"
    assert np.allclose(scores.confidence, probability)


def test_a_run_writes_them_beside_each_cluster(tmp_path) -> None:
    run = imgclust.run(
        dataset={"name": "digits", "limit": 400},
        encoders=["pca"],
        clusterer={"name": "kmeans", "n_clusters": 10},
        runs_dir=tmp_path,
        plots=False,
    )
    with open(run.path / "assignments.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "cluster", "label", "confidence", "outlier"]
    assert np.allclose([float(r["confidence"]) for r in rows], run.confidence, atol=1e-4)
    assert np.allclose([float(r["outlier"]) for r in rows], run.outlier, atol=1e-4)
    assert run.metrics["confidence"]["source"] == "margin"
    assert len(run.metrics["cluster_quality"]) == run.metrics["n_clusters"]
    ids, clusters, _ = imgclust.io.outputs.read_assignments(run.path / "assignments.csv")
    assert len(ids) == len(clusters) == 400
