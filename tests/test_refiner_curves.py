"""The refiners' course in training.png: the loss and the share of labels changed per
self-labelling round or DEC target update (and DEC's pretraining loss), recorded in
metrics.json so that ``imgclust report`` draws them again, and checked when read back."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import imgclust
from imgclust.report.plots import PlotInputs, PlotOptions, make_plots
from imgclust.report.plots.training import refiner_course
from tests.test_plots import assert_sensible
from tests.test_refiners import NearestCentre

SELF_LABEL = {"changed": [0.12, 0.04, 0.008], "kept": [900, 900, 900], "loss": [0.9, 0.4, 0.3]}
DEC = {
    "changed": [0.05, 0.01],
    "start_criterion": [0.6],
    "loss": [0.21, 0.18],
    "step": [0, 140, 280],
    "criterion": [0.6, 0.62, 0.63],
    "pretrain_loss": [0.3, 0.2, 0.15],
}


def test_a_refiners_course_is_per_round_or_per_target_update() -> None:
    rounds = refiner_course(SELF_LABEL)
    assert rounds is not None and rounds.x == [1, 2, 3] and rounds.unit == "rounds"
    updates = refiner_course(DEC)
    assert updates is not None and updates.x == [140, 280] and updates.unit == "updates"
    assert updates.loss == [0.21, 0.18] and updates.changed == [0.05, 0.01]
    assert refiner_course({"kept": [3]}) is None


def test_training_png_has_a_panel_per_refiner_course(tmp_path: Path) -> None:
    inputs = PlotInputs(clusters=np.zeros(10, dtype=int))
    skipped = make_plots(inputs, tmp_path, PlotOptions("pca"), only=("training.png",)).skipped
    assert "refiner" in skipped["training.png"]  # nothing to draw: skipped, not a blank picture
    inputs.refiner_histories = {"self-label": SELF_LABEL}
    make_plots(inputs, tmp_path / "one", PlotOptions("pca"), only=("training.png",))
    one = assert_sensible(tmp_path / "one" / "plots" / "training.png")
    inputs.refiner_histories = {"self-label": SELF_LABEL, "dec": DEC}
    inputs.histories = {"conv-ae": {"loss": [0.3, 0.2], "val_loss": [0.31, 0.22]}}
    make_plots(inputs, tmp_path / "four", PlotOptions("pca"), only=("training.png",))
    four = assert_sensible(tmp_path / "four" / "plots" / "training.png", max_side=12000)
    # encoder, DEC's pretraining, then the two refiners' courses: four panels side by side
    assert math.isclose(four.shape[1] / one.shape[1], 4, rel_tol=0.05)


class CountingRefiner(NearestCentre):
    """A refiner that records its course as the bundled ones do."""

    def fit_predict(self, images, features, labels):
        self.history_: dict[str, list[float]] = {"changed": [], "loss": []}
        for _ in range(self.steps):
            moved = super().fit_predict(images, features, labels)
            self.history_["changed"].append(float(np.mean(moved != labels)))
            self.history_["loss"].append(float(((features - self.centres_[moved]) ** 2).mean()))
            labels = moved
        return labels


@pytest.fixture
def counting_refiner():
    @imgclust.hookimpl
    def register_refiners(register):
        register("counting", CountingRefiner)

    from types import SimpleNamespace

    from imgclust.stages.host import get_host

    get_host().register(SimpleNamespace(register_refiners=register_refiners), "test-counting")


def test_a_run_records_its_refiners_course_and_report_draws_it(
    counting_refiner, cli, runs_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        '[dataset]\nname = "digits"\nlimit = 300\n[[encoder]]\nname = "pca"\nn_components = 10\n'
        '[clusterer]\nname = "kmeans"\nn_clusters = 10\nn_init = 1\nmax_iter = 2\n'
        '[[refiner]]\nname = "counting"\nsteps = 3\n'
    )
    result = cli("run", "--config", config, "--runs-dir", runs_dir, "--json")
    assert result.exit_code == 0, result.stderr
    folder = Path(json.loads(result.stdout)["run"])
    course = json.loads((folder / "metrics.json").read_text())["refiner_training"]["counting"]
    assert len(course["changed"]) == len(course["loss"]) == 3
    training = folder / "plots" / "training.png"
    assert_sensible(training)
    training.unlink()
    again = cli("report", folder)
    assert again.exit_code == 0, again.stderr
    assert "plots/training.png" in again.stdout and training.is_file()

    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["refiner_training"]["counting"]["loss"] = ["<script>", 1]
    (folder / "metrics.json").write_text(json.dumps(metrics))
    refused = cli("report", folder)
    assert refused.exit_code != 0
    assert "refiner_training" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, settings",
    [
        ("self-label", {"rounds": 2, "epochs": 1, "filters": (8,), "dense": 16, "tolerance": 0}),
        ("dec", {"pretrain_epochs": 2, "max_steps": 40, "update_interval": 10, "batch_size": 32}),
    ],
)
def test_the_bundled_refiners_record_loss_and_changes(name: str, settings: dict) -> None:
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images[:400] * 15).astype(np.uint8)[..., None]
    features = images.reshape(len(images), -1).astype(np.float32)
    start = KMeans(10, n_init=1, random_state=0).fit_predict(features)
    refiner = imgclust.get_refiner(name, seed=0, **settings)
    refiner.fit_predict(images, features, start)
    history = refiner.history_
    assert history["loss"] and len(history["loss"]) == len(history["changed"])
    assert all(math.isfinite(v) and v >= 0 for v in history["loss"])
    if name == "dec":
        assert len(history["pretrain_loss"]) >= 2 and len(history["step"]) > len(history["loss"])
    course = refiner_course(history)
    assert course is not None and len(course.x) == len(history["loss"])
