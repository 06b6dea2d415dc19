"""The pretrained-backbone encoder: features, determinism, weights files, the offline error,
and save/load/predict agreement. ImageNet weights are never downloaded here: tests use
``weights="none"`` and a weights file saved from a randomly initialised backbone.
"""

from __future__ import annotations

import numpy as np
import pytest

from imgclust.errors import ImgclustError, SettingsError

pytest.importorskip("keras")

SMALL = {"backbone": "mobilenetv3-small", "weights": "none", "resolution": 32, "batch_size": 16}


def photos(n: int = 12, height: int = 40, width: int = 56, channels: int = 3) -> np.ndarray:
    """Random RGB 'photos' as uint8, (n, height, width, channels)."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, height, width, channels), dtype=np.uint8)


def encoder(**settings):
    from imgclust.plugins.pretrained import PretrainedEncoder

    return PretrainedEncoder(**{**SMALL, **settings})


def test_features_are_one_unit_vector_per_image_and_repeat_exactly():
    images = photos()
    first = encoder().fit(images).transform(images)
    again = encoder().fit(images).transform(images)
    assert first.shape == (12, 576) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(first, again)


def test_grayscale_and_float_images_are_read_like_their_rgb_uint8_copies():
    gray = photos(channels=1)
    enc = encoder(normalize=False).fit(gray)
    as_rgb = np.repeat(gray, 3, axis=-1)
    np.testing.assert_allclose(
        enc.transform(gray), encoder(normalize=False).fit(as_rgb).transform(as_rgb), atol=1e-5
    )
    as_float = gray.astype(np.float32) / 255
    np.testing.assert_allclose(enc.transform(gray), enc.transform(as_float), atol=1e-3)


def test_a_weights_file_gives_the_features_of_the_backbone_it_came_from(tmp_path):
    images = photos()
    source = encoder(seed=3).fit(images)
    path = tmp_path / "backbone.weights.h5"
    source.model_.save_weights(path)
    from_file = encoder(weights=str(path), seed=0).fit(images)
    np.testing.assert_allclose(from_file.transform(images), source.transform(images), atol=1e-6)


def test_save_and_load_give_identical_features_without_the_weights_setting(tmp_path):
    images = photos()
    fitted = encoder().fit(images)
    fitted.save(tmp_path / "stage")
    loaded = encoder(weights="imagenet").load(tmp_path / "stage")  # never downloads on load
    np.testing.assert_array_equal(loaded.transform(images), fitted.transform(images))


def test_offline_imagenet_weights_is_one_line_naming_the_file_and_the_alternatives(
    monkeypatch, tmp_path
):
    from imgclust.kit.keras import import_keras

    keras = import_keras()

    def offline(**kwargs):
        raise Exception(
            "URL fetch failure on https://storage.example/keras-applications/mobilenet_v3/"
            "weights_small_no_top.h5: None -- [Errno -2] Name or service not known"
        )

    monkeypatch.setattr(keras.applications, "MobileNetV3Small", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(ImgclustError) as caught:
        encoder(weights="imagenet").fit(photos())
    message = str(caught.value)
    assert "weights_small_no_top.h5" in message and "models" in message
    assert "encoder.weights=PATH" in message and "\n" not in message


@pytest.mark.parametrize(
    "settings, text",
    [
        ({"backbone": "vgg99"}, "no backbone 'vgg99'"),
        ({"weights": "missing/file.h5"}, "does not exist"),
        ({"resolution": 8}, "resolution"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_settings_are_one_line(settings, text):
    with pytest.raises(SettingsError, match=text):
        encoder(**settings).fit(photos())


def test_features_or_four_channels_are_refused_in_one_line():
    with pytest.raises(ImgclustError, match="put it first"):
        encoder().fit(np.zeros((4, 10), dtype=np.float32))
    with pytest.raises(ImgclustError, match="4\\s+channels"):
        encoder().fit(photos(channels=4))


def test_a_run_on_mixed_size_photos_saves_a_pipeline_that_predicts_its_images(cli, tmp_path):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for index in range(10):
        height, width = (30, 50) if index % 2 else (60, 24)
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"p{index}.png")
    runs = tmp_path / "runs"
    result = cli(
        "run",
        "--dataset",
        "image-folder",
        "--encoder",
        "pretrained",
        "--clusterer",
        "kmeans",
        "--set",
        f"dataset.path={folder}",
        "--set",
        "dataset.size=32x32",
        "--set",
        "dataset.mode=rgb",
        "--set",
        "encoder.weights=none",
        "--set",
        "encoder.backbone=mobilenetv3-small",
        "--set",
        "encoder.resolution=32",
        "--set",
        "clusterer.n_clusters=2",
        "--no-plots",
        "--runs-dir",
        runs,
    )
    assert result.exit_code == 0, result.stderr
    (run,) = runs.iterdir()
    out = tmp_path / "predicted.csv"
    predicted = cli("predict", run, folder, "-o", out)
    assert predicted.exit_code == 0, predicted.stderr
    assigned = {
        line.split(",")[0].rsplit("/", 1)[-1]: line.split(",")[1]
        for line in out.read_text().splitlines()[1:]
    }
    fitted = {
        line.split(",")[0].rsplit("/", 1)[-1]: line.split(",")[1]
        for line in (run / "assignments.csv").read_text().splitlines()[1:]
    }
    assert assigned == fitted


def test_the_encoder_runs_and_round_trips_under_the_jax_backend(tmp_path):
    """Keras picks its backend at import, so the check runs in a fresh process."""
    import os
    import subprocess
    import sys

    pytest.importorskip("jax", reason="the JAX backend is checked where jax is installed")
    script = (
        "import numpy as np, keras\n"
        "from imgclust.plugins.pretrained import PretrainedEncoder\n"
        "assert keras.backend.backend() == 'jax'\n"
        "x = np.random.default_rng(0).integers(0, 256, (6, 40, 50, 3), dtype=np.uint8)\n"
        f"settings = {SMALL!r}\n"
        "fitted = PretrainedEncoder(**settings).fit(x)\n"
        "fitted.save('stage')\n"
        "loaded = PretrainedEncoder(**settings).load('stage')\n"
        "assert np.array_equal(fitted.transform(x), loaded.transform(x))\n"
        "print(fitted.transform(x).shape)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "jax"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(6, 576)" in done.stdout
