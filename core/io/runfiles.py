"""A run folder's small text files read back: summary.json, metrics.json and clusters.md.

The folder may come from a stranger. Each file is read with a size bound, decoded as UTF-8, and
every field the commands use is checked for its type and range here, once, so that a damaged or
forged file is one line naming the file and the field, never an error deep in a formatter.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from imgclust.errors import DataError

MAX_TEXT_BYTES = 64 * 1024 * 1024  # summary.json, metrics.json, clusters.md: far above any run's
MAX_COUNT = 2**53  # image counts and seeds beyond this are not a run's
MAX_SIDE = 1 << 20  # pixels a side (and channels) an image shape may record
REPAIR = "the run folder is damaged: run `imgclust run` again or restore the file"


def damaged(path: Path, what: str) -> DataError:
    """The one line for a run file that cannot be used: which file, what is wrong, what to do."""
    return DataError(f"{path.name} in run folder {str(path.parent)!r} {what}: {REPAIR}.")


def read_run_bytes(path: Path, limit: int = MAX_TEXT_BYTES) -> bytes | None:
    """A run file's bytes (None when it is not there), refused past ``limit`` bytes before they
    are all read: a forged file never makes a command allocate more."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise damaged(path, f"cannot be read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise damaged(path, f"is larger than {limit // 2**20} MiB")
    return data


def read_run_text(path: Path) -> str | None:
    """A run file's UTF-8 text (None when it is not there), read with a size bound."""
    data = read_run_bytes(path)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise damaged(path, f"is not UTF-8 text (byte {exc.start})") from None


def read_run_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from the run folder (None when the file is missing)."""
    text = read_run_text(path)
    if text is None:
        return None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        reason = f"line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "too deep"
        raise damaged(path, f"is not valid JSON ({reason})") from None
    if not isinstance(value, dict):
        raise damaged(path, "does not hold a JSON object")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and abs(value) < 2**63


def is_count(value: Any, high: int = MAX_COUNT) -> bool:
    """A whole number from 0 to ``high``, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high


def read_summary(run: Path) -> dict[str, Any]:
    """summary.json's fields the commands use, checked ({} when the file is missing)."""
    path = Path(run) / "summary.json"
    summary = read_run_json(path)
    if summary is None:
        return {}
    checks = {
        "pipeline": lambda v: isinstance(v, str),
        "dataset": lambda v: isinstance(v, str),
        "split": lambda v: isinstance(v, str),
        "imgclust_version": lambda v: isinstance(v, str),
        "n_images": is_count,
        "seed": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "image_shape": lambda v: (
            isinstance(v, list) and 1 <= len(v) <= 4 and all(is_count(s, MAX_SIDE) for s in v)
        ),
    }
    for key, fine in checks.items():
        if key in summary and summary[key] is not None and not fine(summary[key]):
            raise damaged(path, f"has an unusable {key} ({_shown(summary[key])})")
    return summary


#: metrics.json entries that hold one score or count each
SCORES = (
    "acc",
    "nmi",
    "ari",
    "purity",
    "silhouette",
    "davies_bouldin",
    "calinski_harabasz",
    "n_clusters",
    "noise",
    "n_images",
    "loss",
    "val_loss",
)


def read_metrics(run: Path) -> dict[str, Any]:
    """metrics.json's scores, timings and training histories, checked ({} when missing)."""
    path = Path(run) / "metrics.json"
    metrics = read_run_json(path)
    if metrics is None:
        return {}
    for key in SCORES:
        value = metrics.get(key)
        if value is not None and not is_number(value):
            raise damaged(path, f"has an unusable {key} ({_shown(value)})")
    timings = metrics.get("timings")
    if timings is not None and not (
        isinstance(timings, dict) and all(is_number(v) for v in timings.values())
    ):
        raise damaged(path, "has timings that are not seconds per stage")
    for key in ("training", "refiner_training"):
        if not _histories(metrics.get(key)):
            raise damaged(path, f"has {key} histories that are not lists of numbers")
    return metrics


def _histories(value: Any) -> bool:
    """Whether ``value`` is absent or maps stage names to {series: [numbers]}."""
    return value is None or (
        isinstance(value, dict)
        and all(
            isinstance(history, dict)
            and all(
                isinstance(values, list) and all(is_number(v) for v in values)
                for values in history.values()
            )
            for history in value.values()
        )
    )


def read_clusters_markdown(run: Path) -> str | None:
    """clusters.md's text (None when it is missing)."""
    return read_run_text(Path(run) / "clusters.md")


def check_run_files(run: Path) -> None:
    """Read and check summary.json, metrics.json and clusters.md, so that a command refuses a
    damaged run before it writes anything."""
    read_summary(run)
    read_metrics(run)
    read_clusters_markdown(run)


def _shown(value: Any, limit: int = 40) -> str:
    """A short, printable rendering of a bad value for an error line."""
    text = "".join(c if c.isprintable() else "?" for c in repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."
