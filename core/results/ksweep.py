"""Choosing k: cluster a fixed-seed sample of the features for each k in a range, score each
clustering without labels, and recommend the k the chosen criterion prefers.

Scores: silhouette (higher is better), Davies-Bouldin (lower), Calinski-Harabasz (higher) and,
for clusterers with a likelihood such as ``gmm``, BIC (lower). The table is written as CSV and
JSON and drawn as ``k-sweep.png``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.console import Log
from imgclust.errors import DataError, SettingsError
from imgclust.io import atomic
from imgclust.io.outputs import csv_text
from imgclust.kit.arrays import check_finite, sample_index
from imgclust.results.metrics import degeneracy, internal_scores, n_clusters
from imgclust.stages.interfaces import ScoresBIC, WrapsEstimator
from imgclust.stages.settings import resolve, settings_of

#: Each criterion and whether larger values are better.
CRITERIA = {
    "silhouette": True,
    "davies_bouldin": False,
    "calinski_harabasz": True,
    "bic": False,
}
LABELS = {
    "silhouette": "silhouette (higher is better)",
    "davies_bouldin": "Davies-Bouldin (lower is better)",
    "calinski_harabasz": "Calinski-Harabasz (higher is better)",
    "bic": "BIC (lower is better)",
}
DEFAULT_SAMPLE = 10_000
MAX_KS = 10_000  # values of k one sweep may try


@dataclass
class SweepResult:
    """The scores of every k tried, the recommended k and how it was chosen."""

    clusterer: str
    settings: dict[str, Any]
    rows: list[dict[str, Any]]
    criterion: str
    recommended: int
    best: dict[str, int]
    n_features: int
    sample_size: int
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_range(text: str) -> list[int]:
    """'2-15', '2..15', '2-20:2' or '4,8,10' as a sorted list of distinct k >= 2."""
    text = text.strip().replace("..", "-")
    try:
        if "," in text:
            ks = [int(part) for part in text.split(",") if part.strip()]
        else:
            span, _, step = text.partition(":")
            low, sep, high = span.partition("-")
            if sep and int(low) > int(high):
                raise SettingsError(
                    f"k range {text!r} is reversed: write the smaller k first, e.g. "
                    f"{int(high)}-{int(low)}."
                )
            if step and int(step) < 1:
                raise SettingsError(f"k range {text!r}: the step must be at least 1.")
            if sep and (int(high) - int(low)) // int(step or 1) > MAX_KS:
                raise SettingsError(f"k range {text!r} has more than {MAX_KS} values of k.")
            ks = list(range(int(low), int(high) + 1, int(step or 1))) if sep else [int(low)]
    except ValueError:
        raise SettingsError(f"k range {text!r}: write it as 2-15, 2-20:2 or 4,8,10.") from None
    ks = sorted(set(ks))
    if not ks or ks[0] < 2:
        raise SettingsError(f"k range {text!r}: every k must be at least 2.")
    return ks


def sweep(
    features: np.ndarray,
    name: str,
    factory: Callable[..., Any],
    ks: list[int],
    *,
    settings: Mapping[str, Any] | None = None,
    sample_size: int = DEFAULT_SAMPLE,
    seed: int = 0,
    criterion: str = "silhouette",
    log: Log = lambda message: None,
) -> SweepResult:
    """Cluster a fixed-seed sample of ``features`` with ``factory(n_clusters=k, **settings)`` for
    each k and score it; recommend the k that ``criterion`` prefers."""
    values = check_sweepable(name, factory, criterion, settings)
    if "seed" in settings_of(factory) and "seed" not in values:
        values["seed"] = seed
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) == 0:
        raise DataError(
            f"features to sweep must be a non-empty (N, D) array; got {features.shape}."
        )
    check_finite(features, "feature rows", "check the input or the encoder")
    index = sample_index(len(features), sample_size, seed)
    x = features[index]
    check_k_range(ks, len(x))
    reason = degeneracy(x)
    if reason is not None:
        raise DataError(f"cannot choose k: {reason}.")
    rows = []
    for k in ks:
        start = time.perf_counter()
        clusterer = factory(n_clusters=k, **values)
        labels = np.asarray(clusterer.fit_predict(x), dtype=np.int64)
        seconds = time.perf_counter() - start
        row: dict[str, Any] = {"k": k, **internal_scores(x, labels, seed=seed, sample_size=len(x))}
        model = clusterer.estimator_ if isinstance(clusterer, WrapsEstimator) else clusterer
        if isinstance(model, ScoresBIC):
            row["bic"] = float(model.bic(x))
        row["found"] = n_clusters(labels)
        row["seconds"] = round(seconds, 3)
        rows.append(row)
        shown = ", ".join(f"{key} {row[key]:.4g}" for key in CRITERIA if row.get(key) is not None)
        log(f"k={k}: {shown} ({seconds:.1f} s)")
    if criterion == "bic" and "bic" not in rows[0]:
        raise SettingsError(
            f"clusterer {name!r} has no BIC: use silhouette, davies_bouldin or calinski_harabasz."
        )
    best = {c: choose(rows, c) for c in CRITERIA if any(r.get(c) is not None for r in rows)}
    if criterion not in best:
        raise DataError(
            f"no k gave a valid {criterion} (every clustering found fewer than 2 clusters)."
        )
    return SweepResult(
        clusterer=name,
        settings={k: v for k, v in values.items()},
        rows=rows,
        criterion=criterion,
        recommended=best[criterion],
        best=best,
        n_features=len(features),
        sample_size=len(x),
        seed=seed,
    )


def check_sweepable(
    name: str,
    factory: Callable[..., Any],
    criterion: str = "silhouette",
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Refuse, before any work, a clusterer without k or an unknown criterion; return the
    clusterer's other settings, checked and typed."""
    if "n_clusters" not in settings_of(factory):
        raise SettingsError(
            f"clusterer {name!r} has no n_clusters to sweep (it finds the count itself): "
            "sweep kmeans, gmm, minibatch-kmeans, agglomerative or spectral."
        )
    if criterion not in CRITERIA:
        raise SettingsError(f"criterion {criterion!r}: choose one of {', '.join(CRITERIA)}.")
    values = {k: v for k, v in dict(settings or {}).items() if k != "n_clusters"}
    return resolve(f"clusterer {name!r}", factory, values)


def check_k_range(ks: list[int], n: int) -> None:
    """Every k must leave at least one more image than clusters in the sample."""
    if ks[-1] >= n:
        raise DataError(
            f"k up to {ks[-1]} needs more than {ks[-1]} images; the sample has {n}: "
            "lower the largest k or raise --sample."
        )


def choose(rows: list[dict[str, Any]], criterion: str) -> int:
    """The k whose score is best by ``criterion`` (the smallest such k on a tie)."""
    larger = CRITERIA[criterion]
    scored = [(r[criterion], r["k"]) for r in rows if r.get(criterion) is not None]
    if not scored:
        return 0
    best = max(v for v, _ in scored) if larger else min(v for v, _ in scored)
    return min(k for v, k in scored if v == best)


# Writing -----------------------------------------------------------------------------------
def table_csv(result: SweepResult) -> str:
    """The sweep as CSV: one row per k."""
    columns = ["k", *[c for c in CRITERIA if any(c in r for r in result.rows)], "found", "seconds"]
    return csv_text(columns, ([row.get(c) for c in columns] for row in result.rows))


def plot(result: SweepResult, path: Path) -> Path:
    """One panel per score against k, the recommended k marked; written as PNG (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [c for c in CRITERIA if any(r.get(c) is not None for r in result.rows)]
    columns = 2 if len(shown) > 1 else 1
    lines = (len(shown) + columns - 1) // columns
    figure = Figure(figsize=(5.2 * columns, 3.4 * lines), dpi=100)
    FigureCanvasAgg(figure)
    for i, criterion in enumerate(shown, 1):
        axes = figure.add_subplot(lines, columns, i)
        points = [(r["k"], r[criterion]) for r in result.rows if r.get(criterion) is not None]
        axes.plot([p[0] for p in points], [p[1] for p in points], "o-", color="#1f77b4")
        axes.axvline(
            result.recommended,
            color="#d62728",
            linestyle="--",
            linewidth=1,
            label=f"recommended k = {result.recommended}",
        )
        best = result.best.get(criterion)
        if best:
            value = next(v for k, v in points if k == best)
            axes.plot(
                [best], [value], "*", color="#ff7f0e", markersize=14, label=f"best here: {best}"
            )
        axes.set_title(LABELS[criterion], fontsize=10)
        axes.set_xlabel("k")
        axes.set_xticks([p[0] for p in points])
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(
        f"{result.clusterer}: k sweep on {result.sample_size} of {result.n_features} images "
        f"(seed {result.seed}; chosen by {result.criterion})",
        fontsize=11,
    )
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return atomic.write_bytes(Path(path), buffer.getvalue())


def write(result: SweepResult, folder: Path) -> dict[str, Path]:
    """Write ``k-sweep.csv``, ``k-sweep.json`` and ``k-sweep.png`` into ``folder``."""
    folder = Path(folder)
    return {
        "csv": atomic.write_text(folder / "k-sweep.csv", table_csv(result)),
        "json": atomic.write_json(folder / "k-sweep.json", result.to_dict()),
        "png": plot(result, folder / "k-sweep.png"),
    }
