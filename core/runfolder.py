"""Run folders: named after what ran, built under ``NAME.incomplete`` and renamed when whole,
so that a run folder is never overwritten and never half-written.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

INCOMPLETE = ".incomplete"


def run_name(config: Mapping[str, Any], now: datetime | None = None) -> str:
    """'2026-11-27T22-40-05-mnist-conv-ae-kmeans'."""
    stamp = (now or datetime.now()).strftime("%Y-%m-%dT%H-%M-%S")
    parts = [
        config["dataset"]["name"],
        *(e["name"] for e in config["encoder"]),
        config["clusterer"]["name"],
    ]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join([stamp, *parts]))


def create_incomplete(runs_dir: Path, name: str) -> Path:
    """Make a fresh ``runs_dir/NAME[-N].incomplete`` folder that no other run uses."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        candidate = name if attempt == 1 else f"{name}-{attempt}"
        if (runs_dir / candidate).exists():
            continue
        try:
            path = runs_dir / f"{candidate}{INCOMPLETE}"
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"no free run folder name under {runs_dir}")


def finalise(incomplete: Path) -> Path:
    """Rename ``NAME.incomplete`` to ``NAME`` (or ``NAME-N`` if taken); return the final path."""
    base = incomplete.name.removesuffix(INCOMPLETE)
    for attempt in range(1, 1000):
        candidate = incomplete.parent / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        candidate.rmdir()
        incomplete.rename(candidate)
        return candidate
    raise RuntimeError(f"no free run folder name for {incomplete}")


def discard(incomplete: Path) -> None:
    """Remove an incomplete run folder that holds nothing worth resuming."""
    shutil.rmtree(incomplete, ignore_errors=True)
