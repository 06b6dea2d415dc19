"""Exact and near duplicates among a finished run's images.

Exact duplicates share a content digest (BLAKE2b): of the original file's bytes for an
image-folder run, of the image's pixels (with shape and type) for other datasets. They are
grouped by digest alone, before any distance search, which then runs over one image of each
digest: any number of identical images costs one row. Near duplicates lie within a distance
threshold of each other in the run's feature space (embeddings.npy). Groups are the connected
components of both relations, so a group may chain: A near B and B near C puts A, B and C in one
group even when A and C are further apart than the threshold. The images are checked against the
digests the run recorded first: changed images are refused (or, with ``allow_changed``, reported).

The default threshold is ``DEFAULT_FRACTION`` of the median distance from an image to its
nearest other image (copies at distance 0 left out of the median): what is far closer than
images usually are to their nearest neighbour. Measured on PCA features: lightly noised copies
of the digits sit at 0.02 to 0.06 of that median, and the closest distinct MNIST digits (two
plain 1s) at 0.15, so 0.1 separates them; other features may need ``--threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.after.finished import open_run, read_run_features, verified_images
from imgclust.after.neighbours import neighbour_index
from imgclust.console import Log
from imgclust.errors import ContentChangedError, DataError, ImgclustError
from imgclust.io.content import image_digests
from imgclust.io.outputs import csv_text

DEFAULT_FRACTION = 0.1
CSV_HEADER = ["group", "kind", "id", "cluster", "distance", "digest"]


@dataclass
class DuplicateGroup:
    """Images found to be copies (``exact``: one content hash) or near copies (``near``).

    ``rows`` index the run's assignments; ``distances`` are feature distances to the group's
    first image; ``hashes`` are content digests ('' where they could not be computed).
    """

    kind: str
    rows: list[int]
    ids: list[str]
    clusters: list[int]
    distances: list[float]
    hashes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The group as plain JSON-ready values."""
        return {
            "kind": self.kind,
            "images": [
                {"id": i, "cluster": c, "distance": d, "digest": h}
                for i, c, d, h in zip(
                    self.ids, self.clusters, self.distances, self._hashes(), strict=True
                )
            ],
        }

    def _hashes(self) -> list[str]:
        return self.hashes or [""] * len(self.ids)


@dataclass
class Duplicates:
    """What a search found, and how: the threshold used and whether it was derived."""

    groups: list[DuplicateGroup]
    threshold: float
    derived: bool
    exact_checked: bool
    n_images: int
    index: str = "memory"
    content: str = ""  # what changed since the run, when allowed ('' when nothing did)

    @property
    def images_in_groups(self) -> int:
        return sum(len(g.rows) for g in self.groups)


def find_duplicates(
    run_dir: Path | str, threshold: float | None = None, *, log: Log = lambda message: None
) -> list[DuplicateGroup]:
    """Groups of exact and near duplicates in a finished run, exact groups first, larger first."""
    return search(run_dir, threshold, log=log).groups


def search(
    run_dir: Path | str,
    threshold: float | None = None,
    *,
    log: Log = lambda message: None,
    command: str = "search",
    allow_changed: bool = False,
) -> Duplicates:
    """Find the groups and say how (the threshold, whether exact copies were checked)."""

    threshold = check_threshold(threshold)
    finished = open_run(Path(run_dir), command)
    features = read_run_features(finished)
    hashes, content = _content_hashes(finished, command, allow_changed, log)
    index = neighbour_index(finished.path, features, log)
    derived = threshold is None
    if threshold is None:
        threshold = default_threshold(index.distances[:, 0] if index.k else np.empty(0))
    if hashes is not None:
        left, right = _same_hash_pairs(hashes)
        first = np.setdiff1d(np.arange(len(features)), right)  # one row per digest
        near_left, near_right, _ = index.pairs_within(threshold, first)
        left, right = np.concatenate([left, near_left]), np.concatenate([right, near_right])
    else:
        left, right, _ = index.pairs_within(threshold)
    components = _components(len(features), left, right)
    groups = [
        _group(rows, finished.ids, finished.clusters, features, hashes) for rows in components
    ]
    groups.sort(key=lambda g: (g.kind != "exact", -len(g.rows), g.rows[0]))
    return Duplicates(
        groups, float(threshold), derived, hashes is not None, len(features), index.where, content
    )


def check_threshold(value: float | None) -> float | None:
    """A distance threshold: a finite number, 0 or more (None: derive one from the run)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"threshold must be a number, not {value!r:.40}.") from None
    if not np.isfinite(number) or number < 0:
        raise DataError(f"threshold must be a finite distance of 0 or more, not {value}.")
    return number


def default_threshold(nearest: np.ndarray) -> float:
    """``DEFAULT_FRACTION`` of the median nearest-neighbour distance (copies left out)."""
    positive = np.asarray(nearest, dtype=np.float64)
    positive = positive[positive > 0]
    if len(positive) == 0:
        return 0.0
    return float(DEFAULT_FRACTION * np.median(positive))


def _content_hashes(
    finished: Any, command: str, allow_changed: bool, log: Log
) -> tuple[list[str] | None, str]:
    """Each image's content digest and what changed since the run (refused unless
    ``allow_changed``), or None (said once) when the images cannot be had at all."""

    try:
        found = verified_images(finished, command, allow_changed)
    except ContentChangedError:
        raise
    except (ImgclustError, OSError) as exc:
        log(f"note: exact copies not checked, only feature distances: {exc}")
        return None, ""
    if found.digests is not None:
        return found.digests, found.check.describe()
    if found.data is None:  # the images are gone (allowed): feature distances alone
        log(f"note: exact copies not checked, only feature distances: {found.check.reason}")
        return None, found.check.describe()
    return image_digests(found.data.images), found.check.describe()


def _same_hash_pairs(hashes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (first image with a hash, each later one with it)."""
    first: dict[str, int] = {}
    left, right = [], []
    for row, digest in enumerate(hashes):
        seen = first.setdefault(digest, row)
        if seen != row:
            left.append(seen)
            right.append(row)
    return np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64)


def _components(n: int, left: np.ndarray, right: np.ndarray) -> list[list[int]]:
    """Connected components of two or more rows, each sorted."""
    if len(left) == 0:
        return []
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    linked = np.unique(np.concatenate([left, right]))
    groups: dict[int, list[int]] = {}
    for row in linked:
        groups.setdefault(int(labels[row]), []).append(int(row))
    return [sorted(rows) for rows in groups.values() if len(rows) > 1]


def _group(
    rows: list[int],
    ids: list[str],
    clusters: np.ndarray,
    features: np.ndarray,
    hashes: list[str] | None,
) -> DuplicateGroup:
    first = features[rows[0]].astype(np.float64)
    diff = features[rows].astype(np.float64) - first
    distances = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    digests = [hashes[r] for r in rows] if hashes is not None else []
    exact = bool(digests) and len(set(digests)) == 1
    return DuplicateGroup(
        "exact" if exact else "near",
        rows,
        [ids[r] for r in rows],
        [int(clusters[r]) for r in rows],
        [round(float(d), 6) for d in distances],
        digests,
    )


def duplicates_csv(groups: list[DuplicateGroup]) -> str:
    """One row per image in a group: group number, kind, id, cluster, distance, hash."""

    rows = [
        [number, group.kind, image_id, cluster, distance, digest]
        for number, group in enumerate(groups, start=1)
        for image_id, cluster, distance, digest in zip(
            group.ids, group.clusters, group.distances, group._hashes(), strict=True
        )
    ]
    return csv_text(CSV_HEADER, rows)
