"""Choosing k: the sweep, its recommendation, its files and the ``imgclust sweep-k`` command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from imgclust.errors import DataError, SettingsError
from imgclust.kit.arrays import sample_index
from imgclust.results.ksweep import choose, parse_range, sweep, write

DIGITS = ["--dataset", "digits", "--encoder", "pca", "--set", "encoder.n_components=10"]


@pytest.fixture(scope="module")
def blobs():
    from sklearn.datasets import make_blobs

    x, _ = make_blobs(n_samples=800, centers=4, n_features=3, cluster_std=0.5, random_state=7)
    return x.astype(np.float32)


def factory(registry, name):
    return registry.get("clusterers", name).target


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2-6", [2, 3, 4, 5, 6]), ("2..6", [2, 3, 4, 5, 6]), ("2-10:4", [2, 6, 10]),
     ("8,4,4,10", [4, 8, 10]), ("5", [5])],
)  # fmt: skip
def test_parse_range(text, expected):
    assert parse_range(text) == expected


@pytest.mark.parametrize("text", ["1-5", "a-b", "", "0,3"])
def test_parse_range_refuses_bad_ranges(text):
    with pytest.raises(SettingsError):
        parse_range(text)


def test_sample_is_fixed_by_the_seed():
    a, b, c = sample_index(1000, 100, 3), sample_index(1000, 100, 3), sample_index(1000, 100, 4)
    assert len(a) == 100 and len(set(a)) == 100 and (np.diff(a) > 0).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(sample_index(50, 100, 0), np.arange(50))


def test_kmeans_sweep_recommends_the_true_k(registry, blobs):
    logged = []
    result = sweep(blobs, "kmeans", factory(registry, "kmeans"), [2, 3, 4, 5, 6, 7],
                   settings={"n_init": 2}, sample_size=600, seed=1, log=logged.append)  # fmt: skip
    assert result.recommended == 4 and result.sample_size == 600 and result.n_features == 800
    assert result.best["silhouette"] == 4 and result.best["calinski_harabasz"] == 4
    assert result.best["davies_bouldin"] == 4 and "bic" not in result.best
    assert [r["k"] for r in result.rows] == [2, 3, 4, 5, 6, 7] and len(logged) == 6
    assert all(r["found"] == r["k"] for r in result.rows)


def test_gmm_sweep_adds_bic_and_can_choose_by_it(registry, blobs):
    result = sweep(blobs, "gmm", factory(registry, "gmm"), [2, 3, 4, 5, 6], criterion="bic",
                   settings={"covariance_type": "diag"})  # fmt: skip
    assert all("bic" in r for r in result.rows)
    assert result.criterion == "bic" and result.recommended == 4
    assert result.settings["covariance_type"] == "diag" and result.settings["seed"] == 0


def test_choose_prefers_the_smallest_k_on_a_tie():
    rows = [{"k": 3, "silhouette": 0.5}, {"k": 5, "silhouette": 0.5}, {"k": 4, "silhouette": None}]
    assert choose(rows, "silhouette") == 3
    assert choose([{"k": 3, "davies_bouldin": 2.0}, {"k": 6, "davies_bouldin": 1.0}],
                  "davies_bouldin") == 6  # fmt: skip


def test_sweep_refuses_what_it_cannot_do(registry, blobs):
    with pytest.raises(SettingsError, match="no n_clusters to sweep"):
        sweep(blobs, "dbscan", factory(registry, "dbscan"), [2, 3])
    with pytest.raises(SettingsError, match="has no BIC"):
        sweep(blobs, "kmeans", factory(registry, "kmeans"), [2, 3], criterion="bic")
    with pytest.raises(SettingsError, match="criterion 'elbow'"):
        sweep(blobs, "kmeans", factory(registry, "kmeans"), [2, 3], criterion="elbow")
    with pytest.raises(DataError, match="k up to 30 needs more than 30 images"):
        sweep(blobs[:20], "kmeans", factory(registry, "kmeans"), [2, 30])
    bad = blobs.copy()
    bad[3, 0] = np.inf
    with pytest.raises(DataError, match="NaN or infinite"):
        sweep(bad, "kmeans", factory(registry, "kmeans"), [2, 3])
    with pytest.raises(SettingsError, match="Unknown setting 'eps'"):
        sweep(blobs, "kmeans", factory(registry, "kmeans"), [2, 3], settings={"eps": 1})


def test_written_table_json_and_plot(registry, blobs, tmp_path):
    result = sweep(blobs, "gmm", factory(registry, "gmm"), [2, 3, 4, 5], sample_size=400)
    paths = write(result, tmp_path)
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [int(r["k"]) for r in rows] == [2, 3, 4, 5]
    assert {"silhouette", "davies_bouldin", "calinski_harabasz", "bic"} <= set(rows[0])
    saved = json.loads(paths["json"].read_text())
    assert saved["recommended"] == result.recommended and len(saved["rows"]) == 4
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_sweep_k_command_writes_a_sweep_folder(cli, runs_dir):
    result = cli("sweep-k", *DIGITS, "--clusterer", "kmeans", "--k", "6-12:2", "--sample", "900",
                 "--runs-dir", runs_dir, "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["recommended"] in (6, 8, 10, 12) and record["sample_size"] == 900
    folder = Path(record["folder"])
    assert folder.parent == runs_dir and "k-sweep" in folder.name
    assert {p.name for p in folder.iterdir()} == {"k-sweep.csv", "k-sweep.json", "k-sweep.png"}
    text = cli("sweep-k", *DIGITS, "--clusterer", "kmeans", "--k", "8,10", "--sample", "500",
               "--runs-dir", runs_dir)  # fmt: skip
    assert text.exit_code == 0, text.stderr
    assert "recommended k =" in text.stdout and "clusterer.n_clusters=" in text.stdout


def test_sweep_k_then_run_uses_the_recommended_k(cli, runs_dir):
    result = cli("sweep-k", *DIGITS, "--clusterer", "gmm", "--k", "3,10", "--run", "--json",
                 "--no-plots", "--runs-dir", runs_dir,
                 "--set", "clusterer.covariance_type=diag")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    k = record["recommended"]
    folder = Path(record["folder"])
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["n_clusters"] == k
    assert f"n_clusters = {k}" in (folder / "config.toml").read_text()
    assert 'covariance_type = "diag"' in (folder / "config.toml").read_text()
    assert (folder / "k-sweep.png").is_file() and (folder / "k-sweep.csv").is_file()


def test_sweep_k_from_a_finished_run_reuses_its_embeddings(cli, runs_dir):
    run = cli("run", *DIGITS, "--clusterer", "kmeans", "--runs-dir", runs_dir, "--json",
              "--no-plots")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    folder = json.loads(run.stdout)["run"]
    result = cli("sweep-k", "--from", folder, "--clusterer", "gmm", "--k", "5-7",
                 "--runs-dir", runs_dir, "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["clusterer"] == "gmm" and record["n_features"] == 1797


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--clusterer", "dbscan"], "no n_clusters to sweep"),
     (["--clusterer", "kmeans", "--k", "1-4"], "at least 2"),
     (["--clusterer", "kmeans", "--k", "2-40", "--sample", "30"], "k up to 40"),
     (["--clusterer", "kmean"], "Did you mean 'kmeans'")],
)  # fmt: skip
def test_sweep_k_bad_input_is_one_line(cli, runs_dir, args, message):
    result = cli("sweep-k", *DIGITS, *args, "--runs-dir", runs_dir)
    assert result.exit_code != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and message in last and "Traceback" not in result.stderr
    assert not runs_dir.exists() or not list(runs_dir.iterdir())


def test_sweep_k_from_a_folder_without_embeddings(cli, tmp_path):
    result = cli("sweep-k", "--from", tmp_path, "--k", "2-3")
    assert result.exit_code != 0 and "no embeddings.npy" in result.stderr
