"""The neighbour index of a finished run: each image's nearest images in the run's feature space.

The index is the graph of every image's ``k`` nearest other images (Euclidean distance between
rows of embeddings.npy), found once by exact search and kept in ``RUN/index/`` as two ``.npy``
arrays and a small ``index.json`` naming the SHA-256 of the embeddings it was built from. It is
written into a temporary folder that is renamed into place whole, and reused while the
embeddings are unchanged. Loading it never unpickles; shapes, types, ranges and a sample of the
distances are checked (at rows drawn afresh each time), and an index that fails a check is
built again. Queries beyond the graph
(new images, more neighbours than it holds) search the embeddings exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.errors import DataError
from imgclust.io import atomic
from imgclust.io.bounded import read_json

INDEX_DIR = "index"
MANIFEST = "index.json"
NEIGHBOURS = "neighbours.npy"
DISTANCES = "distances.npy"
INDEX_FILES = frozenset({MANIFEST, NEIGHBOURS, DISTANCES})
FORMAT = "imgclust-neighbours"
FORMAT_VERSION = 1
GRAPH_K = 20  # neighbours kept per image
MAX_GRAPH_K = 256  # the most a saved index may claim (bounds what loading allocates)
MAX_MANIFEST_BYTES = 64 * 1024
EXTRA = 8  # candidates beyond those asked for, re-ranked by exact distance
CHECKED_ROWS = 32  # random rows whose saved neighbours are compared with an exact search
MAX_PAIRS = 10_000_000  # pairs within a threshold kept at once (about 200 MB)
RADIUS_CELLS = 4_000_000  # distances one radius search may return per chunk of rows

Log = Callable[[str], None]


@dataclass
class NeighbourIndex:
    """A run's features and its k-nearest-neighbour graph (self excluded, nearest first)."""

    features: np.ndarray  # (n, d) float32
    neighbours: np.ndarray  # (n, k) int64 rows
    distances: np.ndarray  # (n, k) float32, ascending per row
    where: str = "memory"  # "saved" (read from RUN/index), "built" (and saved), or "memory"

    @property
    def k(self) -> int:
        return int(self.neighbours.shape[1])

    def nearest_to_vectors(self, vectors: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``count`` rows nearest to each vector, and their distances (exact search)."""
        return exact_search(self.features, np.asarray(vectors, dtype=np.float32), count)

    def nearest_to_rows(self, rows: list[int], count: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``count`` other rows nearest to each given row: from the graph when it holds
        enough, by exact search otherwise."""
        count = min(count, len(self.features) - 1)
        if count <= self.k:
            return self.neighbours[rows, :count], self.distances[rows, :count]
        found, distances = exact_search(self.features, self.features[rows], count + 1)
        keep = found != np.asarray(rows)[:, None]
        # a row is its own nearest (distance 0); drop it, or the last one if a twin came first
        for i in range(len(rows)):
            if keep[i].all():
                keep[i, -1] = False
        shape = (len(rows), count)
        return found[keep].reshape(shape), distances[keep].reshape(shape)

    def pairs_within(
        self, threshold: float, among: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every pair of rows (i < j) at most ``threshold`` apart, with its distance; only pairs
        of the sorted rows ``among`` when given (exact copies of one image searched once)."""
        n = len(self.features)
        empty = np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
        if n < 2 or self.k == 0:
            return empty
        member = np.ones(n, dtype=bool)
        if among is not None:
            member[:] = False
            member[np.asarray(among, dtype=np.int64)] = True
        left = np.repeat(np.arange(n), self.k)
        right = self.neighbours.ravel()
        dist = self.distances.ravel()
        inside = (dist <= threshold) & member[left] & member[right]
        parts = [(left[inside], right[inside], dist[inside])]
        # rows whose whole graph lies within reach may have more neighbours there
        full = np.flatnonzero((self.distances[:, -1] <= threshold) & member)
        if len(full):
            rows = np.flatnonzero(member) if among is not None else None
            parts.append(_radius_pairs(self.features, full, threshold, rows))
        a = np.concatenate([p[0] for p in parts])
        b = np.concatenate([p[1] for p in parts])
        d = np.concatenate([p[2] for p in parts])
        low, high = np.minimum(a, b), np.maximum(a, b)
        keep = low != high
        key = np.unique(np.stack([low[keep], high[keep]], axis=1), axis=0, return_index=True)
        pairs, first = key
        return pairs[:, 0], pairs[:, 1], d[keep][first]


# Exact search ------------------------------------------------------------------------------
def exact_search(
    features: np.ndarray, queries: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` rows of ``features`` nearest to each query (ties: lower row first)."""
    from sklearn.neighbors import NearestNeighbors

    count = max(0, min(int(count), len(features)))
    if count == 0 or len(queries) == 0:
        return np.empty((len(queries), 0), np.int64), np.empty((len(queries), 0), np.float32)
    search = NearestNeighbors(algorithm="brute").fit(features)
    candidates = min(count + EXTRA, len(features))
    _, found = search.kneighbors(queries, n_neighbors=candidates)
    return _rerank(features, queries, found, count)


def _rerank(
    features: np.ndarray, queries: np.ndarray, found: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Candidates re-ranked by distance computed directly (float64; a copy is at exactly 0)."""
    found = np.asarray(found, dtype=np.int64)
    distances = np.empty(found.shape, dtype=np.float32)
    step = max(1, 2**22 // max(1, found.shape[1] * features.shape[1]))
    for start in range(0, len(found), step):
        rows = found[start : start + step]
        diff = features[rows].astype(np.float64) - queries[start : start + step, None, :]
        distances[start : start + step] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    order = np.lexsort((found, distances), axis=-1)[:, :count]
    return np.take_along_axis(found, order, 1), np.take_along_axis(distances, order, 1)


def _radius_pairs(
    features: np.ndarray, rows: np.ndarray, threshold: float, among: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every row (of ``among`` when given) within ``threshold`` of each of ``rows`` (exact
    distances), a chunk of rows at a time; more than MAX_PAIRS pairs is one line rather than
    memory running out."""
    from sklearn.neighbors import NearestNeighbors

    searched = features if among is None else features[among]
    search = NearestNeighbors(algorithm="brute").fit(searched)
    # a little slack so that rounding in the search loses no pair; exact distances decide
    reach = threshold * 1.001 + 1e-6
    left, right, dist = [], [], []
    total = 0
    chunk = max(1, RADIUS_CELLS // len(searched))
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        _, found = search.radius_neighbors(features[part], radius=reach)
        for row, others in zip(part, found, strict=True):
            others = np.asarray(others, dtype=np.int64)
            if among is not None:
                others = among[others]
            diff = features[others].astype(np.float64) - features[row].astype(np.float64)
            d = np.sqrt(np.einsum("ij,ij->i", diff, diff)).astype(np.float32)
            inside = d <= threshold
            total += int(inside.sum())
            if total > MAX_PAIRS:
                raise DataError(
                    f"a distance threshold of {threshold:.6g} joins more than {MAX_PAIRS:,} "
                    "pairs of images: give a smaller one."
                )
            left.append(np.full(int(inside.sum()), row, dtype=np.int64))
            right.append(others[inside])
            dist.append(d[inside])
    return np.concatenate(left), np.concatenate(right), np.concatenate(dist)


def build_graph(features: np.ndarray, k: int = GRAPH_K) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest other rows (self excluded even among exact copies)."""
    n = len(features)
    k = max(0, min(k, n - 1))
    if k == 0:
        return np.empty((n, 0), np.int64), np.empty((n, 0), np.float32)
    from sklearn.neighbors import NearestNeighbors

    search = NearestNeighbors(algorithm="brute").fit(features)
    _, found = search.kneighbors(None, n_neighbors=min(k + EXTRA, n - 1))  # self left out
    return _rerank(features, features, found, k)


# Saving and loading ------------------------------------------------------------------------
def features_digest(path: Path) -> str:
    """SHA-256 of the embeddings file the index describes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def neighbour_index(
    run: Path, features: np.ndarray, log: Log = lambda message: None
) -> NeighbourIndex:
    """The run's index: read from ``RUN/index/`` when it is sound and current, else built
    (once) and saved there; kept in memory when the folder cannot take it (said in one line)."""
    run = Path(run)
    folder = run / INDEX_DIR
    digest = features_digest(run / "embeddings.npy")
    ours = True
    if os.path.lexists(folder):
        loaded, reason = load_index(folder, features, digest)
        if loaded is not None:
            return NeighbourIndex(features, *loaded, where="saved")
        ours = _is_ours(folder)
        if ours:
            log(f"note: rebuilding the neighbour index ({reason})")
    if len(features) > 5000:
        log(f"building the neighbour index of {len(features)} images (once per run)")
    neighbours, distances = build_graph(features)
    index = NeighbourIndex(features, neighbours, distances)
    if not ours:
        log(f"note: {folder} is not an imgclust neighbour index: left alone, index not saved")
        return index
    try:
        save_index(folder, neighbours, distances, features.shape, digest)
        index.where = "built"
    except OSError as exc:
        reason = exc.strerror or str(exc)
        log(f"note: the neighbour index is not saved ({reason}); it is rebuilt next time")
    return index


def load_index(
    folder: Path, features: np.ndarray, digest: str
) -> tuple[tuple[np.ndarray, np.ndarray] | None, str]:
    """The saved graph when sound and built from these features, else (None, why not)."""
    try:
        if folder.is_symlink() or not folder.is_dir():
            return None, "not a folder"
        manifest = _read_manifest(folder / MANIFEST)
        n, dim = features.shape
        k = manifest.get("k")
        if manifest.get("n") != n or manifest.get("dim") != dim or manifest.get("sha256") != digest:
            return None, "the run's embeddings changed"
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= min(MAX_GRAPH_K, n - 1):
            return None, "it claims an impossible number of neighbours"
        neighbours = _read_array(folder / NEIGHBOURS, (n, k), "iu")
        distances = _read_array(folder / DISTANCES, (n, k), "f")
    except (OSError, ValueError, _Unsound) as exc:
        return None, str(exc) or type(exc).__name__
    problem = _graph_problem(features, neighbours, distances)
    if problem:
        return None, problem
    return (neighbours, distances), ""


class _Unsound(ValueError):
    """A saved index file that is not what imgclust writes."""


def _read_manifest(path: Path) -> dict[str, Any]:
    if path.is_symlink() or not path.is_file():
        raise _Unsound(f"no {MANIFEST}")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise _Unsound(f"{MANIFEST} is too large")
    try:
        manifest = read_json(path, MANIFEST, MAX_MANIFEST_BYTES)
    except DataError:
        raise _Unsound(f"{MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _Unsound(f"{MANIFEST} is not an imgclust neighbour index")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise _Unsound(f"{MANIFEST} has format version {manifest.get('format_version')!r}")
    return manifest


def _read_array(path: Path, shape: tuple[int, int], kinds: str) -> np.ndarray:
    """A plain .npy array of the expected shape and kind (the header is checked before the
    data is read, so a claimed size cannot make loading allocate more)."""
    if path.is_symlink() or not path.is_file():
        raise _Unsound(f"no {path.name}")
    mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    fits = isinstance(mapped, np.ndarray) and mapped.shape == shape
    if not fits or mapped.dtype.kind not in kinds:
        raise _Unsound(f"{path.name} does not fit the run")
    if mapped.dtype.itemsize > 8 or mapped.dtype.hasobject or mapped.dtype.names:
        raise _Unsound(f"{path.name} has an unexpected type")
    wanted = np.int64 if "i" in kinds else np.float32
    return np.array(mapped, dtype=wanted)


def _graph_problem(features: np.ndarray, neighbours: np.ndarray, distances: np.ndarray) -> str:
    """Why a saved graph cannot be this run's, or '' when every check passes."""
    n, k = neighbours.shape
    if k == 0:
        return ""
    rows = np.arange(n)[:, None]
    if neighbours.min() < 0 or neighbours.max() >= n or (neighbours == rows).any():
        return "its neighbours are not other images of the run"
    if not np.isfinite(distances).all() or (distances < 0).any():
        return "its distances are not finite and positive"
    if (np.diff(distances, axis=1) < 0).any():
        return "its neighbours are not nearest first"
    if (np.sort(neighbours, axis=1)[:, 1:] == np.sort(neighbours, axis=1)[:, :-1]).any():
        return "it names a neighbour twice"
    true = _rerank(features, features, neighbours, k)[1]
    if not np.allclose(np.sort(true, axis=1), distances, rtol=1e-4, atol=1e-5):
        return "its distances do not match the embeddings"
    # rows chosen afresh each time (not by a fixed seed), so a forged index cannot pass by
    # being right only on the rows that would be checked
    sample = np.random.default_rng().choice(n, size=min(CHECKED_ROWS, n), replace=False)
    _, exact = exact_search(features, features[sample], k + 1)
    if not np.allclose(exact[:, 1:], distances[sample], rtol=1e-4, atol=1e-5):
        return "its neighbours are not the nearest"
    return ""


def _is_ours(folder: Path) -> bool:
    """Whether ``folder`` is an index imgclust wrote: a real folder of only its files, with
    its manifest (so that replacing it removes nothing of anyone else's)."""
    try:
        if folder.is_symlink() or not folder.is_dir():
            return False
        entries = list(folder.iterdir())
        if any(e.name not in INDEX_FILES or e.is_symlink() or not e.is_file() for e in entries):
            return False
        _read_manifest(folder / MANIFEST)
    except (OSError, _Unsound):
        return False
    return True


def save_index(
    folder: Path,
    neighbours: np.ndarray,
    distances: np.ndarray,
    shape: tuple[int, ...],
    digest: str,
) -> Path:
    """Write the index into a temporary folder beside ``folder`` and rename it into place (an
    older index imgclust wrote is replaced; a reader never sees half of one)."""

    folder = Path(folder)
    temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    old: Path | None = None
    try:
        os.chmod(temporary, 0o777 & ~atomic.current_umask())
        atomic.write_npy(temporary / NEIGHBOURS, neighbours.astype(np.int64))
        atomic.write_npy(temporary / DISTANCES, distances.astype(np.float32))
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "metric": "euclidean",
            "n": int(shape[0]),
            "dim": int(shape[1]),
            "k": int(neighbours.shape[1]),
            "sha256": digest,
            "features": "embeddings.npy",
        }
        atomic.write_json(temporary / MANIFEST, manifest)
        if os.path.lexists(folder):
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}-old.", dir=folder.parent))
            os.replace(folder, old / INDEX_DIR)
        os.rename(temporary, folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        if old is not None and not os.path.lexists(folder):
            with contextlib.suppress(OSError):
                os.replace(old / INDEX_DIR, folder)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return folder
