"""Run folders under attack and fault: full disks, read-only and odd runs folders, names too long
for the filesystem, leftovers of killed writers, folders that are not imgclust's, and report on
folders that are not finished runs. Nothing is lost, nothing is left, every failure is one line.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from pathlib import Path

import pytest

import imgclust.io.atomic
from imgclust.errors import ImgclustError
from imgclust.io import runfolder
from imgclust.io.runfolder import INCOMPLETE, create_incomplete, discard, finalise, run_name

NAME_MAX = 255  # bytes in a file name on every common filesystem
LOCK = ".imgclust-lock"

FAST = [
    "--dataset",
    "digits",
    "--encoder",
    "pca",
    "--clusterer",
    "kmeans",
    "--no-plots",
    "--set",
    "dataset.limit=300",
    "--set",
    "encoder.n_components=8",
]


def folders(path: Path) -> list[Path]:
    return sorted(path.iterdir()) if path.exists() else []


def one_error_line(result) -> str:
    """The single line a failed command printed (and that it is a single line)."""
    assert result.exit_code != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr and "unexpected" not in lines[-1], result.stderr
    return lines[-1]


def interrupted_folder(runs_dir: Path, source: Path) -> Path:
    """An interrupted run's folder as a user finds it: config.toml and nothing finished."""
    folder = runs_dir / f"{source.name}{INCOMPLETE}"
    folder.mkdir(parents=True)
    shutil.copy(source / "config.toml", folder / "config.toml")
    return folder


# Full disk, read-only and odd runs folders -------------------------------------------------------
@pytest.mark.parametrize("victim", ["config.toml", "embeddings.npy", "manifest.json"])
def test_a_full_disk_is_one_line_and_leaves_nothing(cli, runs_dir, monkeypatch, victim):
    real = imgclust.io.atomic.write_bytes

    def full(path, data, **options):
        if Path(path).name == victim:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, data, **options)

    monkeypatch.setattr(imgclust.io.atomic, "write_bytes", full)
    line = one_error_line(cli("run", *FAST, "--runs-dir", runs_dir))
    assert "No space left on device" in line and str(runs_dir) in line
    assert folders(runs_dir) == []


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_a_read_only_runs_folder_is_one_line(cli, runs_dir, monkeypatch, code):
    runs_dir.mkdir()
    real = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self.parent == runs_dir:
            raise OSError(code, os.strerror(code), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    line = one_error_line(cli("run", *FAST, "--runs-dir", runs_dir))
    assert os.strerror(code) in line and str(runs_dir) in line
    assert folders(runs_dir) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_really_read_only_runs_folder_is_one_line(cli, runs_dir):
    runs_dir.mkdir()
    runs_dir.chmod(0o555)
    try:
        line = one_error_line(cli("run", *FAST, "--runs-dir", runs_dir))
    finally:
        runs_dir.chmod(0o755)
    assert "Permission denied" in line and folders(runs_dir) == []


def test_a_runs_folder_that_is_a_file_is_one_line(cli, tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    line = one_error_line(cli("run", *FAST, "--runs-dir", blocker))
    assert str(blocker) in line
    assert blocker.read_text() == "not a folder"


def test_a_run_folder_that_cannot_be_renamed_is_one_line_and_cleaned_up(cli, runs_dir, monkeypatch):
    def refuse(self, target):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "rename", refuse)
    line = one_error_line(cli("run", *FAST, "--runs-dir", runs_dir))
    assert "Permission denied" in line and INCOMPLETE in line
    assert folders(runs_dir) == []


def test_no_free_name_is_one_line(runs_dir):
    runs_dir.mkdir()
    for n in range(1, 1000):
        (runs_dir / ("same" if n == 1 else f"same-{n}")).mkdir()
    with pytest.raises(ImgclustError, match="no free run folder name"):
        create_incomplete(runs_dir, "same")
    folder = create_incomplete(runs_dir, "other")
    (runs_dir / "other").mkdir()
    for n in range(2, 1000):
        (runs_dir / f"other-{n}").mkdir()
    with pytest.raises(ImgclustError, match="no free name"):
        finalise(folder)
    assert folder.is_dir()
    discard(folder)


# Names too long for the filesystem ---------------------------------------------------------------
def config_with(dataset: str, encoders: list[str], clusterer: str = "kmeans") -> dict:
    return {
        "dataset": {"name": dataset},
        "encoder": [{"name": e} for e in encoders],
        "clusterer": {"name": clusterer},
    }


def test_long_run_names_fit_the_filesystem_and_stay_unique(runs_dir):
    from datetime import datetime

    now = datetime(2026, 1, 2, 3, 4, 5)
    one = run_name(config_with("d" * 400, ["pca"]), now)
    other = run_name(config_with("d" * 400, ["umap"]), now)
    assert one != other and one.startswith("2026-01-02T03-04-05-ddd")
    assert len(one) + len("-999") + len(INCOMPLETE) <= NAME_MAX
    many = run_name(config_with("digits", ["pca"] * 100), now)
    assert len(many.encode()) + len("-999") + len(INCOMPLETE) <= NAME_MAX
    # taken names get -N and still fit
    paths = [finalise(create_incomplete(runs_dir, one)) for _ in range(3)]
    assert len({p.name for p in paths}) == 3
    assert all(len(p.name) <= NAME_MAX for p in paths)


def test_a_run_of_many_chained_encoders_gets_a_folder(cli, runs_dir):
    chain = ["--encoder", "pca"] * 70  # a name of 300+ characters before it is shortened
    args = ["--dataset", "digits", *chain, "--clusterer", "kmeans", "--no-plots"]
    result = cli("run", *args, "--set", "dataset.limit=200", "--runs-dir", runs_dir)
    assert result.exit_code == 0, result.stderr
    [finished] = folders(runs_dir)
    assert len(finished.name) <= NAME_MAX and (finished / "metrics.json").is_file()
    assert not (finished / runfolder.MARKER).exists() and not (finished / LOCK).exists()


# Leftovers of a writer that was killed ------------------------------------------------------------
def test_resume_removes_what_killed_writers_left(cli, runs_dir, pristine_run):
    folder = interrupted_folder(runs_dir, pristine_run)
    leftovers = [
        folder / ".pipeline.k1ll3d_0" / "encoder-0-conv-ae" / ".tmp-model.keras",
        folder / ".summary.json.x7y8z9w0.tmp",
        folder / "checkpoints" / "conv-ae" / ".tmp-epoch-0002.keras",
        folder / "pipeline" / "encoder-0-pca" / ".tmp-model.keras",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half-written")
    (folder / LOCK).write_text("12345\n")  # a killed run's stale lock
    (folder / "notes.txt").write_text("mine")

    result = cli("run", "--resume", folder)
    assert result.exit_code == 0, result.stderr
    [finished] = folders(runs_dir)
    assert finished.name == pristine_run.name
    left = [p.relative_to(finished).as_posix() for p in finished.rglob("*")]
    assert not [p for p in left if ".tmp" in p or p.startswith(".pipeline.")], left
    assert LOCK not in left
    assert (finished / "notes.txt").read_text() == "mine"
    assert (finished / "pipeline" / "manifest.json").is_file()


# Clean-up never removes what is not this process's ----------------------------------------
def test_discard_leaves_a_folder_this_process_did_not_create(runs_dir, pristine_run):
    folder = interrupted_folder(runs_dir, pristine_run)
    (folder / "notes.txt").write_text("mine")
    discard(folder)
    assert (folder / "config.toml").is_file() and (folder / "notes.txt").is_file()


def test_discard_removes_only_what_imgclust_writes(runs_dir):
    folder = create_incomplete(runs_dir, "mine")
    assert (folder / runfolder.MARKER).is_file()
    (folder / "config.toml").write_text("x = 1\n")
    (folder / "checkpoints" / "pca").mkdir(parents=True)
    (folder / "dropped-in.txt").write_text("someone's")
    discard(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["dropped-in.txt"]


def test_discard_leaves_a_folder_whose_marker_is_not_this_process(runs_dir):
    folder = create_incomplete(runs_dir, "swapped")
    (folder / runfolder.MARKER).write_text('{"token": "someone else"}')
    (folder / "config.toml").write_text("x = 1\n")
    discard(folder)
    assert (folder / "config.toml").is_file()


def test_discard_does_not_follow_links(runs_dir, tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    folder = create_incomplete(runs_dir, "linked")
    (folder / "plots").symlink_to(outside)
    discard(folder)
    assert (outside / "keep.txt").read_text() == "keep"


# Two processes in one folder --------------------------------------------------------------------
def test_a_folder_in_use_is_not_resumed(cli, runs_dir, pristine_run):
    folder = interrupted_folder(runs_dir, pristine_run)
    with open(folder / LOCK, "w") as held:  # as another imgclust process holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        line = one_error_line(cli("run", "--resume", folder))
    assert "in use by another imgclust process" in line
    assert folders(runs_dir) == [folder] and not (runs_dir / pristine_run.name).exists()


# report on what is not a finished run ------------------------------------------------------------
@pytest.mark.parametrize("html_only", [False, True])
def test_report_refuses_an_unfinished_run(cli, run_copy, html_only):
    incomplete = run_copy.with_name(run_copy.name + INCOMPLETE)
    run_copy.rename(incomplete)
    before = sorted(p.name for p in incomplete.iterdir())
    line = one_error_line(cli("report", incomplete, *(["--html-only"] if html_only else [])))
    assert "not finished" in line and "resume" in line
    assert sorted(p.name for p in incomplete.iterdir()) == before


@pytest.mark.parametrize("html_only", [False, True])
def test_report_refuses_a_folder_that_is_not_a_run(cli, tmp_path, html_only):
    folder = tmp_path / "holiday-photos"
    folder.mkdir()
    (folder / "config.toml").write_text("[camera]\n")
    (folder / "metrics.json").write_text("{}")
    line = one_error_line(cli("report", folder, *(["--html-only"] if html_only else [])))
    assert "not an imgclust run folder" in line
    assert sorted(p.name for p in folder.iterdir()) == ["config.toml", "metrics.json"]


def test_report_still_draws_a_finished_run(cli, run_copy):
    result = cli("report", run_copy, "--html-only")
    assert result.exit_code == 0, result.stderr
    assert (run_copy / "report.html").is_file()
