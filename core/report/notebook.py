"""How a run and a pipeline show themselves in a notebook (Jupyter's ``_repr_html_``).

A run shows its summary, its scores, the montages of its clusters that its folder holds, and a
link to its ``report.html``; a pipeline shows its stages and their settings, as scikit-learn draws
an estimator. Every value reaches the page through ``html.escape``.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from imgclust.report.page import METRICS, data_uri, format_number

MAX_MONTAGES = 12  # per-cluster montages embedded in a run's view (the report has them all)
MAX_EMBEDDED_BYTES = 4 * 2**20  # PNG bytes a run's view embeds at most, so notebooks stay small
STYLE = (
    "<style>.imgclust-view{font-family:sans-serif;font-size:13px}"
    ".imgclust-view table{border-collapse:collapse;margin:4px 0}"
    ".imgclust-view th,.imgclust-view td{padding:2px 8px;text-align:left;"
    "border-bottom:1px solid #ddd}.imgclust-view .stage{display:inline-block;"
    "border:1px solid #888;border-radius:4px;padding:4px 8px;margin:2px;vertical-align:top}"
    ".imgclust-view img{max-width:100%}</style>"
)


def run_html(run: Any) -> str:
    """A finished run as HTML: what ran on how many images, its scores, montages, the report."""
    path = Path(run.path)
    summary = run.summary or {}
    pipeline = summary.get("pipeline") or run.pipeline.name
    facts = [
        f"<b>{html.escape(path.name)}</b>",
        html.escape(str(pipeline)),
        f"{len(run.labels):,} images",
        f"{html.escape(format_number(run.metrics.get('n_clusters')))} clusters",
        f"seed {html.escape(str(run.config.get('seed', '-')))}",
    ]
    parts = [STYLE, '<div class="imgclust-view">', f"<p>{' · '.join(facts)}</p>"]
    rows = [
        f"<tr><th>{html.escape(label)}</th><td>{html.escape(format_number(run.metrics[key]))}"
        f"</td><td>{html.escape(meaning)}</td></tr>"
        for key, label, meaning in METRICS
        if key in run.metrics
    ]
    if rows:
        parts += ["<table>", *rows, "</table>"]
    parts += montages_html(path)
    report = path / "report.html"
    if report.is_file():
        parts.append(
            f'<p><a href="{html.escape(report.as_posix())}" target="_blank">report.html</a>: '
            "the explorer, every plot and the configuration.</p>"
        )
    else:
        parts.append(
            "<p>No report.html (the run had plots=False): "
            f"<code>imgclust report {html.escape(str(path))}</code> draws it.</p>"
        )
    return "\n".join([*parts, "</div>"])


def montages_html(path: Path) -> list[str]:
    """The run's cluster montages (``clusters.png``, then ``plots/clusters/``), within bounds."""
    plots = path / "plots"
    files = [plots / "clusters.png"] if (plots / "clusters.png").is_file() else []
    files += sorted((plots / "clusters").glob("*.png"), key=_cluster_number)[:MAX_MONTAGES]
    parts, budget = [], MAX_EMBEDDED_BYTES
    for file in files:
        if file.is_symlink() or not file.is_file():
            continue  # the run folder is untrusted: embed only its own plain files
        size = file.stat().st_size
        if size > budget:
            parts.append(f"<p>{html.escape(file.name)} and more are in report.html.</p>")
            break
        uri = data_uri(file)  # bounded, and only PNG data
        if uri is None:
            continue
        budget -= size
        parts.append(
            f'<figure><img src="{html.escape(uri)}" alt="{html.escape(file.name)}">'
            f"<figcaption>{html.escape(file.relative_to(path).as_posix())}</figcaption></figure>"
        )
    return parts


def _cluster_number(file: Path) -> tuple[int, str]:
    """'cluster-10.png' after 'cluster-9.png'; 'noise.png' last."""
    number = file.stem.removeprefix("cluster-")
    return (int(number), "") if number.isdigit() else (1 << 30, file.stem)


def pipeline_html(pipeline: Any) -> str:
    """A pipeline as HTML: each stage in order (encoders, clusterer, refiners) with its settings."""
    state = "fitted" if pipeline.is_fitted else "unfitted"
    boxes = []
    stages = [
        *(("encoder", s) for s in pipeline.encoders),
        ("clusterer", pipeline.clusterer),
        *(("refiner", s) for s in pipeline.refiners),
    ]
    for kind, stage in stages:
        settings = "".join(
            f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(repr(value))}</td></tr>"
            for key, value in (stage.settings or {}).items()
        )
        table = f"<table>{settings}</table>" if settings else "<i>defaults</i>"
        boxes.append(
            f'<div class="stage"><details><summary>{html.escape(kind)} '
            f"<b>{html.escape(stage.name)}</b></summary>{table}</details></div>"
        )
    shape = pipeline.input_shape
    shown = "x".join(str(v) for v in shape) if shape else ""
    head = f"Pipeline, {state}" + (f", for {html.escape(shown)} images" if shown else "")
    return f'{STYLE}<div class="imgclust-view"><p>{head}</p>' + " &rarr; ".join(boxes) + "</div>"
