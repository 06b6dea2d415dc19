"""The clustered features in two dimensions for ``map.png``: UMAP or PCA on a fixed-seed sample,
so that 70,000 points cost seconds (PCA) or tens of seconds (UMAP), not minutes.

The projection is kept in the run as ``plots/projection.npz``, so ``imgclust report`` draws the
same map without computing it again; that file is read as untrusted data (bounded, checked).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.errors import DataError
from imgclust.io import atomic
from imgclust.io.bounded import read_npz
from imgclust.kit.arrays import sample_index
from imgclust.kit.umap import import_umap, numba_cache_dir
from imgclust.report.plots.options import PlotOptions

UMAP_MIN_POINTS = 50  # fewer points than this: UMAP has too few neighbours, PCA is used
UMAP_INPUT_DIMS = 50  # wider features are first reduced to this by PCA (faster neighbours)
SAVED = "projection.npz"  # in plots/: the projection the map was drawn from
METHODS = ("UMAP", "PCA", "features")
META_BYTES = 64 * 1024  # the saved projection's description: far above what it holds
TEXT_LIMIT = 500  # characters of an axis label or a note read back
#: umap-learn's functions that a 2-D map compiles longest; cached, the map starts at once
UMAP_COMPILED = ("layouts._optimize_layout_euclidean_single_epoch", "umap_.smooth_knn_dist")
NOT_COMPILED = (
    "PCA: UMAP's code is not compiled on this machine yet, and a map is not worth the wait "
    "(imgclust report RUN --map umap draws a UMAP map)"
)


@dataclass
class Projection:
    """Where each sampled point lands: ``xy`` (n, 2) for rows ``index`` of the features."""

    xy: np.ndarray
    index: np.ndarray
    method: str  # "UMAP", "PCA" or "features" (already two-dimensional)
    axis_labels: tuple[str, str]
    note: str = ""


def choose_method(requested: str, n_points: int) -> tuple[str, str]:
    """The method to use and, when it differs from the request, why.

    ``auto`` takes UMAP only when it costs no compiling: the pipeline has already loaded it in
    this process, or an earlier process left its compiled code in the cache. Otherwise (a fresh
    install's first run) numba would compile for tens of seconds for one picture: PCA instead.
    """
    if requested == "pca":
        return "pca", ""
    installed = importlib.util.find_spec("umap") is not None
    if not installed:
        return "pca", "" if requested == "auto" else "umap-learn is not installed: PCA instead"
    if n_points < UMAP_MIN_POINTS:
        return "pca", f"too few points for UMAP ({n_points}): PCA instead"
    if requested == "auto" and not umap_is_ready():
        return "pca", NOT_COMPILED
    return "umap", ""


def umap_is_ready() -> bool:
    """Whether a UMAP map starts without compiling: umap-learn is already imported here (the
    pipeline used it), or numba's cache holds this installation's compiled UMAP layout code."""
    if "umap" in sys.modules:
        return True
    spec = importlib.util.find_spec("umap")
    if spec is None or spec.origin is None:
        return False
    # numba keeps a source folder's machine code in CACHE_DIR/<folder name>_<sha1 of its path>
    source = os.path.dirname(os.path.abspath(spec.origin))
    digest = hashlib.sha1(source.encode()).hexdigest()
    cache = os.environ.get("NUMBA_CACHE_DIR") or str(numba_cache_dir())
    folder = Path(cache) / f"{os.path.basename(source)}_{digest}"
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return all(
        any(n.startswith(f"{function}-") and n.endswith(f".{tag}.nbi") for n in names)
        for function in UMAP_COMPILED
    )


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


def projection_key(options: PlotOptions) -> tuple[str, int, int]:
    """What decides a projection besides the features and the seed: the map settings."""
    return (options.map_method, options.umap_sample, options.pca_sample)


def shared_projection(inputs: Any, options: PlotOptions) -> Projection:
    """The projection of ``inputs.features``, computed once per inputs and options: map.png and
    the explorer draw the same points without paying for UMAP twice.
    """
    key = projection_key(options)
    memo = inputs.projections
    if key not in memo:
        memo[key] = project(inputs.features, options, inputs.seed)
    found = memo[key]
    return Projection(
        found.xy.copy(), found.index.copy(), found.method, found.axis_labels, found.note
    )


def save_projection(
    path: Path, projection: Projection, key: tuple[Any, ...], seed: int, n: int
) -> Path:
    """Keep ``projection`` (of ``n`` images, drawn with the map settings ``key`` and ``seed``) as
    an ``.npz`` of its points, rows and description, written whole or not at all."""
    meta = {
        "key": list(key),
        "seed": int(seed),
        "n": int(n),
        "method": projection.method,
        "axes": list(projection.axis_labels),
        "note": projection.note,
    }
    buffer = io.BytesIO()
    np.savez(
        buffer,
        xy=np.asarray(projection.xy, dtype=np.float32),
        index=np.asarray(projection.index, dtype=np.int64),
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
    )
    return atomic.write_bytes(Path(path), buffer.getvalue())


def load_projection(path: Path, key: tuple[Any, ...], seed: int, n: int) -> Projection | None:
    """The projection saved at ``path`` when it was drawn for ``n`` images with these map
    settings and seed; None when there is none or it was drawn for others.

    The file may come from a stranger: its members' sizes are bounded by ``n`` before anything
    is read, and its points must be finite, its rows distinct and below ``n``, its description
    short; otherwise :class:`~imgclust.errors.DataError` says what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        return None
    where = f"plots/{path.name}"
    limits = {"xy.npy": 8 * n + 1024, "index.npy": 8 * n + 1024, "meta.npy": META_BYTES}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.filename not in limits or info.file_size > limits[info.filename]:
                    raise DataError(
                        f"{where} holds {info.filename!r} of {info.file_size:,} bytes: not a "
                        f"projection of {n:,} images."
                    )
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{where} cannot be read ({type(exc).__name__}).") from None
    arrays = read_npz(path, where, ("xy", "index", "meta"))
    try:
        meta = json.loads(arrays["meta"].astype(np.uint8).tobytes().decode())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise DataError(f"{where}: its description is not JSON.") from None
    if not isinstance(meta, dict):
        raise DataError(f"{where}: its description is not an object.")
    if meta.get("key") != list(key) or meta.get("seed") != seed or meta.get("n") != n:
        return None  # drawn with other settings, another seed or for other images
    xy, index = arrays["xy"], arrays["index"]
    m = len(index)
    if xy.dtype != np.float32 or xy.shape != (m, 2) or index.dtype != np.int64 or index.ndim != 1:
        raise DataError(f"{where}: its points are not (n, 2) float32 with one int64 row each.")
    if not 0 < m <= n or not np.isfinite(xy).all():
        raise DataError(f"{where}: {m:,} points for {n:,} images, or points that are not finite.")
    if index.min() < 0 or index.max() >= n or len(np.unique(index)) != m:
        raise DataError(f"{where}: its rows are not distinct rows of the run's {n:,} images.")
    method, axes, note = meta.get("method"), meta.get("axes"), meta.get("note", "")
    if method not in METHODS or not isinstance(note, str) or len(note) > TEXT_LIMIT:
        raise DataError(f"{where}: its method or note is not one imgclust writes.")
    texts = isinstance(axes, list) and all(
        isinstance(a, str) and len(a) <= TEXT_LIMIT for a in axes
    )
    if not texts or not isinstance(axes, list) or len(axes) != 2:
        raise DataError(f"{where}: its axis labels are not two short texts.")
    return Projection(xy, index, method, (axes[0], axes[1]), note)
