"""Clusterers from scikit-learn, each wrapped by the one adapter in core.

``kmeans``, ``minibatch-kmeans`` and ``gmm`` assign new points and save as plain arrays;
``agglomerative``, ``spectral`` and ``dbscan`` only label the points they were fitted on.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any, Literal

from imgclust.errors import DataError, SettingsError
from imgclust.kit import SELECT, NeighbourSelected, SklearnClusterer, hookimpl, lazy_estimator

# Leave this share of the free memory for everything else when a method needs an N x N matrix.
MEMORY_SHARE = 0.5


def kmeans(
    n_clusters: int = 10, n_init: int = 10, max_iter: int = 300, seed: int = 0
) -> SklearnClusterer:
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
    _positive("kmeans", n_clusters=n_clusters, n_init=n_init, max_iter=max_iter)
    params = dict(n_clusters=n_clusters, n_init=n_init, max_iter=max_iter, random_state=seed)
    return SklearnClusterer(lazy_estimator("sklearn.cluster", "KMeans"), params, name="kmeans")


def minibatch_kmeans(
    n_clusters: int = 10,
    batch_size: int = 4096,
    n_init: int = 3,
    max_iter: int = 100,
    max_no_improvement: int = 5,
    tol: float = 0.0,
    init_size: int | None = None,
    seed: int = 0,
) -> SklearnClusterer:
    """k-means on mini-batches: much faster than ``kmeans`` on large data, slightly worse.

    Parameters
    ----------
    n_clusters : int
        Number of clusters.
    batch_size : int
        Points per mini-batch (4,096: each step has a fixed cost, so larger batches fit 1,000,000
        points about 3x faster than 1,024 with the same inertia; see docs/benchmarks.md).
    n_init : int
        Starts tried; the one with the lowest inertia is kept.
    max_iter : int
        Passes over the data at most.
    max_no_improvement : int
        Stop after this many mini-batches in a row without a better smoothed inertia (5:
        scikit-learn's 10 took 1.2-1.6x the steps on 1,000,000 x 50 blobs and MNIST's pca
        features, for inertia within 0.07% of it on every seed; 3 lost up to 0.4%; see
        docs/benchmarks.md).
    tol : float
        Stop when the centres move less than this (relative to the data's variance); 0 turns the
        test off, as in scikit-learn.
    init_size : int or None
        Points each start is chosen from (k-means++ on a random sample of this many); None:
        3 x batch_size, scikit-learn's. A larger sample costs more time per start.
    seed : int
        Seed of the starts and the batches.
    """
    _positive(
        "minibatch-kmeans",
        n_clusters=n_clusters,
        batch_size=batch_size,
        n_init=n_init,
        max_iter=max_iter,
        max_no_improvement=max_no_improvement,
        **({} if init_size is None else {"init_size": init_size}),
    )
    if not tol >= 0:
        raise SettingsError(f"clusterer 'minibatch-kmeans' needs tol >= 0; got {tol}.")
    params = dict(
        n_clusters=n_clusters,
        batch_size=batch_size,
        n_init=n_init,
        max_iter=max_iter,
        max_no_improvement=max_no_improvement,
        tol=tol,
        init_size=init_size,
        random_state=seed,
    )
    return SklearnClusterer(
        lazy_estimator("sklearn.cluster", "MiniBatchKMeans"), params, name="minibatch-kmeans"
    )


def gmm(
    n_clusters: int = 10,
    covariance_type: Literal["full", "tied", "diag", "spherical"] = "full",
    n_init: int = 1,
    max_iter: int = 200,
    init: Literal["kmeans", "k-means++", "random", "random_from_data"] = "kmeans",
    reg_covar: float = 1e-6,
    select: Literal["likelihood", "neighbours"] = "likelihood",
    seed: int = 0,
) -> SklearnClusterer:
    """Gaussian mixture fitted by EM: clusters of any orientation and spread (N2D's clusterer).

    Parameters
    ----------
    n_clusters : int
        Number of mixture components (scikit-learn's ``n_components``).
    covariance_type : str
        Shape of each component: full, tied, diag or spherical.
    n_init : int
        EM runs from different starts; ``select`` says which is kept.
    max_iter : int
        EM iterations per run.
    init : str
        How each run starts: kmeans, k-means++, random or random_from_data.
    reg_covar : float
        Added to the covariance diagonals so they stay invertible.
    select : str
        Which start is kept: ``likelihood`` (scikit-learn's), or ``neighbours``: the likeliest
        unless another's clusters agree clearly more (by over 1%) with each point's 10 nearest
        neighbours (in a sample of 5,000); that keeps dense groups whole where likelihood
        prefers merging two and splitting a third.
    seed : int
        Seed of the starts.
    """
    _positive("gmm", n_clusters=n_clusters, n_init=n_init, max_iter=max_iter)
    if reg_covar < 0:
        raise SettingsError("clusterer 'gmm' needs reg_covar >= 0.")
    if select not in SELECT:
        raise SettingsError(f"clusterer 'gmm' has no select {select!r}: use {' or '.join(SELECT)}.")
    params = dict(
        n_components=n_clusters,
        covariance_type=covariance_type,
        n_init=n_init,
        max_iter=max_iter,
        init_params=init,
        reg_covar=reg_covar,
        random_state=seed,
    )
    adapter = NeighbourSelected if select == "neighbours" else SklearnClusterer
    return adapter(
        lazy_estimator("sklearn.mixture", "GaussianMixture"),
        params,
        k_param="n_components",
        name="gmm",
    )


def agglomerative(
    n_clusters: int = 10,
    linkage: Literal["ward", "complete", "average", "single"] = "ward",
    connectivity: int = 0,
) -> SklearnClusterer:
    """Agglomerative (hierarchical) clustering; labels only the points it was fitted on.

    Parameters
    ----------
    n_clusters : int
        Number of clusters where the tree is cut.
    linkage : str
        Merge criterion: ward, complete, average or single.
    connectivity : int
        Merge only among this many nearest neighbours (sparse, fits large data); 0 = all pairs.
    """
    _positive("agglomerative", n_clusters=n_clusters)
    if connectivity < 0:
        raise SettingsError("clusterer 'agglomerative' needs connectivity >= 0 (0 = all pairs).")
    params = dict(n_clusters=n_clusters, linkage=linkage, connectivity=connectivity)

    check = partial(_agglomerative_fits, connectivity, linkage)  # a partial pickles; a closure not
    return SklearnClusterer(_agglomerative, params, name="agglomerative", check=check)


def _agglomerative_fits(connectivity: int, linkage: str, features: Any) -> None:
    """Refuse, before allocating, a full distance matrix that would not fit in memory."""
    if connectivity == 0 and linkage != "single":
        _fits_in_memory("agglomerative", len(features), "set clusterer.connectivity=15")


def _agglomerative(connectivity: int = 0, **params: Any) -> Any:
    from sklearn.cluster import AgglomerativeClustering

    if connectivity:
        from functools import partial

        from sklearn.neighbors import kneighbors_graph

        params["connectivity"] = partial(
            kneighbors_graph, n_neighbors=connectivity, include_self=False
        )
    return AgglomerativeClustering(**params)


def spectral(
    n_clusters: int = 10,
    affinity: Literal["nearest_neighbors", "rbf"] = "nearest_neighbors",
    n_neighbors: int = 10,
    assign_labels: Literal["cluster_qr", "kmeans", "discretize"] = "cluster_qr",
    seed: int = 0,
) -> SklearnClusterer:
    """Spectral clustering of a neighbour graph; labels only the points it was fitted on.

    Parameters
    ----------
    n_clusters : int
        Number of clusters.
    affinity : str
        nearest_neighbors (a sparse graph, fits large data) or rbf (a dense N x N kernel).
    n_neighbors : int
        Neighbours per point in the nearest_neighbors graph.
    assign_labels : str
        How the spectral embedding becomes labels: cluster_qr, kmeans or discretize.
    seed : int
        Seed of the eigen-solver and the label assignment.
    """
    _positive("spectral", n_clusters=n_clusters, n_neighbors=n_neighbors)
    params = dict(
        n_clusters=n_clusters,
        affinity=affinity,
        n_neighbors=n_neighbors,
        assign_labels=assign_labels,
        random_state=seed,
    )

    check = partial(_spectral_fits, affinity, n_neighbors, n_clusters)

    return SklearnClusterer(
        lazy_estimator("sklearn.cluster", "SpectralClustering"),
        params,
        name="spectral",
        check=check,
    )


def dbscan(eps: float = 0.5, min_samples: int = 5, metric: str = "euclidean") -> SklearnClusterer:
    """DBSCAN: dense regions become clusters, the rest noise (-1); the count is not set.

    Parameters
    ----------
    eps : float
        Radius of a point's neighbourhood, in feature units.
    min_samples : int
        Neighbours (itself included) that make a point a core point.
    metric : str
        Distance between features (any scikit-learn metric name).
    """
    if eps <= 0:
        raise SettingsError("clusterer 'dbscan' needs eps > 0.")
    _positive("dbscan", min_samples=min_samples)
    params = dict(eps=eps, min_samples=min_samples, metric=metric)
    return SklearnClusterer(
        lazy_estimator("sklearn.cluster", "DBSCAN"), params, k_param=None, name="dbscan"
    )


def _positive(name: str, **values: int) -> None:
    for key, value in values.items():
        if value < 1:
            raise SettingsError(f"clusterer {name!r} needs {key} >= 1; got {value}.")


def _spectral_fits(affinity: str, n_neighbors: int, n_clusters: int, features: Any) -> None:
    """Refuse an affinity matrix that would not fit in memory, or too few points for it."""
    if n_clusters >= len(features):  # the eigensolver needs more points than clusters
        raise DataError(
            f"clusterer 'spectral' needs more images than clusters; got {len(features)} for "
            f"n_clusters={n_clusters}: lower clusterer.n_clusters."
        )
    if affinity == "rbf":
        _fits_in_memory("spectral", len(features), "set clusterer.affinity=nearest_neighbors")
    if affinity == "nearest_neighbors" and n_neighbors >= len(features):
        raise DataError(
            f"clusterer 'spectral' needs more than n_neighbors={n_neighbors} points; "
            f"got {len(features)}: lower clusterer.n_neighbors."
        )


def _fits_in_memory(name: str, n: int, fix: str) -> None:
    """Refuse an N x N float64 matrix that would not fit, with the way around it."""
    needed = n * (n - 1) / 2 * 8
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return
    if needed > MEMORY_SHARE * free:
        raise DataError(
            f"clusterer {name!r} on {n} points needs about {needed / 2**30:.1f} GiB for pairwise "
            f"distances ({free / 2**30:.1f} GiB free): {fix}, or use kmeans or gmm."
        )


@hookimpl
def register_clusterers(register):
    register("kmeans", kmeans, summary="k-means with k-means++ starts (assigns new points)")
    register(
        "minibatch-kmeans",
        minibatch_kmeans,
        summary="k-means on mini-batches, fast on large data (assigns new points)",
    )
    register(
        "gmm", gmm, summary="Gaussian mixture, full covariance by default (assigns new points)"
    )
    register(
        "agglomerative",
        agglomerative,
        summary="hierarchical clustering, ward linkage (cannot assign new points)",
    )
    register(
        "spectral",
        spectral,
        summary="spectral clustering of a neighbour graph (cannot assign new points)",
    )
    register(
        "dbscan",
        dbscan,
        summary="density clusters, the rest noise; no k (cannot assign new points)",
    )
