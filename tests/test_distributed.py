"""Runs and predictions on a Dask LocalCluster of 2 worker processes equal those without Dask."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("distributed", reason='needs the dask extra: pip install "imgclust[dask]"')

from tests.agreement import assert_runs_agree  # noqa: E402
from tests.test_chunks import digits_arrays, finished, run_args  # noqa: E402


def stage_arrays(run: Path) -> dict[str, np.ndarray]:
    """Every array every fitted stage saved, by file and name."""
    arrays = {}
    for file in sorted((run / "pipeline").glob("*/*.npz")):
        with np.load(file) as saved:
            arrays.update({f"{file.parent.name}/{file.name}:{k}": saved[k] for k in saved.files})
    return arrays


@pytest.mark.slow
def test_dask_run_and_predict_equal_a_local_run(cli, tmp_path):
    """Same seed and fit-on-sample config: same fitted stages, features, clusters, predictions."""
    x, y = digits_arrays(tmp_path / "data")
    local = cli(*run_args(x, y, tmp_path / "local"))
    assert local.exit_code == 0, local.stderr
    remote = cli(*run_args(x, y, tmp_path / "dask", "--dask", "local:2"))
    assert remote.exit_code == 0, remote.stderr
    assert "on the cluster" in remote.stderr
    (a,), (b,) = finished(tmp_path / "local"), finished(tmp_path / "dask")
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    assert_runs_agree(a, b)
    left, right = stage_arrays(a), stage_arrays(b)
    assert left.keys() == right.keys() and left
    for key in left:
        np.testing.assert_array_equal(left[key], right[key], err_msg=key)
    here = cli("predict", b, x)
    there = cli("predict", b, x, "--dask", "local:2")
    assert here.exit_code == there.exit_code == 0, there.stderr
    near, far = (list(csv.reader(io.StringIO(out.stdout))) for out in (here, there))
    assert [row[:2] for row in near] == [row[:2] for row in far]  # ids and clusters
    np.testing.assert_allclose(
        [float(row[2]) for row in near[1:]], [float(row[2]) for row in far[1:]], rtol=1e-5
    )


def recipe_args(recipe: str, x: Path, y: Path, runs: Path, *extra: str) -> list[str]:
    """A refiner recipe on the arrays, fitted on 600 of them, in chunks of 500; its CNN small."""
    return [
        "run", "-r", recipe, "-d", "arrays", "-s", f"dataset.path={x}",
        "-s", f"dataset.labels_path={y}", "-s", "fit_sample=600", "-s", "chunk_size=500",
        "-s", "refiner.rounds=1", "-s", "refiner.filters=8", "-s", "refiner.dense=32",
        "--no-plots", "--runs-dir", str(runs), *extra,
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["umap-gmm-recluster", "pca-kmeans-recluster"])
def test_a_refiner_recipe_on_dask_equals_the_chunked_run(cli, tmp_path, recipe):
    """The refiner trains on the fit sample here and assigns every chunk: in this process and
    on two workers, the same clusters, the refiner's own confidence and the same features."""
    import imgclust

    x, y = digits_arrays(tmp_path / "data", 1500)
    local = cli(*recipe_args(recipe, x, y, tmp_path / "local"))
    assert local.exit_code == 0, local.stderr
    remote = cli(*recipe_args(recipe, x, y, tmp_path / "dask", "--dask", "local:2"))
    assert remote.exit_code == 0, remote.stderr
    assert "on the cluster" in remote.stderr
    (a,), (b,) = finished(tmp_path / "local"), finished(tmp_path / "dask")
    assert (a / "assignments.csv").read_text() == (b / "assignments.csv").read_text()
    assert_runs_agree(a, b)
    for run in (a, b):
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["confidence"]["source"] == "refiner probability"
        assert set(metrics["before_refiners"]) >= {"acc", "nmi"}
    saved = imgclust.load(b)
    clusters = np.loadtxt(b / "assignments.csv", delimiter=",", skiprows=1, usecols=1)
    np.testing.assert_array_equal(clusters[:500], saved.predict(np.load(x)[:500]))


@pytest.mark.slow
def test_dask_reads_an_image_folder_on_the_workers(cli, tmp_path):
    """PNG files decoded on workers give the clusters of a local run; unreadable ones skipped."""
    from PIL import Image

    images = np.load(digits_arrays(tmp_path / "data", 400)[0])[..., 0]
    folder = tmp_path / "pngs"
    for i, image in enumerate(images):
        (folder / str(i % 3)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / str(i % 3) / f"{i:04d}.png")
    common = [
        "run", "-d", "image-folder", "-s", f"dataset.path={folder}", "-s", "dataset.cache=false",
        "-e", "pca", "-s", "encoder.n_components=10", "-k", "kmeans",
        "-s", "clusterer.n_clusters=5", "-s", "fit_sample=150", "-s", "chunk_size=90",
        "--no-plots",
    ]  # fmt: skip
    local = cli(*common, "--runs-dir", tmp_path / "local")
    remote = cli(*common, "--runs-dir", tmp_path / "dask", "--dask", "local:2")
    assert local.exit_code == remote.exit_code == 0, remote.stderr
    (a,), (b,) = finished(tmp_path / "local"), finished(tmp_path / "dask")
    assert (a / "assignments.csv").read_text() == (b / "assignments.csv").read_text()
    # the listed files' invariances are measured on the same sample the local run decodes
    invariances = [json.loads((r / "metrics.json").read_text())["invariances"] for r in (a, b)]
    assert invariances[0] == invariances[1] and invariances[1]["mode"] == "auto"
    (folder / "0" / "0999.png").write_bytes(b"not an image")
    here = cli("predict", b, folder)
    there = cli("predict", b, folder, "--dask", "local:2")
    # Dask assigns the same clusters and distances; only the local run scores confidence and
    # outliers (the run's features stay on the workers), so compare the columns both write.
    assert shared_columns(here.stdout) == shared_columns(there.stdout)
    assert here.stdout.count("\n") == there.stdout.count("\n") == 401
    assert "confidence" in here.stdout.splitlines()[0] and "note:" in there.stderr
    skipping = cli(*common, "--runs-dir", tmp_path / "skip", "--dask", "local:2")
    assert skipping.exit_code == 0, skipping.stderr
    (c,) = finished(tmp_path / "skip")
    assert "0/0999.png" in (c / "skipped.txt").read_text()
    assert (c / "assignments.csv").read_text().count("\n") == 401


@pytest.mark.slow
def test_an_unreachable_scheduler_fails_in_one_line_before_any_work(cli, tmp_path):
    x, y = digits_arrays(tmp_path / "data", 300)
    started = time.monotonic()
    result = cli(*run_args(x, y, tmp_path / "runs", "--dask", "tcp://127.0.0.1:9"))
    assert result.exit_code != 0
    assert result.stderr.startswith("Error: cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'")
    assert len(result.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 60
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_workers_without_a_plugin_fail_in_one_line_before_any_work(tmp_path):
    """A stage registered only here (not installed on the workers) is named before any work."""
    from imgclust import hookimpl
    from imgclust.engine.config import resolve_config
    from imgclust.engine.runner import execute
    from imgclust.errors import ImgclustError
    from imgclust.plugins.basic_encoders import PCAEncoder
    from imgclust.stages.host import get_host, get_registry

    @hookimpl
    def register_encoders(register):
        register("local-only-pca", PCAEncoder)

    get_host().register(SimpleNamespace(register_encoders=register_encoders), "local-only")
    x, y = digits_arrays(tmp_path / "data", 300)
    registry = get_registry()
    config = resolve_config(
        registry, dataset="arrays", encoders=["local-only-pca"], clusterer="kmeans",
        sets=[f"dataset.path={x}", "fit_sample=100", "dask=local:2"],
    )  # fmt: skip
    with pytest.raises(ImgclustError, match=r"lacks encoder 'local-only-pca': install the same"):
        execute(registry, config, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def shared_columns(text: str) -> list[list[str]]:
    """predict's CSV rows without the confidence and outlier columns."""
    rows = list(csv.reader(io.StringIO(text)))
    keep = [i for i, name in enumerate(rows[0]) if name not in ("confidence", "outlier")]
    return [[row[i] for i in keep] for row in rows]
