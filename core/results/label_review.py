"""Label review: images whose given label disagrees with their nearest neighbours and with their
cluster, ranked, so a person checks the likely mislabelled ones first.

Neighbours are found in the clustered features (projected to a few principal components when
they are wide) among a seeded sample of at most 5,000 images, so 70,000 images take seconds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

NEIGHBOURS = 10
NARROW = 16  # features wider than this are projected to this many principal components first
REFERENCE = 5_000  # neighbours are looked for among at most this many images (a seeded sample)


@dataclass
class LabelReview:
    """Per image: the share of its neighbours that share its label, and whether its cluster's
    most common label differs; ``order`` ranks the images, most doubtful first."""

    agreement: np.ndarray  # (N,) in [0, 1]
    cluster_disagrees: np.ndarray  # (N,) bool
    suggested: np.ndarray  # (N,) object: the neighbours' most common label
    order: np.ndarray  # (N,) indices, most doubtful first

    @property
    def doubt(self) -> np.ndarray:
        """1 - agreement, plus a half when the cluster's majority label differs too."""
        return (1.0 - self.agreement) + 0.5 * self.cluster_disagrees

    def flagged(self) -> np.ndarray:
        """Indices (ranked) of images whose label most neighbours and their cluster reject."""
        doubtful = (self.agreement < 0.5) & self.cluster_disagrees
        return self.order[doubtful[self.order]]


def review_labels(
    features: np.ndarray, clusters: np.ndarray, labels: np.ndarray, seed: int = 0
) -> LabelReview:
    """Rank every image by how much its given label disagrees with its neighbours and cluster."""
    from sklearn.neighbors import NearestNeighbors

    labels = np.asarray(labels)
    clusters = np.asarray(clusters)
    n = len(labels)
    k = min(NEIGHBOURS, n - 1)
    if k < 1:
        empty = np.zeros(n)
        return LabelReview(empty + 1, empty.astype(bool), labels.copy(), np.arange(n))
    reference = np.arange(n)
    if n > REFERENCE:
        reference = np.sort(np.random.default_rng(seed).choice(n, REFERENCE, False))
    points = _narrow(np.asarray(features, np.float32), reference, seed)
    index = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(points[reference])
    found = reference[index.kneighbors(points, return_distance=False)]
    neighbours = _without_self(found, k)
    neighbour_labels = labels[neighbours]
    agreement = (neighbour_labels == labels[:, None]).mean(axis=1)
    suggested = np.array(
        [Counter(row.tolist()).most_common(1)[0][0] for row in neighbour_labels], dtype=object
    )
    majority = _cluster_majority(clusters, labels)
    pairs = zip(clusters.tolist(), labels.tolist(), strict=True)
    cluster_disagrees = np.array([c in majority and majority[c] != y for c, y in pairs])
    doubt = (1.0 - agreement) + 0.5 * cluster_disagrees
    order = np.lexsort((np.arange(len(doubt)), -doubt))
    return LabelReview(agreement, cluster_disagrees, suggested, order)


def _without_self(found: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` neighbours of each row that are not the image itself."""
    own = found == np.arange(len(found))[:, None]
    own[~own.any(axis=1), -1] = True  # an image outside the sample drops its farthest instead
    return found[~own].reshape(len(found), k)


def _narrow(points: np.ndarray, reference: np.ndarray, seed: int) -> np.ndarray:
    """The points, or their first :data:`NARROW` principal components (fitted on the reference
    sample) when they are wider."""
    if points.shape[1] <= NARROW or len(reference) <= NARROW:
        return points
    from sklearn.decomposition import PCA

    pca = PCA(NARROW, svd_solver="randomized", random_state=seed).fit(points[reference])
    return pca.transform(points).astype(np.float32)


def _cluster_majority(clusters: np.ndarray, labels: np.ndarray) -> dict[int, Any]:
    """Each cluster's most common given label (noise has none)."""
    majority: dict[int, Any] = {}
    for cluster in np.unique(clusters[clusters >= 0]):
        counts = Counter(labels[clusters == cluster].tolist())
        majority[int(cluster)] = counts.most_common(1)[0][0]
    return majority
