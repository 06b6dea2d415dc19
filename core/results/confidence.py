"""How sure each image's cluster is, and how far each image lies from its cluster's members.

Both come from the clustered features and the labels alone, so every clusterer gets them:
the confidence is the margin between the nearest and the second-nearest cluster centre, the
outlier score an image's distance to its own centre over its cluster's median distance. A
refiner's classifier probability replaces the margin where the run has one (a mixture's
posterior does not: in UMAP space almost all of them are 1.0, which ranks nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

NOISE = -1
ROWS_PER_BLOCK = 8192  # distances to the centres are computed this many images at a time
CONFUSED_WITH = 3  # the clusters listed as most often confused with each cluster


@dataclass
class ImageScores:
    """Per image: confidence in [0, 1], outlier score (1 is a typical member), runner-up cluster."""

    confidence: np.ndarray  # (N,) float64; 0 for noise
    outlier: np.ndarray  # (N,) float64; distance to the centre over the cluster's median distance
    runner_up: np.ndarray  # (N,) int64; the nearest other cluster, -1 when there is none
    source: str  # "margin" or "refiner probability"


def centres(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cluster ids (noise left out) and the mean feature vector of each, in float64."""
    labels = np.asarray(labels)
    ids = np.unique(labels[labels != NOISE])
    sums = np.zeros((len(ids), features.shape[1]), np.float64)
    counts = np.zeros(len(ids), np.int64)
    for start in range(0, len(labels), ROWS_PER_BLOCK):
        block = np.asarray(features[start : start + ROWS_PER_BLOCK], np.float64)
        kept = labels[start : start + ROWS_PER_BLOCK]
        inside = kept != NOISE
        rows = np.searchsorted(ids, kept[inside])
        np.add.at(sums, rows, block[inside])
        counts += np.bincount(rows, minlength=len(ids))
    return ids, sums / np.maximum(counts, 1)[:, None]


def image_scores(
    features: np.ndarray, labels: np.ndarray, probability: np.ndarray | None = None
) -> ImageScores:
    """Confidence, outlier score and runner-up cluster of every image.

    ``probability``: a refiner's probability of each image's cluster; it becomes the
    confidence (the margin stays behind the runner-up). Noise gets confidence 0 and an outlier
    score against the run's median distance.
    """
    labels = np.asarray(labels, np.int64)
    ids, means = centres(features, labels)
    own, other, runner_up = _nearest(features, labels, ids, means)
    confidence, source = _confidence(own, other, labels, probability)
    return ImageScores(confidence, _outlier_scores(own, labels), runner_up, source)


@dataclass
class RunCentres:
    """A run's cluster centres and each cluster's median distance to its centre: what scores
    new images (``imgclust predict``) exactly as the run scored its own."""

    ids: np.ndarray  # (K,) the run's clusters, noise left out
    means: np.ndarray  # (K, D) float64
    scales: np.ndarray  # (K,) each cluster's median distance of its members to its centre
    noise_scale: float  # the median over every image (noise is scored against it)

    @classmethod
    def of_run(cls, features: np.ndarray, labels: np.ndarray) -> RunCentres:
        """The centres and scales of a run's clustered ``features`` and final ``labels``."""
        labels = np.asarray(labels, np.int64)
        ids, means = centres(features, labels)
        own, _, _ = _nearest(features, labels, ids, means)
        scales = np.array([float(np.median(own[labels == c])) for c in ids], np.float64)
        noise_scale = float(np.median(own)) if len(own) else 0.0
        return cls(ids, means, scales, noise_scale)

    def scores(
        self, features: np.ndarray, labels: np.ndarray, probability: np.ndarray | None = None
    ) -> ImageScores:
        """Confidence and outlier score of new images assigned ``labels``, against the run's
        centres and scales; a cluster the run does not have is scored as noise."""
        labels = np.asarray(labels, np.int64)
        labels = np.where(np.isin(labels, self.ids), labels, NOISE)
        own, other, runner_up = _nearest(features, labels, self.ids, self.means)
        confidence, source = _confidence(own, other, labels, probability)
        scale = np.full(len(labels), self.noise_scale)
        inside = labels != NOISE
        scale[inside] = self.scales[np.searchsorted(self.ids, labels[inside])]
        with np.errstate(invalid="ignore", divide="ignore"):
            outlier = np.where(scale > 0, own / np.where(scale > 0, scale, 1.0), 0.0)
        outlier = np.where(scale > 0, outlier, np.where(own > 0, np.inf, 1.0))
        return ImageScores(
            confidence, np.minimum(outlier, np.finfo(np.float64).max), runner_up, source
        )


def _nearest(
    features: np.ndarray, labels: np.ndarray, ids: np.ndarray, means: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image: the distance to its own centre (noise: the nearest), to the nearest other
    centre (inf when there is none) and that other cluster (-1 when none)."""
    n = len(labels)
    own = np.zeros(n)
    other = np.full(n, np.inf)
    runner_up = np.full(n, NOISE, np.int64)
    for start in range(0, n, ROWS_PER_BLOCK):
        stop = min(start + ROWS_PER_BLOCK, n)
        block = np.asarray(features[start:stop], np.float64)
        squared = (
            (block**2).sum(axis=1)[:, None] - 2 * block @ means.T + (means**2).sum(axis=1)[None, :]
        )
        distances = np.sqrt(np.maximum(squared, 0.0))
        kept = labels[start:stop]
        column = np.searchsorted(ids, kept)
        inside = kept != NOISE
        rows = np.arange(stop - start)
        own_block = distances.min(axis=1) if len(ids) else np.zeros(stop - start)
        own_block[inside] = distances[rows[inside], column[inside]]
        own[start:stop] = own_block
        if len(ids) > 1:
            masked = distances.copy()
            masked[rows[inside], column[inside]] = np.inf
            nearest_other = masked.argmin(axis=1)
            other[start:stop] = masked[rows, nearest_other]
            runner_up[start:stop] = ids[nearest_other]
    return own, other, runner_up


def _confidence(
    own: np.ndarray, other: np.ndarray, labels: np.ndarray, probability: np.ndarray | None
) -> tuple[np.ndarray, str]:
    """The margin ``(d2 - d1) / (d2 + d1)``, or a refiner's probability where given; 0 for
    noise. Also which of the two it is."""
    with np.errstate(invalid="ignore", divide="ignore"):
        margin = np.where(np.isfinite(other), (other - own) / (other + own), 1.0)
    margin = np.clip(np.nan_to_num(margin, nan=0.0), 0.0, 1.0)
    margin[labels == NOISE] = 0.0
    if probability is not None and len(probability) == len(labels):
        probability = np.asarray(probability, np.float64)
        return np.where(labels == NOISE, 0.0, np.clip(probability, 0.0, 1.0)), (
            "refiner probability"
        )
    return margin, "margin"


def _outlier_scores(own: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each distance over its cluster's median (noise over the run's median); 0/0 counts as 1."""
    scores = np.ones_like(own)
    for cluster in np.unique(labels):
        members = labels == cluster
        scale = float(np.median(own[members] if cluster != NOISE else own))
        if scale > 0:
            scores[members] = own[members] / scale
        else:  # all members on the centre: any distance at all is unusual
            scores[members] = np.where(own[members] > 0, np.inf, 1.0)
    return np.minimum(scores, np.finfo(np.float64).max)


def outlier_threshold(outlier: np.ndarray) -> float:
    """The outlier score above which an image is flagged: Tukey's far-out fence (third quartile
    plus three interquartile ranges) on the log scores, so it follows the run's own spread."""
    finite = outlier[np.isfinite(outlier) & (outlier > 0)]
    if len(finite) < 4:
        return float("inf")
    low, high = np.percentile(np.log(finite), [25, 75])
    return float(np.exp(high + 3 * (high - low)))


def cluster_quality(labels: np.ndarray, scores: ImageScores) -> list[dict[str, Any]]:
    """Per cluster: its size, cohesion (median confidence of its members) and the clusters it is
    most often confused with (runner-ups weighted by each member's doubt, 1 - confidence)."""
    labels = np.asarray(labels)
    quality = []
    for cluster in np.unique(labels[labels != NOISE]):
        members = labels == cluster
        doubt = 1.0 - scores.confidence[members]
        runners = scores.runner_up[members]
        weights: dict[int, float] = {}
        for runner, weight in zip(runners[runners != NOISE], doubt[runners != NOISE], strict=True):
            weights[int(runner)] = weights.get(int(runner), 0.0) + float(weight)
        total = sum(weights.values())
        ranked = sorted(weights.items(), key=lambda item: (-item[1], item[0]))[:CONFUSED_WITH]
        quality.append(
            {
                "cluster": int(cluster),
                "size": int(members.sum()),
                "cohesion": round(float(np.median(scores.confidence[members])), 4),
                "confused_with": [
                    {"cluster": other, "share": round(weight / total, 4)}
                    for other, weight in ranked
                    if total > 0 and weight > 0
                ],
            }
        )
    return quality
