"""``imgclust predict`` (arrays, image files, folders) and ``imgclust evaluate``, end to end."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FAST = ["--dataset", "digits", "--encoder", "pca", "--clusterer", "kmeans", "--no-plots"]


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    from imgclust.plugins.digits import DigitsDataset

    data = DigitsDataset().load("all")
    return data.images, np.asarray(data.labels)


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory) -> Path:
    """One finished digits + pca + kmeans run, shared (read-only) by the tests below."""
    from imgclust.cli.app import main
    from imgclust.stages.host import reset_host

    reset_host()
    runs = tmp_path_factory.mktemp("runs")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *FAST, "--runs-dir", str(runs)])
    assert exit_info.value.code in (0, None)
    [folder] = list(runs.iterdir())
    return folder


def run_labels(folder: Path) -> np.ndarray:
    with open(folder / "assignments.csv") as handle:
        return np.array([int(row["cluster"]) for row in csv.DictReader(handle)])


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_predict_an_npy_array_writes_the_runs_clusters_with_distances(cli, fitted_run, tmp_path):
    images, _ = digit_images()
    np.save(tmp_path / "digits.npy", images)
    out = tmp_path / "out.csv"
    result = cli("predict", fitted_run, tmp_path / "digits.npy", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert f"wrote {out}" in result.stdout and "assigned 1797 images" in result.stdout
    rows = read_csv(out.read_text())
    assert list(rows[0]) == ["id", "cluster", "distance", "confidence", "outlier"]
    assert rows[0]["id"].endswith("digits.npy:0") and rows[-1]["id"].endswith("digits.npy:1796")
    assert np.array_equal([int(r["cluster"]) for r in rows], run_labels(fitted_run))
    distances = np.array([float(r["distance"]) for r in rows])
    assert (distances >= 0).all() and distances.max() > 0


def test_predict_writes_a_new_file_and_replaces_one_only_with_force(cli, fitted_run, tmp_path):
    images, _ = digit_images()
    np.save(tmp_path / "digits.npy", images[:50])
    out = tmp_path / "out.csv"
    first = cli("predict", fitted_run, tmp_path / "digits.npy", "-o", out)
    assert first.exit_code == 0, first.stderr
    written = out.read_text()
    printed = cli("predict", fitted_run, tmp_path / "digits.npy")
    assert printed.stdout == written
    again = cli("predict", fitted_run, tmp_path / "digits.npy", "-o", out)
    assert again.exit_code != 0 and "already exists" in again.stderr and "--force" in again.stderr
    out.write_text("older\n")
    forced = cli("predict", fitted_run, tmp_path / "digits.npy", "-o", out, "--force", "--json")
    assert forced.exit_code == 0, forced.stderr
    assert json.loads(forced.stdout)["output"] == str(out) and out.read_text() == written


def test_predict_an_npz_with_labels_channel_first_and_float(cli, fitted_run, tmp_path):
    images, labels = digit_images()
    first = np.moveaxis(images[:100], -1, 1).astype(np.float32) / 255  # (N, 1, 8, 8) in [0, 1]
    np.savez(tmp_path / "few.npz", x=first, y=labels[:100])
    result = cli("predict", fitted_run, tmp_path / "few.npz", "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["n_images"] == 100 and record["output"] is None
    rows = record["assignments"]
    assert [r["label"] for r in rows] == labels[:100].tolist()
    assert [r["cluster"] for r in rows] == run_labels(fitted_run)[:100].tolist()
    assert sum(record["clusters"].values()) == 100


def test_predict_reads_image_files_and_folders_as_fitted(cli, fitted_run, tmp_path):
    images, _ = digit_images()
    folder = tmp_path / "new"
    (folder / "sub").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(images[i, :, :, 0]).save(folder / ("sub" if i % 2 else ".") / f"d{i}.png")
    (folder / "notes.txt").write_text("not an image")
    loose = tmp_path / "loose.png"
    Image.fromarray(images[10, :, :, 0]).save(loose)
    # an RGB image twice the size: read as 8x8 grayscale, as the pipeline was fitted
    big = tmp_path / "big.png"
    Image.fromarray(images[10, :, :, 0]).convert("RGB").resize((16, 16), Image.NEAREST).save(big)

    result = cli("predict", fitted_run, folder, loose, big)
    assert result.exit_code == 0, result.stderr
    rows = read_csv(result.stdout)
    ids = [r["id"] for r in rows]
    expected = run_labels(fitted_run)
    by_id = {r["id"]: int(r["cluster"]) for r in rows}
    assert len(rows) == 8 and all("notes.txt" not in i for i in ids)
    assert ids[-2:] == [str(loose), str(big)]
    for i in range(6):
        name = f"{folder.as_posix()}/{'sub/' if i % 2 else ''}d{i}.png"
        assert by_id[name] == expected[i], name
    assert by_id[str(loose)] == expected[10]
    assert by_id[str(big)] == expected[10]


def test_predict_reads_folders_of_arrays_and_single_image_arrays(cli, fitted_run, tmp_path):
    images, labels = digit_images()
    expected = run_labels(fitted_run)
    folder = tmp_path / "arrays"
    (folder / "more").mkdir(parents=True)
    np.save(folder / "a.npy", images[0, :, :, 0])  # one image (H, W)
    np.save(folder / "b.npy", images[1])  # one image (H, W, C)
    np.savez(folder / "c.npz", x=images[2, :, :, 0], y=labels[2])  # one image and its label
    np.savez(folder / "more" / "d.npz", x=images[3:6], y=labels[3:6])  # a stack of three
    Image.fromarray(images[6, :, :, 0]).save(folder / "e.png")  # image files beside them
    result = cli("predict", fitted_run, folder, "--json")
    assert result.exit_code == 0, result.stderr
    by_id = {row["id"]: row["cluster"] for row in json.loads(result.stdout)["assignments"]}
    names = ["a.npy", "b.npy", "c.npz", "more/d.npz:0", "more/d.npz:1", "more/d.npz:2", "e.png"]
    assert sorted(by_id) == sorted(f"{folder.as_posix()}/{name}" for name in names)
    for index, name in enumerate(names):
        assert by_id[f"{folder.as_posix()}/{name}"] == expected[index], name
    # a single-image array given by itself is one image, named by its file
    single = cli("predict", fitted_run, folder / "a.npy", "--json")
    [only] = json.loads(single.stdout)["assignments"]
    assert only["id"] == str(folder / "a.npy") and only["cluster"] == int(expected[0])
    assert sorted(only) == ["cluster", "confidence", "distance", "id", "outlier"]


def test_predict_hints_name_only_what_predict_has(cli, fitted_run, tmp_path):
    np.savez(tmp_path / "odd.npz", pictures=digit_images()[0][:3], extra=np.arange(3))
    (tmp_path / "empty").mkdir()
    for target, fragment in ((tmp_path / "odd.npz", "name the images x"), (tmp_path / "empty", "")):
        result = cli("predict", fitted_run, target)
        assert result.exit_code != 0 and fragment in result.stderr
        assert "dataset." not in result.stderr and "--set" not in result.stderr, result.stderr


def test_predict_refuses_arrays_of_another_size_or_channel_count(cli, fitted_run, tmp_path):
    np.save(tmp_path / "big.npy", np.zeros((4, 28, 28), np.uint8))
    np.save(tmp_path / "rgb.npy", np.zeros((4, 8, 8, 3), np.uint8))
    for name, fragment in (("big.npy", "28x28 with 1 channel"), ("rgb.npy", "8x8 with 3 channels")):
        result = cli("predict", fitted_run, tmp_path / name)
        assert result.exit_code != 0
        line = result.stderr.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in line
        assert fragment in line and "fitted on 8x8 with 1 channel" in line


def test_predict_bad_inputs_get_one_clear_line(cli, fitted_run, tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "empty").mkdir()
    Image.fromarray(digit_images()[0][0, :, :, 0]).save(tmp_path / "good.png")
    cases = [
        ((tmp_path / "missing.npy",), "does not exist"),
        ((tmp_path / "a.txt",), "neither an image"),
        ((tmp_path / "broken.png",), "broken.png: not a readable image"),
        ((tmp_path / "good.png", tmp_path / "broken.png"), "cannot read image"),
        ((tmp_path / "empty",), "no images in"),
    ]
    for args, fragment in cases:
        result = cli("predict", fitted_run, *args)
        assert result.exit_code != 0, args
        assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = cli("predict", tmp_path, tmp_path / "a.txt")
    assert result.exit_code != 0 and "holds no fitted pipeline" in result.stderr


def test_evaluate_scores_a_split_with_the_saved_pipeline(cli, fitted_run):
    result = cli("evaluate", fitted_run, "--dataset", "digits", "--split", "all", "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    metrics = json.loads((fitted_run / "metrics.json").read_text())
    # the same images give the same clusters, so the same scores as the run
    for key in ("acc", "nmi", "ari", "purity"):
        assert record[key] == pytest.approx(metrics[key])
    assert record["n_images"] == 1797 and record["split"] == "all"
    text = cli("evaluate", fitted_run, "--split", "test", "--set", "dataset.limit=50")
    assert text.exit_code == 0, text.stderr
    assert "50 images" in text.stdout and "ACC " in text.stdout and "NMI " in text.stdout


def test_evaluate_needs_labels_and_valid_settings(cli, fitted_run, tmp_path):
    np.save(tmp_path / "x.npy", digit_images()[0][:20])
    path = f"dataset.path={tmp_path / 'x.npy'}"
    result = cli("evaluate", fitted_run, "--dataset", "arrays", "--set", path)
    assert result.exit_code != 0 and "no labels" in result.stderr
    result = cli("evaluate", fitted_run, "--set", "clusterer.n_clusters=3")
    assert result.exit_code != 0 and "only dataset" in result.stderr
    result = cli("evaluate", fitted_run, "--set", "dataset.bogus=1")
    assert result.exit_code != 0 and "Unknown setting 'bogus'" in result.stderr


def test_a_run_whose_clusterer_cannot_predict_says_which_can(cli, runs_dir, tmp_path):
    result = cli(
        "run",
        "--dataset",
        "digits",
        "--encoder",
        "pca",
        "--clusterer",
        "agglomerative",
        "--set",
        "dataset.limit=200",
        "--no-plots",
        "--runs-dir",
        runs_dir,
    )
    assert result.exit_code == 0, result.stderr
    [folder] = list(runs_dir.iterdir())
    np.save(tmp_path / "x.npy", digit_images()[0][:5])
    for command in (("predict", folder, tmp_path / "x.npy"), ("evaluate", folder)):
        result = cli(*command)
        assert result.exit_code != 0
        assert "'agglomerative' cannot assign new images" in result.stderr
        assert "kmeans" in result.stderr and "gmm" in result.stderr


def test_predict_on_a_copied_run_folder(cli, fitted_run, tmp_path):
    """A run folder moved elsewhere still loads: nothing in it refers to where it was made."""
    moved = Path(shutil.copytree(fitted_run, tmp_path / "moved"))
    np.save(tmp_path / "x.npy", digit_images()[0][:30])
    result = cli("predict", moved, tmp_path / "x.npy", "--json", "-o", tmp_path / "o.csv")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["output"] == str(tmp_path / "o.csv")
    rows = read_csv((tmp_path / "o.csv").read_text())
    assert [int(r["cluster"]) for r in rows] == run_labels(fitted_run)[:30].tolist()
