"""The arrays dataset names its classes: from its ``class_names`` setting (a list or a text file)
or from an ``.npz``'s ``class_names`` text array, checked against the labels, shown in
clusters.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imgclust.errors import DataError
from imgclust.plugins.arrays import ArraysDataset

NAMES = ["circle", "square", "triangle"]


def labelled(n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % 3
    images = (labels[:, None, None] * 120 + np.arange(n)[:, None, None] % 7).astype(np.uint8)
    return np.broadcast_to(images, (n, 5, 5)).copy(), labels


def load(path: Path, **settings):
    return ArraysDataset(path=str(path), **settings).load("all")


def test_names_from_a_comma_separated_setting(tmp_path):
    x, y = labelled()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = load(tmp_path / "d.npz", class_names=" circle, square ,triangle")
    assert list(data.class_names) == NAMES


def test_names_from_a_text_file_one_per_line(tmp_path):
    x, y = labelled()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    (tmp_path / "names.txt").write_text("circle\nsquare\ntriangle\n\n", encoding="utf-8")
    data = load(tmp_path / "d.npz", class_names=str(tmp_path / "names.txt"))
    assert list(data.class_names) == NAMES


def test_names_stored_in_the_npz_are_read_without_pickle(tmp_path):
    x, y = labelled()
    np.savez(tmp_path / "d.npz", pictures=x, class_names=np.array(NAMES))
    unlabelled = load(tmp_path / "d.npz")  # the only array besides the names holds the images
    assert unlabelled.class_names is None and unlabelled.images.shape == (30, 5, 5, 1)
    np.savez(tmp_path / "d.npz", x=x, y=y, class_names=np.array(NAMES))
    data = load(tmp_path / "d.npz")
    assert list(data.class_names) == NAMES
    assert list(load(tmp_path / "d.npz", class_names="a,b,c").class_names) == ["a", "b", "c"]


def test_names_stored_as_objects_are_refused_not_unpickled(tmp_path):
    x, y = labelled()
    np.savez(tmp_path / "d.npz", x=x, y=y, class_names=np.array(NAMES, dtype=object))
    with pytest.raises(DataError, match="1-D array of text"):
        load(tmp_path / "d.npz")


@pytest.mark.parametrize(
    "names, message",
    [
        ("circle,square", r"labels run from 0 to 2 but 2 class names name 0 to 1"),
        ("circle,,triangle", "non-empty"),
        ("circle,square,circle", "given twice"),
        ("missing.txt", "does not exist"),
    ],
)
def test_names_that_do_not_fit_the_labels_are_one_line(tmp_path, names, message):
    x, y = labelled()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with pytest.raises(DataError, match=message):
        load(tmp_path / "d.npz", class_names=names if "," in names else str(tmp_path / names))


def test_names_need_integer_labels(tmp_path):
    x, y = labelled()
    np.savez(tmp_path / "text.npz", x=x, y=np.array(NAMES)[y])
    with pytest.raises(DataError, match="labels are text, so they name themselves"):
        load(tmp_path / "text.npz", class_names="a,b,c")
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DataError, match="no labels to name"):
        load(tmp_path / "x.npy", class_names="a,b,c")


def test_a_limit_does_not_hide_a_label_outside_the_names(tmp_path):
    x, y = labelled()
    y[-1] = 5
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with pytest.raises(DataError, match="labels run from 0 to 5"):
        load(tmp_path / "d.npz", class_names="a,b,c", limit=10)


@pytest.mark.parametrize("where", ["setting", "npz"])
def test_clusters_md_shows_the_names(cli, runs_dir, tmp_path, where):
    x, y = labelled(60)
    extra = {"class_names": np.array(NAMES)} if where == "npz" else {}
    np.savez(tmp_path / "d.npz", x=x, y=y, **extra)
    sets = ["--set", f"dataset.path={tmp_path / 'd.npz'}", "--set", "clusterer.n_clusters=3"]
    if where == "setting":
        sets += ["--set", "dataset.class_names=" + ",".join(NAMES)]
    result = cli(
        "run", "--dataset", "arrays", "--encoder", "flatten", "--clusterer", "kmeans", *sets,
        "--runs-dir", runs_dir, "--no-plots",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    [folder] = runs_dir.iterdir()
    clusters = (folder / "clusters.md").read_text()
    for name in NAMES:
        assert f"20 x {name}" in clusters, clusters
    assert "x 0" not in clusters and "x 1," not in clusters
    assert "circle" in (folder / "assignments.csv").read_text()
