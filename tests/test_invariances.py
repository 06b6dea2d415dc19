"""Invariances measured from the images: the decision, its bounds, the setting that forces it,
and how a run records it and hands it to the stages that use it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import imgclust
from imgclust.errors import SettingsError
from imgclust.kit.invariances import (
    QUERIES,
    REFERENCES,
    TRANSFORMS,
    apply_element,
    check_setting,
    decide,
    measure,
    symmetry_group,
)
from imgclust.report.page import build_report, invariances_table
from imgclust.stages.interfaces import UsesInvariances


def digits_images() -> np.ndarray:
    return np.asarray(imgclust.get_dataset("digits").load("all").images)


def mirrored_at_random(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each image mirrored left to right with probability 1/2."""
    flipped = np.random.default_rng(seed).random(len(images)) < 0.5
    out = images.copy()
    out[flipped] = out[flipped][:, :, ::-1]
    return out


def turned_at_random(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each image turned by a random multiple of 90 degrees."""
    turns = np.random.default_rng(seed).integers(0, 4, len(images))
    return np.stack([np.rot90(x, k, axes=(0, 1)) for x, k in zip(images, turns, strict=True)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_mirror_is_kept_on_digits_mirrored_at_random_and_refused_on_plain_digits(seed):
    digits = digits_images()
    assert "mirror" not in decide(digits, seed=seed).kept
    mirrored = decide(mirrored_at_random(digits, seed), seed=seed)
    assert "mirror" in mirrored.kept
    assert "quarter-turn" not in mirrored.kept and "vertical-flip" not in mirrored.kept


def test_quarter_turns_are_kept_only_on_digits_turned_at_random():
    digits = digits_images()
    assert "quarter-turn" not in decide(digits).kept
    assert "quarter-turn" in decide(turned_at_random(digits)).kept


@pytest.mark.mnist
def test_on_mnist_the_mirror_is_refused_and_kept_once_images_are_mirrored(mnist_path: Path):
    folder = mnist_path if mnist_path.is_dir() else mnist_path.parent
    with np.load(folder / "mnist.npz", allow_pickle=False) as data:
        images = data["x_test"][..., None]
    plain = decide(images)
    assert "mirror" not in plain.kept and plain.ratios["mirror"] > 1.25
    mirrored = decide(mirrored_at_random(images))
    assert "mirror" in mirrored.kept and mirrored.ratios["mirror"] < 1.05


class CountingImages:
    """An image array that records how many images were read from it."""

    def __init__(self, images: np.ndarray) -> None:
        self.images, self.read = images, 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        out = self.images[index]
        self.read += len(out)
        return out


def test_the_measurement_reads_a_bounded_sample_of_a_large_set():
    rng = np.random.default_rng(0)
    images = CountingImages(rng.integers(0, 255, (70_000, 12, 12, 1), dtype=np.uint8))
    ratios = measure(images)
    assert set(ratios) == set(TRANSFORMS)
    assert images.read == QUERIES + REFERENCES


def test_too_few_images_keep_nothing_and_a_non_square_set_cannot_turn():
    assert decide(digits_images()[:10]).kept == ()
    wide = np.random.default_rng(0).random((200, 6, 9, 1)).astype(np.float32)
    assert measure(wide)["quarter-turn"] == float("inf")
    assert decide(wide).as_metrics()["ratios"]["quarter-turn"] is None  # JSON has no infinity


def test_the_setting_forces_or_switches_off_the_decision():
    digits = digits_images()
    assert check_setting("Mirror, quarter-turn") == ["mirror", "quarter-turn"]
    forced = decide(digits, ["mirror"])
    assert forced.kept == ("mirror",) and forced.mode == "forced" and not forced.ratios
    assert decide(digits, "none").kept == ()
    for bad in ("spin", ["mirror", "spin"], 3, [1]):
        with pytest.raises(SettingsError, match="invariances") as caught:
            check_setting(bad)
        assert "\n" not in str(caught.value)


def test_the_group_of_kept_symmetries_is_closed_and_applied_exactly():
    assert symmetry_group([]) == [(0, False)]
    assert len(symmetry_group(["mirror"])) == 2
    assert len(symmetry_group(["quarter-turn"])) == 4
    assert len(symmetry_group(["mirror", "quarter-turn"])) == 8
    assert len(symmetry_group(["mirror", "vertical-flip"])) == 4  # with the half turn
    assert symmetry_group(["quarter-turn"], square=False) == [(0, False)]
    image = np.arange(12.0).reshape(1, 3, 4, 1)
    np.testing.assert_array_equal(apply_element(image, (0, True)), image[:, :, ::-1])
    np.testing.assert_array_equal(apply_element(image, (2, True)), image[:, ::-1])


def test_a_run_records_the_decision_and_hands_it_to_stages_that_use_it(runs_dir: Path):
    run = imgclust.run(
        dataset="digits",
        encoders=[{"name": "sym-pca", "n_components": 20}],
        clusterer={"name": "kmeans", "n_clusters": 10},
        runs_dir=runs_dir,
    )
    record = json.loads((run.path / "metrics.json").read_text())["invariances"]
    assert record["mode"] == "auto" and "mirror" not in record["kept"]
    assert set(record["ratios"]) == set(TRANSFORMS)
    assert "Invariances:" in (run.path / "clusters.md").read_text().split("|")[0]
    assert "<h3>Invariances</h3>" in build_report(run.path)
    encoder = run.pipeline.encoders[0].instance
    assert isinstance(encoder, UsesInvariances) and encoder.invariances == record["kept"]
    assert 'invariances = "auto"' in (run.path / "config.toml").read_text()


def test_a_forced_mirror_reaches_the_encoder_and_survives_save_and_load(runs_dir: Path):
    run = imgclust.run(
        dataset="digits",
        encoders=[{"name": "sym-pca", "n_components": 20}],
        clusterer={"name": "kmeans", "n_clusters": 10},
        settings={"invariances": ["mirror"]},
        runs_dir=runs_dir,
    )
    record = json.loads((run.path / "metrics.json").read_text())["invariances"]
    assert record == {"mode": "forced", "kept": ["mirror"]}
    images = digits_images()
    loaded = imgclust.load(run.path)
    np.testing.assert_array_equal(loaded.predict(images), run.labels)
    np.testing.assert_array_equal(loaded.predict(images[:, :, ::-1]), run.labels)


def test_a_bad_invariances_setting_is_one_line_on_the_command_line(cli, runs_dir: Path):
    result = cli(
        "run", "--dataset", "digits", "--encoder", "pca", "--clusterer", "kmeans",
        "--set", "invariances=spin", "--runs-dir", str(runs_dir), "--no-plots",
    )  # fmt: skip
    assert result.exit_code != 0
    assert "unknown transformation(s) 'spin'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_the_report_escapes_a_hostile_record():
    hostile = {
        "mode": "<script>alert(1)</script>",
        "kept": ["<img src=x onerror=alert(1)>"],
        "ratios": {"<b>mirror</b>": "<i>1</i>", "shift": 1.5},
    }
    page = "\n".join(invariances_table(hostile))
    assert "<script>" not in page and "<img" not in page and "<b>" not in page
    assert invariances_table(["not", "a", "record"]) == []
