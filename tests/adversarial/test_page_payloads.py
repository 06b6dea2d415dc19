"""A run folder whose every text field carries a script: ``imgclust report`` (and
``--html-only``) either refuses the file in one line or writes a page in which no payload is live.

Every field of summary.json, metrics.json, config.toml, clusters.md, assignments.csv (ids, labels,
clusters), the explorer's points.json, plot file names and the folder's own name gets a payload;
the page's markup is then parsed and must hold no element, attribute or script the payload made.
The browser test opens such a page in headless Chromium and checks that nothing ran.
"""

from __future__ import annotations

import ast
import csv
import json
import shutil
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.test_browser import browser, browser_missing  # noqa: F401 - the fixture is used
from tests.test_explorer import make_run

MARK = "__pwned"
PAYLOAD = (
    f"</script><script>window.{MARK}=1;document.title='{MARK}'</script>"
    f'<img src=x onerror="window.{MARK}=2">\u2028\'"><svg onload=window.{MARK}=3>'
)
FILE_PAYLOAD = f'"><svg onload=window.{MARK}=4>'  # no "/" in a file name


class Markup(HTMLParser):
    """What a page's markup makes live: tags, their attributes and the bodies of its scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[tuple[dict[str, str], str]] = []
        self._script: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append((tag, values))
        if tag == "script":
            self._script = values
            self.scripts.append((values, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            attrs, body = self.scripts[-1]
            self.scripts[-1] = (attrs, body + data)


def assert_no_live_payload(page: str) -> None:
    """No tag, handler or code of the payload: its text may only be data."""
    markup = Markup()
    markup.feed(page)
    for tag, attrs in markup.tags:
        assert tag not in ("svg", "iframe", "object", "embed"), (tag, attrs)
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert not (tag == "img" and attrs.get("src") == "x"), attrs
    from imgclust.report.explorer import SCRIPT

    for attrs, body in markup.scripts:  # the explorer's data and its code, nothing else
        if attrs.get("type") == "application/json":
            json.loads(body)  # whole: the payload did not end the element
            assert "<" not in body and "\u2028" not in body
        else:
            assert body == SCRIPT
    assert f"<script>window.{MARK}" not in page and "<img src=x" not in page


# Tampering, one field at a time ---------------------------------------------------------------
def set_json(name: str, key: str, value: object) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        path = run / name
        record = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        record[key] = value
        path.write_text(json.dumps(record), encoding="utf-8")

    return change


def set_csv(column: int) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        path = run / "assignments.csv"
        rows = list(csv.reader(path.open(encoding="utf-8", newline="")))
        for number, row in enumerate(rows[1:6], start=1):
            row[column] = f"{PAYLOAD}{number}"
        with path.open("w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows(rows)

    return change


def set_points(key: str, value: object) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        path = run / "plots" / "explorer" / "points.json"
        record = json.loads(path.read_text(encoding="utf-8"))
        record["map"][key] = value
        path.write_text(json.dumps(record), encoding="utf-8")

    return change


def append_text(name: str, text: str) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        with (run / name).open("a", encoding="utf-8") as handle:
            handle.write(text)

    return change


def write_view_file(name: str, header: list[str]) -> Callable[[Path], None]:
    """A per-image file (issues.csv, label_review.csv) naming the run's first images, with a
    payload in every column but the id."""

    def change(run: Path) -> None:
        rows = list(csv.reader((run / "assignments.csv").open(encoding="utf-8", newline="")))
        with (run / name).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for row in rows[1:4]:
                writer.writerow([row[0], *[PAYLOAD] * (len(header) - 1)])

    return change


def plot_named(run: Path) -> None:
    shutil.copy(run / "plots" / "map.png", run / "plots" / f"{FILE_PAYLOAD}.png")


SUMMARY_KEYS = ("pipeline", "dataset", "split", "imgclust_version", "seed", "n_images")
METRIC_KEYS = ("acc", "nmi", "silhouette", "n_clusters", "noise", "n_images", "loss")
CASES: dict[str, Callable[[Path], None]] = {
    **{f"summary.{key}": set_json("summary.json", key, PAYLOAD) for key in SUMMARY_KEYS},
    "summary.image_shape": set_json("summary.json", "image_shape", [8, PAYLOAD, 1]),
    "summary.image_shape-text": set_json("summary.json", "image_shape", PAYLOAD),
    "summary.other": set_json("summary.json", PAYLOAD, PAYLOAD),
    **{f"metrics.{key}": set_json("metrics.json", key, PAYLOAD) for key in METRIC_KEYS},
    "metrics.timings-stage": set_json("metrics.json", "timings", {PAYLOAD: 1.5}),
    "metrics.timings-seconds": set_json("metrics.json", "timings", {"fit": PAYLOAD}),
    "metrics.training": set_json("metrics.json", "training", {PAYLOAD: {PAYLOAD: [0.1]}}),
    "config.toml": append_text("config.toml", f'\n# {PAYLOAD}\ndescription = "{PAYLOAD}"\n'),
    "clusters.md": append_text(
        "clusters.md",
        f"\n# {PAYLOAD}\n\n| {PAYLOAD} | 3 |\n| --- | ---: |\n| 1 | {PAYLOAD} |\n\n- {PAYLOAD}\n",
    ),
    "assignments.id": set_csv(0),
    "assignments.cluster": set_csv(1),
    "assignments.label": set_csv(2),
    "assignments.confidence": set_csv(3),
    "issues.csv": write_view_file("issues.csv", ["id", "issues", "brightness"]),
    "label_review.csv": write_view_file("label_review.csv", ["id", "label", "suggested"]),
    "points.method": set_points("method", PAYLOAD),
    "points.axes": set_points("axes", [PAYLOAD, PAYLOAD]),
    "points.note": set_points("note", PAYLOAD),
    "plot file name": plot_named,
}


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished image-folder run of 60 labelled images with its plots and explorer."""
    return make_run(tmp_path_factory.mktemp("payload"), n=60, clusters=3)


def report_of(cli, labelled_run: Path, where: Path, cases: list[str], *options: str):
    """A copy of the run with ``cases`` applied, reported; the CLI's result and the page."""
    run = where / f"run-{FILE_PAYLOAD}"
    shutil.copytree(labelled_run, run)
    (run / "report.html").unlink()
    for case in cases:
        CASES[case](run)
    return cli("report", run, *options), run / "report.html"


@pytest.mark.parametrize("case", list(CASES))
def test_no_field_of_the_run_reaches_the_page_live(
    cli, labelled_run: Path, tmp_path: Path, case: str
) -> None:
    result, page = report_of(cli, labelled_run, tmp_path, [case], "--html-only")
    if result.exit_code == 0:
        assert_no_live_payload(page.read_text(encoding="utf-8"))
    else:  # a field of the wrong type is refused: one line naming the file, no page
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
        assert "unexpected" not in lines[0] and case.split(".")[0] in lines[0], lines[0]
        assert not page.exists()


def test_the_full_report_refuses_a_forged_image_shape(
    cli, labelled_run: Path, tmp_path: Path
) -> None:
    """The issue's case: image_shape went into the page unescaped through ``imgclust report``."""
    result, page = report_of(cli, labelled_run, tmp_path, ["summary.image_shape"])
    assert result.exit_code != 0 and not page.exists()
    assert "summary.json" in result.stderr and "image_shape" in result.stderr


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_every_payload_at_once_runs_nothing_in_a_browser(
    browser,  # noqa: F811 - the fixture imported above
    labelled_run: Path,
    tmp_path: Path,
    cli,
) -> None:
    if browser_missing() is not None:
        pytest.skip(str(browser_missing()))
    from selenium.webdriver.support.ui import WebDriverWait

    cases = ["summary.pipeline", "summary.dataset", "summary.imgclust_version",
             "metrics.timings-stage", "config.toml", "clusters.md", "assignments.id",
             "assignments.label", "points.method", "points.axes", "points.note",
             "plot file name"]  # fmt: skip
    result, page = report_of(cli, labelled_run, tmp_path, [*cases, "summary.image_shape"],
                             "--html-only")  # fmt: skip
    if result.exit_code != 0:  # a forged image shape is refused: the rest must still be inert
        assert "image_shape" in result.stderr, result.stderr
        set_json("summary.json", "image_shape", [8, 8, 1])(page.parent)
        result = cli("report", page.parent, "--html-only")
    assert result.exit_code == 0, result.stderr
    browser.get(page.as_uri())
    WebDriverWait(browser, 20).until(
        lambda d: d.execute_script("return document.body.dataset.explorer") == "ready"
    )
    browser.execute_script("window.imgclustExplorer.select(null, null)")  # gallery, tooltips
    assert browser.execute_script(f"return window.{MARK}") is None
    assert browser.title == f"{page.parent.name}: imgclust report"
    shown = browser.execute_script("return document.body.innerText")
    assert f"window.{MARK}=1" in shown  # the payload is there, as text
    assert browser.execute_script("return document.querySelectorAll('svg').length") == 0


PAGE_MODULES = ("report/page.py", "report/explorer.py")


@pytest.mark.parametrize("module", PAGE_MODULES)
def test_the_page_modules_escape_only_through_page_text(module: str) -> None:
    """No second way to the page: the page modules never call html.escape or json.dumps."""
    import imgclust

    source = Path(imgclust.__file__).parent / module
    tree = ast.parse(source.read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}  # fmt: skip
    called = {
        f"{node.func.value.id}.{node.func.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
    }
    assert "html" not in imported and "json.dumps" not in called, module


def test_oversized_or_damaged_view_files_are_left_out_not_read(tmp_path: Path) -> None:
    import pytest as _pytest

    from imgclust.errors import DataError
    from imgclust.io.outputs import VIEW_FILE_BYTES, read_image_scores, read_issues

    huge = tmp_path / "issues.csv"
    with huge.open("wb") as handle:  # sparse: costs no disk, would cost memory if read
        handle.write(b"id,issues\n")
        handle.truncate(VIEW_FILE_BYTES + 1)
    with _pytest.raises(DataError, match="larger than"):
        read_issues(huge)
    scores = tmp_path / "assignments.csv"
    scores.write_text("id,cluster,confidence,outlier\na,0,nan,1\n", encoding="utf-8")
    with _pytest.raises(DataError, match="confidence"):
        read_image_scores(scores)
