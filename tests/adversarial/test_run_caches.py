"""Reading a finished run never writes where its config.toml says: decoded-image caches go under
the user's own cache folder, never into a ``cache_dir`` or an image folder the run names, and
what a run's dataset settings make imgclust decode is bounded by what the image files hold (a
``size`` cannot turn 20 tiny PNGs into a 241 MB cache)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import imgclust


@pytest.fixture
def user_cache(tmp_path: Path, monkeypatch) -> Path:
    """The user's cache folder, in the test's temporary folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "imgclust"


@pytest.fixture
def folder_run(tmp_path: Path, user_cache: Path) -> Path:
    """A finished image-folder run of 20 tiny PNGs in two labelled sub-folders, no cache."""
    from PIL import Image

    images = tmp_path / "images"
    for i in range(20):
        (images / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        pixels = np.full((8, 8), 40 * (i % 2) + 3 * i, dtype=np.uint8)
        Image.fromarray(pixels, "L").save(images / "ab"[i % 2] / f"{i:02d}.png")
    run = imgclust.run(
        dataset={"name": "image-folder", "path": str(images), "cache": False},
        encoders=[{"name": "pca", "n_components": 2}],
        clusterer={"name": "kmeans", "n_clusters": 2},
        runs_dir=tmp_path / "runs",
    )
    return run.path


def steer(run: Path, **dataset: object) -> None:
    """Rewrite the run's dataset settings, as the author of a run folder may, in config.toml and
    in the pipeline's manifest (which evaluate reads)."""
    config = run / "config.toml"
    text = config.read_text(encoding="utf-8")
    for key, value in dataset.items():
        line = f"{key} = {json.dumps(value)}"
        text, count = re.subn(rf"(?m)^{key} = .*$", line, text)
        if not count:
            text = text.replace("[dataset]\n", f"[dataset]\n{line}\n")
    config.write_text(text, encoding="utf-8")
    manifest_path = run / "pipeline" / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["preprocessing"]["dataset"].update(dataset)
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")


def everything_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")) if folder.exists() else []


def test_report_and_evaluate_never_cache_where_the_run_says(folder_run, tmp_path, user_cache, cli):
    victim = tmp_path / "home" / ".config" / "autostart"
    steer(folder_run, cache=True, cache_dir=str(victim))
    report = cli("report", folder_run)
    assert report.exit_code == 0, report.stderr
    evaluate = cli("evaluate", folder_run, "--json")
    assert evaluate.exit_code == 0, evaluate.stderr
    assert json.loads(evaluate.stdout)["n_images"] == 20
    assert not (tmp_path / "home").exists()  # no folder made, not even a parent
    assert not list((tmp_path / "images").rglob(".imgclust-cache"))
    entries = [p.name for p in everything_under(user_cache) if p.suffix == ".npy"]
    assert entries, "the images were cached in the user's cache folder"


def test_evaluate_caches_where_the_command_line_says(folder_run, tmp_path, user_cache, cli):
    steer(folder_run, cache=True, cache_dir=str(tmp_path / "theirs"))
    mine = tmp_path / "mine"
    result = cli("evaluate", folder_run, "--set", f"dataset.cache_dir={mine}")
    assert result.exit_code == 0, result.stderr
    assert [p.suffix for p in mine.iterdir() if p.suffix == ".npy"] == [".npy"]
    assert not (tmp_path / "theirs").exists()


def test_a_runs_size_cannot_blow_tiny_files_up(folder_run, tmp_path, user_cache, cli):
    steer(folder_run, cache=True, size=[2000, 2000], mode="rgb", max_pixels=10**8)
    report = cli("report", folder_run)
    assert report.exit_code == 0, report.stderr
    assert "more than 64 times their size" in report.stderr
    evaluate = cli("evaluate", folder_run)
    assert evaluate.exit_code != 0
    assert evaluate.stderr.startswith("Error: the run's dataset settings would decode 20 image ")
    assert len(evaluate.stderr.splitlines()) == 1
    big = [p for p in everything_under(tmp_path) if p.is_file() and p.stat().st_size > 2**20]
    assert big == []


def test_predict_bounds_what_a_pipeline_makes_of_tiny_files(folder_run, tmp_path, cli):
    manifest_path = folder_run / "pipeline" / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["input"]["shape"] = [4000, 4000, 3]
    manifest["preprocessing"].update(size=[4000, 4000], channels=3, mode="rgb")
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    result = cli("predict", folder_run, tmp_path / "images")
    assert result.exit_code != 0
    assert "more than 64 times their size" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_the_users_own_run_still_caches_where_it_is_told(tmp_path, user_cache):
    """Outside a command that reads a finished run, cache_dir is the user's word and is kept."""
    from PIL import Image

    images = tmp_path / "mine"
    images.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), i, np.uint8), "L").save(images / f"{i}.png")
    chosen = tmp_path / "chosen-cache"
    data = imgclust.get_dataset("image-folder", path=str(images), cache_dir=str(chosen))
    loaded = data.instance.load("all")
    assert Path(loaded.info["cache_path"]).parent == chosen


def test_the_threat_model_states_the_bounds_the_code_applies():
    from imgclust.engine.distributed import CONNECT_TIMEOUT_S, HANDSHAKE_MAX_BYTES
    from imgclust.io.imagecache import RUN_DECODE_FLOOR_BYTES, RUN_DECODE_RATIO

    text = " ".join((Path(__file__).parents[2] / "docs" / "predict.md").read_text().split())
    assert f"at most {RUN_DECODE_FLOOR_BYTES >> 20} MiB, or {RUN_DECODE_RATIO} times" in text
    assert (
        f"within the same {CONNECT_TIMEOUT_S} s and at most {HANDSHAKE_MAX_BYTES >> 20} MiB" in text
    )
