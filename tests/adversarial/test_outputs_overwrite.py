"""Attacks on where ``imgclust predict -o`` writes: inputs, existing files, folders, links."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def digits(count: int = 20) -> np.ndarray:
    from imgclust.plugins.digits import DigitsDataset

    return DigitsDataset(limit=count).load("all").images


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A small .npy of digit images; its bytes must survive every test."""
    path = tmp_path / "images.npy"
    np.save(path, digits())
    return path


def one_line_error(result, fragment: str) -> None:
    assert result.exit_code != 0
    text = result.stderr.strip()
    assert len(text.splitlines()) == 1, text
    assert text.startswith("Error: ") and "unexpected" not in text and "Traceback" not in text
    assert fragment in text, text


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (links followed) and its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_the_issue_case_output_onto_the_input_array_is_refused(pristine_run, images):
    before = images.read_bytes()
    for extra in ([], ["--force"]):
        result = subprocess.run(
            [sys.executable, "-m", "imgclust", "predict", str(pristine_run), "images.npy"]
            + ["-o", "images.npy", *extra],
            cwd=images.parent,
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            timeout=300,
        )
        assert result.returncode != 0, extra
        assert "is one of this command's inputs" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert images.read_bytes() == before
        assert np.array_equal(np.load(images), digits())


def test_an_input_is_never_replaced_even_with_force_nor_through_links(cli, pristine_run, images):
    before = images.read_bytes()
    (images.parent / "soft.npy").symlink_to(images)
    os.link(images, images.parent / "hard.npy")
    (images.parent / "sub").mkdir()
    relative = images.parent / "sub" / ".." / "images.npy"
    for target in ("soft.npy", "hard.npy", relative):
        for extra in ([], ["--force"]):
            result = cli("predict", pristine_run, images, "-o", images.parent / target, *extra)
            one_line_error(result, "is one of this command's inputs")
    # the link given as the input, the real file as the output
    result = cli("predict", pristine_run, images.parent / "soft.npy", "-o", images, "--force")
    one_line_error(result, "is one of this command's inputs")
    assert images.read_bytes() == before
    assert (images.parent / "hard.npy").read_bytes() == before


def test_files_inside_an_input_folder_or_the_run_folder_are_inputs_too(cli, run_copy, tmp_path):
    folder = tmp_path / "new"
    folder.mkdir()
    for i, image in enumerate(digits(4)):
        Image.fromarray(image[:, :, 0]).save(folder / f"d{i}.png")
    (folder / "notes.txt").write_text("mine")
    elsewhere = tmp_path / "elsewhere.png"
    os.link(folder / "d0.png", elsewhere)  # the same file as an input image, by another name
    pointed = tmp_path / "pointed.png"  # read as an input through a link inside the folder
    Image.fromarray(digits(1)[0][:, :, 0]).save(pointed)
    (folder / "linked.png").symlink_to(pointed)
    images_before, run_before = snapshot(folder), snapshot(run_copy)
    pointed_before = pointed.read_bytes()
    targets = [
        folder / "d1.png",
        folder / "notes.txt",
        elsewhere,
        pointed,
        run_copy / "assignments.csv",
        run_copy / "pipeline" / "manifest.json",
    ]
    for target in targets:
        result = cli("predict", run_copy, folder, "-o", target, "--force")
        one_line_error(result, "is one of this command's inputs")
    assert snapshot(folder) == images_before and snapshot(run_copy) == run_before
    assert pointed.read_bytes() == pointed_before and not pointed.is_symlink()
    # a new file next to the inputs is fine: it replaces nothing
    result = cli("predict", run_copy, folder, "-o", folder / "predicted.csv")
    assert result.exit_code == 0, result.stderr
    header = "id,cluster,distance,confidence,outlier\n"
    assert (folder / "predicted.csv").read_text().startswith(header)


def test_an_existing_file_is_replaced_only_with_force(cli, pristine_run, images, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("precious\n")
    result = cli("predict", pristine_run, images, "-o", other)
    one_line_error(result, "already exists")
    assert "--force" in result.stderr and other.read_text() == "precious\n"
    result = cli("predict", pristine_run, images, "-o", other, "--force")
    assert result.exit_code == 0, result.stderr
    assert other.read_text().startswith("id,cluster,distance,confidence,outlier\n")
    assert len(other.read_text().splitlines()) == 21


def test_force_replaces_a_link_itself_never_the_file_it_points_to(
    cli, pristine_run, images, tmp_path
):
    kept = tmp_path / "kept.csv"
    kept.write_text("not an input, but not named either\n")
    link = tmp_path / "link.csv"
    link.symlink_to(kept)
    result = cli("predict", pristine_run, images, "-o", link)
    one_line_error(result, "already exists")
    result = cli("predict", pristine_run, images, "-o", link, "--force")
    assert result.exit_code == 0, result.stderr
    assert not link.is_symlink() and link.read_text().startswith("id,cluster")
    assert kept.read_text() == "not an input, but not named either\n"


def test_places_that_are_not_files_get_one_line(cli, pristine_run, images, tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder-link").symlink_to(tmp_path / "folder")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "plain.txt").write_text("x")
    os.mkfifo(tmp_path / "pipe")
    cases = [
        (tmp_path / "folder", "is a folder"),
        (tmp_path / "folder-link", "is a folder"),
        (tmp_path, "is a folder"),
        (tmp_path / "missing" / "out.csv", "does not exist: create it first"),
        (tmp_path / "plain.txt" / "out.csv", "is not a folder"),
        (tmp_path / "pipe", "not a regular file"),
        (tmp_path / "loop", "cannot be used"),
    ]
    for target, fragment in cases:
        for extra in ([], ["--force"]):
            result = cli("predict", pristine_run, images, "-o", target, *extra)
            one_line_error(result, fragment)
    assert not (tmp_path / "missing").exists()
    assert (tmp_path / "plain.txt").read_text() == "x"
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_an_unwritable_folder_gets_one_line(cli, pristine_run, images, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = cli("predict", pristine_run, images, "-o", locked / "out.csv")
    finally:
        locked.chmod(0o755)
    one_line_error(result, "is not writable")


def test_a_failed_write_leaves_no_file_and_one_line(
    cli, pristine_run, images, tmp_path, monkeypatch
):
    import imgclust.io.atomic

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(imgclust.io.atomic.os, "fsync", full)
    out = tmp_path / "out" / "predicted.csv"
    out.parent.mkdir()
    result = cli("predict", pristine_run, images, "-o", out)
    one_line_error(result, "No space left on device")
    assert list(out.parent.iterdir()) == []
    (out.parent / "predicted.csv").write_text("old\n")
    result = cli("predict", pristine_run, images, "-o", out, "--force")
    one_line_error(result, "No space left on device")
    assert out.read_text() == "old\n" and list(out.parent.iterdir()) == [out]


def test_a_file_that_appears_after_the_check_is_not_replaced(tmp_path, monkeypatch):
    """Without force the final rename cannot replace a file made since the output was claimed,
    also where the file system has no hard links."""
    from imgclust.errors import ImgclustError
    from imgclust.io import atomic
    from imgclust.io.outputs import claim_output, write_output

    for links in (True, False):
        target = tmp_path / f"late-{links}.csv"
        claim_output(target, force=False)
        target.write_text("someone else's\n")
        if not links:

            def no_links(*_args: object) -> None:
                raise OSError(errno.EPERM, "Operation not permitted")

            monkeypatch.setattr(atomic.os, "link", no_links)
        with pytest.raises(ImgclustError, match="already exists"):
            write_output(target, "mine\n", force=False)
        assert target.read_text() == "someone else's\n"
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
        fresh = tmp_path / f"fresh-{links}.csv"
        write_output(fresh, "mine\n", force=False)
        assert fresh.read_text() == "mine\n"
        assert oct(fresh.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
