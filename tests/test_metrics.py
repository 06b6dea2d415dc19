"""Clustering metrics: Hungarian accuracy, noise, purity, internal scores, cluster make-up."""

from __future__ import annotations

import numpy as np
import pytest

from imgclust.metrics import (
    clustering_accuracy,
    composition,
    describe_cluster,
    external_scores,
    hungarian_match,
    internal_scores,
    purity,
)


def test_accuracy_is_invariant_to_cluster_names():
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert clustering_accuracy(np.array([5, 5, 3, 3, 9, 9]), labels) == 1.0
    assert clustering_accuracy(np.array([5, 5, 3, 3, 3, 9]), labels) == pytest.approx(5 / 6)


def test_accuracy_with_more_clusters_than_classes():
    labels = np.array([0, 0, 0, 0, 1, 1])
    clusters = np.array([0, 0, 1, 1, 2, 2])
    # one of clusters 0/1 can match class 0, cluster 2 matches class 1: 4 of 6
    assert clustering_accuracy(clusters, labels) == pytest.approx(4 / 6)
    assert purity(clusters, labels) == 1.0


def test_accuracy_with_fewer_clusters_than_classes():
    labels = np.array([0, 1, 2, 3])
    assert clustering_accuracy(np.array([0, 0, 1, 1]), labels) == 0.5


def test_noise_counts_as_wrong():
    labels = np.array([0, 0, 1, 1])
    clusters = np.array([0, -1, 1, -1])
    assert clustering_accuracy(clusters, labels) == 0.5
    assert purity(clusters, labels) == 0.5
    assert -1 not in hungarian_match(clusters, labels)


def test_external_scores_on_perfect_clustering():
    labels = np.repeat(np.arange(3), 10)
    scores = external_scores(labels + 7, labels)
    assert scores == {
        "acc": 1.0,
        "nmi": pytest.approx(1.0),
        "ari": pytest.approx(1.0),
        "purity": 1.0,
    }


def test_string_labels_work():
    labels = np.array(["cat", "cat", "dog", "dog"])
    assert clustering_accuracy(np.array([1, 1, 0, 0]), labels) == 1.0


def test_internal_scores_separate_good_from_bad_clusterings():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 0.1, (50, 2)), rng.normal(5, 0.1, (50, 2))])
    good = np.repeat([0, 1], 50)
    bad = rng.integers(0, 2, 100)
    good_scores = internal_scores(features, good)
    assert good_scores["silhouette"] > 0.9 > internal_scores(features, bad)["silhouette"]
    assert good_scores["davies_bouldin"] < internal_scores(features, bad)["davies_bouldin"]


def test_internal_scores_are_undefined_for_one_cluster():
    features = np.zeros((10, 2))
    assert internal_scores(features, np.zeros(10, dtype=int))["silhouette"] is None


def test_composition_lists_largest_first_with_noise_last():
    clusters = np.array([2, 2, 2, -1, 0, 0, 1, -1, -1, -1])
    labels = np.array([4, 4, 9, 1, 7, 7, 5, 1, 1, 2])
    entries = composition(clusters, labels)
    assert [e["cluster"] for e in entries] == [2, 0, 1, -1]
    assert entries[0]["classes"] == [{"label": "4", "count": 2}, {"label": "9", "count": 1}]
    assert describe_cluster(entries[0]) == "cluster 2: 3 images: 2 x 4, 1 x 9"
    assert describe_cluster(entries[-1]).startswith("noise: 4 images: 3 x 1")
