"""Clustering quality: matched accuracy, NMI, ARI and purity against labels; internal scores
without them; and what each cluster holds, as the article reports it.

The scores take scikit-learn's argument order, ``(labels_true, labels_pred)``::

    from imgclust.results.metrics import clustering_accuracy, external_scores
    clustering_accuracy(y, run.labels); external_scores(y, run.labels)["nmi"]

Noise (cluster -1) is never matched to a class: its points count as wrong.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

NOISE = -1
SILHOUETTE_SAMPLE = 10_000
NEAR = 1e-6  # feature vectors closer than this, relative to their scale, are one point


class DegenerateWarning(UserWarning):
    """The features cannot support the clusters: internal scores are left out (None)."""


def n_clusters(labels: np.ndarray) -> int:
    """How many clusters ``labels`` name: 0, 1, ... count; noise (-1) does not."""
    labels = np.asarray(labels)
    return int(len(np.unique(labels[labels >= 0])))


def contingency(
    clusters: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of (cluster, class), noise excluded, with the cluster ids and class ids."""
    clusters = np.asarray(clusters)
    labels = np.asarray(labels)
    cluster_ids = np.unique(clusters[clusters != NOISE])
    class_ids = np.unique(labels)
    table = np.zeros((len(cluster_ids), len(class_ids)), dtype=np.int64)
    keep = clusters != NOISE
    rows = np.searchsorted(cluster_ids, clusters[keep])
    cols = np.searchsorted(class_ids, labels[keep])
    np.add.at(table, (rows, cols), 1)
    return table, cluster_ids, class_ids


def hungarian_match(clusters: np.ndarray, labels: np.ndarray) -> dict[int, Any]:
    """The one-to-one cluster-to-class matching that maximises agreement."""
    from scipy.optimize import linear_sum_assignment

    table, cluster_ids, class_ids = contingency(clusters, labels)
    if table.size == 0:
        return {}
    rows, cols = linear_sum_assignment(-table)
    return {int(cluster_ids[r]): class_ids[c].item() for r, c in zip(rows, cols, strict=True)}


def clustering_accuracy(
    labels_true: Any = None,
    labels_pred: Any = None,
    *,
    labels: Any = None,
    clusters: Any = None,
) -> float:
    """Accuracy under the best one-to-one matching of clusters to classes (any counts of each).

    Arguments in scikit-learn's order: ``labels_true`` (the classes), ``labels_pred`` (the
    clusters, -1 for noise); the keywords ``labels=`` and ``clusters=`` still work.
    """
    labels_true, labels_pred = _true_and_predicted(labels_true, labels_pred, labels, clusters)
    table, _, _ = contingency(labels_pred, labels_true)
    if table.size == 0:
        return 0.0
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / len(labels_true))


def purity(
    labels_true: Any = None,
    labels_pred: Any = None,
    *,
    labels: Any = None,
    clusters: Any = None,
) -> float:
    """Share of points whose cluster's majority class is their own (noise counts as wrong);
    arguments as :func:`clustering_accuracy`'s."""
    labels_true, labels_pred = _true_and_predicted(labels_true, labels_pred, labels, clusters)
    table, _, _ = contingency(labels_pred, labels_true)
    return float(table.max(axis=1).sum() / len(labels_true)) if table.size else 0.0


def external_scores(
    labels_true: Any = None,
    labels_pred: Any = None,
    *,
    labels: Any = None,
    clusters: Any = None,
) -> dict[str, float]:
    """ACC, NMI, ARI and purity of clusters (``labels_pred``) against classes (``labels_true``),
    in scikit-learn's argument order; the keywords ``labels=`` and ``clusters=`` still work."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels_true, labels_pred = _true_and_predicted(labels_true, labels_pred, labels, clusters)
    return {
        "acc": clustering_accuracy(labels_true, labels_pred),
        "nmi": float(normalized_mutual_info_score(labels_true, labels_pred)),
        "ari": float(adjusted_rand_score(labels_true, labels_pred)),
        "purity": purity(labels_true, labels_pred),
    }


def _true_and_predicted(
    labels_true: Any, labels_pred: Any, labels: Any, clusters: Any
) -> tuple[np.ndarray, np.ndarray]:
    """(classes, clusters) from scikit-learn's arguments or the older keywords, checked alike."""
    if labels is not None or clusters is not None:
        if labels_true is not None or labels_pred is not None:
            raise TypeError(
                "give labels_true and labels_pred, or the older labels= and clusters=, not both"
            )
        labels_true, labels_pred = labels, clusters
    if labels_true is None or labels_pred is None:
        raise TypeError("needs labels_true (the classes) and labels_pred (the clusters)")
    labels_true, labels_pred = np.asarray(labels_true), np.asarray(labels_pred)
    if labels_true.shape != labels_pred.shape or labels_true.ndim != 1:
        raise ValueError(
            f"labels_true and labels_pred must be two (N,) arrays of one length; got "
            f"{labels_true.shape} and {labels_pred.shape}"
        )
    return labels_true, labels_pred


def internal_scores(
    features: np.ndarray,
    clusters: np.ndarray,
    *,
    seed: int = 0,
    sample_size: int = SILHOUETTE_SAMPLE,
) -> dict[str, float | None]:
    """Silhouette (on a fixed-seed sample when large), Davies-Bouldin and Calinski-Harabasz.

    Noise points are left out; with fewer than two clusters the scores are undefined (None).
    """
    from sklearn.metrics import (
        calinski_harabasz_score,
        davies_bouldin_score,
        silhouette_score,
    )

    keep = clusters != NOISE
    x, y = features[keep], clusters[keep]
    n_clusters = len(np.unique(y))
    if n_clusters < 2 or n_clusters >= len(y) or degeneracy(x, y, seed=seed) is not None:
        return {"silhouette": None, "davies_bouldin": None, "calinski_harabasz": None}
    sample = min(sample_size, len(y))
    return {
        "silhouette": float(silhouette_score(x, y, sample_size=sample, random_state=seed)),
        "davies_bouldin": float(davies_bouldin_score(x, y)),
        "calinski_harabasz": float(calinski_harabasz_score(x, y)),
    }


def degeneracy(
    features: np.ndarray, clusters: np.ndarray | None = None, *, seed: int = 0
) -> str | None:
    """Why clusters of these features mean nothing, or None: the features have (near) zero
    spread, or there are fewer distinct feature vectors than clusters (noise left out).

    Points closer than :data:`NEAR` times the features' scale count as one, so clusters that
    only split floating-point noise are caught.
    """
    features = np.asarray(features)
    if clusters is not None:
        clusters = np.asarray(clusters)
        features = features[clusters != NOISE]
        clusters = clusters[clusters != NOISE]
    if features.ndim != 2 or len(features) < 2 or not np.isfinite(features).all():
        return None
    step = NEAR * max(1.0, float(np.abs(features).max()))
    spread = float((features.max(axis=0) - features.min(axis=0)).max())
    if spread <= step:
        return (
            f"the {len(features)} feature vectors are all the same point (spread {spread:.2g}): "
            "the images (or their features) do not differ, so clusters split only rounding noise"
        )
    if clusters is None:
        return None
    wanted = len(np.unique(clusters))
    distinct = _distinct_rows(features, step, wanted, seed)
    if distinct < wanted:
        return (
            f"only {distinct} distinct feature vectors for {wanted} clusters: the extra clusters "
            "split identical points"
        )
    return None


def _distinct_rows(features: np.ndarray, step: float, enough: int, seed: int) -> int:
    """Distinct rows on a grid of ``step`` (at least ``enough`` once a sample shows that many).

    Rows are counted on two grids, one with cells centred on multiples of ``step`` and one
    with cells starting there, and the smaller count wins, so tight groups of points sitting on
    one grid's cell boundaries (noise around 0) still count once.
    """
    if len(features) > SILHOUETTE_SAMPLE:
        index = np.random.default_rng(seed).choice(len(features), SILHOUETTE_SAMPLE, replace=False)
        found = _grid_count(features[np.sort(index)], step)
        if found >= enough:
            return found
    return _grid_count(features, step)


def _grid_count(features: np.ndarray, step: float) -> int:
    scaled = np.asarray(features, dtype=np.float64) / step
    return min(len(np.unique(np.round(scaled), axis=0)), len(np.unique(np.floor(scaled), axis=0)))


def composition(
    clusters: np.ndarray, labels: np.ndarray | None = None, class_names: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Each cluster, largest first (noise last): its size and classes with counts, largest first."""
    clusters = np.asarray(clusters)
    sizes = Counter(clusters.tolist())
    order = sorted(sizes, key=lambda c: (c == NOISE, -sizes[c], c))
    result = []
    for cluster in order:
        entry: dict[str, Any] = {"cluster": int(cluster), "size": int(sizes[cluster])}
        if labels is not None:
            held = Counter(np.asarray(labels)[clusters == cluster].tolist())
            entry["classes"] = [
                {"label": _label_name(label, class_names), "count": int(count)}
                for label, count in sorted(held.items(), key=lambda kv: (-kv[1], str(kv[0])))
            ]
        result.append(entry)
    return result


def _label_name(label: Any, class_names: Sequence[str] | None) -> str:
    if (
        class_names is not None
        and isinstance(label, (int, np.integer))
        and 0 <= label < len(class_names)
    ):
        return str(class_names[int(label)])
    return str(label)


def describe_cluster(entry: dict[str, Any]) -> str:
    """'cluster 6: 46 images: 22 x 4, 14 x 9, 7 x 7, 1 x 5', the article's way of putting it."""
    name = "noise" if entry["cluster"] == NOISE else f"cluster {entry['cluster']}"
    text = f"{name}: {entry['size']} image{'s' if entry['size'] != 1 else ''}"
    if entry.get("classes"):
        text += ": " + ", ".join(f"{c['count']} x {c['label']}" for c in entry["classes"])
    return text
