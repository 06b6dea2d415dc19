"""``imgclust export RUN OUT --curation curation.json``: the page's renames, merges, moves and
drops decide the folders, named as the person named the clusters."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.test_export import digit_folder, finished_run, one_line_error, read_rows

FOLDER_SETS = ["dataset.workers=1", "dataset.cache=false"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    return finished_run(tmp_path_factory.mktemp("runs"), "digits", ["dataset.limit=200"])


def curation(run_folder: Path, **edits) -> dict:
    """A curation as the page's curationJson() writes it, with ``edits`` in place."""
    rows = read_rows(run_folder / "assignments.csv")
    record = {"format": "imgclust-curation", "version": 1, "run": run_folder.name, "n": len(rows),
              "names": {}, "merged": {}, "moved": {}, "dropped": []}  # fmt: skip
    record.update(edits)
    return record


def write(path: Path, record: dict) -> Path:
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return path


def test_renames_merges_moves_and_drops_decide_the_folders(cli, digits_run, tmp_path):
    rows = read_rows(digits_run / "assignments.csv")
    run_cluster = {r["id"]: int(r["cluster"]) for r in rows}
    moved_id = next(r["id"] for r in rows if r["cluster"] == "0")
    dropped_id = next(r["id"] for r in rows if r["cluster"] == "1")
    record = curation(
        digits_run,
        names={"0": "Round ones", "2": "Zahlen ü", "3": "never used: merged away"},
        merged={"3": 2},
        moved={moved_id: 1},
        dropped=[dropped_id],
    )
    out = tmp_path / "out"
    result = cli("export", digits_run, out, "--curation", write(tmp_path / "c.json", record))
    assert result.exit_code == 0, result.stderr
    assert "1 dropped images left out" in result.stdout
    exported = read_rows(out / "clusters.csv")
    assert [r["id"] for r in exported] == list(run_cluster)
    by_id = {r["id"]: r for r in exported}
    expected = {0: "Round-ones", 2: "Zahlen-ü"}  # cluster 1 is unnamed: cluster-NN by size
    for image_id, was in run_cluster.items():
        row = by_id[image_id]
        assert int(row["run_cluster"]) == was
        if image_id == dropped_id:
            assert (row["cluster"], row["folder"], row["file"]) == ("dropped", "", "")
            continue
        now = 1 if image_id == moved_id else 2 if was == 3 else was
        assert int(row["cluster"]) == now
        assert row["folder"] == expected.get(now, "cluster-0" + row["folder"][-1])
        assert (out / row["file"]).is_file() and row["file"].startswith(row["folder"] + "/")
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == sorted({r["folder"] for r in exported if r["folder"]})
    assert "Round-ones" in folders and "Zahlen-ü" in folders
    assert not any("merged" in f for f in folders)  # the merged-away cluster's name is unused
    sizes = Counter(r["folder"] for r in exported if r["folder"])
    assert sizes == Counter(p.parent.name for p in out.glob("*/*.png"))


def test_a_curation_of_another_run_of_the_same_images_is_applied_with_a_note(
    cli, digits_run, tmp_path
):
    record = curation(digits_run, run="renamed-run", names={"1": "ones"})
    out = tmp_path / "out"
    result = cli(
        "export", digits_run, out, "--csv", "--curation", write(tmp_path / "c.json", record)
    )
    assert result.exit_code == 0, result.stderr
    assert "made for run 'renamed-run'" in result.stdout
    assert {r["folder"] for r in read_rows(out / "clusters.csv")} >= {"ones"}


def test_an_image_folder_run_copies_files_into_the_named_folders(cli, tmp_path):
    images = digit_folder(tmp_path / "images")
    run = finished_run(tmp_path / "runs", "image-folder", [f"dataset.path={images}", *FOLDER_SETS])
    record = curation(
        run, names={"0": "first"}, dropped=[read_rows(run / "assignments.csv")[0]["id"]]
    )
    out = tmp_path / "out"
    result = cli("export", run, out, "--curation", write(tmp_path / "c.json", record))
    assert result.exit_code == 0, result.stderr
    rows = read_rows(out / "clusters.csv")
    assert rows[0]["cluster"] == "dropped" and not rows[0]["file"]
    first = [r for r in rows if r["cluster"] == "0"]
    assert first and all(r["folder"] == "first" for r in first)
    for row in first:
        assert (out / row["file"]).read_bytes() == (images / row["id"]).read_bytes()
    assert sum(1 for _ in out.glob("*/*.png")) == len(rows) - 1


def test_names_that_would_share_a_folder_are_one_line(cli, digits_run, tmp_path):
    clash = curation(digits_run, names={"0": "Cats", "1": "cats"})
    message = one_line_error(
        cli("export", digits_run, tmp_path / "o", "--curation", write(tmp_path / "c.json", clash))
    )
    assert "folder 'cats'" in message and "different names" in message
    table = curation(digits_run, names={"0": "clusters.csv"})
    message = one_line_error(
        cli("export", digits_run, tmp_path / "o", "--curation", write(tmp_path / "t.json", table))
    )
    assert "clusters.csv" in message
    default = curation(digits_run, names={"3": "cluster-00"})
    message = one_line_error(
        cli("export", digits_run, tmp_path / "o", "--curation", write(tmp_path / "d.json", default))
    )
    assert "'cluster-00'" in message
    assert not (tmp_path / "o").exists()
