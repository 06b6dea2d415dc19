"""Hostile ``curation.json`` files given to ``imgclust export --curation``: each is refused in one
line before anything is written, or (names that look like paths) stays inside OUT."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from imgclust.after.curation import max_curation_bytes
from tests.test_export import one_line_error, read_rows


def page_record(run: Path) -> dict:
    """What the page downloads for ``run`` with no edits."""
    return {"format": "imgclust-curation", "version": 1, "run": run.name,
            "n": len(read_rows(run / "assignments.csv")), "names": {}, "merged": {},
            "moved": {}, "dropped": []}  # fmt: skip


def first_id(run: Path) -> str:
    return read_rows(run / "assignments.csv")[0]["id"]


def export(cli, run: Path, curation: Path, out: Path):
    return cli("export", run, out, "--csv", "--curation", curation)


# each case: a change to the page's record, and words the one-line refusal holds
CASES = {
    "not the format": (lambda r, run: r.update(format="other"), "not an imgclust curation"),
    "a list": (lambda r, run: r.clear(), "not an imgclust curation"),
    "newer version": (lambda r, run: r.update(version=2), "version"),
    "version true": (lambda r, run: r.update(version=True), "version"),
    "unknown key": (lambda r, run: r.update(script="x"), "unknown entry 'script'"),
    "other size": (lambda r, run: r.update(n=5), "run of '5' images"),
    "unknown cluster name": (lambda r, run: r.update(names={"99": "x"}), "not a cluster"),
    "cluster key not a number": (lambda r, run: r.update(names={"1e1": "x"}), "not a cluster"),
    "cluster key spelled twice": (
        lambda r, run: r.update(names={"1": "x", "01": "y"}),
        "not a cluster",
    ),
    "name not text": (lambda r, run: r.update(names={"0": ["x"]}), "not a name"),
    "blank name": (lambda r, run: r.update(names={"0": "  "}), "not a name"),
    "control characters": (lambda r, run: r.update(names={"0": "a\x1b[2Jb"}), "printable"),
    "line break": (lambda r, run: r.update(names={"0": "a\nb"}), "printable"),
    "long name": (lambda r, run: r.update(names={"0": "x" * 81}), "at most 80"),
    "no letter": (lambda r, run: r.update(names={"0": "../.."}), "no letter or digit"),
    "merge into itself": (lambda r, run: r.update(merged={"1": 1}), "circle"),
    "merge circle": (lambda r, run: r.update(merged={"1": 2, "2": 3, "3": 1}), "circle"),
    "merge into nothing": (lambda r, run: r.update(merged={"1": 42}), "not a cluster"),
    "merge into text": (lambda r, run: r.update(merged={"1": "2"}), "not a cluster"),
    "move unknown id": (lambda r, run: r.update(moved={"../../etc/passwd": 1}), "not an image"),
    "move to no cluster": (lambda r, run: r.update(moved={first_id(run): 77}), "not a cluster"),
    "move to a float": (lambda r, run: r.update(moved={first_id(run): 1.5}), "not a cluster"),
    "dropped not a list": (lambda r, run: r.update(dropped={"a": 1}), "not a list"),
    "drop unknown": (lambda r, run: r.update(dropped=["nope"]), "not an image"),
    "drop twice": (lambda r, run: r.update(dropped=[first_id(run)] * 2), "twice"),
    "too many moves": (
        lambda r, run: r.update(moved={f"x{i}": 0 for i in range(r["n"] + 1)}),
        "more than this run can have",
    ),
    "too many drops": (lambda r, run: r.update(dropped=["x"] * (r["n"] + 1)), "drops"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_record_is_one_line_and_writes_nothing(cli, pristine_run, tmp_path, case):
    change, words = CASES[case]
    record = page_record(pristine_run)
    if case == "a list":
        text = "[]"
    else:
        change(record, pristine_run)
        text = json.dumps(record)
    path = tmp_path / "curation.json"
    path.write_text(text, encoding="utf-8")
    message = one_line_error(export(cli, pristine_run, path, tmp_path / "out"))
    assert words in message and "curation file" in message
    assert "\x1b" not in message and "\n" not in message.strip()
    assert not (tmp_path / "out").exists()


TEXTS = {
    "not json": (b"{format: 1", "not valid JSON"),
    "not utf-8": (b'{"format": "\xff"}', "not UTF-8"),
    "nested deep": (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    "NaN": (b'{"format": "imgclust-curation", "version": 1, "n": NaN}', "not valid JSON"),
    "repeated key": (
        b'{"format": "imgclust-curation", "version": 1, "version": 1}',
        "appears twice",
    ),
    "huge integer": (b'{"format": "imgclust-curation", "n": ' + b"9" * 5000 + b"}", "JSON"),
}


@pytest.mark.parametrize("case", sorted(TEXTS))
def test_a_damaged_file_is_one_line(cli, pristine_run, tmp_path, case):
    data, words = TEXTS[case]
    path = tmp_path / "curation.json"
    path.write_bytes(data)
    message = one_line_error(export(cli, pristine_run, path, tmp_path / "out"))
    assert words in message
    assert not (tmp_path / "out").exists()


def test_a_file_larger_than_the_run_can_need_is_refused_before_it_is_parsed(
    cli, pristine_run, tmp_path
):
    ids = [r["id"] for r in read_rows(pristine_run / "assignments.csv")]
    path = tmp_path / "curation.json"
    record = page_record(pristine_run)
    record["padding"] = " " * max_curation_bytes(ids)
    path.write_text(json.dumps(record), encoding="utf-8")
    message = one_line_error(export(cli, pristine_run, path, tmp_path / "out"))
    assert "larger than" in message and "MiB" in message


def test_a_fifo_a_folder_and_a_missing_file_are_refused(cli, pristine_run, tmp_path):
    fifo = tmp_path / "curation.json"
    os.mkfifo(fifo)
    assert "not a regular file" in one_line_error(export(cli, pristine_run, fifo, tmp_path / "out"))
    assert "is a folder" in one_line_error(export(cli, pristine_run, tmp_path, tmp_path / "out"))
    missing = tmp_path / "nope.json"
    assert "does not exist" in one_line_error(export(cli, pristine_run, missing, tmp_path / "out"))


def test_names_that_look_like_paths_stay_inside_out(cli, run_copy, tmp_path):
    record = page_record(run_copy)
    record["names"] = {"0": "../../escaped", "1": "/etc/cron.d/x", "2": ".hidden", "3": "C:\\x"}
    path = tmp_path / "curation.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    out = tmp_path / "nest" / "out"
    out.parent.mkdir()
    result = cli("export", run_copy, out, "--curation", path)
    assert result.exit_code == 0, result.stderr
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert {"escaped", "etc-cron.d-x", "hidden", "C-x"} <= set(folders)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["curation.json", "nest", run_copy.name]
    )
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))
