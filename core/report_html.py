"""``report.html``: one self-contained page of a run (the explorer, configuration, scores, the
cluster table, the plots embedded as data URIs, inline CSS and JavaScript), readable offline; all
but the explorer reads without JavaScript.

More sections (a command's findings about the run) join the page through :func:`add_section`.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import atomic
from .errors import DataError
from .runfolder import INCOMPLETE

REPORT = "report.html"

#: a section of the page: (anchor, heading, HTML body); the body must escape what it shows
Section = tuple[str, str, str]
#: functions of the run folder that add a section to every report (None: nothing to add)
SECTION_PROVIDERS: list[Callable[[Path], Section | None]] = []


def add_section(provider: Callable[[Path], Section | None]) -> Callable[[Path], Section | None]:
    """Add a section to every report: ``provider(run_dir)`` returns (anchor, heading, HTML) or
    None. Usable as a decorator; adding the same provider twice adds it once.
    """
    if provider not in SECTION_PROVIDERS:
        SECTION_PROVIDERS.append(provider)
    return provider


def provided_sections(run_dir: Path) -> list[Section]:
    """The sections the providers give for this run; one that fails becomes a one-line note."""
    from .plots.stage import one_line

    sections = []
    for provider in SECTION_PROVIDERS:
        try:
            section = provider(run_dir)
        except Exception as exc:  # an extra section must never cost the report
            name = getattr(provider, "__name__", "section")
            section = (
                name.replace("_", "-"),
                name.replace("_", " ").capitalize(),
                f'<p class="note">Not shown: {html.escape(one_line(exc))}</p>',
            )
        if section is not None:
            sections.append(section)
    return sections


#: plots in the order the page shows them: file under the run folder, heading, what it shows
PLOTS: tuple[tuple[str, str, str], ...] = (
    (
        "plots/clusters.png",
        "Clusters",
        "Each cluster, largest first, with a random sample of its images.",
    ),
    (
        "plots/map.png",
        "Map of the features",
        "The clustered features in two dimensions, coloured by cluster and by true label.",
    ),
    (
        "plots/confusion.png",
        "Clusters against labels",
        "How many images of each true label fell in each cluster; the matched pairs are outlined.",
    ),
    (
        "plots/reconstructions.png",
        "Reconstructions",
        "Images above what the autoencoder makes of them.",
    ),
    ("plots/training.png", "Training", "Loss per epoch of each trained encoder."),
    ("plots/k-sweep.png", "Choosing k", "Internal scores for each number of clusters tried."),
    ("k-sweep.png", "Choosing k", "Internal scores for each number of clusters tried."),
)

#: metrics.json keys shown in the scores table, with what each means
METRICS: tuple[tuple[str, str, str], ...] = (
    (
        "acc",
        "ACC",
        "accuracy under the best one-to-one matching of clusters to labels (higher is better)",
    ),
    ("nmi", "NMI", "normalised mutual information with the labels (higher is better)"),
    ("ari", "ARI", "adjusted Rand index against the labels (higher is better)"),
    ("purity", "purity", "share of images in their cluster's majority label"),
    (
        "silhouette",
        "silhouette",
        "cohesion against separation of the clusters, -1 to 1, no labels needed",
    ),
    (
        "davies_bouldin",
        "Davies-Bouldin",
        "cluster spread against distance between clusters (lower is better)",
    ),
    (
        "calinski_harabasz",
        "Calinski-Harabasz",
        "between- to within-cluster dispersion (higher is better)",
    ),
    ("n_clusters", "clusters", "clusters found, noise not counted"),
    ("noise", "noise", "images left out as noise"),
    ("n_images", "images", "images clustered"),
    ("loss", "loss", "the last training loss of the encoder"),
    ("val_loss", "val_loss", "the last validation loss of the encoder"),
)

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:1280px;padding:1.5rem;color:#1d1d1f;background:#fff;line-height:1.45}
h1{font-size:1.5rem;margin-bottom:.2rem}
h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
.lead{color:#555;margin-top:0}table{border-collapse:collapse;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .6rem;text-align:left;vertical-align:top}
th{background:#f4f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9rem}pre{background:#f6f6f8;padding:.8rem;overflow-x:auto}
.note{color:#555;font-size:.9rem}nav a{margin-right:1rem}
"""


def read_optional(path: Path) -> str | None:
    """A text file's content, or None when it is not there."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from the run folder ({} when the file is missing)."""
    text = read_optional(path)
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path.name} in the run folder is not valid JSON ({exc}).") from None
    return value if isinstance(value, dict) else {}


def data_uri(path: Path) -> str:
    """A PNG file as a ``data:`` URI, so the page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def format_number(value: Any) -> str:
    """Scores with four decimals, counts with thousands separators."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.4f}"
    return str(value)


def markdown_table(lines: list[str]) -> str:
    """A Markdown pipe table as an HTML table: header row, alignment row, body rows."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    is_rule = [all(c and set(c) <= set("-: ") for c in row) for row in rows]
    rule = next((row for row, flag in zip(rows, is_rule, strict=True) if flag), [])
    right = [c.endswith(":") and not c.startswith(":") for c in rule]
    body = [row for row, flag in zip(rows[1:], is_rule[1:], strict=True) if not flag]
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in rows[0]) + "</tr>"]
    for row in body:
        cells = "".join(
            f'<td class="num">{html.escape(c)}</td>'
            if i < len(right) and right[i]
            else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        out.append(f"<tr>{cells}</tr>")
    return "\n".join([*out, "</table>"])


def clusters_section(markdown: str) -> str:
    """The table of clusters.md, and its lines in words, as HTML."""
    lines = markdown.splitlines()
    table = [line for line in lines if line.lstrip().startswith("|")]
    words = [line[2:] for line in lines if line.startswith("- ")]
    parts = [markdown_table(table)] if table else []
    if words:
        parts.append("<details><summary>In words</summary><ul>")
        parts += [f"<li>{html.escape(w)}</li>" for w in words]
        parts.append("</ul></details>")
    return "\n".join(parts)


def metrics_section(metrics: dict[str, Any]) -> str:
    """The scores table, then the seconds each stage took."""
    rows = [
        f'<tr><th>{label}</th><td class="num">{html.escape(format_number(metrics[key]))}</td>'
        f"<td>{html.escape(meaning)}</td></tr>"
        for key, label, meaning in METRICS
        if key in metrics
    ]
    parts = (
        ["<table>", *rows, "</table>"] if rows else ['<p class="note">No scores were recorded.</p>']
    )
    timings = metrics.get("timings") or {}
    if timings:
        parts.append("<h3>Time per stage (seconds)</h3><table>")
        parts += [
            f'<tr><th>{html.escape(str(k))}</th><td class="num">{float(v):,.1f}</td></tr>'
            for k, v in timings.items()
        ]
        parts.append("</table>")
    return "\n".join(parts)


def plots_section(run_dir: Path) -> str:
    """Every plot the run folder holds, embedded, in a fixed order; extra PNGs after them."""
    known = {name for name, _, _ in PLOTS}
    seen_headings: set[str] = set()
    parts = []
    entries = [(n, h, c) for n, h, c in PLOTS]
    extras = sorted(p.relative_to(run_dir).as_posix() for p in (run_dir / "plots").glob("*.png"))
    entries += [
        (name, Path(name).stem.replace("-", " ").capitalize(), "")
        for name in extras
        if name not in known
    ]
    for name, heading, caption in entries:
        path = run_dir / name
        if not path.is_file() or heading in seen_headings:
            continue
        seen_headings.add(heading)
        parts.append(
            f"<h2>{html.escape(heading)}</h2><figure>"
            f'<img src="{data_uri(path)}" alt="{html.escape(heading)}: {html.escape(name)}">'
            f"<figcaption>{html.escape(caption)} <code>{html.escape(name)}</code></figcaption>"
            "</figure>"
        )
    montages = sorted((run_dir / "plots" / "clusters").glob("*.png"))
    if montages:
        parts.append(
            f'<p class="note">{len(montages):,} per-cluster montages are in '
            "<code>plots/clusters/</code> beside this page (not embedded, to keep it small).</p>"
        )
    if not parts:
        parts.append(
            '<p class="note">This run has no plots (it ran with --no-plots): '
            "<code>imgclust report RUN</code> draws them.</p>"
        )
    return "\n".join(parts)


def build_report(run_dir: Path, extra_sections: Iterable[Section] = ()) -> str:
    """The report page of a run folder, as HTML text; ``extra_sections`` and those of the
    registered providers follow the cluster table.
    """
    from .report_explorer import STYLE as EXPLORER_STYLE
    from .report_explorer import explorer_section

    run_dir = Path(run_dir)
    metrics = read_json(run_dir / "metrics.json")
    summary = read_json(run_dir / "summary.json")
    config = read_optional(run_dir / "config.toml")
    clusters = read_optional(run_dir / "clusters.md")
    name = run_dir.name.removesuffix(INCOMPLETE)
    facts = []
    if summary:
        facts.append(html.escape(str(summary.get("pipeline", ""))))
        if "n_images" in summary:
            shape = "x".join(str(s) for s in summary.get("image_shape", []))
            facts.append(f"{summary['n_images']:,} images" + (f" of {shape}" if shape else ""))
        facts.append(f"seed {html.escape(str(summary.get('seed', '-')))}")
        if summary.get("imgclust_version"):
            facts.append(f"imgclust {html.escape(str(summary['imgclust_version']))}")
    sections = [
        ("explorer", "Explorer", explorer_section(run_dir)),
        ("scores", "Scores", metrics_section(metrics)),
        ("plots", "Plots", plots_section(run_dir)),
        (
            "clusters",
            "What each cluster holds",
            clusters_section(clusters)
            if clusters
            else '<p class="note">clusters.md is missing.</p>',
        ),
        *extra_sections,
        *provided_sections(run_dir),
        (
            "config",
            "Configuration",
            '<p class="note">config.toml: <code>imgclust run --config config.toml</code> '
            "repeats the run.</p>"
            f"<pre>{html.escape(config)}</pre>"
            if config
            else '<p class="note">config.toml is missing.</p>',
        ),
    ]
    body = [f"<h1>{html.escape(name)}</h1>", f'<p class="lead">{" · ".join(facts)}</p>']
    for anchor, heading, content in sections:
        tag = "div" if anchor == "plots" else "section"
        title = "" if anchor == "plots" else f"<h2>{html.escape(heading)}</h2>"
        body.append(f'<{tag} id="{html.escape(anchor)}">{title}\n{content}\n</{tag}>')
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(name)}: imgclust report</title>\n"
        f"<style>{STYLE}{EXPLORER_STYLE}</style>\n</head>\n"
        "<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def write_report(run_dir: Path) -> Path:
    """Write ``report.html`` into the run folder and return its path."""
    return atomic.write_text(Path(run_dir) / REPORT, build_report(run_dir))


def write_report_quietly(
    run_dir: Path, log: Callable[[str], None] = lambda message: None
) -> Path | None:
    """Write the report; if that fails, log one line and return None (the run stays intact)."""
    try:
        return write_report(run_dir)
    except Exception as exc:
        from .plots.stage import one_line

        log(f"warning: {REPORT} not written: {one_line(exc)}")
        return None
