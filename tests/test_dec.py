"""The dec refiner (DEC, IDEC, DCEC): its guard never ends below the clusters it was given, it
says why it stopped, and it predicts the same after saving and loading."""

from __future__ import annotations

import json

import numpy as np
import pytest

import imgclust
from imgclust.errors import DataError, SettingsError
from imgclust.plugins.dec import DEC
from imgclust.results.metrics import external_scores

#: A few seconds on 8x8 digits: pretraining still takes its 1,000 steps, of 32 images.
TINY = {"pretrain_epochs": 1, "max_steps": 40, "update_interval": 10, "batch_size": 32}


@pytest.fixture
def digits(digits_pca: dict) -> dict:
    """Digits' images, PCA 30 features, k-means labels and true classes (conftest)."""
    return digits_pca


def acc(labels: np.ndarray, truth: np.ndarray) -> float:
    return external_scores(truth, labels)["acc"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"gamma": 0}, "reconstruction = false"),
        ({"start": "random"}, "start must be"),
        ({"optimizer": "adagrad"}, "optimizer must be"),
        ({"autoencoder": "pca"}, "autoencoder must be one of dcec"),
        ({"learning_rate": -1.0}, "learning_rate must be positive"),
        ({"tolerance": 1.0}, "tolerance a share"),
    ],
)
def test_bad_settings_are_one_line(settings, message):
    with pytest.raises(SettingsError, match=message):
        DEC(**settings)


def test_features_that_do_not_fit_the_images_are_one_line(digits):
    images, labels = digits["images"][:50], digits["kmeans"][:50]
    with pytest.raises(DataError, match="one row of numeric features per image"):
        DEC(**TINY).fit_predict(images, digits["features"][:49], labels)
    bad = digits["features"][:50].copy()
    bad[3, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        DEC(**TINY).fit_predict(images, bad, labels)


@pytest.mark.slow
def test_given_the_true_classes_the_guard_keeps_them_and_predicts_them_after_load(digits, tmp_path):
    """Nothing a few fine-tuning steps find beats the true classes: the guard keeps them, says
    so, and assigns by their mean features, before and after saving."""
    images, features, truth = (
        digits["images"][:400],
        digits["features"][:400],
        digits["truth"][:400],
    )
    refiner = DEC(**TINY, seed=0)
    labels = refiner.fit_predict(images, features, truth)
    assert refiner.kept_start_, refiner.stop_reason_
    assert "kept start: the criterion did not improve" in refiner.stop_reason_
    assert acc(labels, truth) >= 0.9  # the nearest class mean of each image
    refiner.save(tmp_path)
    loaded = DEC(**TINY, seed=0).load(tmp_path)
    np.testing.assert_array_equal(loaded.predict(images, features), labels)
    assert loaded.stop_reason_ == refiner.stop_reason_
    with pytest.raises(DataError, match="pass the features too"):
        loaded.predict(images)


@pytest.mark.slow
def test_a_run_logs_and_records_why_dec_stopped(runs_dir, tmp_path):
    config = tmp_path / "run.toml"
    tiny = "".join(f"{key} = {value}\n" for key, value in TINY.items())
    config.write_text(
        '[dataset]\nname = "digits"\nlimit = 300\n[[encoder]]\nname = "pca"\n'
        'n_components = 20\n[clusterer]\nname = "kmeans"\nn_clusters = 10\n'
        f'[[refiner]]\nname = "dec"\n{tiny}'
    )
    lines: list[str] = []
    result = imgclust.run(config=config, split="all", runs_dir=runs_dir, log=lines.append)
    stop = json.loads((result.path / "metrics.json").read_text())["refiner_stop"]["dec"]
    assert stop.startswith(("labels changed", "reached max_steps")), stop
    assert f"dec stopped: {stop}" in lines


def never_below_the_start(images, features, start, truth, tmp_path, **settings):
    """Fine-tune from ``start``; the refined ACC is within 0.01 of the start's (or above), and
    the refiner predicts the same after saving and loading."""
    refiner = DEC(seed=0, **settings)
    labels = refiner.fit_predict(images, features, start)
    before, after = acc(start, truth), acc(labels, truth)
    assert after >= before - 0.01, (before, after, refiner.stop_reason_)
    assert refiner.stop_reason_, "it says why it stopped"
    refiner.save(tmp_path)
    loaded = DEC(seed=0, **settings).load(tmp_path)
    np.testing.assert_array_equal(loaded.predict(images, features), labels)
    return before, after, refiner


@pytest.mark.slow
def test_dcec_never_ends_below_kmeans_on_digits(digits, tmp_path):
    never_below_the_start(
        digits["images"],
        digits["features"],
        digits["kmeans"],
        digits["truth"],
        tmp_path,
        autoencoder="dcec",
        max_steps=700,
        update_interval=70,
    )


@pytest.mark.slow
@pytest.mark.mnist
def test_dcec_never_ends_below_kmeans_on_2000_mnist_images(mnist_path, tmp_path):
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    data = imgclust.get_dataset("mnist", path=str(mnist_path), limit=2000).load("train")
    flat = data.images.reshape(len(data.images), -1).astype(np.float32) / 255
    features = PCA(50, random_state=0).fit_transform(flat).astype(np.float32)
    start = KMeans(10, n_init=10, random_state=0).fit_predict(features).astype(np.int64)
    never_below_the_start(
        data.images,
        features,
        start,
        np.asarray(data.labels),
        tmp_path,
        autoencoder="dcec",
        max_steps=700,
        update_interval=70,
    )
