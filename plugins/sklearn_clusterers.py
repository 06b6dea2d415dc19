"""Clusterers from scikit-learn, each wrapped by the one adapter in core."""

from __future__ import annotations

from imgclust.hookspecs import hookimpl
from imgclust.sklearn_adapter import SklearnClusterer, lazy_estimator


def kmeans(n_clusters: int = 10, n_init: int = 10, max_iter: int = 300, seed: int = 0) -> SklearnClusterer:
    """k-means (Lloyd) with k-means++ starts: the article's clusterer.

    Parameters
    ----------
    n_clusters : int
        Number of clusters.
    n_init : int
        Runs from different starts; the one with the lowest inertia is kept.
    max_iter : int
        Iterations per run.
    seed : int
        Seed of the starts.
    """
    params = dict(n_clusters=n_clusters, n_init=n_init, max_iter=max_iter, random_state=seed)
    return SklearnClusterer(lazy_estimator("sklearn.cluster", "KMeans"), params, name="kmeans")


@hookimpl
def register_clusterers(register):
    register("kmeans", kmeans, summary="k-means with k-means++ starts (assigns new points)")
