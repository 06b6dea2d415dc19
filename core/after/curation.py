"""A person's edits of a run's clusters, as the explorer page downloads them (``curation.json``),
read back as untrusted input and applied to the run's clusters.

The page writes ``{"format": "imgclust-curation", "version": 1, "run": NAME, "n": N, "names":
{cluster: name}, "merged": {cluster: into}, "moved": {id: cluster}, "dropped": [id, ...]}``. The
file may come from anyone: it is read only up to a size that follows from the run (never more
entries than the run has clusters or images), every key, id and cluster must be the run's own,
merges may not go round in a circle, and each problem is one line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.errors import DataError
from imgclust.io.memory import human
from imgclust.io.paths import check_input_file

FORMAT = "imgclust-curation"
VERSION = 1
DROPPED = -2  # a curated cluster number: the person dropped the image (an outlier)
NOISE = -1
KEYS = ("format", "version", "run", "n", "names", "merged", "moved", "dropped")
NAME_CHARACTERS = 80  # the page's rename box takes at most this many
BASE_BYTES = 2**20  # room for the names, merges and layout of any curation file
BYTES_PER_ID_CHARACTER = 12  # an id may be written twice (moved and dropped), escaped (x6)
BYTES_PER_IMAGE = 64  # punctuation, a cluster number and indentation per moved or dropped id
_CLUSTER_KEY = re.compile(r"-1|0|[1-9][0-9]{0,9}")  # as the page writes them: no "-0", "01"


@dataclass
class Curation:
    """The edits of one run: names per cluster, merges, moves and drops (all checked)."""

    names: dict[int, str]
    merged: dict[int, int]
    moved: dict[str, int]
    dropped: set[str]
    made_for: str  # the run folder name the page recorded

    def final_cluster(self, cluster: int) -> int:
        """Where ``cluster`` ends after its merges (they were checked to form no circle)."""
        while cluster in self.merged:
            cluster = self.merged[cluster]
        return cluster

    def apply(self, ids: list[str], clusters: np.ndarray) -> np.ndarray:
        """Each image's cluster after the edits, as the page computes it; DROPPED (-2) for
        dropped images."""
        curated = np.empty(len(ids), dtype=np.int64)
        for row, image_id in enumerate(ids):
            if image_id in self.dropped:
                curated[row] = DROPPED
                continue
            curated[row] = self.final_cluster(self.moved.get(image_id, int(clusters[row])))
        return curated

    def name_of(self, cluster: int) -> str | None:
        """The person's name of a final cluster, or None (a merged-away cluster's is unused)."""
        return self.names.get(cluster)

    @property
    def edits(self) -> dict[str, int]:
        """How many clusters were renamed and merged, and images moved and dropped."""
        return {
            "renamed": len(self.names),
            "merged": len(self.merged),
            "moved": len(self.moved),
            "dropped": len(self.dropped),
        }


def max_curation_bytes(ids: list[str]) -> int:
    """The largest curation file a run of these ids can need: every image moved and dropped,
    with its id escaped, plus room for names and merges."""
    id_characters = sum(len(image_id) for image_id in ids)
    return BASE_BYTES + BYTES_PER_ID_CHARACTER * id_characters + BYTES_PER_IMAGE * len(ids)


def read_curation(path: Path, ids: list[str], clusters: np.ndarray) -> Curation:
    """``curation.json`` for the run with these ``ids`` and ``clusters``, checked whole before
    anything uses it; every problem is one line that says what to do."""
    where = f"curation file {str(path)!r}"
    check_input_file(path, "curation file")
    limit = max_curation_bytes(ids)
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise DataError(f"cannot read {where}: {exc.strerror or exc}.") from None
    if len(data) > limit:
        raise DataError(
            f"{where} is larger than the {human(limit)} a curation of this run can need: it is "
            "not the page's curation.json; download it again."
        )
    try:
        record = json.loads(
            data.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant
        )
    except UnicodeDecodeError as exc:
        raise DataError(f"{where} is not UTF-8 text (byte {exc.start}).") from None
    except (ValueError, RecursionError) as exc:
        reason = " ".join(str(exc).split())[:120] or "nested too deeply"
        raise DataError(f"{where} is not valid JSON ({reason}): download it again.") from None
    return _checked(record, where, ids, clusters)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (a repeated key would hide an edit)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {_shown(key)} appears twice in one object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _shown(value: Any, limit: int = 40) -> str:
    """A value from the file quoted for a message: short and printable."""
    text = "".join(c if c.isprintable() else "?" for c in str(value))
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def _checked(record: Any, where: str, ids: list[str], clusters: np.ndarray) -> Curation:
    """The record as a Curation, after every part was checked against the run."""

    def bad(what: str) -> DataError:
        return DataError(f"{where} {what}.")

    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise bad(f"is not an imgclust curation (no \"format\": \"{FORMAT}\"): give the "
                  "curation.json the run's report.html downloads")  # fmt: skip
    unknown = [key for key in record if key not in KEYS]
    if unknown:
        raise bad(f"has an unknown entry {_shown(unknown[0])} (it takes {', '.join(KEYS)})")
    if record.get("version") != VERSION or isinstance(record.get("version"), bool):
        raise bad(
            f"has version {_shown(record.get('version'))}, and this imgclust reads version "
            f"{VERSION}: download it again from this run's report.html"
        )
    n = record.get("n")
    if not _is_int(n) or n != len(ids):
        raise bad(
            f"was made for a run of {_shown(n)} images, and this run has {len(ids)}: give the "
            "curation of this run"
        )
    made_for = record.get("run", "")
    if not isinstance(made_for, str) or len(made_for) > 255:
        raise bad("names its run with something that is not a folder name")
    known_clusters = {int(c) for c in np.unique(clusters)}
    names = _names(record.get("names", {}), known_clusters, bad)
    merged = _merges(record.get("merged", {}), known_clusters, bad)
    rows = set(ids)
    moved = _moves(record.get("moved", {}), rows, known_clusters, bad)
    dropped = _drops(record.get("dropped", []), rows, bad)
    return Curation(names, merged, moved, dropped, made_for)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _cluster_key(key: str, known: set[int], bad: Any, what: str) -> int:
    """A JSON object key that names one of the run's clusters."""
    if not _CLUSTER_KEY.fullmatch(key) or int(key) not in known:
        raise bad(f"{what} {_shown(key)}, which is not a cluster of this run")
    return int(key)


def _cluster_value(value: Any, known: set[int], bad: Any, what: str) -> int:
    """A JSON number that names one of the run's clusters."""
    if not _is_int(value) or value not in known:
        raise bad(f"{what} {_shown(value)}, which is not a cluster of this run")
    return int(value)


def _object(value: Any, entry: str, most: int, bad: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad(f"has {entry!r} that is not an object")
    if len(value) > most:
        raise bad(f"has {len(value)} entries in {entry!r}, more than this run can have ({most})")
    return value


def _names(value: Any, known: set[int], bad: Any) -> dict[int, str]:
    """Cluster -> the person's name: text of 1 to 80 printable characters."""
    names = {}
    for key, name in _object(value, "names", len(known), bad).items():
        cluster = _cluster_key(key, known, bad, "names cluster")
        if not isinstance(name, str) or not name.strip():
            raise bad(f"names cluster {cluster} with {_shown(name)}, which is not a name")
        name = name.strip()
        if len(name) > NAME_CHARACTERS or not name.isprintable():
            raise bad(
                f"names cluster {cluster} {_shown(name)}: a name is at most {NAME_CHARACTERS} "
                "printable characters (no line breaks or control characters)"
            )
        if not any(c.isalnum() for c in name):
            raise bad(
                f"names cluster {cluster} {_shown(name)}, which has no letter or digit to name a "
                "folder with: rename it in the page"
            )
        names[cluster] = name
    return names


def _merges(value: Any, known: set[int], bad: Any) -> dict[int, int]:
    """Cluster -> the cluster it was merged into; no cluster into itself, no circle."""
    merged = {}
    for key, into in _object(value, "merged", len(known), bad).items():
        cluster = _cluster_key(key, known, bad, "merges cluster")
        target = _cluster_value(into, known, bad, f"merges cluster {cluster} into")
        merged[cluster] = target
    for start in merged:  # each chain ends within len(merged) steps unless it is a circle
        cluster, steps = start, 0
        while cluster in merged:
            cluster, steps = merged[cluster], steps + 1
            if steps > len(merged):
                raise bad(
                    f"merges cluster {start} in a circle (it comes back to itself): merge each "
                    "cluster into one that is kept"
                )
    return merged


def _moves(value: Any, rows: set[str], known: set[int], bad: Any) -> dict[str, int]:
    """Image id -> the cluster it was moved to; ids are the run's own."""
    moved = {}
    for image_id, cluster in _object(value, "moved", len(rows), bad).items():
        if image_id not in rows:
            raise bad(f"moves image {_shown(image_id)}, which is not an image of this run")
        moved[image_id] = _cluster_value(cluster, known, bad, f"moves {_shown(image_id)} to")
    return moved


def _drops(value: Any, rows: set[str], bad: Any) -> set[str]:
    """The ids of the images the person dropped; each the run's own, each once."""
    if not isinstance(value, list):
        raise bad("has 'dropped' that is not a list of image ids")
    if len(value) > len(rows):
        raise bad(f"drops {len(value)} images, and this run has {len(rows)}")
    dropped: set[str] = set()
    for image_id in value:
        if not isinstance(image_id, str) or image_id not in rows:
            raise bad(f"drops {_shown(image_id)}, which is not an image of this run")
        if image_id in dropped:
            raise bad(f"drops image {_shown(image_id)} twice")
        dropped.add(image_id)
    return dropped
