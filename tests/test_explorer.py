"""report.html's explorer: one self-contained page (inline script and data, thumbnails as PNG
sprite sheets), every text from the run escaped, a stated sample beyond the thumbnail budget,
a note instead of a crash when its data is damaged, and a hook for more sections."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

HOSTILE_LABELS = ["<img src=x onerror=alert(1)>", "plain", '"quoted" & <b>bold', "<!--"]


def write_images(root: Path, n: int) -> list[tuple[str, np.ndarray]]:
    """``n`` 8x8 digits as PNGs in sub-folders named like markup; one file whose path spells
    ``<script>alert(1)</script>.png``. Returns each id with its pixels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    written = []
    for i in range(n):
        pixels = (digits.images[i] * 15).astype(np.uint8)
        folder = root / HOSTILE_LABELS[digits.target[i] % len(HOSTILE_LABELS)]
        name = f"{i:04d}-{digits.target[i]}.png"
        if i == 5:
            folder, name = root / "<script>alert(1)<", "script>.png"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / name)
        written.append(((folder / name).relative_to(root).as_posix(), pixels))
    return written


def make_run(where: Path, n: int = 200, clusters: int = 4, **env: str) -> Path:
    """A finished image-folder -> pca -> kmeans run with its plots and report; its folder."""
    from imgclust import api

    images = where / "images"
    write_images(images, n)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGCLUST_PLOT_MAP", "pca")
        for key, value in env.items():
            patch.setenv(key, value)
        done = api.run(
            dataset={"name": "image-folder", "path": str(images), "cache": "off"},
            encoders={"name": "pca", "n_components": 8},
            clusterer={"name": "kmeans", "n_clusters": clusters, "n_init": 1},
            runs_dir=where / "runs",
            plots=True,
        )
    return done.path


class Page(HTMLParser):
    """The tags, attributes and script bodies of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


def page_data(text: str) -> dict:
    """The explorer's JSON, read back as the page's script reads it."""
    page = parse(text)
    bodies = [
        body
        for (tag, attrs), body in zip(
            [t for t in page.tags if t[0] == "script"], page.scripts, strict=True
        )
        if attrs.get("id") == "ex-data"
    ]
    assert len(bodies) == 1
    return json.loads(bodies[0])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("explorer"))


def test_the_page_is_one_file_with_nothing_outside(run: Path) -> None:
    text = (run / "report.html").read_text(encoding="utf-8")
    page = parse(text)
    for tag, attrs in page.tags:
        for name in ("src", "href", "srcset", "action", "poster", "data"):
            value = attrs.get(name, "")
            assert not value or value.startswith("data:image/png;base64,"), (tag, name, value[:40])
        assert tag not in ("link", "iframe", "object", "embed", "base")
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert len(scripts) == 2 and not any("src" in attrs for attrs in scripts)
    assert {a.get("type") for a in scripts} == {"application/json", None}
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", text, re.I)
    lowered = text.lower()
    for needle in ("http://", "https://", "@import", "file:"):
        assert needle not in lowered, needle
    assert not re.search(r"(?<![a-z])url\(", lowered)  # no CSS url(): toDataURL( is code


def test_the_data_matches_the_run_and_the_thumbnails_are_the_images(run: Path) -> None:
    from PIL import Image

    from imgclust.io.outputs import read_assignments

    data = page_data((run / "report.html").read_text(encoding="utf-8"))
    ids, clusters, labels = read_assignments(run / "assignments.csv")
    assert data["ids"] == ids and data["c"] == clusters.tolist()
    assert [data["labels"][code] for code in data["l"]] == labels.tolist()
    assert sum(c["size"] for c in data["clusters"]) == data["n"] == 200
    sizes = [c["size"] for c in data["clusters"]]
    assert sizes == sorted(sizes, reverse=True)
    assert sorted(data["map"]["i"]) == list(range(200))  # all points: below the sample size
    thumbs = data["thumbs"]
    assert thumbs["i"] == list(range(200)) and thumbs["tile"] == 8 and len(thumbs["sheets"]) == 1
    sheet = np.asarray(
        Image.open(io.BytesIO(base64.b64decode(thumbs["sheets"][0].split(",", 1)[1])))
    )
    written = dict(write_images(run.parent / "again", 200))
    for row in (0, 5, 63, 64, 199):  # across a sheet row's end
        top, left = (row // thumbs["columns"]) * 8, (row % thumbs["columns"]) * 8
        assert np.array_equal(sheet[top : top + 8, left : left + 8], written[ids[row]]), row


def test_names_from_the_run_cannot_inject_markup_or_script(run: Path) -> None:
    text = (run / "report.html").read_text(encoding="utf-8")
    data = page_data(text)
    assert "<script>alert(1)</script>.png" in data["ids"]
    assert set(HOSTILE_LABELS) <= set(data["labels"])
    assert "<script>alert" not in text and "<img src=x" not in text and "<b>bold" not in text
    page = parse(text)
    assert not [attrs for tag, attrs in page.tags if tag == "img" and attrs.get("src") == "x"]
    assert not any(any(k.startswith("on") for k in attrs) for _, attrs in page.tags)
    code = page.scripts[-1]
    assert "innerHTML" not in code and "insertAdjacentHTML" not in code
    assert "document.write" not in code and "eval(" not in code


def test_beyond_the_budget_the_gallery_holds_a_stated_sample(tmp_path: Path) -> None:
    from imgclust.report.plots import PlotInputs, make_plots
    from imgclust.report.plots.options import PlotOptions

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5000, 28, 28), dtype=np.uint8)
    inputs = PlotInputs(
        clusters=rng.integers(0, 3, 5000),
        images=images,
        features=rng.normal(size=(5000, 4)).astype(np.float32),
        seed=3,
    )
    options = PlotOptions(map_method="pca", explorer_bytes=4200 * 28 * 28, pca_sample=1000)
    make_plots(inputs, tmp_path, options, only=("explorer/",))
    record = json.loads((tmp_path / "plots" / "explorer" / "points.json").read_text())
    assert len(record["thumbs"]["index"]) == 4200 and record["thumbs"]["sheets"] == [
        "thumbs-0.png",
        "thumbs-1.png",
    ]
    assert len(record["map"]["index"]) == 1000
    from imgclust.report.explorer import describe, explorer_data

    (tmp_path / "assignments.csv").write_text(
        "id,cluster\n" + "".join(f"{i},{c}\n" for i, c in enumerate(inputs.clusters))
    )
    sentence = describe(explorer_data(tmp_path))
    assert "1,000 points (random sample, seed 3)" in sentence
    assert "random sample of 4,200 of the 5,000 images (seed 3)" in sentence


def test_colour_and_large_images_become_small_colour_tiles() -> None:
    from imgclust.report.plots.explorer import thumbnails, tile_size

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 40, 100, 3), dtype=np.uint8)
    tile = tile_size(40, 100)
    squares, channels = thumbnails(images, np.arange(3), tile)
    assert (tile, channels, squares.shape) == (32, 3, (3, 32, 32, 3))


@pytest.mark.parametrize(
    "damage",
    ["missing", "not json", "index out of range", "sheet missing", "sheet not png", "wrong n"],
)
def test_damaged_explorer_data_is_a_note_not_a_crash(
    run: Path, tmp_path: Path, damage: str
) -> None:
    import shutil

    from imgclust.report.page import build_report

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    folder = copy / "plots" / "explorer"
    points = folder / "points.json"
    record = json.loads(points.read_text())
    if damage == "missing":
        points.unlink()
    elif damage == "not json":
        points.write_text("{")
    elif damage == "index out of range":
        record["map"]["index"][0] = 10**6
        points.write_text(json.dumps(record))
    elif damage == "sheet missing":
        (folder / "thumbs-0.png").unlink()
    elif damage == "sheet not png":
        (folder / "thumbs-0.png").write_bytes(b"<script>")
    else:
        record["n"] = 3
        points.write_text(json.dumps(record))
    text = build_report(copy)
    assert "No explorer:" in text and 'id="ex-data"' not in text
    assert "<h2>Scores</h2>" in text


def test_other_commands_add_sections_through_the_hook(run: Path) -> None:
    from imgclust.report import page as report_html

    def duplicates(run_dir: Path):
        return ("duplicates", "Near <duplicates>", "<p>3 groups</p>")

    def broken(run_dir: Path):
        raise ValueError("no index")

    report_html.add_section(duplicates)
    report_html.add_section(duplicates)
    report_html.add_section(broken)
    try:
        text = report_html.build_report(run, extra_sections=[("extra", "Extra", "<p>x</p>")])
    finally:
        report_html.SECTION_PROVIDERS.remove(duplicates)
        report_html.SECTION_PROVIDERS.remove(broken)
    assert text.count("<h2>Near &lt;duplicates&gt;</h2>") == 1 and "<p>3 groups</p>" in text
    assert "Not shown: ValueError: no index" in text and '<section id="extra">' in text


def test_map_png_and_the_explorer_share_one_projection(tmp_path: Path, monkeypatch) -> None:
    from imgclust.report.plots import PlotInputs, make_plots, projection
    from imgclust.report.plots.options import PlotOptions

    calls = []
    real = projection.project
    monkeypatch.setattr(projection, "project", lambda *a, **k: calls.append(1) or real(*a, **k))
    rng = np.random.default_rng(0)
    inputs = PlotInputs(
        clusters=rng.integers(0, 3, 300),
        images=rng.integers(0, 256, (300, 8, 8), dtype=np.uint8),
        features=rng.normal(size=(300, 6)).astype(np.float32),
    )
    outcome = make_plots(
        inputs, tmp_path, PlotOptions(map_method="pca"), only=("map.png", "explorer/")
    )
    assert not outcome.failed and len(calls) == 1


def test_umap_functions_compile_into_a_cache(monkeypatch, tmp_path: Path) -> None:
    from imgclust.kit.umap import cache_by_default, numba_cache_dir

    seen = []
    decorator = cache_by_default(lambda *a, **k: seen.append(k))
    decorator(fastmath=True)
    decorator(cache=False)
    assert seen == [{"fastmath": True, "cache": True}, {"cache": False}]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert numba_cache_dir() == tmp_path / "imgclust" / "numba"


def test_the_page_data_holds_views_a_wide_palette_and_island_labels(tmp_path):
    from imgclust.report.explorer import explorer_data, island_labels, palette

    run = make_run(tmp_path, n=120, clusters=4)
    data = explorer_data(run)
    assert len(data["conf"]) == len(data["out"]) == 120
    assert all(0 <= v <= 1 for v in data["conf"])
    assert {at[0] for at in data["map"]["labels"]} == {0, 1, 2, 3}
    colours = palette(40)
    assert len(set(colours)) == 40 and colours[0] == "#1f77b4"
    two_islands = {"i": list(range(40)), "x": [100] * 20 + [4000] * 20, "y": [100] * 40}
    labels = island_labels(two_islands, np.zeros(40, dtype=np.int64))
    assert sorted(at[1] for at in labels) == [100, 4000]
