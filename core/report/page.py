"""``report.html``: one self-contained page of a run (the explorer, configuration, scores, the
cluster table, the plots embedded as data URIs, inline CSS and JavaScript), readable offline; all
but the explorer reads without JavaScript.

More sections (a command's findings about the run) join the page through :func:`add_section`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from imgclust.errors import DataError, one_line
from imgclust.io import atomic
from imgclust.io.runfiles import (
    is_number,
    read_clusters_markdown,
    read_metrics,
    read_run_bytes,
    read_run_text,
    read_summary,
)
from imgclust.io.runfolder import INCOMPLETE, os_hint, os_reason
from imgclust.kit.invariances import SMALL_THRESHOLD, THRESHOLD
from imgclust.report.explorer import STYLE as EXPLORER_STYLE
from imgclust.report.explorer import explorer_section
from imgclust.report.page_text import page_text, png_uri

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

    sections = []
    for provider in SECTION_PROVIDERS:
        try:
            section = provider(run_dir)
        except Exception as exc:  # an extra section must never cost the report
            name = getattr(provider, "__name__", "section")
            section = (
                name.replace("_", "-"),
                name.replace("_", " ").capitalize(),
                f'<p class="note">Not shown: {page_text(one_line(exc, 200, with_type=True))}</p>',
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


def data_uri(path: Path) -> str | None:
    """A PNG file as a ``data:`` URI, so the page needs no other file; None when the file is
    not a PNG (only PNG data is ever embedded)."""
    data = read_run_bytes(path)
    return None if data is None else png_uri(data)


def format_number(value: Any) -> str:
    """Scores with four decimals, counts with thousands separators."""
    if not is_number(value):
        return "-"
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
    out = ["<table>", "<tr>" + "".join(f"<th>{page_text(c)}</th>" for c in rows[0]) + "</tr>"]
    for row in body:
        cells = "".join(
            f'<td class="num">{page_text(c)}</td>'
            if i < len(right) and right[i]
            else f"<td>{page_text(c)}</td>"
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
        parts += [f"<li>{page_text(w)}</li>" for w in words]
        parts.append("</ul></details>")
    return "\n".join(parts)


def metrics_section(metrics: dict[str, Any]) -> str:
    """The scores table, then the seconds each stage took."""
    rows = [
        f"<tr><th>{page_text(label)}</th>"
        f'<td class="num">{page_text(format_number(metrics[key]))}</td>'
        f"<td>{page_text(meaning)}</td></tr>"
        for key, label, meaning in METRICS
        if key in metrics
    ]
    parts = (
        ["<table>", *rows, "</table>"] if rows else ['<p class="note">No scores were recorded.</p>']
    )
    parts += invariances_table(metrics.get("invariances"))
    timings = metrics.get("timings") or {}
    if timings:
        parts.append("<h3>Time per stage (seconds)</h3><table>")
        parts += [
            f'<tr><th>{page_text(k)}</th><td class="num">{page_text(f"{float(v):,.1f}")}</td></tr>'
            for k, v in timings.items()
        ]
        parts.append("</table>")
    return "\n".join(parts)


def invariances_table(record: Any) -> list[str]:
    """The transformations the run found the images invariant to, with their measured ratios."""
    if not isinstance(record, dict):
        return []
    kept = [str(k) for k in record.get("kept") or [] if isinstance(k, str)]
    ratios = record.get("ratios") if isinstance(record.get("ratios"), dict) else {}
    parts = [
        "<h3>Invariances</h3>",
        f'<p class="note">Kept: {page_text(", ".join(kept) or "none")} '
        f"({page_text(record.get('mode', ''))}). A transformation is kept when transformed "
        "images lie about as near the data as untransformed ones: the ratio of "
        f"nearest-neighbour distances is at most {THRESHOLD} for a mirror, flip or quarter "
        f"turn, {SMALL_THRESHOLD} for a small rotation, shift, scale or brightness change.</p>",
    ]
    if ratios:
        parts.append("<table><tr><th>transformation</th><th>ratio</th><th>kept</th></tr>")
        parts += [
            f'<tr><th>{page_text(name)}</th><td class="num">'
            f"{page_text(format_number(ratio))}</td>"
            f"<td>{'yes' if name in kept else 'no'}</td></tr>"
            for name, ratio in ratios.items()
        ]
        parts.append("</table>")
    return parts


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
        uri = data_uri(path)
        if uri is None:
            continue
        seen_headings.add(heading)
        parts.append(
            f"<h2>{page_text(heading)}</h2><figure>"
            f'<img src="{page_text(uri)}" alt="{page_text(heading)}: {page_text(name)}">'
            f"<figcaption>{page_text(caption)} <code>{page_text(name)}</code></figcaption>"
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

    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    summary = read_summary(run_dir)
    config = read_run_text(run_dir / "config.toml")
    clusters = read_clusters_markdown(run_dir)
    name = run_dir.name.removesuffix(INCOMPLETE)
    facts = []
    if summary:
        facts.append(str(summary.get("pipeline") or ""))
        if summary.get("n_images") is not None:
            shape = "x".join(str(s) for s in summary.get("image_shape") or [])
            facts.append(f"{summary['n_images']:,} images" + (f" of {shape}" if shape else ""))
        facts.append(f"seed {summary.get('seed', '-')}")
        if summary.get("imgclust_version"):
            facts.append(f"imgclust {summary['imgclust_version']}")
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
            f"<pre>{page_text(config)}</pre>"
            if config
            else '<p class="note">config.toml is missing.</p>',
        ),
    ]
    body = [f"<h1>{page_text(name)}</h1>", f'<p class="lead">{page_text(" · ".join(facts))}</p>']
    for anchor, heading, content in sections:
        tag = "div" if anchor == "plots" else "section"
        title = "" if anchor == "plots" else f"<h2>{page_text(heading)}</h2>"
        body.append(f'<{tag} id="{page_text(anchor)}">{title}\n{content}\n</{tag}>')
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{page_text(name)}: imgclust report</title>\n"
        f"<style>{STYLE}{EXPLORER_STYLE}</style>\n</head>\n"
        "<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def write_report(run_dir: Path) -> Path:
    """Write ``report.html`` into the run folder and return its path; a failed write (a full
    disk, no permission) is one line and leaves any earlier page whole."""
    path = Path(run_dir) / REPORT
    page = build_report(run_dir)
    try:
        return atomic.write_text(path, page)
    except OSError as exc:
        raise DataError(
            f"cannot write {str(path)!r}: {os_reason(exc)}; {os_hint(exc)}, then run "
            "`imgclust report RUN --html-only` again."
        ) from None


def write_report_quietly(
    run_dir: Path, log: Callable[[str], None] = lambda message: None
) -> Path | None:
    """Write the report; if that fails, log one line and return None (the run stays intact)."""
    try:
        return write_report(run_dir)
    except Exception as exc:
        log(f"warning: {REPORT} not written: {one_line(exc, 200, with_type=True)}")
        return None
