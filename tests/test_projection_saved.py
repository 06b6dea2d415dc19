"""The map's 2-D projection is kept in the run (plots/projection.npz) and ``imgclust report``
draws from it instead of projecting again; other map settings project afresh. A fresh install's
first run does not wait on compiling UMAP for its map: ``auto`` takes PCA until UMAP is
compiled or already loaded."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from imgclust.report.plots import make_plots
from imgclust.report.plots.explorer import MAP_SCALE
from imgclust.report.plots.options import PlotOptions
from imgclust.report.plots.projection import (
    NOT_COMPILED,
    SAVED,
    Projection,
    choose_method,
    load_projection,
    projection_key,
    save_projection,
    umap_is_ready,
)
from tests.test_report import PCA, invoke, run_folder_of


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small digits run (300 images, PCA map) with its plots."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGCLUST_PLOT_MAP", "pca")
        runs = tmp_path_factory.mktemp("runs")
        return run_folder_of(invoke("run", *PCA, "--runs-dir", runs, "--json"))


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished run, for one test to change."""
    return Path(shutil.copytree(finished, tmp_path / finished.name))


def points(run: Path) -> dict:
    return json.loads((run / "plots" / "explorer" / "points.json").read_text())["map"]


def forge(run: Path, xy: np.ndarray, index: np.ndarray | None = None, **meta: object) -> Path:
    """Rewrite the run's saved projection with other points (the same settings unless told)."""
    path = run / "plots" / SAVED
    saved = load_projection(path, projection_key(PlotOptions("pca")), 0, 300)
    assert saved is not None
    index = saved.index if index is None else index
    forged = Projection(xy, index, str(meta.get("method", "PCA")), ("across", "up"), "forged")
    return save_projection(path, forged, projection_key(PlotOptions("pca")), 0, 300)


def test_a_run_keeps_its_projection_and_report_draws_from_it(cli, run: Path) -> None:
    options = PlotOptions("pca")
    saved = load_projection(run / "plots" / SAVED, projection_key(options), 0, 300)
    assert saved is not None and saved.method == "PCA" and saved.xy.shape == (300, 2)
    # points the projection could never give: a diagonal line, in row order
    line = np.repeat(np.arange(300, dtype=np.float32)[:, None], 2, axis=1)
    forge(run, line)
    result = cli("report", run)
    assert result.exit_code == 0, result.stderr
    assert f"projection reused from plots/{SAVED}" in result.stderr
    shown = points(run)
    assert shown["x"] == shown["y"]  # drawn from the saved line, not projected again
    assert shown["index"] == saved.index.tolist()
    assert shown["x"] == np.rint(np.arange(300) / 299 * MAP_SCALE).astype(int).tolist()
    assert shown["axes"] == ["across", "up"] and shown["note"] == "forged"


def test_other_map_settings_project_afresh_and_keep_that(cli, run: Path) -> None:
    line = np.repeat(np.arange(300, dtype=np.float32)[:, None], 2, axis=1)
    forge(run, line)
    result = cli("report", run, "--map-sample", "200")
    assert result.exit_code == 0, result.stderr
    assert "reused" not in result.stderr
    shown = points(run)
    assert len(shown["index"]) == 200 and shown["x"] != shown["y"]
    again = cli("report", run, "--map-sample", "200")
    assert f"projection reused from plots/{SAVED}" in again.stderr


@pytest.mark.parametrize(
    "damage",
    ["nan", "row outside", "repeated row", "wrong shape", "not a zip", "huge member", "meta"],
)
def test_a_damaged_projection_is_noted_and_projected_again(cli, run: Path, damage: str) -> None:
    path = run / "plots" / SAVED
    line = np.repeat(np.arange(300, dtype=np.float32)[:, None], 2, axis=1)
    if damage == "nan":
        line[7] = np.nan
        forge(run, line)
    elif damage == "row outside":
        forge(run, line, index=np.arange(1, 301, dtype=np.int64))
    elif damage == "repeated row":
        forge(run, line, index=np.zeros(300, dtype=np.int64))
    elif damage == "wrong shape":
        forge(run, np.zeros((300, 3), dtype=np.float32))
    elif damage == "not a zip":
        path.write_bytes(b"not an archive")
    elif damage == "huge member":  # declares far more than 300 points may take
        np.savez(path, xy=np.zeros((100_000, 2), np.float32), index=np.arange(100_000), meta=b"")
    elif damage == "meta":
        forge(run, line, method="<script>")
    result = cli("report", run)
    assert result.exit_code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if f"plots/{SAVED}" in line]
    assert len(notes) == 1 and notes[0].startswith("note: ") and "projected again" in notes[0]
    shown = points(run)
    assert shown["x"] != shown["y"] and shown["note"] != "forged"  # projected afresh
    # and the damaged file was replaced by the new projection
    assert load_projection(path, projection_key(PlotOptions("pca")), 0, 300) is not None


def test_a_projection_of_other_images_or_another_seed_is_not_used(tmp_path: Path) -> None:
    projection = Projection(np.zeros((10, 2), np.float32), np.arange(10), "PCA", ("a", "b"), "")
    key = projection_key(PlotOptions("pca"))
    path = save_projection(tmp_path / SAVED, projection, key, seed=1, n=10)
    assert load_projection(path, key, 1, 10) is not None
    assert load_projection(path, key, 2, 10) is None
    assert load_projection(path, key, 1, 11) is None
    assert load_projection(path, projection_key(PlotOptions("umap")), 1, 10) is None
    assert load_projection(tmp_path / "absent.npz", key, 1, 10) is None


def test_auto_takes_pca_until_umap_is_compiled_or_loaded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import hashlib
    import importlib.util

    if importlib.util.find_spec("umap") is None:
        pytest.skip("umap-learn is not installed")
    if "umap" in sys.modules:
        monkeypatch.delitem(sys.modules, "umap")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "empty"))
    assert not umap_is_ready()
    assert choose_method("auto", 10_000) == ("pca", NOT_COMPILED)
    assert choose_method("umap", 10_000) == ("umap", "")  # asked for: it compiles
    # numba's cache layout: <source folder name>_<sha1 of its path>/<module.function>-<line>...
    source = os.path.dirname(os.path.abspath(importlib.util.find_spec("umap").origin))
    folder = tmp_path / "warm" / f"umap_{hashlib.sha1(source.encode()).hexdigest()}"
    folder.mkdir(parents=True)
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    (folder / f"layouts._optimize_layout_euclidean_single_epoch-63.{tag}.nbi").touch()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "warm"))
    assert not umap_is_ready()  # half the code is not enough
    (folder / f"umap_.smooth_knn_dist-144.{tag}.nbi").touch()
    assert umap_is_ready() and choose_method("auto", 10_000) == ("umap", "")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setitem(sys.modules, "umap", object())  # loaded by the pipeline: no compiling
    assert umap_is_ready()


def test_make_plots_saves_the_projection_it_drew(tmp_path: Path) -> None:
    from imgclust.report.plots.inputs import PlotInputs

    rng = np.random.default_rng(0)
    inputs = PlotInputs(
        clusters=rng.integers(0, 3, 120), features=rng.normal(size=(120, 5)), seed=4
    )
    make_plots(inputs, tmp_path, PlotOptions("pca"), only=("map.png",))
    saved = load_projection(tmp_path / "plots" / SAVED, projection_key(PlotOptions("pca")), 4, 120)
    assert saved is not None
    key = projection_key(PlotOptions("pca"))
    assert np.array_equal(saved.xy, inputs.projections[key].xy)
