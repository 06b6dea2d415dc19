"""The sym-pca encoder: features averaged over the kept symmetries, saved without pickle."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

import imgclust
from imgclust.errors import DataError
from imgclust.plugins.symmetric import STATE_FILE, SymmetricPCA
from imgclust.results.metrics import external_scores
from tests.test_invariances import digits_images, mirrored_at_random


def fitted(images: np.ndarray, invariances: list[str] | None) -> SymmetricPCA:
    encoder = SymmetricPCA(n_components=12)
    encoder.invariances = invariances
    return encoder.fit(images)


def test_a_mirrored_image_gets_the_features_of_the_original_when_the_mirror_is_kept():
    images = digits_images()
    encoder = fitted(images, ["mirror"])
    features = encoder.transform(images)
    assert features.shape == (len(images), 24)
    np.testing.assert_allclose(encoder.transform(images[:, :, ::-1]), features, atol=1e-4)
    assert not np.allclose(encoder.transform(images[:, ::-1]), features, atol=1e-2)


def test_without_symmetries_it_is_plain_pca_and_it_measures_them_itself_outside_a_run():
    images = digits_images()
    plain = fitted(images, [])
    assert plain.transform(images).shape == (len(images), 12)
    measured = fitted(mirrored_at_random(images), None)  # no run: it measures the images
    assert measured.group_ == [(0, False), (0, True)]


@pytest.mark.parametrize("max_fit", [100_000, 500])
def test_without_symmetries_its_features_are_pcas_to_the_last_bit(max_fit: int):
    """So that sym-umap-gmm and umap-gmm see the same features on a set without symmetries."""
    images = digits_images()
    symmetric = SymmetricPCA(n_components=12, max_fit=max_fit, seed=3)
    symmetric.invariances = ["rotation", "shift"]  # kept, but not exact rearrangements
    plain = imgclust.get_encoder("pca", n_components=12, max_fit=max_fit, seed=3)
    np.testing.assert_array_equal(
        symmetric.fit(images).transform(images), plain.fit(images).transform(images)
    )


def test_symmetrised_features_recover_the_clusters_of_digits_mirrored_at_random():
    """k-means on PCA loses digits mirrored at random; the symmetrised features keep them."""
    images = mirrored_at_random(digits_images())
    labels = imgclust.get_dataset("digits").load("all").labels
    scores = {}
    for invariances in ([], ["mirror"]):
        features = fitted(images, invariances).transform(images)
        found = imgclust.get_clusterer("kmeans", n_clusters=10, seed=0).fit_predict(features)
        scores[bool(invariances)] = external_scores(found, labels)["acc"]
    assert scores[True] > scores[False] + 0.05, scores


def test_save_and_load_give_the_same_features(tmp_path: Path):
    images = digits_images()
    encoder = fitted(images, ["mirror", "quarter-turn"])
    assert len(encoder.group_) == 8
    encoder.save(tmp_path)
    loaded = SymmetricPCA().load(tmp_path)
    np.testing.assert_array_equal(loaded.transform(images), encoder.transform(images))
    assert loaded.invariances == ["mirror", "quarter-turn"]


def test_a_damaged_or_oversized_state_is_refused_before_it_is_read(tmp_path: Path):
    images = digits_images()
    fitted(images, ["mirror"]).save(tmp_path)
    buffer = io.BytesIO()
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 64), np.float32))
    header["shape"] = (10**9, 64)  # claims 256 GB
    with zipfile.ZipFile(buffer, "w") as archive:
        member = io.BytesIO()
        np.lib.format.write_array_header_1_0(member, header)
        archive.writestr("components.npy", member.getvalue())
        archive.writestr("mean.npy", _npy(np.zeros(64, np.float32)))
    (tmp_path / STATE_FILE).write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match="sym-pca"):
        SymmetricPCA().load(tmp_path)
    (tmp_path / STATE_FILE).write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read its saved state"):
        SymmetricPCA().load(tmp_path)


def test_features_instead_of_images_are_a_one_line_error():
    with pytest.raises(DataError, match="must come first"):
        SymmetricPCA().fit(np.zeros((10, 5), np.float32))


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


@pytest.mark.slow
def test_the_recluster_refiner_with_the_mirror_lifts_mirrored_digits_and_predicts_after_load(
    tmp_path: Path,
):
    """Digits mirrored at random: k-means on sym-pca, then the recluster refiner whose CNN
    augments with the kept mirror; ACC rises above the start and the saved pipeline agrees."""
    images = mirrored_at_random(digits_images())
    labels = imgclust.get_dataset("digits").load("all").labels
    encoder = imgclust.get_encoder("sym-pca", n_components=30)
    refiner = imgclust.get_refiner(
        "self-label", recluster=True, keep=1.0, epochs=8, convolutions=1, dense=256, seed=0
    )
    kept = ["mirror", "rotation", "shift", "scale"]
    encoder.instance.invariances = kept
    refiner.instance.invariances = kept
    pipeline = imgclust.Pipeline(
        [encoder], imgclust.get_clusterer("kmeans", n_clusters=10, seed=0), refiners=[refiner]
    )
    found = pipeline.fit_predict(images)
    before = external_scores(pipeline.clusterer_labels_, labels)["acc"]
    after = external_scores(found, labels)["acc"]
    assert after > before + 0.02, (before, after)  # 0.741 -> 0.765 at seed 0
    assert "mirror" in refiner.instance.augmentations_
    loaded = imgclust.load(pipeline.save(tmp_path / "saved"))
    np.testing.assert_array_equal(loaded.predict(images), found)
