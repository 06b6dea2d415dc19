"""The explorer's lasso in a real browser (headless Chromium driven by selenium): a loop drawn on
the map, with alt held or after pressing the Lasso button, selects exactly the images drawn
inside it; moving them and downloading labels.csv gives a file whose rows say so.

Skipped, with the reason, where Chromium, its driver or selenium is missing, as the other browser
tests are.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest

from tests.test_browser import CHROMIUM, DRIVER, browser_missing, gallery_rows, open_page
from tests.test_explorer import make_run

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path):
    """Headless Chromium that saves downloads into ``downloads`` without asking."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of 300 labelled 8x8 images in 4 clusters, with its explorer."""
    return make_run(tmp_path_factory.mktemp("run"), n=300, clusters=4) / "report.html"


def points_on_screen(browser) -> list[tuple[float, float]]:
    """Where each map point is drawn, in the page's CSS pixels."""
    return browser.execute_script(
        """const e = window.imgclustExplorer, n = e.data.map.i.length, out = [];
        for (let j = 0; j < n; j++) { out.push(e.pointOnScreen(j)); }
        return out;"""
    )


def square_around(
    points: list[tuple[float, float]], centre: int, taken: set[int]
) -> tuple[tuple[int, int, int, int], set[int]]:
    """A square (left, top, right, bottom, whole pixels) around point ``centre`` holding a few
    points, none of them within 2 pixels of its edges (so inside or outside is not in doubt),
    and the points inside it."""
    cx, cy = points[centre]
    for half in range(6, 60):
        left, top = round(cx) - half, round(cy) - half
        right, bottom = round(cx) + half, round(cy) + half
        inside, doubtful = set(), False
        for j, (x, y) in enumerate(points):
            near_x = left - 2 <= x <= right + 2 and top - 2 <= y <= bottom + 2
            if not near_x:
                continue
            if left + 2 < x < right - 2 and top + 2 < y < bottom - 2:
                inside.add(j)
            else:
                doubtful = True
        if not doubtful and 3 <= len(inside) and not inside & taken:
            return (left, top, right, bottom), inside
    raise AssertionError(f"no clear square around point {centre}")


def draw_loop(browser, square: tuple[int, int, int, int], alt: bool) -> None:
    """Press at one corner of ``square``, pass through the others, release at the first."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    canvas = browser.find_element("id", "ex-map")
    box = browser.execute_script("return arguments[0].getBoundingClientRect().toJSON()", canvas)
    middle = box["left"] + box["width"] / 2, box["top"] + box["height"] / 2
    left, top, right, bottom = square

    def to(x: float, y: float) -> tuple[int, int]:  # offsets from the canvas's centre
        return int(round(x - middle[0])), int(round(y - middle[1]))

    chain = ActionChains(browser)
    if alt:
        chain.key_down(Keys.ALT)
    chain.move_to_element_with_offset(canvas, *to(left, top)).click_and_hold()
    for x, y in ((right, top), (right, bottom), (left, bottom), (left, top)):
        chain.move_to_element_with_offset(canvas, *to(x, y))
    chain.release()
    if alt:
        chain.key_up(Keys.ALT)
    chain.perform()


def downloaded(folder: Path, name: str, timeout: float = 10.0) -> str:
    """The text of ``name`` once the browser has finished saving it into ``folder``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = folder / name
        if path.is_file() and not list(folder.glob("*.crdownload")) and path.stat().st_size:
            return path.read_text(encoding="utf-8")
        time.sleep(0.1)
    raise AssertionError(f"{name} was not downloaded into {folder}")


def test_a_lasso_selects_the_points_inside_it_and_moving_them_shows_in_labels_csv(
    browser, page: Path, downloads: Path
) -> None:
    from selenium.webdriver.support.ui import Select

    open_page(browser, page)
    browser.execute_script("window.localStorage.clear()")
    browser.refresh()
    open_page(browser, page)
    canvas = browser.find_element("id", "ex-map")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    data = browser.execute_script("return window.imgclustExplorer.data")
    assert "alt-drag" in browser.find_element("id", "ex-help").text
    points = points_on_screen(browser)
    rows_of = data["map"]["i"]

    # a loop drawn with alt held selects the points inside it, and only them
    first, inside_first = square_around(points, 40, set())
    draw_loop(browser, first, alt=True)
    expected = {rows_of[j] for j in inside_first}
    assert browser.find_element("id", "ex-selected").text.startswith(f"{len(expected)} selected")
    assert set(gallery_rows(browser)) == expected  # the gallery shows the selection
    assert browser.find_element("id", "ex-view").get_attribute("value") == "picked"

    # the Lasso button: a plain drag draws a loop, whose points join the selection
    far = max(range(len(points)), key=lambda j: abs(points[j][0] - points[40][0]))
    second, inside_second = square_around(points, far, inside_first)
    browser.find_element("id", "ex-lasso").click()
    assert browser.find_element("id", "ex-lasso").get_attribute("aria-pressed") == "true"
    draw_loop(browser, second, alt=False)
    expected |= {rows_of[j] for j in inside_second}
    assert browser.find_element("id", "ex-selected").text.startswith(f"{len(expected)} selected")
    assert set(gallery_rows(browser)) == expected
    browser.find_element("id", "ex-lasso").click()  # off again

    # move them into a cluster that is not their own (for most), download, read the rows
    clusters = [c["id"] for c in data["clusters"]]
    target = min(clusters, key=lambda c: sum(data["c"][r] == c for r in expected))
    Select(browser.find_element("id", "ex-move-to")).select_by_value(str(target))
    browser.find_element("id", "ex-move").click()
    assert browser.find_element("id", "ex-selected").text == "0 selected"
    browser.find_element("id", "ex-download-csv").click()
    table = list(csv.reader(io.StringIO(downloaded(downloads, "labels.csv"))))
    assert table[0] == ["id", "cluster", "name"] and len(table) == data["n"] + 1
    rows = {row[0]: row[1] for row in table[1:]}
    for row, image_id in enumerate(data["ids"]):
        wanted = target if row in expected else data["c"][row]
        assert rows[image_id] == str(wanted), (row, image_id)
    assert sum(data["c"][r] != target for r in expected) >= 1  # something really moved
    browser.execute_script("window.localStorage.clear()")


def test_escape_cancels_a_loop_and_a_lasso_click_picks_nothing(browser, page: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    open_page(browser, page)
    canvas = browser.find_element("id", "ex-map")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    browser.find_element("id", "ex-lasso").click()
    ActionChains(browser).move_to_element(canvas).click().perform()  # a click is not a loop
    selected = browser.find_element("id", "ex-selected").get_attribute("textContent")
    assert selected == "0 selected"
    status = browser.find_element("id", "ex-status").text
    assert status == "Showing all images"  # the click did not select a cluster either
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    assert browser.find_element("id", "ex-lasso").get_attribute("aria-pressed") == "false"
