"""What every benchmark script shares: saving its figures and filling its section of the docs."""

from __future__ import annotations

import json
import platform
import re
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"


def machine() -> dict[str, Any]:
    """The machine the figures were taken on, without naming any path."""
    import os

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "system": platform.system(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }


def save_results(name: str, data: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/NAME.json`` whole (temporary name, then rename)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
    temporary.replace(path)
    return path


def with_runs(saved: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Saved runs of one cell with ``runs`` in place of those of the same seeds, by seed, so
    that seeds run one call at a time accumulate."""
    seeds = {r["seed"] for r in runs}
    return sorted([r for r in saved if r["seed"] not in seeds] + runs, key=lambda r: r["seed"])


def update_doc_section(section: str, markdown: str) -> None:
    """Replace the text between ``<!-- SECTION:start -->`` and ``<!-- SECTION:end -->``."""
    text = DOC.read_text()
    pattern = re.compile(rf"(<!-- {section}:start -->\n).*?(<!-- {section}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"docs/benchmarks.md has no {section} section")
    DOC.write_text(pattern.sub(lambda m: m.group(1) + markdown.rstrip() + "\n" + m.group(2), text))


def median(values: list[float]) -> float:
    return float(statistics.median(values))
