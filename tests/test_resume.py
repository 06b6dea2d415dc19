"""``imgclust run --resume``: an interrupted training goes on from its last checkpoint and ends
with the same finished run folder an uninterrupted run writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from imgclust.kit.arrays import as_matrix
from imgclust.stages.hookspecs import hookimpl
from imgclust.stages.host import get_host

RUN = [
    "--dataset",
    "digits",
    "--encoder",
    "stepper",
    "--clusterer",
    "kmeans",
    "--no-plots",
    "--set",
    "dataset.limit=500",
    "--set",
    "clusterer.n_init=2",
]


class Stepper:
    """Test encoder that 'trains' for ``epochs`` epochs, checkpointing after each one.

    Parameters
    ----------
    epochs : int
        Epochs to train.
    interrupt_after : int
        Raise KeyboardInterrupt right after writing this epoch's checkpoint (0: never).
    """

    starts: list[int] = []  # the epoch each fit started from, across fits

    def __init__(self, epochs: int = 3, interrupt_after: int = 0) -> None:
        self.epochs = epochs
        self.interrupt_after = interrupt_after
        self.checkpoint_dir: Path | None = None

    def fit(self, images, validation=None):
        x = as_matrix(images).astype(np.float64)
        start, weights = 0, np.zeros(x.shape[1])
        state = None if self.checkpoint_dir is None else Path(self.checkpoint_dir) / "state.json"
        if state is not None and state.exists():
            saved = json.loads(state.read_text())
            start, weights = saved["epoch"], np.array(saved["weights"])
        Stepper.starts.append(start)
        for epoch in range(start, self.epochs):
            weights = weights + x[epoch :: self.epochs].mean(axis=0) / self.epochs
            if state is not None:
                state.parent.mkdir(parents=True, exist_ok=True)
                state.write_text(json.dumps({"epoch": epoch + 1, "weights": weights.tolist()}))
            if epoch + 1 == self.interrupt_after and start == 0:
                raise KeyboardInterrupt
        self.weights_ = weights.astype(np.float32)
        return self

    def transform(self, images):
        return as_matrix(images) * (1 + self.weights_)

    def save(self, directory):
        np.save(Path(directory) / "weights.npy", self.weights_)

    def load(self, directory):
        self.weights_ = np.load(Path(directory) / "weights.npy", allow_pickle=False)
        return self


@pytest.fixture(autouse=True)
def stepper_plugin():
    Stepper.starts = []
    get_host().register(
        SimpleNamespace(register_encoders=hookimpl(lambda register: register("stepper", Stepper))),
        name="test-stepper",
    )


def folders(runs_dir: Path) -> list[Path]:
    return sorted(runs_dir.iterdir()) if runs_dir.exists() else []


def test_an_interrupted_run_resumes_and_finishes_the_same(cli, runs_dir, tmp_path):
    result = cli("run", *RUN, "--set", "encoder.interrupt_after=1", "--runs-dir", runs_dir)
    assert result.exit_code == 130
    [incomplete] = folders(runs_dir)
    assert incomplete.name.endswith(".incomplete")
    assert (incomplete / "checkpoints" / "stepper" / "state.json").is_file()
    assert f"Resume with: imgclust run --resume {incomplete}" in result.stderr

    resumed = cli("run", "--resume", incomplete, "--json")
    assert resumed.exit_code == 0, resumed.stderr
    [finished] = folders(runs_dir)
    assert finished.name == incomplete.name.removesuffix(".incomplete")
    assert json.loads(resumed.stdout)["run"] == str(finished)
    assert Stepper.starts == [0, 1]  # the second fit went on from epoch 1
    for name in (
        "config.toml",
        "metrics.json",
        "assignments.csv",
        "embeddings.npy",
        "pipeline/manifest.json",
    ):
        assert (finished / name).is_file(), name

    # an uninterrupted run gives the same clusters
    other = tmp_path / "other"
    straight = cli("run", *RUN, "--runs-dir", other)
    assert straight.exit_code == 0, straight.stderr
    assert Stepper.starts == [0, 1, 0]
    [done] = folders(other)
    assert (done / "assignments.csv").read_text() == (finished / "assignments.csv").read_text()
    assert np.array_equal(np.load(done / "embeddings.npy"), np.load(finished / "embeddings.npy"))

    from imgclust.engine.pipeline import load_pipeline
    from imgclust.plugins.digits import DigitsDataset

    labels = load_pipeline(finished).predict(DigitsDataset(limit=500).load("all").images)
    assert labels.tolist() == [
        int(line.split(",")[1])
        for line in (finished / "assignments.csv").read_text().splitlines()[1:]
    ]


def test_resume_takes_the_folder_with_or_without_its_suffix(cli, runs_dir):
    interrupted = cli("run", *RUN, "--set", "encoder.interrupt_after=2", "--runs-dir", runs_dir)
    assert interrupted.exit_code == 130
    [incomplete] = folders(runs_dir)
    plain = incomplete.with_name(incomplete.name.removesuffix(".incomplete"))
    result = cli("run", "--resume", plain)
    assert result.exit_code == 0, result.stderr
    assert Stepper.starts == [0, 2] and folders(runs_dir) == [plain]


def test_an_interruption_before_any_checkpoint_leaves_nothing(cli, runs_dir, monkeypatch):
    def interrupt(self, images, validation=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(Stepper, "fit", interrupt)
    result = cli("run", *RUN, "--runs-dir", runs_dir)
    assert result.exit_code == 130 and "--resume" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "Interrupted."
    assert folders(runs_dir) == []


def test_resume_errors_are_one_clear_line(cli, runs_dir, tmp_path):
    assert cli("run", *RUN, "--runs-dir", runs_dir).exit_code == 0
    [finished] = folders(runs_dir)
    cases = [
        (("--resume", finished), "is a finished run; nothing to resume"),
        (("--resume", tmp_path / "nowhere"), "no interrupted run"),
        (("--resume", tmp_path), "not an interrupted run folder"),
        (("--resume", finished, "--seed", "3"), "drop --seed"),
        (("--resume", finished, "--recipe", "article"), "drop --recipe"),
    ]
    for args, fragment in cases:
        result = cli("run", *args)
        assert result.exit_code != 0, args
        assert fragment in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.slow
def test_conv_ae_resumes_from_its_checkpoint(cli, runs_dir, monkeypatch):
    from imgclust.stages.host import get_registry

    if "conv-ae" not in get_registry().names("encoders"):
        pytest.skip("the conv-ae encoder is not installed")
    from imgclust.plugins.conv_ae import ConvAutoencoder

    original = ConvAutoencoder.write_checkpoint
    calls = []

    def interrupt_after_first(self, model, epoch, stopped):
        original(self, model, epoch, stopped)
        calls.append(epoch)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(ConvAutoencoder, "write_checkpoint", interrupt_after_first)
    args = [
        "--dataset",
        "digits",
        "--encoder",
        "conv-ae",
        "--clusterer",
        "kmeans",
        "--no-plots",
        "--set",
        "encoder.epochs=2",
        "--runs-dir",
        runs_dir,
    ]
    first = cli("run", *args)
    assert first.exit_code == 130 and "imgclust run --resume" in first.stderr
    [incomplete] = folders(runs_dir)
    resumed = cli("run", "--resume", incomplete)
    assert resumed.exit_code == 0, resumed.stderr
    assert "resuming from epoch 1 of 2" in resumed.stderr
    assert calls == [1, 2]
    [finished] = folders(runs_dir)
    metrics = json.loads((finished / "metrics.json").read_text())
    assert len(metrics["training"]["conv-ae"]["loss"]) == 2
    assert (finished / "pipeline" / "encoder-0-conv-ae").is_dir()


def test_an_interrupted_resume_keeps_the_folder_it_did_not_create(cli, runs_dir, monkeypatch):
    assert cli("run", *RUN, "--runs-dir", runs_dir).exit_code == 0
    [finished] = folders(runs_dir)
    folder = runs_dir / "2026-01-02T03-04-05-digits-stepper-kmeans.incomplete"
    folder.mkdir()
    (folder / "config.toml").write_bytes((finished / "config.toml").read_bytes())
    (folder / "notes.txt").write_text("mine")

    def interrupt(self, images, validation=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(Stepper, "fit", interrupt)  # before any checkpoint
    result = cli("run", "--resume", folder)
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines()[-1] == (
        f"Interrupted. Resume with: imgclust run --resume {folder}"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["config.toml", "notes.txt"]


def test_the_kept_folder_travels_on_the_exception(registry, runs_dir):
    from imgclust.engine.config import resolve_config
    from imgclust.engine.resume import kept_folder
    from imgclust.engine.runner import execute

    config = resolve_config(
        registry,
        dataset="digits",
        encoders=["stepper"],
        clusterer="kmeans",
        sets=["dataset.limit=300", "encoder.interrupt_after=1"],
    )
    with pytest.raises(KeyboardInterrupt) as raised:
        execute(registry, config, runs_dir, plots=False)
    [incomplete] = folders(runs_dir)
    assert kept_folder(raised.value) == incomplete


def test_an_interruption_a_library_turns_into_an_error_is_still_one(cli, runs_dir, monkeypatch):
    import os
    import signal
    import time

    original = Stepper.fit

    def swallowing(self, images, validation=None):
        original(self, images, validation)  # checkpoints every epoch
        try:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, while a library is busy
            time.sleep(5)
        except KeyboardInterrupt:
            raise ImportError("To use Keras, you need to have `optree` installed.") from None
        return self

    monkeypatch.setattr(Stepper, "fit", swallowing)
    result = cli("run", *RUN, "--runs-dir", runs_dir)
    assert result.exit_code == 130, result.stderr
    [incomplete] = folders(runs_dir)
    assert result.stderr.strip().splitlines()[-1] == (
        f"Interrupted. Resume with: imgclust run --resume {incomplete}"
    )


def test_a_full_disk_after_a_checkpoint_keeps_the_run_to_resume(cli, runs_dir, monkeypatch):
    import errno
    import os

    import imgclust.io.atomic

    real = imgclust.io.atomic.write_bytes

    def full(path, data, **options):
        if Path(path).name == "embeddings.npy":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, data, **options)

    monkeypatch.setattr(imgclust.io.atomic, "write_bytes", full)
    result = cli("run", *RUN, "--runs-dir", runs_dir)
    [incomplete] = folders(runs_dir)
    assert result.exit_code != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: cannot write the run folder {str(incomplete)!r}: No space left on device; "
        f"resume with: imgclust run --resume {incomplete}"
    )
    monkeypatch.setattr(imgclust.io.atomic, "write_bytes", real)
    assert cli("run", "--resume", incomplete).exit_code == 0
    [finished] = folders(runs_dir)
    assert (finished / "embeddings.npy").is_file() and not finished.name.endswith(".incomplete")
