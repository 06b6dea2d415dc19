"""``imgclust run`` end to end on digits, configuration precedence, and every bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from imgclust.stages.hookspecs import hookimpl
from imgclust.stages.host import get_host

FAST = ["--dataset", "digits", "--encoder", "pca", "--clusterer", "kmeans"]


def run_folders(runs_dir: Path) -> list[Path]:
    return sorted(p for p in runs_dir.iterdir()) if runs_dir.exists() else []


def test_run_folder_names_and_report_titles_include_refiners(registry, tmp_path):
    from datetime import datetime

    from imgclust.engine.config import resolve_config
    from imgclust.io.runfolder import run_name
    from imgclust.report.page import build_report

    config = resolve_config(registry, recipe="pca-kmeans-recluster", dataset="digits")
    name = run_name(config, datetime(2026, 1, 2, 3, 4, 5))
    assert name == "2026-01-02T03-04-05-digits-pca-kmeans-self-label"
    plain = resolve_config(registry, dataset="digits", encoders=["pca"], clusterer="kmeans")
    assert run_name(plain, datetime(2026, 1, 2, 3, 4, 5)).endswith("-digits-pca-kmeans")
    folder = tmp_path / name
    folder.mkdir()
    page = build_report(folder)
    assert f"<title>{name}: imgclust report</title>" in page and f"<h1>{name}</h1>" in page


def test_run_writes_a_complete_run_folder(cli, runs_dir):
    result = cli("run", *FAST, "--set", "clusterer.n_clusters=10", "--runs-dir", runs_dir)
    assert result.exit_code == 0, result.stderr
    assert "ACC" in result.stdout and "NMI" in result.stdout and "run folder" in result.stdout
    [folder] = run_folders(runs_dir)
    assert folder.name.endswith("-digits-pca-kmeans")
    for name in ("config.toml", "metrics.json", "clusters.md", "assignments.csv", "embeddings.npy"):
        assert (folder / name).is_file(), name
    metrics = json.loads((folder / "metrics.json").read_text())
    assert 0.6 < metrics["acc"] <= 1 and 0.6 < metrics["nmi"] <= 1
    assert metrics["n_clusters"] == 10 and "total" in metrics["timings"]
    rows = list(csv.DictReader((folder / "assignments.csv").open()))
    assert len(rows) == 1797
    assert list(rows[0]) == ["id", "cluster", "label", "confidence", "outlier"]
    assert np.load(folder / "embeddings.npy").shape == (1797, 50)
    clusters = (folder / "clusters.md").read_text()
    assert clusters.count("\n- cluster ") == 10 and " x " in clusters


def test_json_output_is_one_object(cli, runs_dir):
    result = cli("run", *FAST, "--runs-dir", runs_dir, "--json", "--set", "clusterer.n_clusters=4")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert Path(record["run"]).is_dir() and record["n_images"] == 1797
    assert len([c for c in record["clusters"] if c["cluster"] >= 0]) == 4


def test_config_toml_repeats_the_run_exactly(cli, runs_dir):
    assert (
        cli(
            "run", *FAST, "--seed", "3", "--set", "encoder.n_components=12", "--runs-dir", runs_dir
        ).exit_code
        == 0
    )
    [first] = run_folders(runs_dir)
    assert "seed = 3" in (first / "config.toml").read_text()
    again = cli("run", "--config", first / "config.toml", "--runs-dir", runs_dir)
    assert again.exit_code == 0, again.stderr
    second = next(p for p in run_folders(runs_dir) if p != first)
    assert (first / "assignments.csv").read_text() == (second / "assignments.csv").read_text()
    assert (first / "config.toml").read_text() == (second / "config.toml").read_text()


def test_recipe_then_config_then_set(cli, runs_dir, tmp_path):
    config = tmp_path / "my-run.toml"
    config.write_text('[clusterer]\nname = "kmeans"\nn_clusters = 5\nn_init = 2\n')
    result = cli(
        "run",
        "--recipe",
        "pixels-kmeans",
        "--dataset",
        "digits",
        "--config",
        config,
        "--set",
        "clusterer.n_clusters=6",
        "--runs-dir",
        runs_dir,
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    text = (Path(json.loads(result.stdout)["run"]) / "config.toml").read_text()
    assert 'recipe = "pixels-kmeans"' in text and 'name = "flatten"' in text
    assert "n_clusters = 6" in text and "n_init = 2" in text


def test_chained_encoders_and_named_set(cli, runs_dir):
    result = cli(
        "run",
        "--dataset",
        "digits",
        "--encoder",
        "pca",
        "--encoder",
        "pca",
        "--clusterer",
        "kmeans",
        "--set",
        "encoder.0.n_components=20",
        "--set",
        "encoder.1.n_components=5",
        "--runs-dir",
        runs_dir,
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["feature_dim"] == 5
    ambiguous = cli(
        "run",
        "--dataset",
        "digits",
        "--encoder",
        "pca",
        "--encoder",
        "flatten",
        "--clusterer",
        "kmeans",
        "--set",
        "encoder.n_components=3",
        "--runs-dir",
        runs_dir,
    )
    assert ambiguous.exit_code != 0 and "encoder.flatten.KEY" in ambiguous.stderr


def test_fit_split_differs_from_the_clustered_split(cli, runs_dir):
    result = cli(
        "run",
        *FAST,
        "--set",
        "fit_split=train",
        "--split",
        "test",
        "--runs-dir",
        runs_dir,
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["n_images"] == 359 and record["fit_split"] == "train"


def test_run_folders_are_never_overwritten(runs_dir):
    from imgclust.io.runfolder import create_incomplete, finalise

    first = finalise(create_incomplete(runs_dir, "same"))
    second = finalise(create_incomplete(runs_dir, "same"))
    assert (first.name, second.name) == ("same", "same-2")


def _nan_encoder_plugin():
    class NaNEncoder:
        """Returns NaN features."""

        def fit(self, images, validation=None):
            return self

        def transform(self, images):
            return np.full((len(images), 3), np.nan, dtype=np.float32)

        def save(self, directory):
            pass

        def load(self, directory):
            return self

    @hookimpl
    def register_encoders(register):
        register("nan", NaNEncoder)

    return SimpleNamespace(register_encoders=register_encoders)


def write_array(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


BAD_INPUTS = {
    "unknown dataset": (
        ["run", "--dataset", "digitz", "--encoder", "pca", "--clusterer", "kmeans"],
        "Did you mean 'digits'",
    ),
    "unknown encoder": (
        ["run", "--dataset", "digits", "--encoder", "pcaa", "--clusterer", "kmeans"],
        "Did you mean 'pca'",
    ),
    "unknown clusterer": (
        ["run", "--dataset", "digits", "--encoder", "pca", "--clusterer", "kmean"],
        "Did you mean 'kmeans'",
    ),
    "unknown recipe": (["run", "--recipe", "artcle"], "Did you mean 'article'"),
    "unknown setting": (["run", *FAST, "--set", "clusterer.clusters=3"], "Accepted: n_clusters"),
    "badly typed setting": (["run", *FAST, "--set", "clusterer.n_clusters=ten"], "not a valid int"),
    "malformed --set": (["run", *FAST, "--set", "clusterer.n_clusters"], "stage.key=value"),
    "unknown split": (["run", *FAST, "--split", "validation"], "has no split 'validation'"),
    "too many clusters": (
        ["run", *FAST, "--set", "dataset.limit=5", "--set", "clusterer.n_clusters=10"],
        "only 5 images",
    ),
    "missing config": (["run", "--config", "{tmp}/absent.toml"], "does not exist"),
    "broken config": (["run", "--config", "{tmp}/broken.toml"], "not valid TOML"),
    "config with unknown key": (["run", "--config", "{tmp}/odd.toml"], "unknown key"),
    "missing array file": (
        [
            "run",
            "--dataset",
            "arrays",
            "--set",
            "dataset.path={tmp}/absent.npy",
            "--encoder",
            "flatten",
            "--clusterer",
            "kmeans",
        ],
        "does not exist",
    ),
    "corrupt array file": (
        [
            "run",
            "--dataset",
            "arrays",
            "--set",
            "dataset.path={tmp}/corrupt.npy",
            "--encoder",
            "flatten",
            "--clusterer",
            "kmeans",
        ],
        "cannot read",
    ),
    "empty dataset": (
        [
            "run",
            "--dataset",
            "arrays",
            "--set",
            "dataset.path={tmp}/empty.npy",
            "--encoder",
            "flatten",
            "--clusterer",
            "kmeans",
        ],
        "holds no images",
    ),
    "NaN images": (
        [
            "run",
            "--dataset",
            "arrays",
            "--set",
            "dataset.path={tmp}/nan.npy",
            "--encoder",
            "flatten",
            "--clusterer",
            "kmeans",
        ],
        "NaN",
    ),
    "wrong dimensions": (
        [
            "run",
            "--dataset",
            "arrays",
            "--set",
            "dataset.path={tmp}/flat.npy",
            "--encoder",
            "flatten",
            "--clusterer",
            "kmeans",
        ],
        "reshape them to (N, H, W)",
    ),
    "mixed shapes": (
        [
            "run",
            "--dataset",
            "arrays",
            "--set",
            "dataset.path={tmp}/ragged.npz",
            "--encoder",
            "flatten",
            "--clusterer",
            "kmeans",
        ],
        "different shapes",
    ),
    "NaN features": (
        ["run", "--dataset", "digits", "--encoder", "nan", "--clusterer", "kmeans"],
        "NaN or infinite",
    ),
    "missing required setting": (
        ["run", "--dataset", "arrays", "--encoder", "flatten", "--clusterer", "kmeans"],
        "needs the setting",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_one_line_and_no_run_folder(case, cli, tmp_path, runs_dir):
    (tmp_path / "broken.toml").write_text("[dataset\nname = 1\n")
    (tmp_path / "odd.toml").write_text('colour = "blue"\n')
    (tmp_path / "corrupt.npy").write_bytes(b"\x93NUMPY garbage")
    write_array(tmp_path / "empty.npy", np.zeros((0, 8, 8), dtype=np.uint8))
    write_array(tmp_path / "nan.npy", np.full((4, 8, 8), np.nan, dtype=np.float32))
    write_array(tmp_path / "flat.npy", np.zeros((4, 64), dtype=np.uint8))
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros((8, 8)), np.zeros((9, 9))
    np.savez(tmp_path / "ragged.npz", x=ragged)
    get_host().register(_nan_encoder_plugin(), "test-nan")
    argv, expected = BAD_INPUTS[case]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    result = cli(*argv, "--runs-dir", runs_dir)
    assert result.exit_code != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and expected in last, result.stderr
    assert result.stderr.count("Error") == 1 and "Traceback" not in result.stderr, result.stderr
    assert not [p for p in run_folders(runs_dir)], "a failed run must leave no run folder"


def test_files_written_whole_are_readable_like_ordinary_files(tmp_path):
    import os

    from imgclust.io import atomic

    path = atomic.write_text(tmp_path / "a.txt", "hello")
    mask = os.umask(0)
    os.umask(mask)
    assert path.read_text() == "hello"
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_reading_the_umask_leaves_it_as_it_was(tmp_path):
    """Files written whole take the mode the umask gives, read without setting it (setting it
    to read it would change, for that moment, the mode of files other threads create)."""
    import os

    from imgclust.io import atomic

    before = os.umask(0o027)
    try:
        assert atomic.current_umask() == 0o027
        assert os.umask(0o027) == 0o027  # still what was set
        path = atomic.write_text(tmp_path / "b.txt", "hello")
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(before)
