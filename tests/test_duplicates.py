"""``imgclust duplicates`` and ``find_duplicates``: exact copies by content hash, near copies by
feature distance, written as CSV into the run folder (or -o), never over a file."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def finished_run(runs: Path, dataset: str, sets: list[str]) -> Path:
    from imgclust.engine.config import resolve_config
    from imgclust.engine.runner import execute
    from imgclust.stages.host import get_registry, reset_host

    reset_host()
    registry = get_registry()
    sets = [*sets, "encoder.n_components=8", "clusterer.n_clusters=4"]
    config = resolve_config(
        registry, dataset=dataset, encoders=["pca"], clusterer="kmeans", sets=sets
    )
    path = execute(registry, config, runs, plots=False).path
    reset_host()
    return path


def digits(count: int) -> np.ndarray:
    from imgclust.plugins.digits import DigitsDataset

    return DigitsDataset(limit=count).load("all").images


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> Path:
    """60 digits as PNGs, plus an exact copy of one file, a second copy saved under another
    name in another folder, and a near copy (one grey level brighter) of another."""
    root = tmp_path_factory.mktemp("images")
    images = digits(60)
    for i, image in enumerate(images):
        (root / f"d{i % 3}").mkdir(exist_ok=True)
        Image.fromarray(image[..., 0]).save(root / f"d{i % 3}" / f"{i}.png")
    shutil.copy(root / "d0" / "3.png", root / "d1" / "copy-of-3.png")
    shutil.copy(root / "d0" / "3.png", root / "d2" / "another-3.png")
    brighter = np.clip(images[4][..., 0].astype(int) + 1, 0, 255).astype(np.uint8)
    Image.fromarray(brighter).save(root / "d2" / "near-4.png")
    sets = [f"dataset.path={root}", "dataset.workers=1", "dataset.cache=false"]
    return finished_run(tmp_path_factory.mktemp("runs"), "image-folder", sets)


@pytest.fixture
def own_run(folder_run, tmp_path) -> Path:
    target = tmp_path / folder_run.name
    shutil.copytree(folder_run, target)
    return target


def test_exact_and_near_copies_are_grouped_and_written_into_the_run(cli, own_run):
    result = cli("duplicates", own_run)
    assert result.exit_code == 0, result.stderr
    assert "2 groups (1 exact, 1 near)" in result.stdout and "(derived)" in result.stdout
    rows = list(csv.DictReader(open(own_run / "duplicates.csv", encoding="utf-8")))
    assert list(rows[0]) == ["group", "kind", "id", "cluster", "distance", "digest"]
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    exact, near = groups["1"], groups["2"]
    assert {r["id"] for r in exact} == {"d0/3.png", "d1/copy-of-3.png", "d2/another-3.png"}
    assert {r["kind"] for r in exact} == {"exact"} and len({r["digest"] for r in exact}) == 1
    assert {r["id"] for r in near} == {"d1/4.png", "d2/near-4.png"}
    assert {r["kind"] for r in near} == {"near"} and len({r["digest"] for r in near}) == 2
    assert float(near[0]["distance"]) == 0 and 0 < float(near[1]["distance"])


def test_find_duplicates_returns_the_groups_for_the_explorer(own_run):
    from imgclust.after.duplicates import find_duplicates, search

    groups = find_duplicates(own_run)
    assert [g.kind for g in groups] == ["exact", "near"]
    assert groups[0].ids == ["d0/3.png", "d1/copy-of-3.png", "d2/another-3.png"]
    assert groups[0].distances == [0.0, 0.0, 0.0] and len(set(groups[0].clusters)) == 1
    assert json.loads(json.dumps(groups[1].to_dict()))["images"][1]["id"] == "d2/near-4.png"
    found = search(own_run)
    assert found.derived and found.exact_checked and found.n_images == 63
    assert not (own_run / "duplicates.csv").exists()  # the function writes nothing


def test_the_default_threshold_is_a_tenth_of_the_median_nearest_distance(own_run):
    from imgclust.after.duplicates import search

    found = search(own_run)
    nearest = np.load(own_run / "index" / "distances.npy")[:, 0]
    assert found.threshold == pytest.approx(0.1 * np.median(nearest[nearest > 0]), rel=1e-6)
    wide = search(own_run, threshold=10 * found.threshold)
    assert wide.images_in_groups > found.images_in_groups and not wide.derived
    none_near = search(own_run, threshold=0.0)
    assert [g.kind for g in none_near.groups] == ["exact"]


def test_array_datasets_are_hashed_by_their_pixels(cli, tmp_path):
    images = digits(80).copy()
    images[50] = images[7]
    np.save(tmp_path / "x.npy", images)
    sets = [f"dataset.path={tmp_path / 'x.npy'}", "dataset.channels=last"]
    run = finished_run(tmp_path / "runs", "arrays", sets)
    result = cli("duplicates", run, "--threshold", "0", "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["exact_checked"] and record["threshold"] == 0.0
    [group] = record["groups"]
    assert group["kind"] == "exact" and [i["id"] for i in group["images"]] == ["7", "50"]


def test_an_existing_csv_is_kept_unless_forced_and_o_writes_elsewhere(cli, own_run, tmp_path):
    (own_run / "duplicates.csv").write_text("mine\n")
    result = cli("duplicates", own_run)
    assert result.exit_code != 0 and "already exists" in result.stderr
    assert (own_run / "duplicates.csv").read_text() == "mine\n"
    elsewhere = tmp_path / "dups.csv"
    assert cli("duplicates", own_run, "-o", elsewhere).exit_code == 0
    assert elsewhere.read_text().startswith("group,kind,id")
    forced = cli("duplicates", own_run, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert (own_run / "duplicates.csv").read_text() == elsewhere.read_text()


def test_images_that_are_gone_are_refused_or_feature_distances_used(cli, own_run, tmp_path):
    config = (own_run / "config.toml").read_text()
    missing = tmp_path / "gone"
    start = config.index('path = "') + len('path = "')
    end = config.index('"', start)
    (own_run / "config.toml").write_text(config[:start] + str(missing) + config[end:])
    assert "--allow-changed" in one_line_error(cli("duplicates", own_run))
    result = cli("duplicates", own_run, "--json", "--allow-changed")
    assert result.exit_code == 0, result.stderr
    assert "exact copies not checked" in result.stderr
    record = json.loads(result.stdout)
    assert not record["exact_checked"]
    assert {g["kind"] for g in record["groups"]} == {"near"}  # copies: features 0 apart


# Bad input ---------------------------------------------------------------------------------
def one_line_error(result) -> str:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr
    return lines[0]


def test_a_missing_unfinished_or_foreign_run_is_refused(cli, folder_run, tmp_path):
    assert "does not exist" in one_line_error(cli("duplicates", tmp_path / "no"))
    unfinished = tmp_path / f"{folder_run.name}.incomplete"
    shutil.copytree(folder_run, unfinished)
    assert "not finished" in one_line_error(cli("duplicates", unfinished))
    assert not (unfinished / "duplicates.csv").exists()
    (tmp_path / "plain").mkdir()
    assert "not an imgclust run" in one_line_error(cli("duplicates", tmp_path / "plain"))
    assert list((tmp_path / "plain").iterdir()) == []


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_a_threshold_that_is_no_distance_is_refused(cli, own_run, value):
    message = one_line_error(cli("duplicates", own_run, "--threshold", value))
    assert "threshold" in message and not (own_run / "duplicates.csv").exists()


def test_arrays_that_changed_size_are_refused_or_checked_by_features(cli, tmp_path):
    np.save(tmp_path / "x.npy", digits(40))
    sets = [f"dataset.path={tmp_path / 'x.npy'}", "dataset.channels=last"]
    run = finished_run(tmp_path / "runs", "arrays", sets)
    np.save(tmp_path / "x.npy", np.zeros((40, 9, 9, 1), dtype=np.uint8))
    assert "9x9x1" in one_line_error(cli("duplicates", run))
    result = cli("duplicates", run, "--allow-changed")
    assert result.exit_code == 0, result.stderr
    assert "9x9x1" in result.stderr and "exact copies not checked" in result.stderr


def test_a_threshold_joining_too_many_pairs_is_one_line(cli, own_run, monkeypatch):
    from imgclust.after import neighbours

    monkeypatch.setattr(neighbours, "MAX_PAIRS", 100)
    message = one_line_error(cli("duplicates", own_run, "--threshold", "1e9"))
    assert "joins more than 100 pairs" in message and "smaller" in message
    assert not (own_run / "duplicates.csv").exists()


def test_csv_cells_that_a_spreadsheet_would_run_are_escaped():
    from imgclust.after.duplicates import DuplicateGroup, duplicates_csv

    group = DuplicateGroup("exact", [0, 1], ["=cmd()", "b"], [0, 0], [0.0, 0.0], ["h", "h"])
    rows = list(csv.reader(io.StringIO(duplicates_csv([group]))))
    assert rows[1][2] == "'=cmd()"
