"""Image issues and label review: planted problems are found, and little else."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits

import imgclust
from imgclust.results.image_issues import find_issues
from imgclust.results.label_review import review_labels


def digits_uint8() -> np.ndarray:
    return (load_digits().images * (255 / 16)).round().astype(np.uint8)[..., None]


def planted(images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``images`` plus 20 copies, 10 blank, 10 near-constant and 10 blurred images; their mask."""
    copies = images[rng.choice(len(images), 20, replace=False)]
    blank = np.zeros((10, *images.shape[1:]), np.uint8)
    flat = rng.integers(100, 103, (10, *images.shape[1:])).astype(np.uint8)
    sharp = images[rng.choice(len(images), 10, replace=False)].astype(np.float64)
    blurred = np.stack([gaussian_filter(image[..., 0], 1.5) for image in sharp])[..., None]
    blurred *= sharp.max(axis=(1, 2, 3), keepdims=True) / blurred.max(axis=(1, 2, 3), keepdims=True)
    extra = np.concatenate([copies, blank, flat, blurred.round().astype(np.uint8)])
    mask = np.r_[np.zeros(len(images), bool), np.ones(len(extra), bool)]
    return np.concatenate([images, extra]), mask


def upscaled_digits() -> np.ndarray:
    """Digits at 24x24, so that a blur has pixels to act on."""
    return np.repeat(np.repeat(digits_uint8(), 3, axis=1), 3, axis=2)


def test_planted_issues_are_found_and_few_others() -> None:
    images, mask = planted(upscaled_digits(), np.random.default_rng(0))
    found = find_issues(images)
    flagged = np.logical_or.reduce(list(found.flags.values()))
    assert flagged[mask].all()
    assert (flagged & ~mask).sum() <= 10
    n = int((~mask).sum())
    assert found.flags["duplicate"][n : n + 20].all()  # the copies, not their originals
    assert found.flags["low_information"][n + 20 : n + 40].all()
    assert found.flags["blurry"][n + 40 :].all()
    assert found.issues_of(n) == ["duplicate"]


def test_fences_follow_the_images_not_a_constant() -> None:
    images = upscaled_digits()
    dim = (images // 4).astype(np.uint8)  # the same set, four times darker
    assert find_issues(dim).summary()["flagged"] == find_issues(images).summary()["flagged"]
    assert find_issues(dim).fences["bright"] < find_issues(images).fences["bright"]


@pytest.mark.mnist
def test_mnist_test_set_with_planted_copies_and_blanks() -> None:
    from imgclust.plugins.mnist import MnistDataset

    if not os.environ.get("IMGCLUST_MNIST"):
        pytest.skip("IMGCLUST_MNIST is not set")
    images = np.asarray(MnistDataset(path=os.environ["IMGCLUST_MNIST"]).load("test").images)
    rng = np.random.default_rng(0)
    copies = images[rng.choice(len(images), 50, replace=False)]
    blank = np.zeros((50, *images.shape[1:]), np.uint8)
    blank[25:] = rng.integers(0, 3, (25, *images.shape[1:]))
    found = find_issues(np.concatenate([images, copies, blank]))
    flagged = np.logical_or.reduce(list(found.flags.values()))
    assert flagged[len(images) :].all()
    assert flagged[: len(images)].sum() <= 10


def test_label_review_ranks_flipped_labels_first() -> None:
    digits = load_digits()
    features = digits.data / 16
    rng = np.random.default_rng(0)
    labels = digits.target.copy()
    flipped = rng.choice(len(labels), len(labels) // 20, replace=False)
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, len(flipped))) % 10
    clusters = KMeans(10, n_init=4, random_state=0).fit_predict(features)
    review = review_labels(features, clusters, labels)
    top = review.order[: len(labels) // 10]
    assert np.isin(flipped, top).mean() >= 0.8
    assert np.isin(review.flagged(), flipped).mean() >= 0.6


def test_a_run_writes_issues_and_label_review(tmp_path) -> None:
    run = imgclust.run(
        dataset={"name": "digits", "limit": 500},
        encoders=["pca"],
        clusterer={"name": "kmeans", "n_clusters": 10},
        runs_dir=tmp_path,
        plots=False,
    )
    with open(run.path / "issues.csv", newline="") as handle:
        issues = list(csv.DictReader(handle))
    assert len(issues) == 500 and list(issues[0])[:2] == ["id", "issues"]
    assert run.metrics["image_issues"]["flagged"] == sum(bool(r["issues"]) for r in issues)
    with open(run.path / "label_review.csv", newline="") as handle:
        review = list(csv.DictReader(handle))
    assert len(review) == run.metrics["label_review"]["flagged"]
    doubts = [float(r["doubt"]) for r in review]
    assert doubts == sorted(doubts, reverse=True)
