"""Checkpoints serve only ``--resume``: a finished run removes ``checkpoints/`` unless asked to
keep it, and writing one after an epoch forces nothing to disk (no wait on a busy disk)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from imgclust.kit.arrays import as_matrix
from imgclust.stages.hookspecs import hookimpl
from imgclust.stages.host import get_host

RUN = [
    "--dataset", "digits", "--set", "dataset.limit=200", "--encoder", "ticker",
    "--clusterer", "kmeans", "--set", "clusterer.n_init=1", "--no-plots", "--json",
]  # fmt: skip


class Ticker:
    """An encoder that checkpoints one state file per epoch into ``checkpoint_dir``."""

    def __init__(self, epochs: int = 2) -> None:
        self.epochs = epochs
        self.checkpoint_dir: Path | None = None

    def fit(self, images, validation=None):
        for epoch in range(self.epochs):
            folder = Path(self.checkpoint_dir) / "sub"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "state.json").write_text(json.dumps({"epoch": epoch + 1}))
        return self

    def transform(self, images):
        return as_matrix(images)[:, :6]

    def save(self, directory):
        pass

    def load(self, directory):
        return self


@pytest.fixture(autouse=True)
def ticker():
    get_host().register(
        SimpleNamespace(register_encoders=hookimpl(lambda register: register("ticker", Ticker))),
        name="test-ticker",
    )


def finished(cli, runs_dir: Path, *extra: str) -> Path:
    result = cli("run", *RUN, "--runs-dir", runs_dir, *extra)
    assert result.exit_code == 0, result.stderr
    return Path(json.loads(result.stdout)["run"])


def test_a_finished_run_keeps_no_checkpoints(cli, runs_dir):
    folder = finished(cli, runs_dir)
    assert not (folder / "checkpoints").exists()
    assert (folder / "pipeline" / "manifest.json").is_file()


def test_keep_checkpoints_keeps_them(cli, runs_dir):
    folder = finished(cli, runs_dir, "--keep-checkpoints")
    state = folder / "checkpoints" / "ticker" / "sub" / "state.json"
    assert json.loads(state.read_text()) == {"epoch": 2}


def test_the_python_api_removes_them_too_unless_told(tmp_path):
    import imgclust

    common = dict(dataset={"name": "digits", "limit": 200}, encoders=["ticker"], plots=False,
                  clusterer="kmeans", settings={"clusterer": {"n_init": 1}})  # fmt: skip
    run = imgclust.run(**common, runs_dir=tmp_path / "a")
    assert not (run.path / "checkpoints").exists()
    run = imgclust.run(**common, runs_dir=tmp_path / "b", keep_checkpoints=True)
    assert (run.path / "checkpoints" / "ticker" / "sub" / "state.json").is_file()


def test_a_checkpoints_link_is_left_alone(runs_dir, tmp_path):
    from imgclust.io.runfolder import drop_checkpoints

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    folder = runs_dir / "run"
    folder.mkdir(parents=True)
    (folder / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    assert drop_checkpoints(folder) is None
    assert (elsewhere / "keep.txt").read_text() == "mine"


def test_a_checkpoint_that_cannot_all_go_is_a_note_not_a_failure(runs_dir, monkeypatch):
    import shutil

    from imgclust.io.runfolder import drop_checkpoints

    folder = runs_dir / "run"
    (folder / "checkpoints" / "x").mkdir(parents=True)
    real = shutil.rmtree

    def refuse(path, **handlers):
        handler = handlers.get("onexc") or handlers.get("onerror")
        handler(os.rmdir, str(path), PermissionError(13, "Permission denied"))

    monkeypatch.setattr(shutil, "rmtree", refuse)
    assert drop_checkpoints(folder) == "checkpoints/ was not removed entirely: Permission denied"
    monkeypatch.setattr(shutil, "rmtree", real)


def test_an_autoencoder_checkpoint_forces_nothing_to_disk(tmp_path, monkeypatch):
    pytest.importorskip("keras")
    import imgclust.io.atomic
    from imgclust.plugins.conv_ae import ConvAutoencoder

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(imgclust.io.atomic.os, "fsync", lambda fd: synced.append(fd) or real(fd))
    images = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 1), dtype=np.uint8)
    encoder = ConvAutoencoder(epochs=2)
    encoder.checkpoint_dir = tmp_path / "checkpoints"
    encoder.fit(images)
    state = json.loads((tmp_path / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 2 and (tmp_path / "checkpoints" / state["model"]).is_file()
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if ".tmp" in p.name] == []
    assert synced == []
