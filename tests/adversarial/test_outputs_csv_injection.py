"""Spreadsheet formula injection: hostile file and folder names in every CSV imgclust writes."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from imgclust.io.outputs import FORMULA_STARTS, csv_cell, csv_text, read_csv_cell

HOSTILE = [
    '=HYPERLINK("http://example.invalid","x")',
    "+1+cmd",
    "-2+3",
    "@SUM(1)",
    "\t=1",
    "\r=1",
    "\n=1",
    " =1+1",
    "\u200b=1",
    "\uff1d1+1",
    "'quoted",
    "-inf",
]
BLANKS = " \t\r\n\u00a0\u200b\u200c\u200d\u2060\ufeff\u3000"


def dangerous(cell: str) -> bool:
    """Whether a spreadsheet could take the cell for a formula (imgclust's own rule, restated)."""
    if not cell:
        return False
    if cell[0] in "=+-@\t\r\n\0\uff1d\uff0b\uff0d\uff20":
        try:
            float(cell)
        except ValueError:
            return True
        return cell.lower().lstrip("+-").startswith(("inf", "nan"))
    stripped = cell.lstrip(BLANKS)
    return stripped != cell and dangerous(stripped)


def cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_text_gets_a_quote_and_reads_back_exactly(value):
    escaped = csv_cell(value)
    assert escaped == "'" + value
    [[cell]] = cells(csv_text(["h"], [[value]]))[1:]
    assert cell == "'" + value and read_csv_cell(cell) == value


@pytest.mark.parametrize("value", ["-1", "+2", "-3.5", "1e-5", "-.5", "12", "cat/0001.png"])
def test_plain_numbers_and_ordinary_text_keep_their_form(value):
    assert csv_cell(value) == value


def test_numbers_are_written_as_numbers():
    text = csv_text(["id", "cluster", "distance"], [["a", -1, 0.25], [7, np.int64(3), None]])
    assert text == "id,cluster,distance\na,-1,0.25\n7,3,\n"


@given(st.text())
def test_every_text_reads_back_and_no_cell_can_start_a_formula(value):
    cell = csv_cell(value)
    assert read_csv_cell(cell) == value
    assert cell == value or cell == "'" + value
    assert not dangerous(cell)
    if cell == value and value and value[0] in FORMULA_STARTS:
        float(value)  # only a plain number keeps a leading sign


@given(st.lists(st.lists(st.one_of(st.text(), st.integers()), min_size=2, max_size=2)))
def test_csv_text_round_trips_through_a_csv_reader(rows):
    parsed = cells(csv_text(["a", "b"], rows))
    assert parsed[0] == ["a", "b"]
    assert len(parsed) == len(rows) + 1
    for row, back in zip(rows, parsed[1:], strict=True):
        assert [read_csv_cell(c) for c in back] == [str(v) for v in row]
        assert not any(dangerous(c) for c in back)


def hostile_folder(root: Path) -> Path:
    """Digits in class folders with formula names, and files named like formulas."""
    from imgclust.plugins.digits import DigitsDataset

    data = DigitsDataset(limit=40).load("all")
    folder = root / "photos"
    names = ["@SUM(1)", "=cmd", "-2+3", "plain"]
    for i, image in enumerate(data.images):
        sub = folder / names[i % len(names)]
        sub.mkdir(parents=True, exist_ok=True)
        stem = '=HYPERLINK("evil")' if i % 5 == 0 else f"+{i}"
        Image.fromarray(image[:, :, 0]).save(sub / f"{stem}-{i}.png")
    return folder


def test_assignments_csv_is_escaped_and_the_report_still_finds_the_images(
    cli, tmp_path, monkeypatch
):
    folder = hostile_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    result = cli(
        "run",
        "--dataset",
        "image-folder",
        "--set",
        "dataset.path=photos",
        "--set",
        "dataset.workers=1",
        "--encoder",
        "pca",
        "--set",
        "encoder.n_components=4",
        "--clusterer",
        "kmeans",
        "--set",
        "clusterer.n_clusters=3",
        "--no-plots",
        "--runs-dir",
        runs,
    )
    assert result.exit_code == 0, result.stderr
    [run] = list(runs.iterdir())
    rows = cells((run / "assignments.csv").read_text(encoding="utf-8"))
    assert rows[0][:3] == ["id", "cluster", "label"] and len(rows) == 41
    assert not any(dangerous(c) for row in rows for c in row)
    ids = sorted(read_csv_cell(r[0]) for r in rows[1:])
    expected = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert ids == expected
    assert {read_csv_cell(r[2]) for r in rows[1:]} == {"@SUM(1)", "=cmd", "-2+3", "plain"}
    assert {r[2] for r in rows[1:]} == {"'@SUM(1)", "'=cmd", "'-2+3", "plain"}

    from imgclust.io.outputs import read_assignments

    read_ids, _, labels = read_assignments(run / "assignments.csv")
    assert sorted(read_ids) == expected and "@SUM(1)" in set(labels)
    report = cli("report", run, "--map", "pca")
    assert report.exit_code == 0, report.stderr
    assert "not reloaded" not in report.stderr and (run / "plots" / "clusters.png").is_file()


def test_predict_csv_is_escaped_on_stdout_and_in_the_output_file(
    cli, pristine_run, tmp_path, monkeypatch
):
    folder = hostile_folder(tmp_path)
    (tmp_path / "@SUM(1)").symlink_to(folder / "@SUM(1)")
    loose = next((folder / "=cmd").iterdir())
    monkeypatch.chdir(tmp_path)
    args = ["predict", pristine_run, "@SUM(1)", str(loose.relative_to(tmp_path)), "photos"]
    printed = cli(*args)
    assert printed.exit_code == 0, printed.stderr
    result = cli(*args, "-o", "predicted.csv")
    assert result.exit_code == 0, result.stderr
    for text in (printed.stdout, (tmp_path / "predicted.csv").read_text(encoding="utf-8")):
        rows = cells(text)
        assert rows[0] == ["id", "cluster", "distance", "confidence", "outlier", "label"]
        assert not any(dangerous(c) for row in rows for c in row)
        ids = [read_csv_cell(r[0]) for r in rows[1:]]
        assert any(i.startswith("@SUM(1)/") for i in ids)
        assert any(r[0].startswith("'@SUM(1)/") for r in rows[1:])
        assert "'@SUM(1)" in {r[5] for r in rows[1:]}


def test_predict_json_keeps_the_values_as_they_are(cli, pristine_run, tmp_path, monkeypatch):
    """JSON is not read by spreadsheets: its ids are the files' real names."""
    folder = hostile_folder(tmp_path)
    monkeypatch.chdir(folder)
    import json

    result = cli("predict", pristine_run, "@SUM(1)", "--json")
    assert result.exit_code == 0, result.stderr
    ids = [row["id"] for row in json.loads(result.stdout)["assignments"]]
    assert ids and all(i.startswith("@SUM(1)/") for i in ids)
