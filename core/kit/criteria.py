"""Neighbour information: an unsupervised score that compares clusterings of the same points.

Likelihood and inertia prefer a clustering that fits the points' shape, even one that merges two
groups and splits another; a clustering that agrees with each point's nearest neighbours keeps
dense groups whole. Stages use it to choose between starts, rounds or a refiner and its start.
"""

from __future__ import annotations

import numpy as np

#: points (a seeded sample) whose neighbours are compared: enough for a stable score on any set
NEIGHBOUR_POINTS = 5000
#: nearest neighbours compared per point
NEIGHBOURS = 10


def neighbour_pairs(
    features: np.ndarray,
    seed: int,
    points: int = NEIGHBOUR_POINTS,
    neighbours: int = NEIGHBOURS,
) -> np.ndarray:
    """(point, neighbour) index pairs, shape (P * k, 2): each of a seeded sample of at most
    ``points`` rows and its ``neighbours`` nearest other rows of that sample."""
    from sklearn.neighbors import NearestNeighbors

    n = len(features)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, points, replace=False)) if n > points else np.arange(n)
    k = min(neighbours, len(sample) - 1)
    if k < 1:
        return np.empty((0, 2), dtype=np.int64)
    rows = np.asarray(features[sample], dtype=np.float32)
    found = NearestNeighbors(n_neighbors=k + 1).fit(rows).kneighbors(rows, return_distance=False)
    return np.stack([np.repeat(sample, k), sample[found[:, 1:]].ravel()], axis=1)


def neighbour_information(labels: np.ndarray, pairs: np.ndarray) -> float:
    """Mutual information (nats) between a point's cluster and its neighbours' clusters: at most
    the labels' entropy, so merging clusters lowers it, and so do boundaries through dense
    regions."""
    from sklearn.metrics import mutual_info_score

    if len(pairs) == 0:
        return 0.0
    labels = np.asarray(labels)
    return float(mutual_info_score(labels[pairs[:, 0]], labels[pairs[:, 1]]))
