"""What a run reports in words: ``clusters.md`` and the summary printed by ``imgclust run``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imgclust.console import printable
from imgclust.results.metrics import describe_cluster

LARGEST_SHOWN = 5


def clusters_markdown(result: Mapping[str, Any]) -> str:
    """Every cluster, largest first, with what it holds, as the article reports it."""
    clusters = result["clusters"]
    metrics = result["metrics"]
    lines = [
        f"# Clusters of {result['dataset']} ({result['n_images']} images)",
        "",
        f"Pipeline: {result['pipeline']}. Seed {result['seed']}.",
        "",
    ]
    invariances = metrics.get("invariances")
    if isinstance(invariances, Mapping):
        lines += [invariances_line(invariances), ""]
    if "acc" in metrics:
        lines += [
            f"ACC {metrics['acc']:.4f}, NMI {metrics['nmi']:.4f}, ARI {metrics['ari']:.4f}, "
            f"purity {metrics['purity']:.4f}.",
            "",
        ]
    has_labels = any("classes" in c for c in clusters)
    if has_labels:
        lines += [
            "| cluster | images | what it holds (count x class, largest first) |",
            "| --- | ---: | --- |",
        ]
    else:
        lines += ["| cluster | images |", "| --- | ---: |"]
    for entry in clusters:
        name = "noise" if entry["cluster"] == -1 else str(entry["cluster"])
        row = f"| {name} | {entry['size']} |"
        if has_labels:
            row += (
                " "
                + ", ".join(f"{c['count']} x {c['label']}" for c in entry.get("classes", []))
                + " |"
            )
        lines.append(row)
    lines += ["", "In words:", ""]
    lines += [f"- {describe_cluster(entry)}" for entry in clusters]
    return "\n".join(lines) + "\n"


def invariances_line(record: Mapping[str, Any]) -> str:
    """The run's invariances in one line: what was kept, how it was decided, the ratios."""
    kept = ", ".join(str(k) for k in record.get("kept") or []) or "none"
    ratios = record.get("ratios")
    if not isinstance(ratios, Mapping) or not ratios:
        return f"Invariances: {kept} ({record.get('mode', 'forced')})."
    measured = ", ".join(
        f"{k} {v:.2f}" if isinstance(v, (int, float)) else f"{k} n/a" for k, v in ratios.items()
    )
    return f"Invariances: {kept} (nearest-neighbour distance ratios: {measured})."


def summary_lines(result: Mapping[str, Any]) -> list[str]:
    """A short human summary: data, stages and their times, scores, the largest clusters; each
    line printable on a terminal whatever the labels and names in it (they come from files)."""
    return [printable(line) for line in _summary_lines(result)]


def _summary_lines(result: Mapping[str, Any]) -> list[str]:
    metrics = result["metrics"]
    lines = [
        f"dataset   {result['dataset']} ({result['split']}): {result['n_images']} images of "
        + "x".join(str(s) for s in result["image_shape"]),
        f"pipeline  {result['pipeline']}",
    ]
    timings = metrics.get("timings", {})
    if timings:
        lines.append("time      " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    if "acc" in metrics:
        lines.append(
            f"scores    ACC {metrics['acc']:.4f}  NMI {metrics['nmi']:.4f}  "
            f"ARI {metrics['ari']:.4f}  purity {metrics['purity']:.4f}"
        )
    else:
        parts = [
            f"{k} {v:.4f}"
            for k, v in metrics.items()
            if k in ("silhouette", "davies_bouldin", "calinski_harabasz") and v is not None
        ]
        if parts:
            lines.append("scores    " + "  ".join(parts))
    found = [c for c in result["clusters"] if c["cluster"] != -1]
    noise = [c for c in result["clusters"] if c["cluster"] == -1]
    lines.append(
        f"clusters  {len(found)} found" + (f", {noise[0]['size']} images as noise" if noise else "")
    )
    for entry in found[:LARGEST_SHOWN]:
        lines.append(f"  {describe_cluster(entry)}")
    if len(found) > LARGEST_SHOWN:
        lines.append(f"  ... and {len(found) - LARGEST_SHOWN} more in clusters.md")
    return lines
