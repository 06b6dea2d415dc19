"""report.html's explorer in a real browser: headless Chromium driven by selenium. It loads
without console errors, hovering a point shows its thumbnail, choosing a cluster fills the
gallery with that cluster's images, and a screenshot of it is not blank.

Skipped, with the reason, only where Chromium, its driver or selenium is missing
(``apt-get install chromium chromium-driver``; ``pip install -e ".[browser]"``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.test_explorer import make_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return 'selenium is not installed (pip install -e ".[browser]")'
    if CHROMIUM is None:
        return "chromium is not installed (apt-get install chromium)"
    if DRIVER is None:
        return "chromedriver is not installed (apt-get install chromium-driver)"
    return None


pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of 300 labelled 8x8 images in 4 clusters, with its explorer."""
    return make_run(tmp_path_factory.mktemp("run"), n=300, clusters=4) / "report.html"


def open_page(browser, page: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page.as_uri())
    WebDriverWait(browser, 20).until(
        lambda d: d.execute_script("return document.body.dataset.explorer") == "ready"
    )


def test_the_page_loads_without_console_errors(browser, page: Path) -> None:
    open_page(browser, page)
    problems = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert problems == []
    assert browser.execute_script("return window.imgclustExplorer.data.n") == 300


def test_hovering_a_point_shows_its_thumbnail(browser, page: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    open_page(browser, page)
    canvas = browser.find_element("id", "ex-map")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    tip = browser.find_element("id", "ex-tip")
    assert not tip.is_displayed()
    j = 17
    x, y = browser.execute_script("return window.imgclustExplorer.pointOnScreen(arguments[0])", j)
    box = browser.execute_script("return arguments[0].getBoundingClientRect().toJSON()", canvas)
    # the offset from the canvas's centre: selenium moves the mouse relative to it
    dx, dy = x - (box["left"] + box["width"] / 2), y - (box["top"] + box["height"] / 2)
    ActionChains(browser).move_to_element_with_offset(canvas, int(dx), int(dy)).perform()
    assert tip.is_displayed()
    text = browser.find_element("id", "ex-tip-text").text
    data = browser.execute_script("return window.imgclustExplorer.data")
    described = [r for r in range(data["n"]) if text.startswith(data["ids"][r] + ",")]
    assert len(described) == 1, text
    shown = described[0]
    assert f"cluster {data['c'][shown]}" in text
    assert f"label {data['labels'][data['l'][shown]]}" in text
    # the point described is the one under the mouse or one drawn within a few pixels of it
    where = browser.execute_script(
        "return window.imgclustExplorer.pointOnScreen(arguments[0])",
        data["map"]["i"].index(shown),
    )
    assert abs(where[0] - x) <= 4 and abs(where[1] - y) <= 4
    image = browser.find_element("id", "ex-tip-img")
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 8
    assert data["ids"][shown] in image.get_attribute("alt")
    pixels = browser.execute_script(
        """const img = arguments[0], c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        return Array.from(g.getImageData(0, 0, c.width, c.height).data);""",
        image,
    )
    assert len(set(pixels)) > 2  # a picture, not a blank square


def test_choosing_a_cluster_shows_its_images_in_the_gallery(browser, page: Path) -> None:
    from selenium.webdriver.support.ui import Select

    open_page(browser, page)
    data = browser.execute_script("return window.imgclustExplorer.data")
    chosen = data["clusters"][1]
    Select(browser.find_element("id", "ex-cluster")).select_by_value(str(chosen["id"]))
    tiles = browser.find_elements("css selector", "#ex-gallery img")
    expected = [r for r in range(data["n"]) if data["c"][r] == chosen["id"]]
    assert len(tiles) == min(len(expected), data["page"])
    assert {t.get_attribute("data-cluster") for t in tiles} == {str(chosen["id"])}
    assert all(t.get_attribute("src").startswith("data:image/png") for t in tiles)
    assert all(t.get_attribute("alt") for t in tiles)
    assert f"of {len(expected)}" in browser.find_element("id", "ex-page").text

    browser.find_element("id", "ex-reset").click()  # back to every image, a page of them
    assert len(browser.find_elements("css selector", "#ex-gallery img")) == data["page"]
    next_page = browser.find_element("id", "ex-next")
    next_page.click()
    assert "page 2 of" in browser.find_element("id", "ex-page").text

    # clicking a cluster's button in the table selects it too
    button = browser.find_elements("css selector", "#ex-clusters button")[0]
    button.click()
    first = data["clusters"][0]["id"]
    shown = browser.find_elements("css selector", "#ex-gallery img")
    assert {t.get_attribute("data-cluster") for t in shown} == {str(first)}


def test_a_screenshot_of_the_explorer_is_not_blank(browser, page: Path, tmp_path: Path) -> None:
    from PIL import Image

    open_page(browser, page)
    path = tmp_path / "explorer.png"
    assert browser.save_screenshot(str(path))
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape[0] > 500 and pixels.shape[1] > 1000
    assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


def gallery_rows(browser) -> list[int]:
    """The rows of the images the gallery shows, in its order."""
    images = browser.find_elements("css selector", "#ex-gallery img")
    return [int(image.get_attribute("data-row")) for image in images]


def test_views_sort_the_gallery_and_the_map_numbers_its_clusters(browser, page: Path) -> None:
    from selenium.webdriver.support.ui import Select

    open_page(browser, page)
    data = browser.execute_script("return window.imgclustExplorer.data")
    assert data["map"]["labels"], "the map writes no cluster numbers"
    assert {at[0] for at in data["map"]["labels"]} == {c["id"] for c in data["clusters"]}
    headings = browser.find_elements("css selector", "#ex-gallery h4")
    assert headings and headings[0].text.startswith("cluster 0 (")
    Select(browser.find_element("id", "ex-view")).select_by_value("outliers")
    rows = gallery_rows(browser)
    scores = [data["out"][row] for row in rows]
    assert rows and scores == sorted(scores, reverse=True)
    assert max(data["out"]) == scores[0]
    assert not browser.find_elements("css selector", "#ex-gallery h4")
    Select(browser.find_element("id", "ex-view")).select_by_value("uncertain")
    rows = gallery_rows(browser)
    confidences = [data["conf"][row] for row in rows]
    assert confidences == sorted(confidences) and confidences[0] == min(data["conf"])


def test_curating_moves_merges_renames_and_survives_a_reload(browser, page: Path) -> None:
    from selenium.webdriver.support.ui import Select

    open_page(browser, page)
    browser.execute_script("window.localStorage.clear()")
    browser.refresh()
    open_page(browser, page)
    browser.find_element("id", "ex-curate").click()  # open the details
    data = browser.execute_script("return window.imgclustExplorer.data")
    rows = gallery_rows(browser)
    first, third = rows[0], rows[2]
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    browser.find_elements("css selector", "#ex-gallery img")[0].click()
    third_image = browser.find_elements("css selector", "#ex-gallery img")[2]  # drawn anew
    ActionChains(browser).key_down(Keys.SHIFT).click(third_image).key_up(Keys.SHIFT).perform()
    assert browser.find_element("id", "ex-selected").text == "3 selected"
    target = next(c["id"] for c in data["clusters"] if c["id"] != data["c"][first])
    Select(browser.find_element("id", "ex-move-to")).select_by_value(str(target))
    browser.find_element("id", "ex-move").click()
    Select(browser.find_element("id", "ex-merge-from")).select_by_value("3")
    Select(browser.find_element("id", "ex-merge-into")).select_by_value("2")
    browser.find_element("id", "ex-merge").click()
    Select(browser.find_element("id", "ex-rename-which")).select_by_value("2")
    browser.find_element("id", "ex-rename-to").send_keys("=threes, and twos")
    browser.find_element("id", "ex-rename").click()

    def labels() -> dict[str, list[str]]:
        import csv
        import io

        text = browser.execute_script("return window.imgclustExplorer.labelsCsv()")
        table = list(csv.reader(io.StringIO(text)))
        assert table[0] == ["id", "cluster", "name"] and len(table) == data["n"] + 1
        return {row[0]: row[1:] for row in table[1:]}

    def check(table: dict[str, list[str]]) -> None:
        moved_to = "2" if target == 3 else str(target)
        for row in (first, rows[1], third):
            assert table[data["ids"][row]][0] == moved_to
        for row, cluster in enumerate(data["c"]):
            if cluster == 3 and row not in (first, rows[1], third):
                assert table[data["ids"][row]] == ["2", "'=threes, and twos"]

    check(labels())
    browser.refresh()
    open_page(browser, page)
    check(labels())  # the edits survive a reload
    record = browser.execute_script("return JSON.parse(window.imgclustExplorer.curationJson())")
    assert record["merged"] == {"3": 2} and record["names"] == {"2": "=threes, and twos"}
    exported_as_curated(browser, page, labels())
    browser.execute_script("window.localStorage.clear()")


def exported_as_curated(browser, page: Path, table: dict[str, list[str]]) -> None:
    """The page's own curation.json, given to ``imgclust export --curation``, puts every image
    where the page's labels.csv says, in folders named as the person named them."""
    import csv

    from imgclust.cli.app import main

    curation = page.parent.parent / "curation.json"
    curation.write_text(browser.execute_script("return window.imgclustExplorer.curationJson()"))
    out = page.parent.parent / "curated"
    with pytest.raises(SystemExit) as done:
        main(["export", str(page.parent), str(out), "--curation", str(curation)])
    assert done.value.code in (0, None)
    with open(out / "clusters.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(table)
    for row in rows:
        cluster, name = table[row["id"]]
        assert row["cluster"] == cluster
        if name:
            assert row["folder"] == "threes-and-twos"
        assert (out / row["file"]).is_file()
