"""Clustering metrics: Hungarian accuracy, noise, purity, internal scores, cluster make-up."""

from __future__ import annotations

import numpy as np
import pytest

from imgclust.results.metrics import (
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
    assert clustering_accuracy(labels, np.array([5, 5, 3, 3, 9, 9])) == 1.0
    assert clustering_accuracy(labels, np.array([5, 5, 3, 3, 3, 9])) == pytest.approx(5 / 6)


def test_accuracy_with_more_clusters_than_classes():
    labels = np.array([0, 0, 0, 0, 1, 1])
    clusters = np.array([0, 0, 1, 1, 2, 2])
    # one of clusters 0/1 can match class 0, cluster 2 matches class 1: 4 of 6
    assert clustering_accuracy(labels, clusters) == pytest.approx(4 / 6)
    assert purity(labels, clusters) == 1.0


def test_accuracy_with_fewer_clusters_than_classes():
    labels = np.array([0, 1, 2, 3])
    assert clustering_accuracy(labels, np.array([0, 0, 1, 1])) == 0.5


def test_noise_counts_as_wrong():
    labels = np.array([0, 0, 1, 1])
    clusters = np.array([0, -1, 1, -1])
    assert clustering_accuracy(labels, clusters) == 0.5
    assert purity(labels, clusters) == 0.5
    assert -1 not in hungarian_match(clusters, labels)


def test_scores_take_scikit_learns_order_and_the_old_keywords():
    from sklearn.metrics import normalized_mutual_info_score

    truth = np.array([0, 0, 0, 0, 1, 1])
    found = np.array([0, 0, 1, 1, 2, 2])  # purity is not symmetric: 1.0 one way, 4/6 the other
    assert purity(truth, found) == 1.0 and purity(found, truth) == pytest.approx(4 / 6)
    assert purity(labels_true=truth, labels_pred=found) == 1.0
    assert purity(clusters=found, labels=truth) == 1.0  # the keywords of earlier releases
    assert clustering_accuracy(clusters=found, labels=truth) == clustering_accuracy(truth, found)
    scores = external_scores(truth, found)
    assert scores == external_scores(labels=truth, clusters=found)
    assert scores["nmi"] == pytest.approx(normalized_mutual_info_score(truth, found))
    with pytest.raises(TypeError, match="not both"):
        purity(truth, labels=truth)
    with pytest.raises(ValueError, match="one length"):
        external_scores(truth, found[:3])


def test_external_scores_on_perfect_clustering():
    labels = np.repeat(np.arange(3), 10)
    scores = external_scores(labels, labels + 7)
    assert scores == {
        "acc": 1.0,
        "nmi": pytest.approx(1.0),
        "ari": pytest.approx(1.0),
        "purity": 1.0,
    }


def test_string_labels_work():
    labels = np.array(["cat", "cat", "dog", "dog"])
    assert clustering_accuracy(labels, np.array([1, 1, 0, 0])) == 1.0


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
