"""The self-label and dec refiners keep the refiner contract, learn, and predict after load."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import imgclust
from imgclust.errors import DataError, SettingsError
from imgclust.kit import apply_element, symmetry_group
from imgclust.plugins.dec import DEC
from imgclust.plugins.self_label import SelfLabel, _matched, _most_confident
from imgclust.results.metrics import external_scores
from imgclust.testing import check_refiner

SMALL_SELF_LABEL = {"rounds": 1, "epochs": 1, "filters": (8,), "dense": 16}
SMALL_DEC = {"pretrain_epochs": 1, "max_steps": 12, "update_interval": 4, "batch_size": 32}


def test_the_most_confident_share_is_taken_from_every_cluster():
    labels = np.array([0] * 8 + [1] * 2 + [-1])
    confidence = np.arange(11, dtype=float)
    chosen = _most_confident(labels, confidence, 0.5)
    assert chosen.tolist() == [4, 5, 6, 7, 9]  # half of each cluster, the small one kept, no noise


def test_reclustered_labels_take_the_numbers_of_the_clusters_they_overlap():
    classes = np.array([3, 5, 9])
    before = np.array([3, 3, 3, 5, 5, 9, 9, 9, -1])
    found = np.array([2, 2, 0, 1, 1, 0, 0, 0, 1])  # 2 ~ 3, 1 ~ 5, 0 ~ 9; noise is not counted
    assert _matched(found, before, classes).tolist() == [3, 3, 9, 5, 5, 9, 9, 9, 5]


@pytest.mark.parametrize("seed", [1, 7, 8])
def test_a_round_keeps_the_mixture_start_its_select_says(seed):
    """Two round groups side by side and a far arc: the likeliest of 10 mixture starts merges the
    groups and cuts the arc; with ``select="neighbours"`` the round keeps the three groups (at
    these seeds one of the 10 k-means-started fits finds them; at most others none does)."""
    rng = np.random.default_rng(0)
    angle = rng.uniform(0, 1.5 * np.pi, 600)
    arc = np.stack([30 + 3 * np.cos(angle), 3 * np.sin(angle)], axis=1)
    embedding = np.vstack(
        [
            rng.normal([0, 0], 0.5, (300, 2)),
            rng.normal([3, 0], 0.5, (300, 2)),
            arc + rng.normal(0, 0.3, arc.shape),
        ]
    )
    truth = np.repeat([0, 1, 2], [300, 300, 600])

    def round_labels(select: str) -> np.ndarray:
        refiner = SelfLabel(recluster=True, starts=10, select=select, seed=seed)
        refiner.classes_ = np.arange(3)
        return refiner._mixture_labels(embedding)

    assert adjusted_rand_score(truth, round_labels("likelihood")) < 0.6
    assert adjusted_rand_score(truth, round_labels("neighbours")) > 0.95


class RecordedFits:
    """Stands in for the network: records the steps each ``fit`` would take."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def fit(self, x: np.ndarray, y: np.ndarray, batch_size: int, epochs: int, **_: object):
        assert len(x) == len(y)
        self.steps.append(-(-len(x) // batch_size) * epochs)
        return type("History", (), {"history": {"loss": [0.5]}})()


@pytest.mark.parametrize(
    ("images", "max_steps", "steps"),
    [
        (1000, None, 400),
        (12800, None, 800),
        (12800, 500, 500),
        (12800, 450, 400),
        (99840, 500, 500),
    ],
)
def test_a_round_trains_at_most_max_steps(images, max_steps, steps):
    """At least 400 steps, ``epochs`` epochs where that is more, and never over ``max_steps``:
    fewer epochs, or one epoch on a random part of the images where one epoch is more."""
    refiner = SelfLabel(epochs=8 if images == 12800 else 1, max_steps=max_steps, batch_size=128)
    refiner.classes_, refiner.model_ = np.arange(2), RecordedFits()
    refiner.history_ = {"changed": [], "kept": [], "loss": []}
    labels = np.arange(images) % 2
    refiner._train(np.zeros((images, 1, 1, 1), np.uint8), np.arange(images), labels, refiner.epochs)
    assert refiner.model_.steps == [steps]


@pytest.mark.slow
def test_self_label_keeps_the_refiner_contract(tmp_path):
    check_refiner(SelfLabel, settings=SMALL_SELF_LABEL, fast=True, tmp_path=tmp_path)


@pytest.mark.slow
def test_self_label_keeps_the_refiner_contract_when_it_reclusters(tmp_path):
    settings = {**SMALL_SELF_LABEL, "rounds": 2, "recluster": True, "neighbors": 5}
    check_refiner(SelfLabel, settings=settings, fast=True, tmp_path=tmp_path)


@pytest.mark.slow
def test_dec_keeps_the_refiner_contract(tmp_path):
    for autoencoder in ("conv-ae", "dense-ae"):
        settings = {**SMALL_DEC, "autoencoder": autoencoder}
        check_refiner(DEC, settings=settings, fast=True, tmp_path=tmp_path / autoencoder)


def test_bad_settings_and_inputs_are_one_line():
    with pytest.raises(SettingsError, match="keep is a share"):
        SelfLabel(keep=0)
    with pytest.raises(SettingsError, match="neighbors must be at least 2"):
        SelfLabel(neighbors=1)
    with pytest.raises(SettingsError, match="convolutions must be at least 1"):
        SelfLabel(convolutions=0)
    with pytest.raises(SettingsError, match="max_steps must be at least 400"):
        SelfLabel(max_steps=10)
    with pytest.raises(SettingsError, match="starts must be at least 1"):
        SelfLabel(starts=0)
    with pytest.raises(SettingsError, match="select is likelihood or neighbours; got 'best'"):
        SelfLabel(select="best")
    with pytest.raises(SettingsError, match="autoencoder must be"):
        DEC(autoencoder="pca")
    images = np.zeros((10, 8, 8, 1), np.uint8)
    with pytest.raises(DataError, match="at least 2 clusters"):
        SelfLabel(**SMALL_SELF_LABEL).fit_predict(images, np.zeros((10, 2)), np.zeros(10, int))


@pytest.mark.slow
def test_self_label_improves_kmeans_on_digits_and_predicts_the_same_after_load(tmp_path):
    digits = imgclust.get_dataset("digits").load("all")
    pipeline = imgclust.Pipeline(
        [imgclust.get_encoder("pca", n_components=30)],
        imgclust.get_clusterer("kmeans", n_clusters=10, seed=0),
        refiners=[imgclust.get_refiner("self-label", seed=0)],
    )
    labels = pipeline.fit_predict(digits.images)
    before = external_scores(digits.labels, pipeline.clusterer_labels_)["acc"]
    after = external_scores(digits.labels, labels)["acc"]
    assert after > before + 0.005, (before, after)
    loaded = imgclust.load(pipeline.save(tmp_path / "saved"))
    np.testing.assert_array_equal(loaded.predict(digits.images), labels)


@pytest.mark.slow
def test_reclustering_in_the_cnn_features_improves_kmeans_on_digits(tmp_path):
    """From k-means on PCA 30 (ACC 0.79), two recluster rounds reach about 0.93 on digits."""
    digits = imgclust.get_dataset("digits").load("all")
    refiner = imgclust.get_refiner(
        "self-label", recluster=True, keep=1.0, epochs=8, convolutions=1, dense=256, seed=0
    )
    pipeline = imgclust.Pipeline(
        [imgclust.get_encoder("pca", n_components=30)],
        imgclust.get_clusterer("kmeans", n_clusters=10, seed=0),
        refiners=[refiner],
    )
    labels = pipeline.fit_predict(digits.images)
    before = external_scores(digits.labels, pipeline.clusterer_labels_)["acc"]
    after = external_scores(digits.labels, labels)["acc"]
    assert after > before + 0.05, (before, after)
    assert len(refiner.instance.history_["changed"]) == 2
    loaded = imgclust.load(pipeline.save(tmp_path / "saved"))
    np.testing.assert_array_equal(loaded.predict(digits.images), labels)


@pytest.mark.slow
def test_dec_fine_tunes_on_a_few_hundred_images_and_predicts_the_same_after_load(tmp_path):
    digits = imgclust.get_dataset("digits", limit=400).load("all")
    refiner = imgclust.get_refiner("dec", pretrain_epochs=5, max_steps=300, seed=0)
    pipeline = imgclust.Pipeline(
        [imgclust.get_encoder("pca", n_components=20)],
        imgclust.get_clusterer("kmeans", n_clusters=10, seed=0),
        refiners=[refiner],
    )
    labels = pipeline.fit_predict(digits.images)
    assert refiner.history_["changed"], "the target distribution was never updated"
    assert external_scores(digits.labels, labels)["acc"] > 0.5  # it still clusters digits
    loaded = imgclust.load(pipeline.save(tmp_path / "saved"))
    np.testing.assert_array_equal(loaded.predict(digits.images), labels)


@pytest.mark.slow
def test_self_label_augments_only_with_what_the_images_are_invariant_to(tmp_path):
    """Kept flips and quarter turns are used, refused small changes are not; a tiny network
    trained that way saves, loads and predicts the same."""
    digits = imgclust.get_dataset("digits", limit=200).load("all")
    refiner = SelfLabel(**SMALL_SELF_LABEL, seed=0)
    refiner.invariances = ["mirror", "quarter-turn", "shift"]
    labels = refiner.fit_predict(digits.images, np.zeros((200, 2)), digits.labels)
    assert refiner.augmentations_ == ["shift", "mirror", "quarter-turn"]
    layer_names = [type(layer).__name__ for layer in refiner.model_.layers]
    assert "RandomFlip" in layer_names and "RandomTranslation" in layer_names
    assert "RandomRotation" not in layer_names and "RandomZoom" not in layer_names
    refiner.save(tmp_path)
    loaded = SelfLabel().load(tmp_path)
    np.testing.assert_array_equal(loaded.predict(digits.images), labels)
    assert loaded.augmentations_ == refiner.augmentations_
    # features and answers averaged over the kept symmetries: a turned or mirrored image gets
    # the features and the cluster of the image itself
    images = digits.images.reshape(200, 8, 8, 1)
    hidden = loaded._hidden(images)
    for element in symmetry_group(loaded.augmentations_)[1:]:
        moved = np.ascontiguousarray(apply_element(images, element))
        np.testing.assert_allclose(loaded._hidden(moved), hidden, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(loaded.predict(moved), labels)
    measured = SelfLabel(**SMALL_SELF_LABEL)  # outside a run: measured on its images
    measured.fit_predict(digits.images, np.zeros((200, 2)), digits.labels)
    assert "mirror" not in measured.augmentations_


@pytest.mark.slow
def test_predict_then_score_samples_of_the_same_images_runs_the_network_once():
    """A pipeline asks predict and then score_samples of each batch it assigns: the second
    answer comes from the first pass, and never for images changed in place since."""
    digits = imgclust.get_dataset("digits").load("all")
    images = np.array(digits.images[:300])  # a copy: changed in place below
    refiner = SelfLabel(**SMALL_SELF_LABEL)
    refiner.fit_predict(images, images.reshape(300, -1), digits.labels[:300])
    refiner._hidden(images[:1])  # builds the network's view up to its hidden layer
    model, passes = refiner._hidden_model[1], []

    def counted(batch):
        passes.append(len(batch))
        return model.__class__.predict_on_batch(model, batch)

    model.predict_on_batch = counted  # the real network, its passes counted
    labels = refiner.predict(images)
    probability = refiner.score_samples(images)["probability"]
    assert passes == [300]
    assert probability.shape == (300,) and np.all(probability >= 1 / 10 - 1e-6)
    np.testing.assert_array_equal(labels, refiner._fitted_classes()[
        refiner._probabilities(images).argmax(axis=1)])  # fmt: skip
    passes.clear()
    images[:, :4] = 0  # the same array, other pixels: scored afresh
    changed = refiner.score_samples(images)["probability"]
    assert passes == [300]
    np.testing.assert_allclose(changed, refiner._probabilities(images).max(axis=1))
    assert not np.allclose(changed, probability)
