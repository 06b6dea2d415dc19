"""The explorer of ``report.html``: an interactive map (hover a point to see its image, click to
select its cluster), a paged gallery of each cluster's images, the clusters' sizes and make-up,
and filters by cluster and true label. Everything is inline: the data as JSON in a
``<script type="application/json">`` block, the thumbnails as PNG sprite sheets in data URIs,
and the code as one inline script. Text from the run reaches the page only as JSON (with
``<``, ``>`` and ``&`` escaped) and the script only sets it as ``textContent``, never as markup.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.errors import DataError
from imgclust.io.outputs import read_assignments, read_image_scores, read_issues, read_label_review
from imgclust.io.runfiles import read_run_bytes, read_run_text
from imgclust.report.page_text import page_text, png_uri, script_json
from imgclust.report.plots.explorer import FOLDER, MAP_SCALE, POINTS
from imgclust.report.plots.inputs import NOISE, cluster_order, natural_key

PAGE_SIZE = 120  # thumbnails per gallery page
MAKEUP = 5  # labels named in a cluster's make-up
ISLAND_GRID = 40  # the map is cut into this many cells a side to find each cluster's islands
ISLAND_SHARE = 0.05  # an island is numbered when it holds this share of its cluster's points
ISLAND_POINTS = 5  # ... and at least this many


class Unusable(Exception):
    """The explorer's data in the run folder is missing or damaged: the page says so."""


def whole_numbers(values: Any, name: str, low: int, high: int) -> list[int]:
    """A list of integers in [low, high), or :class:`Unusable`."""
    if not isinstance(values, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and low <= v < high for v in values
    ):
        raise Unusable(f"{name} is not a list of whole numbers from {low} to {high - 1}")
    return values


def read_points(run_dir: Path, n: int) -> dict[str, Any]:
    """``plots/explorer/points.json``, checked against the run's number of images."""
    path = run_dir / "plots" / FOLDER / POINTS
    try:
        text = read_run_text(path)
        if text is None:
            raise Unusable("the run has no explorer data (it ran with --no-plots?)")
        record = json.loads(text)
    except DataError as exc:
        raise Unusable(str(exc).rstrip(".")) from None
    except (ValueError, RecursionError) as exc:
        raise Unusable(f"{POINTS} cannot be read ({type(exc).__name__})") from None
    if not isinstance(record, dict) or record.get("n") != n:
        raise Unusable(f"{POINTS} does not describe this run's {n} images")
    return record


def checked_map(record: Any, n: int) -> dict[str, Any] | None:
    """The map's points, or None when the run has none."""
    if record is None:
        return None
    if not isinstance(record, dict):
        raise Unusable("the map's record is not an object")
    index = whole_numbers(record.get("index"), "the map's index", 0, n)
    x = whole_numbers(record.get("x"), "the map's x", 0, MAP_SCALE + 1)
    y = whole_numbers(record.get("y"), "the map's y", 0, MAP_SCALE + 1)
    if not len(index) == len(x) == len(y):
        raise Unusable("the map's index and coordinates differ in length")
    axes = record.get("axes")
    if not isinstance(axes, list):
        axes = []
    return {
        "i": index,
        "x": x,
        "y": y,
        "method": str(record.get("method", "")),
        "axes": [str(a) for a in axes[:2]],
        "note": str(record.get("note", "")),
    }


def checked_thumbs(record: Any, n: int, folder: Path) -> dict[str, Any] | None:
    """The thumbnails' rows and sprite sheets (as data URIs), or None when the run has none."""
    if record is None:
        return None
    if not isinstance(record, dict):
        raise Unusable("the thumbnails' record is not an object")
    index = whole_numbers(record.get("index"), "the thumbnails' index", 0, n)
    given = [record.get(k) for k in ("tile", "columns", "per_sheet")]
    sizes = [v for v in given if isinstance(v, int) and 0 < v <= 1 << 16]
    if len(sizes) != len(given):
        raise Unusable("the thumbnails' tile sizes are not positive whole numbers")
    tile, columns, per_sheet = sizes
    names = record.get("sheets")
    needed = -(-len(index) // per_sheet)
    if not isinstance(names, list) or len(names) != needed:
        raise Unusable("the thumbnails' sheets do not match their count")
    sheets = []
    for number, name in enumerate(names):
        if name != f"thumbs-{number}.png":
            raise Unusable("a thumbnail sheet has an unexpected name")
        try:
            data = read_run_bytes(folder / name)
        except DataError as exc:
            raise Unusable(str(exc).rstrip(".")) from None
        if data is None:
            raise Unusable(f"{name} is missing")
        uri = png_uri(data)
        if uri is None:
            raise Unusable(f"{name} is not a PNG")
        sheets.append(uri)
    return {"i": index, "tile": tile, "columns": columns, "per_sheet": per_sheet, "sheets": sheets}


def palette(count: int) -> list[str]:
    """``count`` distinguishable colours: colorcet's Glasbey palette that starts with
    matplotlib's ten, so small runs keep the usual colours and large ones stay apart."""
    import colorcet

    colours = list(colorcet.glasbey_category10)
    chosen = [colours[i % len(colours)] for i in range(max(count, 1))]
    return ["#" + "".join(f"{round(255 * v):02x}" for v in rgb) for rgb in chosen]


def island_labels(shown: dict[str, Any], clusters: np.ndarray) -> list[list[int]]:
    """Where the map writes each cluster's number: at the median point of every island (a
    connected patch of map cells) holding a fair share of the cluster's points, or of its
    largest island when none does."""
    from scipy import ndimage

    rows = np.asarray(shown["i"], dtype=np.int64)
    x = np.asarray(shown["x"], dtype=np.int64)
    y = np.asarray(shown["y"], dtype=np.int64)
    cells = lambda v: np.minimum(v * ISLAND_GRID // (MAP_SCALE + 1), ISLAND_GRID - 1)  # noqa: E731
    cx, cy = cells(x), cells(y)
    where = []
    for cluster in np.unique(clusters[rows]):
        if cluster < 0:
            continue
        mine = clusters[rows] == cluster
        grid = np.zeros((ISLAND_GRID, ISLAND_GRID), dtype=bool)
        grid[cx[mine], cy[mine]] = True
        islands, count = ndimage.label(grid, structure=np.ones((3, 3)))
        island_of = islands[cx[mine], cy[mine]]
        sizes = np.bincount(island_of, minlength=count + 1)
        enough = max(ISLAND_POINTS, ISLAND_SHARE * mine.sum())
        numbered = [i for i in range(1, count + 1) if sizes[i] >= enough]
        for island in numbered or [int(sizes.argmax())]:  # every cluster is numbered once
            members = island_of == island
            at = [int(np.median(x[mine][members])), int(np.median(y[mine][members]))]
            where.append([int(cluster), *at])
    return where


def image_views(run_dir: Path, ids: list[str]) -> dict[str, Any]:
    """Per image, what the gallery can sort and filter by: confidence and outlier score
    (assignments.csv), issues (issues.csv) and the label review's ranking (label_review.csv).
    A missing or damaged file leaves its view out."""

    views: dict[str, Any] = {"conf": None, "out": None, "issues": None, "review": None}
    try:
        scores = read_image_scores(run_dir / "assignments.csv")
    except DataError:
        scores = None
    if scores is not None:
        views["conf"] = [round(float(v), 3) for v in scores["confidence"]]
        views["out"] = [round(float(v), 3) if np.isfinite(v) else 1e9 for v in scores["outlier"]]
    row_of = {image_id: row for row, image_id in enumerate(ids)}
    try:
        found = read_issues(run_dir / "issues.csv")
    except DataError:
        found = None
    if found is not None:
        views["issues"] = [[row_of[i], text] for i, text in found if i in row_of]
    try:
        review = read_label_review(run_dir / "label_review.csv")
    except DataError:
        review = None
    if review is not None:
        views["review"] = [[row_of[i], text] for i, text in review if i in row_of]
    return views


def cluster_table(clusters: np.ndarray, labels: np.ndarray | None) -> list[dict[str, Any]]:
    """Each cluster largest first (noise last): id, size and its commonest labels."""

    order, sizes = cluster_order(clusters)
    rows = []
    for cluster in order:
        row: dict[str, Any] = {"id": cluster, "size": sizes[cluster], "noise": cluster == NOISE}
        if labels is not None:
            counts = Counter(labels[clusters == cluster].tolist())
            row["makeup"] = [[int(k), int(v)] for k, v in counts.most_common(MAKEUP)]
        rows.append(row)
    return rows


def explorer_data(run_dir: Path) -> dict[str, Any]:
    """Everything the explorer script reads, from the run folder."""

    try:
        ids, clusters, label_names = read_assignments(run_dir / "assignments.csv")
    except DataError as exc:
        raise Unusable(str(exc)) from None
    n = len(ids)
    record = read_points(run_dir, n)
    names: list[str] | None = None
    codes = None
    if label_names is not None:
        names = sorted({str(v) for v in label_names.tolist()}, key=natural_key)
        position = {name: i for i, name in enumerate(names)}
        codes = np.array([position[str(v)] for v in label_names.tolist()], dtype=np.int64)
    shown = checked_map(record.get("map"), n)
    if shown is not None:
        shown["labels"] = island_labels(shown, clusters)
    table = cluster_table(clusters, codes)
    return {
        "n": n,
        "seed": record.get("seed", 0) if isinstance(record.get("seed"), int) else 0,
        "ids": ids,
        "c": clusters.tolist(),
        "labels": names,
        "l": None if codes is None else codes.tolist(),
        "clusters": table,
        "palette": palette(sum(not c["noise"] for c in table)),
        "map": shown,
        "thumbs": checked_thumbs(record.get("thumbs"), n, run_dir / "plots" / FOLDER),
        "page": PAGE_SIZE,
        "run": run_dir.name,
        **image_views(run_dir, ids),
    }


def describe(data: dict[str, Any]) -> str:
    """One sentence on what the explorer holds: how many points and thumbnails, which sample."""
    n, seed = data["n"], data["seed"]
    parts = [f"{n:,} images in {sum(not c['noise'] for c in data['clusters']):,} clusters."]
    shown = data["map"]
    if shown is not None:
        how = {"UMAP": "by UMAP", "PCA": "by PCA", "features": "as they are"}.get(
            shown["method"], ""
        )
        drawn = len(shown["i"])
        which = f"all {n:,} points"
        if drawn < n:
            which = f"{drawn:,} points (random sample, seed {seed})"
        parts.append(f"The map shows {which}, projected to 2-D {how}.".replace("  ", " "))
    else:
        parts.append("No map: the features were not available.")
    thumbs = data["thumbs"]
    if thumbs is None:
        parts.append("No thumbnails: the images were not available when the plots were drawn.")
    elif len(thumbs["i"]) == n:
        parts.append("The gallery holds every image.")
    else:
        parts.append(
            f"The gallery holds a random sample of {len(thumbs['i']):,} of the {n:,} images "
            f"(seed {seed}), to keep this page small."
        )
    return " ".join(parts)


def explorer_section(run_dir: Path) -> str:
    """The explorer as HTML, or a one-line note when the run folder lacks its data."""
    try:
        data = explorer_data(Path(run_dir))
    except Unusable as reason:
        return (
            f'<p class="note">No explorer: {page_text(str(reason))}. '
            "<code>imgclust report RUN</code> draws it.</p>"
        )
    has_labels = data["labels"] is not None
    label_filter = (
        '<label>True label <select id="ex-label" aria-label="Show only images of this true label">'
        '<option value="">all labels</option></select></label>'
        if has_labels
        else ""
    )
    return f"""<p class="note" id="ex-summary">{page_text(describe(data))}</p>
<noscript><p class="note">The explorer needs JavaScript; the plots and tables below do not.</p>
</noscript>
<div class="ex-controls" role="group" aria-label="Filters">
<label>Cluster <select id="ex-cluster" aria-label="Show only this cluster">
<option value="">all clusters</option></select></label>
{label_filter}
<label>View <select id="ex-view" aria-label="Which images the gallery shows, in which order">
<option value="all">every image, most confident first</option></select></label>
<button type="button" id="ex-reset">Show all</button>
<span id="ex-status" class="note" aria-live="polite"></span>
</div>
<div class="ex-main">
<div class="ex-mapbox">
<canvas id="ex-map" width="640" height="640" tabindex="0" role="img"
aria-label="Map of the images: each dot is an image, coloured by cluster. Hover a dot to see
the image; click it to show its cluster in the gallery; alt-drag a loop to select the images
inside it. The same images are in the gallery below.">
</canvas>
<div id="ex-tip" role="tooltip" hidden><img id="ex-tip-img" alt="">
<div id="ex-tip-text"></div></div>
<p class="note" id="ex-axes"></p>
<p class="note" id="ex-help">Hover a dot to see its image; click it to show its cluster;
shift-click adds it to the selection. To select many, alt-drag a loop around them, or press
<button type="button" id="ex-lasso" aria-pressed="false">Lasso</button> and drag (Escape
cancels); then move or drop them under Curate.</p>
</div>
<div class="ex-side">
<table id="ex-clusters" aria-label="Clusters, largest first: size and make-up">
<thead><tr><th scope="col">cluster</th><th scope="col">images</th>
<th scope="col">{"make-up (true labels)" if has_labels else "share"}</th></tr></thead>
<tbody></tbody></table>
</div>
</div>
<h3 id="ex-gallery-title">Gallery</h3>
<div class="ex-pager" role="group" aria-label="Gallery pages">
<button type="button" id="ex-prev" aria-label="Previous page">&lsaquo; Previous</button>
<span id="ex-page" aria-live="polite"></span>
<button type="button" id="ex-next" aria-label="Next page">Next &rsaquo;</button>
</div>
<div id="ex-gallery" role="list" aria-labelledby="ex-gallery-title"></div>
{CURATE}
<script type="application/json" id="ex-data">{script_json(data)}</script>
<script>{SCRIPT}</script>"""


STYLE = """
.ex-controls{display:flex;flex-wrap:wrap;gap:.6rem 1.2rem;align-items:center;margin:.6rem 0}
.ex-controls select,.ex-controls button,.ex-pager button{font:inherit;padding:.15rem .5rem}
.ex-main{display:flex;flex-wrap:wrap;gap:1.2rem;align-items:flex-start}
.ex-mapbox{position:relative;flex:0 1 640px;max-width:100%}
#ex-map{width:100%;height:auto;aspect-ratio:1/1;border:1px solid #ddd;cursor:crosshair;
display:block;background:#fff;touch-action:none}
#ex-map.ex-lassoing{cursor:cell}
#ex-lasso{font:inherit;padding:0 .4rem}
#ex-lasso[aria-pressed="true"]{background:#1a73e8;color:#fff;border-color:#1a73e8}
#ex-map:focus,button:focus,select:focus,#ex-gallery img:focus{outline:3px solid #1a73e8;
outline-offset:2px}
#ex-tip{position:absolute;pointer-events:none;background:#fff;border:1px solid #888;
padding:.3rem;font-size:.8rem;box-shadow:0 2px 6px rgba(0,0,0,.25);z-index:2;max-width:14rem}
#ex-tip img{display:block;width:84px;height:84px;image-rendering:pixelated;margin-bottom:.2rem}
.ex-side{flex:1 1 320px;max-height:640px;overflow-y:auto}
#ex-clusters{width:100%;font-size:.9rem}
#ex-clusters button{font:inherit;border:0;background:none;color:#1a4fa0;text-decoration:underline;
cursor:pointer;padding:0}
#ex-clusters tr.ex-on{background:#eef3fd}
.ex-swatch{display:inline-block;width:.8rem;height:.8rem;margin-right:.35rem;vertical-align:-.1rem;
border-radius:2px}
.ex-bar{display:inline-block;height:.55rem;background:#9db7e0;margin-right:.3rem}
.ex-pager{display:flex;gap:.8rem;align-items:center;margin:.4rem 0}
#ex-gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(60px,1fr));gap:4px}
#ex-gallery img{width:100%;height:auto;aspect-ratio:1/1;image-rendering:pixelated;
border:2px solid transparent;background:#000}
#ex-gallery h4{grid-column:1/-1;margin:.6rem 0 .1rem;font-size:.95rem}
#ex-gallery img.ex-picked{outline:3px solid #e8461a;outline-offset:-3px}
#ex-gallery img.ex-dropped{opacity:.35}
#ex-curate{border:1px solid #ddd;padding:.3rem .8rem;margin:.8rem 0;background:#fafafa}
#ex-curate summary{font-weight:bold;cursor:pointer}
#ex-curate input{font:inherit;padding:.1rem .3rem;width:9rem}
"""

CURATE = """<details id="ex-curate"><summary>Curate: rename, merge, move, drop, download</summary>
<p class="note">Click images in the gallery to select them (shift-click selects a range,
shift-click on the map adds the image under the pointer, alt-drag or the Lasso button draws a
loop on the map that adds every image inside it). Edits are kept in this browser for
this run and leave as <code>labels.csv</code> and <code>curation.json</code>; <code>imgclust
export RUN OUT --curation curation.json</code> writes folders as you named them.</p>
<div class="ex-controls" role="group" aria-label="Selected images">
<span id="ex-selected" aria-live="polite">0 selected</span>
<label>Move selected to <select id="ex-move-to"></select></label>
<button type="button" id="ex-move">Move</button>
<button type="button" id="ex-drop">Drop selected (outliers)</button>
<button type="button" id="ex-clear">Clear selection</button>
</div>
<div class="ex-controls" role="group" aria-label="Clusters">
<label>Rename <select id="ex-rename-which"></select></label>
<label>to <input id="ex-rename-to" maxlength="80" aria-label="New name"></label>
<button type="button" id="ex-rename">Rename</button>
<label>Merge <select id="ex-merge-from"></select></label>
<label>into <select id="ex-merge-into"></select></label>
<button type="button" id="ex-merge">Merge</button>
</div>
<div class="ex-controls" role="group" aria-label="Keep the edits">
<button type="button" id="ex-download-csv">Download labels.csv</button>
<button type="button" id="ex-download-json">Download curation.json</button>
<button type="button" id="ex-forget">Forget all edits</button>
<span id="ex-edits" class="note" aria-live="polite"></span>
</div>
</details>"""

SCRIPT = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("ex-data").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var PALETTE = D.palette;
  var NOISE_COLOUR = "#b0b0b0";
  function colourOf(row) {
    var c = clusterOf(row);
    return c === DROPPED ? NOISE_COLOUR : colour[c] || NOISE_COLOUR;
  }
  var colour = {}, rank = {};
  D.clusters.forEach(function (c, i) {
    rank[c.id] = i;
    colour[c.id] = c.noise ? NOISE_COLOUR : PALETTE[i % PALETTE.length];
  });
  var state = { cluster: null, label: null, page: 0, view: "all" };
  // curation: the person's edits, kept in localStorage for this run; clusterOf applies them
  var DROPPED = -2, STORE = "imgclust-curation:" + D.run + ":" + D.n;
  var edits = { names: {}, merged: {}, moved: {}, dropped: {} };
  try {
    var kept = JSON.parse(window.localStorage.getItem(STORE) || "null");
    if (kept && typeof kept === "object") {
      ["names", "merged", "moved", "dropped"].forEach(function (k) {
        if (kept[k] && typeof kept[k] === "object") { edits[k] = kept[k]; }
      });
    }
  } catch (e) { /* no storage (private window): edits last until the page closes */ }
  function saveEdits() {
    try { window.localStorage.setItem(STORE, JSON.stringify(edits)); } catch (e) { /* none */ }
  }
  function finalCluster(c) {
    for (var hops = 0; Object.prototype.hasOwnProperty.call(edits.merged, c) && hops < 1000;
      hops++) { c = Number(edits.merged[c]); }
    return c;
  }
  function clusterOf(row) {
    var id = D.ids[row];
    if (edits.dropped[id]) { return DROPPED; }
    var moved = Object.prototype.hasOwnProperty.call(edits.moved, id);
    return finalCluster(moved ? Number(edits.moved[id]) : D.c[row]);
  }
  function clusterName(c) {
    if (c === DROPPED) { return "dropped"; }
    var base = c === -1 ? "noise" : "cluster " + c;
    return Object.prototype.hasOwnProperty.call(edits.names, c) ?
      String(edits.names[c]) + " (" + base + ")" : base;
  }
  function labelOf(row) { return D.l ? D.labels[D.l[row]] : null; }
  var issuesOf = new Map((D.issues || []).map(function (e) { return [e[0], e[1]]; }));
  var suggestedOf = new Map((D.review || []).map(function (e) { return [e[0], e[1]]; }));
  function describeRow(row) {
    var text = D.ids[row] + ", " + clusterName(clusterOf(row));
    var label = labelOf(row);
    if (label !== null) { text += ", label " + label; }
    if (D.conf) { text += ", confidence " + D.conf[row].toFixed(2); }
    if (D.out) { text += ", outlier " + (D.out[row] >= 1e9 ? "inf" : D.out[row].toFixed(2)); }
    if (issuesOf.has(row)) { text += ", issues: " + issuesOf.get(row).split(";").join(", "); }
    if (suggestedOf.has(row)) { text += ", neighbours say " + suggestedOf.get(row); }
    return text;
  }

  // thumbnails: row -> tile number; sprite sheets decoded once, tiles cut out on demand
  var tileOf = new Int32Array(D.n).fill(-1);
  var sheets = [], sheetsReady = Promise.resolve();
  if (D.thumbs) {
    D.thumbs.i.forEach(function (row, t) { tileOf[row] = t; });
    sheetsReady = Promise.all(D.thumbs.sheets.map(function (uri) {
      return new Promise(function (resolve) {
        var image = new Image();
        image.onload = function () { resolve(image); };
        image.onerror = function () { resolve(null); };
        image.src = uri;
        sheets.push(image);
      });
    }));
  }
  var cutter = document.createElement("canvas");
  var cache = new Map();
  function tileSource(row) {
    var t = tileOf[row];
    if (t < 0 || !D.thumbs) { return null; }
    if (cache.has(t)) { return cache.get(t); }
    var T = D.thumbs, size = T.tile, sheet = sheets[Math.floor(t / T.per_sheet)];
    if (!sheet || !sheet.complete || !sheet.naturalWidth) { return null; }
    var k = t % T.per_sheet;
    cutter.width = size; cutter.height = size;
    var g = cutter.getContext("2d");
    g.clearRect(0, 0, size, size);
    g.drawImage(sheet, (k % T.columns) * size, Math.floor(k / T.columns) * size, size, size,
      0, 0, size, size);
    var url = cutter.toDataURL("image/png");
    if (cache.size > 4000) { cache.clear(); }
    cache.set(t, url);
    return url;
  }

  function matches(row) {
    return (state.cluster === null || clusterOf(row) === state.cluster) &&
      (state.label === null || D.l[row] === state.label);
  }

  // the map: points in canvas pixels, a grid of cells for hovering
  var canvas = $("ex-map"), ctx = canvas ? canvas.getContext("2d") : null;
  var M = D.map, PAD = 12, CELL = 12, px = [], py = [], grid = new Map(), pointOf = null;
  function layout() {
    if (!M) { return; }
    var w = canvas.width - 2 * PAD, h = canvas.height - 2 * PAD;
    px = new Float32Array(M.i.length); py = new Float32Array(M.i.length); grid = new Map();
    pointOf = new Int32Array(D.n).fill(-1);
    for (var j = 0; j < M.i.length; j++) {
      pointOf[M.i[j]] = j;
      px[j] = PAD + M.x[j] / 4095 * w;
      py[j] = PAD + (1 - M.y[j] / 4095) * h;
      var key = Math.floor(px[j] / CELL) + "," + Math.floor(py[j] / CELL);
      var list = grid.get(key);
      if (list) { list.push(j); } else { grid.set(key, [j]); }
    }
  }
  function draw(hovered) {
    if (!ctx) { return; }
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!M) {
      ctx.fillStyle = "#555"; ctx.font = "16px sans-serif";
      ctx.fillText("No map: the features were not available.", 20, 40);
      return;
    }
    var size = M.i.length > 20000 ? 2 : M.i.length > 5000 ? 3 : 4, half = size / 2;
    var filtered = state.cluster !== null || state.label !== null, j, row;
    if (filtered) {
      ctx.fillStyle = "#e4e4e4";
      for (j = 0; j < px.length; j++) {
        if (!matches(M.i[j])) { ctx.fillRect(px[j] - half, py[j] - half, size, size); }
      }
    }
    for (j = 0; j < px.length; j++) {
      row = M.i[j];
      if (filtered && !matches(row)) { continue; }
      ctx.fillStyle = colourOf(row);
      ctx.fillRect(px[j] - half, py[j] - half, size, size);
    }
    if (picked.size && pointOf) {  // the selection, framed in black
      ctx.strokeStyle = "#000"; ctx.lineWidth = 1;
      picked.forEach(function (row) {
        var at = pointOf[row];
        if (at >= 0) { ctx.strokeRect(px[at] - half - 1, py[at] - half - 1, size + 2, size + 2); }
      });
    }
    var scale = canvas.width / 640;
    ctx.font = "bold " + Math.round(13 * scale) + "px sans-serif";
    ctx.textAlign = "center"; ctx.textBaseline = "middle"; ctx.lineJoin = "round";
    (M.labels || []).forEach(function (at) {
      if (state.cluster !== null && at[0] !== state.cluster) { return; }
      var lx = PAD + at[1] / 4095 * (canvas.width - 2 * PAD);
      var ly = PAD + (1 - at[2] / 4095) * (canvas.height - 2 * PAD);
      ctx.strokeStyle = "#fff"; ctx.lineWidth = 4 * scale; ctx.strokeText(String(at[0]), lx, ly);
      ctx.fillStyle = "#111"; ctx.fillText(String(at[0]), lx, ly);
    });
    if (hovered !== undefined && hovered !== null) {
      ctx.strokeStyle = "#000"; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.arc(px[hovered], py[hovered], 6, 0, 2 * Math.PI); ctx.stroke();
    }
  }
  function canvasPoint(event) {
    var box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width,
      (event.clientY - box.top) * canvas.height / box.height];
  }
  function nearest(x, y) {
    var best = null, bestD = 10 * 10, cx = Math.floor(x / CELL), cy = Math.floor(y / CELL);
    for (var dx = -1; dx <= 1; dx++) {
      for (var dy = -1; dy <= 1; dy++) {
        var list = grid.get((cx + dx) + "," + (cy + dy));
        if (!list) { continue; }
        for (var k = 0; k < list.length; k++) {
          var j = list[k], d = (px[j] - x) * (px[j] - x) + (py[j] - y) * (py[j] - y);
          if (d < bestD) { bestD = d; best = j; }
        }
      }
    }
    return best;
  }
  var tip = $("ex-tip"), tipImg = $("ex-tip-img"), tipText = $("ex-tip-text");
  function showTip(j) {
    var row = M.i[j], url = tileSource(row), box = canvas.getBoundingClientRect();
    tipText.textContent = describeRow(row);
    if (url) { tipImg.src = url; tipImg.alt = "image " + describeRow(row); tipImg.hidden = false; }
    else { tipImg.removeAttribute("src"); tipImg.alt = ""; tipImg.hidden = true; }
    var left = px[j] * box.width / canvas.width + 14, top = py[j] * box.height / canvas.height + 14;
    if (left > box.width - 150) { left -= 180; }
    if (top > box.height - 130) { top -= 150; }
    tip.style.left = left + "px"; tip.style.top = top + "px";
    tip.hidden = false;
  }
  function hideTip() { if (tip) { tip.hidden = true; } }
  if (canvas && M) {
    canvas.addEventListener("mousemove", function (event) {
      if (loop) { return; }
      var p = canvasPoint(event), j = nearest(p[0], p[1]);
      if (j === null) { hideTip(); draw(); return; }
      showTip(j); draw(j);
    });
    canvas.addEventListener("mouseleave", function () { hideTip(); draw(); });
    canvas.addEventListener("click", function (event) {
      if (loopEnded || lassoOn) { loopEnded = false; return; }  // the end of a loop, not a click
      var p = canvasPoint(event), j = nearest(p[0], p[1]);
      if (j === null) { return; }
      if (event.shiftKey) { togglePick(M.i[j]); renderGallery(); draw(); return; }
      select(clusterOf(M.i[j]), null);
    });
    canvas.addEventListener("pointerdown", function (event) {
      loopEnded = false;
      if (event.button !== 0 || !(lassoOn || event.altKey)) { return; }
      event.preventDefault();
      canvas.setPointerCapture(event.pointerId);
      loop = [canvasPoint(event)]; hideTip();
    });
    canvas.addEventListener("pointermove", function (event) {
      if (!loop) { return; }
      var p = canvasPoint(event), last = loop[loop.length - 1];
      if (Math.abs(p[0] - last[0]) + Math.abs(p[1] - last[1]) >= 3) { loop.push(p); }
      drawLoop();
    });
    canvas.addEventListener("pointerup", function () {
      if (!loop) { return; }
      var path = loop;
      loop = null; loopEnded = true;
      if (path.length >= 3) { lassoSelect(path); } else { draw(); }
    });
    canvas.addEventListener("pointercancel", function () { loop = null; draw(); });
    $("ex-lasso").addEventListener("click", function () { setLasso(!lassoOn); });
    document.addEventListener("keydown", function (event) {
      if (event.key !== "Escape") { return; }
      if (loop) { loop = null; draw(); } else if (lassoOn) { setLasso(false); }
    });
    $("ex-axes").textContent = M.axes.filter(Boolean).join(" / ") + (M.note ? " · " + M.note : "");
  } else {
    $("ex-help").hidden = true;  // no map, no lasso
  }

  // the lasso: alt-drag, or drag while the Lasso button is pressed, draws a loop on the map; the
  // images drawn inside it (those the filters show) join the selection
  var loop = null, loopEnded = false, lassoOn = false;
  function setLasso(on) {
    lassoOn = on;
    $("ex-lasso").setAttribute("aria-pressed", on ? "true" : "false");
    canvas.classList.toggle("ex-lassoing", on);
  }
  function drawLoop() {
    draw();
    if (!loop || loop.length < 2) { return; }
    ctx.save();
    ctx.strokeStyle = "#111"; ctx.lineWidth = 1.5 * canvas.width / 640;
    ctx.setLineDash([6, 4]); ctx.fillStyle = "rgba(26,115,232,0.08)";
    ctx.beginPath(); ctx.moveTo(loop[0][0], loop[0][1]);
    for (var k = 1; k < loop.length; k++) { ctx.lineTo(loop[k][0], loop[k][1]); }
    ctx.closePath(); ctx.fill(); ctx.stroke(); ctx.restore();
  }
  function insideLoop(x, y, path) {  // even-odd rule: a ray to the right crosses the loop oddly
    var inside = false;
    for (var a = 0, b = path.length - 1; a < path.length; b = a++) {
      var xa = path[a][0], ya = path[a][1], xb = path[b][0], yb = path[b][1];
      if ((ya > y) !== (yb > y) && x < (xb - xa) * (y - ya) / (yb - ya) + xa) { inside = !inside; }
    }
    return inside;
  }
  function lassoSelect(path) {
    var left = Infinity, right = -Infinity, top = Infinity, bottom = -Infinity, added = 0;
    path.forEach(function (p) {
      left = Math.min(left, p[0]); right = Math.max(right, p[0]);
      top = Math.min(top, p[1]); bottom = Math.max(bottom, p[1]);
    });
    for (var j = 0; j < px.length; j++) {
      if (px[j] < left || px[j] > right || py[j] < top || py[j] > bottom) { continue; }
      var row = M.i[j];
      if (!matches(row) || picked.has(row) || !insideLoop(px[j], py[j], path)) { continue; }
      picked.add(row); lastPicked = row; added += 1;
    }
    showEdits();
    $("ex-curate").open = true;
    state.view = "picked"; viewSelect.value = "picked"; state.page = 0;
    update();
    $("ex-selected").textContent = picked.size + " selected (" + added + " by the lasso)";
    return added;
  }

  // the clusters table and the filters
  var clusterSelect = $("ex-cluster"), labelSelect = $("ex-label");
  function option(select, value, text) {
    var o = document.createElement("option"); o.value = value; o.textContent = text;
    select.appendChild(o);
  }
  var body = document.querySelector("#ex-clusters tbody"), largest = D.clusters.length ?
    Math.max.apply(null, D.clusters.map(function (c) { return c.size; })) : 1;
  D.clusters.forEach(function (c) {
    var count = c.size.toLocaleString("en");
    option(clusterSelect, String(c.id), clusterName(c.id) + " (" + count + ")");
    var tr = document.createElement("tr"); tr.dataset.cluster = String(c.id);
    var name = document.createElement("td"), button = document.createElement("button");
    var swatch = document.createElement("span");
    swatch.className = "ex-swatch"; swatch.style.background = colour[c.id];
    button.type = "button"; button.textContent = clusterName(c.id);
    button.setAttribute("aria-label", "Show " + clusterName(c.id) + " in the gallery");
    button.addEventListener("click", function () { select(c.id, null); });
    name.appendChild(swatch); name.appendChild(button);
    var size = document.createElement("td"); size.className = "num";
    size.textContent = c.size.toLocaleString("en");
    var made = document.createElement("td"), bar = document.createElement("span");
    bar.className = "ex-bar"; bar.style.width = Math.max(1, 60 * c.size / largest) + "px";
    made.appendChild(bar);
    var words = c.makeup ? c.makeup.map(function (m) {
      return D.labels[m[0]] + " (" + Math.round(100 * m[1] / c.size) + "%)";
    }).join(", ") : (100 * c.size / D.n).toFixed(1) + "% of the images";
    made.appendChild(document.createTextNode(words));
    tr.appendChild(name); tr.appendChild(size); tr.appendChild(made); body.appendChild(tr);
  });
  if (labelSelect && D.labels) {
    D.labels.forEach(function (name, i) { option(labelSelect, String(i), name); });
    labelSelect.addEventListener("change", function () {
      state.label = labelSelect.value === "" ? null : Number(labelSelect.value);
      state.page = 0; update();
    });
  }
  clusterSelect.addEventListener("change", function () {
    state.cluster = clusterSelect.value === "" ? null : Number(clusterSelect.value);
    state.page = 0; update();
  });
  $("ex-reset").addEventListener("click", function () { select(null, null); });
  function select(cluster, label) {
    state.cluster = cluster; state.label = label; state.page = 0;
    if (cluster === null && label === null) { state.view = "all"; viewSelect.value = "all"; }
    clusterSelect.value = cluster === null ? "" : String(cluster);
    if (labelSelect) { labelSelect.value = label === null ? "" : String(label); }
    update();
  }

  // the gallery: the thumbnailed images that match the filters and the view, a page at a time
  var gallery = $("ex-gallery"), pageText = $("ex-page"), status = $("ex-status");
  var thumbed = D.thumbs ? D.thumbs.i.slice() : [];
  function rankOf(row) {
    var c = clusterOf(row);
    return c === DROPPED ? D.clusters.length : rank[c] === undefined ? D.clusters.length : rank[c];
  }
  var VIEWS = {}, sizeNow = new Map();
  function sortAll() {
    sizeNow = new Map();
    for (var row = 0; row < D.n; row++) {
      var c = clusterOf(row); sizeNow.set(c, (sizeNow.get(c) || 0) + 1);
    }
    VIEWS.all = thumbed.slice().sort(function (a, b) {
      return rankOf(a) - rankOf(b) || (D.conf ? D.conf[b] - D.conf[a] : 0) || a - b;
    });
  }
  sortAll();
  var viewSelect = $("ex-view"), VIEW_NAMES = {};
  function addView(key, text, order) {
    VIEWS[key] = order; VIEW_NAMES[key] = text; option(viewSelect, key, text);
  }
  if (D.conf) {
    addView("uncertain", "uncertain: the least confident tenth, least first",
      thumbed.slice().sort(function (a, b) { return D.conf[a] - D.conf[b] || a - b; })
        .slice(0, Math.max(1, Math.ceil(thumbed.length / 10))));
  }
  if (D.out) {
    addView("outliers", "outliers: the farthest fiftieth from their cluster, farthest first",
      thumbed.slice().sort(function (a, b) { return D.out[b] - D.out[a] || a - b; })
        .slice(0, Math.max(1, Math.ceil(thumbed.length / 50))));
  }
  if (D.issues && D.issues.length) {
    addView("issues", "image issues (" + D.issues.length + ")",
      thumbed.filter(function (row) { return issuesOf.has(row); }));
  }
  if (D.review && D.review.length) {
    var reviewRank = new Map(D.review.map(function (e, i) { return [e[0], i]; }));
    addView("review", "label review: labels the neighbours reject (" + D.review.length + ")",
      thumbed.filter(function (row) { return reviewRank.has(row); })
        .sort(function (a, b) { return reviewRank.get(a) - reviewRank.get(b); }));
  }
  option(viewSelect, "picked", "the selected images");
  VIEW_NAMES.picked = "the selected images";
  viewSelect.addEventListener("change", function () {
    state.view = viewSelect.value; state.page = 0; update();
  });
  function rows() {
    var out = [], all = state.view === "picked" ? Array.from(picked).sort(function (a, b) {
      return rankOf(a) - rankOf(b) || a - b;
    }) : VIEWS[state.view] || VIEWS.all;
    for (var k = 0; k < all.length; k++) { if (matches(all[k])) { out.push(all[k]); } }
    return out;
  }
  function renderGallery() {
    var found = rows(), per = D.page, pages = Math.max(1, Math.ceil(found.length / per));
    state.page = Math.min(state.page, pages - 1);
    var start = state.page * per, shown = found.slice(start, start + per);
    gallery.textContent = "";
    var headed = state.view === "all" && state.cluster === null, last = null;
    shown.forEach(function (row) {
      if (headed && clusterOf(row) !== last) {
        last = clusterOf(row);
        var heading = document.createElement("h4");
        heading.textContent = clusterName(last) + " (" +
          (sizeNow.get(last) || 0).toLocaleString("en") + " images)";
        heading.style.color = colourOf(row) === NOISE_COLOUR ? "#555" : colourOf(row);
        gallery.appendChild(heading);
      }
      var image = document.createElement("img"), url = tileSource(row);
      if (url) { image.src = url; }
      image.alt = "image " + describeRow(row);
      image.title = describeRow(row);
      image.tabIndex = 0;
      image.setAttribute("role", "listitem");
      image.dataset.row = String(row);
      image.dataset.cluster = String(clusterOf(row));
      image.style.borderColor = colourOf(row);
      image.classList.toggle("ex-picked", picked.has(row));
      image.classList.toggle("ex-dropped", clusterOf(row) === DROPPED);
      image.addEventListener("click", function (event) { pickFromGallery(row, event.shiftKey); });
      image.addEventListener("keydown", function (event) {
        if (event.key === " " || event.key === "Enter") {
          event.preventDefault(); pickFromGallery(row, event.shiftKey);
        }
      });
      gallery.appendChild(image);
    });
    pageText.textContent = found.length ?
      "images " + (start + 1).toLocaleString("en") + "-" +
      (start + shown.length).toLocaleString("en") + " of " + found.length.toLocaleString("en") +
      " (page " + (state.page + 1) + " of " + pages + ")" : "no images match";
    $("ex-prev").disabled = state.page === 0;
    $("ex-next").disabled = state.page >= pages - 1;
  }
  $("ex-prev").addEventListener("click", function () { state.page -= 1; renderGallery(); });
  $("ex-next").addEventListener("click", function () { state.page += 1; renderGallery(); });
  // selecting and editing
  var picked = new Set(), lastPicked = null;
  function togglePick(row) {
    if (picked.has(row)) { picked.delete(row); } else { picked.add(row); }
    lastPicked = row; showEdits();
  }
  function pickFromGallery(row, range) {
    if (range && lastPicked !== null) {
      var order = rows(), a = order.indexOf(lastPicked), b = order.indexOf(row);
      if (a >= 0 && b >= 0) {
        for (var k = Math.min(a, b); k <= Math.max(a, b); k++) { picked.add(order[k]); }
        lastPicked = row; showEdits(); renderGallery(); draw(); return;
      }
    }
    togglePick(row); renderGallery(); draw();
  }
  var clusterIds = D.clusters.map(function (c) { return c.id; });
  function has(record, key) { return Object.prototype.hasOwnProperty.call(record, key); }
  function fillClusterChoices() {
    ["ex-move-to", "ex-rename-which", "ex-merge-from", "ex-merge-into"].forEach(function (id) {
      var choice = $(id), was = choice.value;
      choice.textContent = "";
      clusterIds.forEach(function (c) {
        if (id !== "ex-move-to" && has(edits.merged, c)) { return; }
        option(choice, String(c), clusterName(c));
      });
      if (was !== "") { choice.value = was; }
    });
  }
  function showEdits() {
    $("ex-selected").textContent = picked.size + " selected";
    var counts = [Object.keys(edits.names).length + " renamed",
      Object.keys(edits.merged).length + " merged", Object.keys(edits.moved).length + " moved",
      Object.keys(edits.dropped).length + " dropped"];
    $("ex-edits").textContent = "Edits: " + counts.join(", ");
  }
  function edited() { saveEdits(); sortAll(); fillClusterChoices(); showEdits(); update(); }
  $("ex-move").addEventListener("click", function () {
    var to = Number($("ex-move-to").value);
    picked.forEach(function (row) {
      var id = D.ids[row]; delete edits.dropped[id];
      if (to === D.c[row]) { delete edits.moved[id]; } else { edits.moved[id] = to; }
    });
    picked.clear(); leavePicked(); edited();
  });
  $("ex-drop").addEventListener("click", function () {
    picked.forEach(function (row) { edits.dropped[D.ids[row]] = true; });
    picked.clear(); leavePicked(); edited();
  });
  function leavePicked() {
    if (state.view === "picked") { state.view = "all"; viewSelect.value = "all"; }
  }
  $("ex-clear").addEventListener("click", function () {
    picked.clear(); leavePicked(); showEdits(); update();
  });
  $("ex-rename").addEventListener("click", function () {
    var which = Number($("ex-rename-which").value), to = $("ex-rename-to").value.trim();
    if (to) { edits.names[which] = to.slice(0, 80); } else { delete edits.names[which]; }
    $("ex-rename-to").value = ""; edited();
  });
  $("ex-merge").addEventListener("click", function () {
    var from = Number($("ex-merge-from").value), into = Number($("ex-merge-into").value);
    if (from === into || finalCluster(into) === from) { return; }
    edits.merged[from] = into; edited();
  });
  $("ex-forget").addEventListener("click", function () {
    edits = { names: {}, merged: {}, moved: {}, dropped: {} }; picked.clear(); edited();
  });
  function csvCell(value) {
    var text = String(value);
    if (/^[=+\-@\t\r]/.test(text) && !/^-?[0-9.]+$/.test(text)) { text = "'" + text; }
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }
  function download(name, type, text) {
    var link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([text], { type: type }));
    link.download = name; document.body.appendChild(link); link.click(); link.remove();
  }
  function labelsCsv() {
    var lines = ["id,cluster,name"];
    for (var row = 0; row < D.n; row++) {
      var c = clusterOf(row), name = c === DROPPED ? "dropped" : has(edits.names, c) ?
        edits.names[c] : "";
      var cluster = c === DROPPED ? "dropped" : String(c);
      lines.push([csvCell(D.ids[row]), cluster, csvCell(name)].join(","));
    }
    return lines.join("\n") + "\n";
  }
  function curationJson() {
    return JSON.stringify({ format: "imgclust-curation", version: 1, run: D.run, n: D.n,
      names: edits.names, merged: edits.merged, moved: edits.moved,
      dropped: Object.keys(edits.dropped) }, null, 1) + "\n";
  }
  $("ex-download-csv").addEventListener("click", function () {
    download("labels.csv", "text/csv", labelsCsv());
  });
  $("ex-download-json").addEventListener("click", function () {
    download("curation.json", "application/json", curationJson());
  });
  fillClusterChoices(); showEdits();

  function update() {
    var parts = [];
    if (state.cluster !== null) { parts.push(clusterName(state.cluster)); }
    if (state.label !== null) { parts.push("label " + D.labels[state.label]); }
    if (state.view !== "all") { parts.push(VIEW_NAMES[state.view]); }
    status.textContent = parts.length ? "Showing " + parts.join(", ") : "Showing all images";
    document.querySelectorAll("#ex-clusters tbody tr").forEach(function (tr) {
      var on = state.cluster !== null && tr.dataset.cluster === String(state.cluster);
      tr.classList.toggle("ex-on", on);
    });
    draw(); renderGallery();
  }
  if (canvas) {
    var ratio = Math.min(2, window.devicePixelRatio || 1);
    canvas.width = 640 * ratio; canvas.height = 640 * ratio;
  }
  layout(); update();
  sheetsReady.then(function () {
    cache.clear(); renderGallery(); document.body.dataset.explorer = "ready";
  });
  // for tests and for people at the console: where point j of the map is on the screen
  window.imgclustExplorer = {
    data: D,
    pointOnScreen: function (j) {
      var box = canvas.getBoundingClientRect();
      return [box.left + px[j] * box.width / canvas.width,
        box.top + py[j] * box.height / canvas.height];
    },
    select: select,
    pick: function (row) { pickFromGallery(row, false); },
    labelsCsv: function () { return labelsCsv(); },
    curationJson: function () { return curationJson(); }
  };
})();
"""
