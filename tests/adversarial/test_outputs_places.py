"""Where an output may go: never onto an input, never into the run folder a command reads (unless
the command writes there by design), never into the images the run clustered. Every command
with an output option is held to it by the same check, and refuses in one line, touching nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.test_export import FOLDER_SETS, digit_folder, finished_run


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished image-folder run of 40 PNG digits (no plots)."""
    images = digit_folder(tmp_path_factory.mktemp("images"))
    return finished_run(tmp_path_factory.mktemp("runs"), "image-folder",
                        [f"dataset.path={images}", *FOLDER_SETS])  # fmt: skip


def image_folder(run: Path) -> Path:
    import tomllib

    with open(run / "config.toml", "rb") as handle:
        return Path(tomllib.load(handle)["dataset"]["path"])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


# (command and its arguments, where the output goes), {run}, {images} and {tmp} filled in
CASES = {
    "duplicates -o IMAGE --force": ("duplicates {run} -o {images}/a/0.png --force"),
    "duplicates -o IMAGES/new.csv": ("duplicates {run} -o {images}/new.csv"),
    "duplicates -o RUN/new.csv": ("duplicates {run} -o {run}/new.csv"),
    "export --csv IMAGES/out": ("export {run} {images}/out --csv"),
    "export IMAGES/out": ("export {run} {images}/out"),
    "export RUN/out": ("export {run} {run}/out --csv"),
    "similar -o IMAGES/new.csv": ("similar {run} --id a/0.png -o {images}/new.csv"),
    "similar -o RUN/new.csv": ("similar {run} --id a/0.png -o {run}/new.csv"),
    "similar -o IMAGE --force": ("similar {run} --id a/0.png -o {images}/b/1.png --force"),
    "predict -o IMAGES/new.csv": ("predict {run} {tmp}/new -o {images}/new.csv"),
    "predict -o RUN/new.csv": ("predict {run} {tmp}/new -o {run}/new.csv"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_no_output_lands_in_the_run_or_its_images(
    cli, image_run: Path, tmp_path: Path, case: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(image_run, run)
    images = image_folder(run)
    new = tmp_path / "new"
    shutil.copytree(images / "a", new)
    images_before, run_before = snapshot(images), snapshot(run)
    args = CASES[case].format(run=run, images=images, tmp=tmp_path).split()
    result = cli(*args)
    assert result.exit_code != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert "overlaps" in lines[0] or "one of this command's inputs" in lines[0], lines[0]
    assert snapshot(images) == images_before and snapshot(run) == run_before


def test_duplicates_still_writes_its_own_csv_into_the_run(cli, image_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(image_run, run)
    result = cli("duplicates", run)
    assert result.exit_code == 0, result.stderr
    assert (run / "duplicates.csv").read_text().startswith("group,")


def test_an_output_beside_the_run_is_fine(cli, image_run: Path, tmp_path: Path) -> None:
    result = cli("export", image_run, tmp_path / "sorted", "--csv")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "sorted" / "clusters.csv").is_file()
