"""``imgclust export``: a folder per cluster, largest first, original files or PNGs, never over
anything, and one line for every input it cannot use."""

from __future__ import annotations

import csv
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def finished_run(runs: Path, dataset: str, sets: list[str], k: int = 4) -> Path:
    """A finished ``dataset -> pca -> kmeans`` run folder (no plots)."""
    from imgclust.engine.config import resolve_config
    from imgclust.engine.runner import execute
    from imgclust.stages.host import get_registry, reset_host

    reset_host()
    registry = get_registry()
    sets = [*sets, "encoder.n_components=6", f"clusterer.n_clusters={k}"]
    config = resolve_config(
        registry, dataset=dataset, encoders=["pca"], clusterer="kmeans", sets=sets
    )
    path = execute(registry, config, runs, plots=False).path
    reset_host()
    return path


def digit_folder(root: Path, count: int = 40) -> Path:
    """Digits as PNGs in a/ and b/; b/twin.png and a/twin.png are the same picture."""
    from imgclust.plugins.digits import DigitsDataset

    images = DigitsDataset(limit=count).load("all").images
    for i, image in enumerate(images):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., 0]).save(folder / f"{i // 2}.png")
    Image.fromarray(images[0][..., 0]).save(root / "a" / "twin.png")
    Image.fromarray(images[0][..., 0]).save(root / "b" / "twin.png")
    return root


FOLDER_SETS = ["dataset.workers=1", "dataset.cache=false"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    return finished_run(tmp_path_factory.mktemp("runs"), "digits", ["dataset.limit=200"])


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> Path:
    images = digit_folder(tmp_path_factory.mktemp("images"))
    sets = [f"dataset.path={images}", *FOLDER_SETS]
    return finished_run(tmp_path_factory.mktemp("runs"), "image-folder", sets)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_array_runs_are_written_as_pngs_one_folder_per_cluster_largest_first(
    cli, digits_run, tmp_path
):
    from imgclust.plugins.digits import DigitsDataset

    out = tmp_path / "out"
    result = cli("export", digits_run, out)
    assert result.exit_code == 0, result.stderr
    assert "exported 200 images into 4 cluster folders" in result.stdout
    rows = read_rows(out / "clusters.csv")
    assert [r["id"] for r in rows] == [r["id"] for r in read_rows(digits_run / "assignments.csv")]
    sizes = Counter(r["folder"] for r in rows)
    assert sorted(sizes) == ["cluster-00", "cluster-01", "cluster-02", "cluster-03"]
    assert [sizes[f] for f in sorted(sizes)] == sorted(sizes.values(), reverse=True)
    assert sorted(p.name for p in out.iterdir()) == [*sorted(sizes), "clusters.csv"]
    images = DigitsDataset(limit=200).load("all").images
    for row in rows[:20]:
        drawn = np.asarray(Image.open(out / row["file"]))
        assert np.array_equal(drawn, images[int(row["id"].split("-")[1])][..., 0])
    assert len(list(out.glob("cluster-*/*.png"))) == 200


def test_image_folder_runs_copy_the_original_files_with_unique_names(cli, folder_run, tmp_path):
    out = tmp_path / "out"
    result = cli("export", folder_run, out, "--copy")
    assert result.exit_code == 0, result.stderr
    rows = {r["id"]: r for r in read_rows(out / "clusters.csv")}
    assert len(rows) == 42 and rows["a/twin.png"]["folder"] == rows["b/twin.png"]["folder"]
    assert rows["a/twin.png"]["file"] != rows["b/twin.png"]["file"]
    images = Path(_image_root(folder_run))
    for image_id, row in rows.items():
        assert (out / row["file"]).read_bytes() == (images / image_id).read_bytes()
        assert not (out / row["file"]).is_symlink()
    assert (images / "a" / "0.png").stat().st_ino != (out / rows["a/0.png"]["file"]).stat().st_ino


def test_link_hard_links_the_originals_and_csv_writes_only_the_table(cli, folder_run, tmp_path):
    linked = tmp_path / "linked"
    result = cli("export", folder_run, linked, "--link", "--json")
    assert result.exit_code == 0, result.stderr
    images = Path(_image_root(folder_run))
    row = next(r for r in read_rows(linked / "clusters.csv") if r["id"] == "b/3.png")
    assert os.path.samefile(linked / row["file"], images / "b" / "3.png")
    table = tmp_path / "table"
    result = cli("export", folder_run, table, "--csv")
    assert result.exit_code == 0, result.stderr
    assert [p.name for p in table.iterdir()] == ["clusters.csv"]
    assert list(read_rows(table / "clusters.csv")[0]) == ["id", "cluster", "folder", "label"]


def test_link_makes_symbolic_links_where_hard_links_cannot_be_made(
    cli, folder_run, tmp_path, monkeypatch
):
    import errno

    def cross_device(source, target, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    out = tmp_path / "out"
    result = cli("export", folder_run, out, "--link")
    assert result.exit_code == 0, result.stderr
    assert "42 symlinked" in result.stdout and "symbolic links" in result.stdout
    row = next(r for r in read_rows(out / "clusters.csv") if r["id"] == "a/5.png")
    assert (out / row["file"]).is_symlink()
    assert os.path.samefile(out / row["file"], Path(_image_root(folder_run)) / "a" / "5.png")


def test_an_empty_existing_folder_is_filled(cli, digits_run, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    result = cli("export", digits_run, out, "--csv")
    assert result.exit_code == 0, result.stderr
    assert (out / "clusters.csv").is_file()


def _image_root(run: Path) -> str:
    import tomllib

    with open(run / "config.toml", "rb") as handle:
        return tomllib.load(handle)["dataset"]["path"]


# Bad input ---------------------------------------------------------------------------------
def one_line_error(result) -> str:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr
    return lines[0]


def test_an_existing_output_folder_is_refused_and_left_as_it_was(cli, digits_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    message = one_line_error(cli("export", digits_run, out))
    assert "not empty" in message and "new folder" in message
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    (tmp_path / "file").write_text("x")
    assert "is a file" in one_line_error(cli("export", digits_run, tmp_path / "file"))
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert "is a link" in one_line_error(cli("export", digits_run, tmp_path / "link"))
    missing = tmp_path / "no" / "such" / "out"
    assert "create it first" in one_line_error(cli("export", digits_run, missing))


def test_output_inside_an_input_is_refused(cli, folder_run, tmp_path):
    message = one_line_error(cli("export", folder_run, folder_run / "sorted"))
    assert "overlaps" in message
    inside_images = Path(_image_root(folder_run)) / "sorted"
    assert "overlaps" in one_line_error(cli("export", folder_run, inside_images))
    assert not inside_images.exists() and not (folder_run / "sorted").exists()


def test_a_missing_unfinished_or_foreign_run_is_refused(cli, digits_run, tmp_path):
    assert "does not exist" in one_line_error(cli("export", tmp_path / "nope", tmp_path / "o"))
    unfinished = tmp_path / f"{digits_run.name}.incomplete"
    shutil.copytree(digits_run, unfinished)
    message = one_line_error(cli("export", unfinished, tmp_path / "o"))
    assert "not finished" in message and "--resume" in message
    (tmp_path / "plain").mkdir()
    message = one_line_error(cli("export", tmp_path / "plain", tmp_path / "o"))
    assert "not an imgclust run" in message
    assert not (tmp_path / "o").exists()


def test_modes_are_exclusive_and_links_need_files(cli, digits_run, tmp_path):
    message = one_line_error(cli("export", digits_run, tmp_path / "o", "--link", "--csv"))
    assert "only one of" in message
    assert "image-folder" in one_line_error(cli("export", digits_run, tmp_path / "o", "--link"))
    assert not (tmp_path / "o").exists()


def test_images_of_another_size_than_the_run_clustered_are_refused(cli, tmp_path):
    from imgclust.plugins.digits import DigitsDataset

    images = DigitsDataset(limit=60).load("all").images
    np.save(tmp_path / "x.npy", images)
    sets = [f"dataset.path={tmp_path / 'x.npy'}", "dataset.channels=last"]
    run = finished_run(tmp_path / "runs", "arrays", sets)
    bigger = np.zeros((60, 9, 9, 1), dtype=np.uint8)
    np.save(tmp_path / "x.npy", bigger)
    message = one_line_error(cli("export", run, tmp_path / "o"))
    assert "9x9x1" in message and "8x8x1" in message
    assert not (tmp_path / "o").exists()


def test_ids_that_name_files_outside_the_image_folder_are_refused(cli, folder_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(folder_run, run)
    secret = Path(_image_root(folder_run)).parent / "secret.png"
    secret.write_bytes(b"not for export")
    text = (run / "assignments.csv").read_text().replace("a/0.png", "../secret.png", 1)
    (run / "assignments.csv").write_text(text)
    message = one_line_error(cli("export", run, tmp_path / "o"))
    assert "no longer holds" in message and "../secret.png" in message
    assert not (tmp_path / "o").exists()


def test_a_failure_midway_leaves_no_output_and_no_temporary(cli, digits_run, tmp_path, monkeypatch):
    from imgclust.cli.commands import export

    written = []

    def failing(image, target):
        if len(written) == 50:
            raise OSError(28, "No space left on device")
        written.append(target)
        target.write_bytes(b"png")

    monkeypatch.setattr(export, "_write_png", failing)
    message = one_line_error(cli("export", digits_run, tmp_path / "out"))
    assert "No space left on device" in message
    assert list(tmp_path.iterdir()) == []
