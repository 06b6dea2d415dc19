"""What each stage receives, as docs/plugins.md says: the split a run asks for by default, images
for the first encoder and features for a chained one, and how labels and ``class_names`` show."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from imgclust.stages.hookspecs import hookimpl
from imgclust.stages.host import get_host
from imgclust.stages.interfaces import ImageSet

SEEN: dict[str, list] = {}


class Recorder:
    """An encoder that records what it is handed, then flattens it.

    Parameters
    ----------
    tag : str
        Where to record.
    """

    def __init__(self, tag: str = "first") -> None:
        self.tag = tag

    def fit(self, images, validation=None):
        SEEN.setdefault(f"{self.tag} fit", []).append((images.ndim, str(images.dtype)))
        return self

    def transform(self, images):
        SEEN.setdefault(f"{self.tag} transform", []).append((images.ndim, str(images.dtype)))
        return np.asarray(images, dtype=np.float32).reshape(len(images), -1)[:, :8]

    def save(self, directory):
        pass

    def load(self, directory):
        return self


class Animals:
    """Twelve tiny images in three classes, asked for one split at a time.

    Parameters
    ----------
    text_labels : bool
        Labels as text rather than integers.
    """

    splits = ("all", "train")

    def __init__(self, text_labels: bool = False) -> None:
        self.text_labels = text_labels

    def load(self, split: str = "all") -> ImageSet:
        SEEN.setdefault("splits", []).append(split)
        labels = np.repeat(np.arange(3), 4)
        images = (labels[:, None, None, None] * 100 + np.zeros((12, 4, 4, 1))).astype(np.uint8)
        images[:, 0, 0, 0] = np.arange(12)  # no two images alike
        if self.text_labels:
            return ImageSet(images, np.asarray(["cat", "dog", "owl"])[labels])
        return ImageSet(images, labels, class_names=("cat", "dog", "owl"))


@pytest.fixture(autouse=True)
def plugin():
    SEEN.clear()

    @hookimpl
    def register_encoders(register):
        register("recorder", Recorder)

    @hookimpl
    def register_datasets(register):
        register("animals", Animals)

    get_host().register(
        SimpleNamespace(register_encoders=register_encoders, register_datasets=register_datasets),
        name="test-stage-inputs",
    )


def run(cli, runs_dir: Path, *extra: str) -> Path:
    result = cli(
        "run", "--dataset", "animals", "--clusterer", "kmeans", "--set",
        "clusterer.n_clusters=3", "--no-plots", "--runs-dir", runs_dir, *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return next(Path(runs_dir).iterdir())


def test_a_chained_encoder_receives_features_not_images(cli, runs_dir):
    run(cli, runs_dir, "--encoder", "recorder", "--encoder", "recorder",
        "--set", "encoder.1.tag=second")  # fmt: skip
    assert SEEN["first fit"] == [(4, "uint8")] and SEEN["first transform"][0] == (4, "uint8")
    assert SEEN["second fit"] == [(2, "float32")]
    assert SEEN["second transform"][0] == (2, "float32")


def test_a_run_asks_for_the_split_all_unless_told(cli, runs_dir, tmp_path):
    run(cli, runs_dir, "--encoder", "recorder")
    assert SEEN["splits"] == ["all"]
    SEEN.clear()
    run(cli, tmp_path / "other", "--encoder", "recorder", "--split", "train")
    assert SEEN["splits"] == ["train"]


def test_class_names_name_integer_labels_and_text_labels_show_as_they_are(cli, runs_dir, tmp_path):
    folder = run(cli, runs_dir, "--encoder", "flatten")
    clusters = (folder / "clusters.md").read_text()
    assert "4 x cat" in clusters and "4 x owl" in clusters
    assert ",cat" in (folder / "assignments.csv").read_text()
    text = ("--encoder", "flatten", "--set", "dataset.text_labels=true")
    folder = run(cli, tmp_path / "text", *text)
    assert "4 x dog" in (folder / "clusters.md").read_text()
