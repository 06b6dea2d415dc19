"""One input scale: images are uint8 (0..255) or floats in [0, 1]. Anything else is refused in
one line naming where it came from, by a run's dataset check (``ImageSet.validate``), by
``Pipeline.fit``/``predict`` and by ``imgclust predict`` alike, so that a run and its predict can
never scale the same images differently. Every bundled dataset that works offline is run, then
predicted over the same images, and the two must agree image for image."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import imgclust
from imgclust import hookimpl
from imgclust.errors import DataError
from imgclust.stages.host import get_host
from imgclust.stages.interfaces import ImageSet


def digits_uint8(n: int = 300) -> np.ndarray:
    from sklearn.datasets import load_digits

    return np.round(load_digits().images[:n] * (255.0 / 16.0)).astype(np.uint8)[..., None]


def raw_digits(n: int = 300) -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images[:n, :, :, None].astype(np.float32)  # 0..16


def off_scale() -> dict[str, np.ndarray]:
    """Float images no scale rule may guess: 0..255, digits' 0..16, negative, NaN."""
    pixels = digits_uint8().astype(np.float32)
    nan = pixels / 255
    nan[3, 2, 2, 0] = np.nan
    return {
        "floats-0-255": pixels,
        "digits-0-16": raw_digits(),
        "negative": pixels / 255 - 0.5,
        "nan": nan,
    }


SCALES = list(off_scale())


@pytest.mark.parametrize("scale", SCALES)
def test_a_datasets_off_scale_floats_are_refused_by_validate(scale):
    images = off_scale()[scale]
    with pytest.raises(DataError, match=r"^dataset 'x' \(all\): (float images in|images with NaN)"):
        ImageSet(images).validate("dataset 'x' (all)")


class FloatDigits:
    """A test dataset that hands over scikit-learn's digits as float32 0..255."""

    def load(self, split: str = "all") -> ImageSet:
        return ImageSet(digits_uint8().astype(np.float32))


def test_a_run_refuses_a_dataset_of_floats_up_to_255(tmp_path):
    get_host().register(
        SimpleNamespace(
            register_datasets=hookimpl(lambda register: register("float-digits", FloatDigits))
        ),
        name="test-float-digits",
    )
    with pytest.raises(DataError, match=r"dataset 'float-digits' \(all\): float images in 0"):
        imgclust.run(
            dataset="float-digits",
            encoders=[{"name": "pca", "n_components": 8}],
            clusterer={"name": "kmeans", "n_clusters": 10},
            runs_dir=tmp_path,
        )


@pytest.mark.parametrize("scale", SCALES)
def test_fit_predict_and_the_cli_refuse_the_same_images(scale, pristine_run, tmp_path, cli):
    images = off_scale()[scale]
    pipe = imgclust.Pipeline(["pca"], imgclust.get_clusterer("kmeans", n_clusters=3))
    with pytest.raises(DataError, match=r"^images: (float images in|images with NaN)"):
        pipe.fit(images)
    fitted = imgclust.load(pristine_run)
    with pytest.raises(DataError, match=r"^images: (float images in|images with NaN)"):
        fitted.predict(images)
    np.save(tmp_path / "x.npy", images)
    result = cli("predict", pristine_run, tmp_path / "x.npy")
    assert result.exit_code != 0
    assert re.match(r"Error: (\S*/)?x\.npy: (float images in|images with NaN)", result.stderr)
    assert len(result.stderr.splitlines()) == 1
    run = cli(
        "run", "--dataset", "arrays", "--encoder", "pca", "--clusterer", "kmeans",
        "--set", f"dataset.path={tmp_path / 'x.npy'}", "--set", "clusterer.n_clusters=3",
        "--runs-dir", tmp_path / "runs", "--no-plots",
    )  # fmt: skip
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error:")]
    assert run.exit_code != 0 and errors == [run.stderr.splitlines()[-1]]
    assert re.match(r"Error: (\S*/)?x\.npy: (float images in|images with NaN)", errors[0])


# Every bundled dataset: the run and its predict agree ------------------------------------------
def image_folder(root: Path) -> Path:
    from PIL import Image

    for i, image in enumerate(digits_uint8(120)):
        Image.fromarray(image[..., 0], "L").save(root / f"{i:03d}.png")
    return root


def bundled(tmp_path: Path) -> dict[str, tuple[dict, str]]:
    """dataset stage and the input `imgclust predict` reads the same images from."""
    np.save(tmp_path / "uint8.npy", digits_uint8())
    np.save(tmp_path / "unit.npy", digits_uint8().astype(np.float64) / 255)
    (tmp_path / "png").mkdir()
    cases = {
        "digits": ({"name": "digits", "limit": 300}, ""),
        "arrays-uint8": ({"name": "arrays", "path": str(tmp_path / "uint8.npy")}, "uint8.npy"),
        "arrays-unit-floats": ({"name": "arrays", "path": str(tmp_path / "unit.npy")}, "unit.npy"),
        "image-folder": (
            {"name": "image-folder", "path": str(image_folder(tmp_path / "png")), "cache": False},
            "png",
        ),
    }
    mnist = os.environ.get("IMGCLUST_MNIST")
    if mnist and Path(mnist).exists():
        cases["mnist"] = ({"name": "mnist", "path": mnist, "limit": 500}, "")
    return cases


@pytest.mark.parametrize(
    "case",
    [
        "digits",
        "arrays-uint8",
        "arrays-unit-floats",
        "image-folder",
        pytest.param("mnist", marks=[pytest.mark.slow, pytest.mark.mnist]),
    ],
)
def test_every_bundled_dataset_runs_and_predicts_alike(case, tmp_path, cli):
    cases = bundled(tmp_path)
    if case not in cases:
        pytest.skip("IMGCLUST_MNIST is not set to a copy of MNIST")
    dataset, given = cases[case]
    run = imgclust.run(
        dataset=dataset,
        encoders=[{"name": "pca", "n_components": 8}],
        clusterer={"name": "kmeans", "n_clusters": 5},
        runs_dir=tmp_path / "runs",
    )
    data = run.data
    assert data.images.dtype == np.uint8 or (
        data.images.dtype == np.float32 and 0 <= data.images.min() and data.images.max() <= 1
    )
    loaded = imgclust.load(run.path)
    np.testing.assert_array_equal(loaded.predict(data.images), run.labels)
    source = tmp_path / (given or "same.npy")
    if not given:
        np.save(source, np.asarray(data.images))
    result = cli("predict", run.path, source, "--json")
    assert result.exit_code == 0, result.stderr
    clusters = [row["cluster"] for row in json.loads(result.stdout)["assignments"]]
    assert clusters == run.labels.tolist()
