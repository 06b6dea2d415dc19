"""Clustering quality, public: matched accuracy, NMI, ARI and purity against labels (in
scikit-learn's order, ``labels_true`` then ``labels_pred``), and internal scores without labels."""

from __future__ import annotations

from imgclust.results.metrics import (
    clustering_accuracy,
    contingency,
    external_scores,
    hungarian_match,
    internal_scores,
    n_clusters,
    purity,
)

__all__ = [
    "clustering_accuracy",
    "contingency",
    "external_scores",
    "hungarian_match",
    "internal_scores",
    "n_clusters",
    "purity",
]
