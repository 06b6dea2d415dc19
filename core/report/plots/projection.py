"""The clustered features in two dimensions for ``map.png``: UMAP or PCA on a fixed-seed sample,
so that 70,000 points cost seconds (PCA) or tens of seconds (UMAP), not minutes.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from imgclust.kit.arrays import sample_index
from imgclust.kit.umap import import_umap
from imgclust.report.plots.options import PlotOptions

UMAP_MIN_POINTS = 50  # fewer points than this: UMAP has too few neighbours, PCA is used
UMAP_INPUT_DIMS = 50  # wider features are first reduced to this by PCA (faster neighbours)


@dataclass
class Projection:
    """Where each sampled point lands: ``xy`` (n, 2) for rows ``index`` of the features."""

    xy: np.ndarray
    index: np.ndarray
    method: str  # "UMAP", "PCA" or "features" (already two-dimensional)
    axis_labels: tuple[str, str]
    note: str = ""


def choose_method(requested: str, n_points: int) -> tuple[str, str]:
    """The method to use and, when it differs from the request, why."""
    if requested == "pca":
        return "pca", ""
    installed = importlib.util.find_spec("umap") is not None
    if not installed:
        return "pca", "" if requested == "auto" else "umap-learn is not installed: PCA instead"
    if n_points < UMAP_MIN_POINTS:
        return "pca", f"too few points for UMAP ({n_points}): PCA instead"
    return "umap", ""


def project(features: np.ndarray, options: PlotOptions, seed: int = 0) -> Projection:
    """Project (a sample of) the features to 2-D with the method the options ask for."""
    n, width = len(features), int(np.prod(features.shape[1:]))
    if width <= 2:
        index = sample_index(n, options.pca_sample, seed)
        xy = np.asarray(features[index], dtype=np.float32).reshape(len(index), -1)
        if width == 1:
            xy = np.column_stack([xy[:, 0], np.zeros(len(xy), dtype=np.float32)])
        return Projection(xy, index, "features", ("feature 1", "feature 2" if width == 2 else ""))
    method, note = choose_method(options.map_method, n)
    limit = options.umap_sample if method == "umap" else options.pca_sample
    index = sample_index(n, limit, seed)
    x = np.asarray(features[index], dtype=np.float32).reshape(len(index), -1)
    if method == "umap":
        return Projection(umap_2d(x, seed), index, "UMAP", ("UMAP 1", "UMAP 2"), note)
    xy, shares = pca_2d(x, seed)
    labels = tuple(
        f"principal component {i + 1} ({share:.0%} of variance)" for i, share in enumerate(shares)
    )
    return Projection(xy, index, "PCA", labels, note)  # type: ignore[arg-type]


def pca_2d(x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The first two principal components of ``x`` and the share of variance each explains."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=seed).fit(x)
    return pca.transform(x).astype(np.float32), pca.explained_variance_ratio_


def umap_2d(x: np.ndarray, seed: int, neighbours: int = 15) -> np.ndarray:
    """A seeded (repeatable) 2-D UMAP of ``x``; wide input goes to PCA first.

    The neighbours come from scikit-learn (BLAS, well under a second for 5,000 points): UMAP's
    own exact search for small data calls a Python distance per pair, which takes minutes.
    """
    from sklearn.neighbors import NearestNeighbors

    if x.shape[1] > UMAP_INPUT_DIMS and len(x) > UMAP_INPUT_DIMS:
        from sklearn.decomposition import PCA

        x = PCA(n_components=UMAP_INPUT_DIMS, random_state=seed).fit_transform(x)
        x = x.astype(np.float32)
    neighbours = min(neighbours, len(x) - 1)
    distances, indices = NearestNeighbors(n_neighbors=neighbours).fit(x).kneighbors(x)
    umap = import_umap()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no search index for transform(): not needed here
        model = umap.UMAP(
            n_components=2,
            n_neighbors=neighbours,
            min_dist=0.1,
            n_epochs=200,
            random_state=seed,
            precomputed_knn=(indices, distances.astype(np.float32), None),
        )
        return np.asarray(model.fit_transform(x), dtype=np.float32)


def shared_projection(inputs: Any, options: PlotOptions) -> Projection:
    """The projection of ``inputs.features``, computed once per inputs and options: map.png and
    the explorer draw the same points without paying for UMAP twice.
    """
    key = (options.map_method, options.umap_sample, options.pca_sample)
    memo = inputs.projections
    if key not in memo:
        memo[key] = project(inputs.features, options, inputs.seed)
    found = memo[key]
    return Projection(
        found.xy.copy(), found.index.copy(), found.method, found.axis_labels, found.note
    )
