"""The ``hdbscan`` clusterer: density clusters of any shape, noise as -1, and new points assigned
with ``hdbscan.approximate_predict``.

The fitted model keeps the prediction data that ``approximate_predict`` needs. The hdbscan
library has no format but pickle (its documented way to keep a fitted model), so ``save``
writes ``model.pkl`` and ``load`` reads it only with ``trust=True``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from imgclust.errors import SettingsError
from imgclust.kit import PickleFormat, SklearnClusterer, hookimpl, lazy_estimator


def approximate_predict(estimator: Any, features: np.ndarray) -> np.ndarray:
    """Labels of new points in the fitted condensed tree (-1 where they fall outside clusters)."""
    import hdbscan

    labels, _strengths = hdbscan.approximate_predict(estimator, features)
    return np.asarray(labels, dtype=np.int64)


def hdbscan_clusterer(
    min_cluster_size: int | float = 25,
    min_samples: int | float | None = None,
    cluster_selection_method: Literal["eom", "leaf"] = "eom",
    cluster_selection_epsilon: float = 0.0,
    metric: str = "euclidean",
) -> SklearnClusterer:
    """HDBSCAN (the hdbscan package): finds the number of clusters itself; noise is -1.

    Parameters
    ----------
    min_cluster_size : int | float
        Smallest group that counts as a cluster: a count (25), or a fraction of the images
        (0.01 for 1%).
    min_samples : int | float | None
        Neighbours that make a point dense, a count or a fraction of the images (default:
        min_cluster_size); small is cheaper.
    cluster_selection_method : str
        eom (excess of mass: fewer, larger clusters) or leaf (many fine clusters).
    cluster_selection_epsilon : float
        Merge clusters closer than this distance.
    metric : str
        Distance between features (any hdbscan metric name).
    """
    if not _count_or_fraction(min_cluster_size, 2):
        raise SettingsError(
            "clusterer 'hdbscan' needs min_cluster_size a count >= 2 or a fraction between 0 "
            f"and 1; got {min_cluster_size!r}."
        )
    if min_samples is not None and not _count_or_fraction(min_samples, 1):
        raise SettingsError(
            "clusterer 'hdbscan' needs min_samples a count >= 1, a fraction between 0 and 1, "
            f"or none; got {min_samples!r}."
        )
    params = dict(
        min_cluster_size=min_cluster_size,
        min_samples=min_samples,
        cluster_selection_method=cluster_selection_method,
        cluster_selection_epsilon=cluster_selection_epsilon,
        metric=metric,
        prediction_data=True,
    )
    return SklearnClusterer(
        lazy_estimator("hdbscan", "HDBSCAN"),
        params,
        k_param=None,
        name="hdbscan",
        predict_with=approximate_predict,
        persist=PickleFormat(),
        counts=("min_cluster_size", "min_samples"),
    )


def _count_or_fraction(value: int | float, smallest: int) -> bool:
    """A whole count of at least ``smallest``, or a fraction strictly between 0 and 1."""
    if isinstance(value, float) and not value.is_integer():
        return 0 < value < 1
    return int(value) >= smallest


@hookimpl
def register_clusterers(register):
    register(
        "hdbscan",
        hdbscan_clusterer,
        summary="HDBSCAN density clusters, noise as -1, no k (assigns new points; saved with "
        "pickle, loaded only when trusted)",
    )
