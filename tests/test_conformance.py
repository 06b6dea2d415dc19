"""Every bundled stage passes ``imgclust.testing``; and the kit fails broken stages clearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imgclust.stages.host import get_registry
from imgclust.testing import (
    check_clusterer,
    check_dataset,
    check_encoder,
    sample_features,
    sample_images,
)

#: Test-only settings that keep stages that train to seconds; any other stage runs with defaults.
SMALL = {
    ("encoders", "conv-ae"): {"epochs": 1},
    ("encoders", "dense-ae"): {"epochs": 1, "dims": (32,), "batch_size": 64},
    ("encoders", "umap"): {"n_epochs": 20},
    # ImageNet weights are never downloaded in tests: a random backbone costs the same.
    ("encoders", "pretrained"): {
        "backbone": "mobilenetv3-small",
        "weights": "none",
        "resolution": 32,
    },
}
#: Stages checked with ``fast=True`` here; the slow test checks them in full.
TRAINED = {"conv-ae", "dense-ae", "umap"}
#: Stages whose check takes more than ~10 s on its own: umap's first fit compiles with numba;
#: pretrained builds and traces a backbone several times.
SLOW = {("encoders", "umap"), ("encoders", "pretrained")}


def bundled(kind: str) -> list[str]:
    """The registered names of one kind (tests/conftest.py loads the bundled plugins only)."""
    return get_registry().names(kind)


def stages(kind: str) -> list:
    """The bundled stages of one kind as test parameters, the slow ones marked."""
    slow = [pytest.mark.slow]
    return [pytest.param(n, marks=slow if (kind, n) in SLOW else []) for n in bundled(kind)]


def target(kind: str, name: str):
    return get_registry().get(kind, name).target


# Datasets that read files get a small one written for them ------------------------------------


def png_folder(tmp_path: Path) -> dict:
    """Two labelled sub-folders of six 8x8 grayscale PNGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("circles", "squares"):
        (tmp_path / "pngs" / label).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pngs" / label / f"{i}.png")
    return {"path": str(tmp_path / "pngs"), "workers": 1}


def npz_file(tmp_path: Path) -> dict:
    """Twenty 6x5 uint8 images with integer labels in an uncompressed .npz."""
    rng = np.random.default_rng(0)
    path = tmp_path / "images.npz"
    np.savez(path, x=rng.integers(0, 256, (20, 6, 5), dtype=np.uint8), y=np.arange(20) % 3)
    return {"path": str(path)}


def real_mnist(tmp_path: Path) -> dict:
    value = os.environ.get("IMGCLUST_MNIST")
    if not value or not Path(value).exists():
        pytest.skip("mnist needs IMGCLUST_MNIST (a local copy); the kit never downloads it")
    return {"path": value, "limit": 500}


DATA_FILES = {"image-folder": png_folder, "arrays": npz_file, "mnist": real_mnist}


def holding_arrays() -> object:
    """The ``in-memory`` dataset as ``imgclust.run(images=...)`` builds it: holding arrays."""
    from imgclust.io.arrays import InMemoryImages, in_memory_images

    dataset = InMemoryImages()
    rng = np.random.default_rng(0)
    dataset.data = in_memory_images(rng.random((12, 6, 5)), np.arange(12) % 3)
    return dataset


# datasets whose registered factory has no data of its own: what builds them with some
WITH_DATA = {"in-memory": holding_arrays}


# Every bundled stage --------------------------------------------------------------------------


@pytest.mark.parametrize("name", stages("datasets"))
def test_every_bundled_dataset_conforms(name: str, tmp_path: Path):
    settings = DATA_FILES[name](tmp_path) if name in DATA_FILES else {}
    factory = WITH_DATA.get(name, target("datasets", name))
    loaded = check_dataset(factory, settings=settings, name=name)
    assert loaded and all(len(data) for data in loaded.values())


@pytest.mark.parametrize("name", stages("encoders"))
def test_every_bundled_encoder_conforms(name: str, tmp_path: Path):
    settings = SMALL.get(("encoders", name), {})
    features = check_encoder(
        target("encoders", name),
        settings=settings,
        name=name,
        fast=name in TRAINED,
        tmp_path=tmp_path,
    )
    assert len(features) == len(sample_images(100 if name in TRAINED else 300))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TRAINED & set(bundled("encoders"))))
def test_trained_encoders_conform_in_full(name: str, tmp_path: Path):
    """Three hundred images, and a second fit on float32 images with validation."""
    settings = SMALL.get(("encoders", name), {})
    check_encoder(target("encoders", name), settings=settings, name=name, tmp_path=tmp_path)


@pytest.mark.parametrize("name", stages("clusterers"))
def test_every_bundled_clusterer_conforms(name: str, tmp_path: Path):
    settings = SMALL.get(("clusterers", name), {})
    labels = check_clusterer(
        target("clusterers", name), settings=settings, name=name, tmp_path=tmp_path
    )
    assert labels.shape == (300,)


def test_the_registry_is_what_is_checked():
    """The parametrisation comes from the registry: the bundled stages of every kind are there."""
    assert {"digits", "arrays", "image-folder"} <= set(bundled("datasets"))
    assert {"flatten", "pca", "conv-ae"} <= set(bundled("encoders"))
    assert {"kmeans", "hdbscan", "agglomerative"} <= set(bundled("clusterers"))


def test_importing_the_kit_imports_no_heavy_library():
    code = (
        "import sys, json, imgclust.testing\n"
        "heavy = ['sklearn', 'keras', 'tensorflow', 'umap', 'numba', 'hdbscan', 'matplotlib']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


# A stage that keeps the contract, and broken copies of it -------------------------------------


class MeanEncoder:
    """Pixels in [0, 1] minus their mean over the training images: a minimal correct encoder."""

    def fit(self, images, validation=None):
        self.mean_ = scaled(images).mean(axis=0)
        return self

    def transform(self, images):
        return (scaled(images) - self.mean_).astype(np.float32)

    def save(self, directory):
        np.save(Path(directory) / "mean.npy", self.mean_)

    def load(self, directory):
        self.mean_ = np.load(Path(directory) / "mean.npy")
        return self


def scaled(images) -> np.ndarray:
    x = np.asarray(images).reshape(len(images), -1).astype(np.float32)
    return x / 255 if np.asarray(images).dtype == np.uint8 else x


class WrongRowCount(MeanEncoder):
    def transform(self, images):
        return super().transform(images)[:-1]


class Float64Features(MeanEncoder):
    def transform(self, images):
        return super().transform(images).astype(np.float64)


class FitReturnsNone(MeanEncoder):
    def fit(self, images, validation=None):
        super().fit(images)


class ForgetsItsState(MeanEncoder):
    def save(self, directory):
        Path(directory, "nothing.json").write_text("{}")

    def load(self, directory):
        self.mean_ = np.float32(0)
        return self


class MutatesItsInput(MeanEncoder):
    def fit(self, images, validation=None):
        images[0] = 0
        return super().fit(images)


class Unseeded(MeanEncoder):
    def fit(self, images, validation=None):
        super().fit(images)
        self.mean_ = self.mean_ + np.random.default_rng().normal(size=self.mean_.shape)
        return self


class IgnoresPixelScale(MeanEncoder):
    def transform(self, images):
        x = np.asarray(images).reshape(len(images), -1).astype(np.float32)
        return x - self.mean_


class NoValidationParameter(MeanEncoder):
    def fit(self, images):
        return super().fit(images)


def test_a_correct_encoder_passes_from_its_class_or_an_instance(tmp_path: Path):
    features = check_encoder(MeanEncoder, tmp_path=tmp_path)
    assert features.shape == (300, 64) and features.dtype == np.float32
    check_encoder(MeanEncoder(), sample_images(50))


@pytest.mark.parametrize(
    "broken, message",
    [
        (WrongRowCount, r"transform\(images\) returned shape \(99, 64\) for 100 inputs"),
        (Float64Features, r"returned float64 features; they must be float32"),
        (FitReturnsNone, r"fit\(\) returned None; it must return the encoder itself"),
        (ForgetsItsState, r"after save\(\) and load\(\).* transform\(\) gives other features"),
        (MutatesItsInput, r"fit\(\) changed its input array in place"),
        (Unseeded, r"two encoders built with the same settings give different features"),
        (IgnoresPixelScale, r"as uint8 and as float32 in \[0, 1\] give different features"),
        (NoValidationParameter, r"fit\(images, validation=None\) raised TypeError"),
    ],
)
def test_a_broken_encoder_fails_with_a_message_naming_it_and_the_rule(broken, message):
    with pytest.raises(AssertionError, match=message) as failure:
        check_encoder(broken, name="broken", fast=True)
    assert str(failure.value).startswith("encoder 'broken': ")
    assert "\n" not in str(failure.value)


class Unsaved:
    """MeanEncoder's fitting without save/load: a run pickles it, as docs/plugins.md says."""

    fit = MeanEncoder.fit
    transform = MeanEncoder.transform


class Rescaled:
    """Pixels in [0, 1] and nothing fitted: ``stateless = True``, so no save/load is needed."""

    stateless = True

    def fit(self, images, validation=None):
        return self

    def transform(self, images):
        return scaled(images)


class SavesButCannotLoad(MeanEncoder):
    load = None


def test_a_stage_without_save_is_checked_as_a_run_keeps_it(tmp_path: Path):
    """What docs/plugins.md allows passes: a stateless stage is rebuilt from its settings, one
    without save/load is pickled (so it passes only where predicting may trust the run)."""
    check_encoder(Rescaled, tmp_path=tmp_path / "stateless", trust=False)
    check_encoder(Unsaved, tmp_path=tmp_path / "pickled")
    with pytest.raises(AssertionError, match=r"no save/load, so a run pickles it .*--trust"):
        check_encoder(Unsaved, fast=True, trust=False)
    with pytest.raises(AssertionError, match=r"^encoder 'SavesButCannotLoad': it has save but no"):
        check_encoder(SavesButCannotLoad, fast=True)


def test_a_missing_method_is_named_in_good_english():
    class NoTransform:
        def fit(self, images, validation=None):
            return self

    with pytest.raises(AssertionError, match=r"no transform method; an encoder needs fit, trans"):
        check_encoder(NoTransform, fast=True)


def test_the_default_name_is_the_class_name():
    with pytest.raises(AssertionError, match=r"^encoder 'WrongRowCount': "):
        check_encoder(WrongRowCount, fast=True)


def test_settings_need_a_factory_not_an_instance():
    with pytest.raises(TypeError, match="settings need a class or factory"):
        check_encoder(MeanEncoder(), settings={"epochs": 1})


class SplitByMedian:
    """The clusterer of docs/plugins.md: two clusters split at one feature's median."""

    def __init__(self, feature: int = 0) -> None:
        self.feature = feature

    def fit_predict(self, features):
        self.threshold_ = float(np.median(features[:, self.feature]))
        return self.predict(features)

    def predict(self, features):
        return (features[:, self.feature] > self.threshold_).astype(np.int64)

    def save(self, directory):
        np.save(Path(directory) / "threshold.npy", np.array(self.threshold_))

    def load(self, directory):
        self.threshold_ = float(np.load(Path(directory) / "threshold.npy"))
        return self


class WrongLabelCount(SplitByMedian):
    def fit_predict(self, features):
        return super().fit_predict(features)[:-1]


class FloatLabels(SplitByMedian):
    def fit_predict(self, features):
        return super().fit_predict(features).astype(np.float32)


class PredictsOtherNumbers(SplitByMedian):
    def predict(self, features):
        return 1 - super().predict(features)

    def fit_predict(self, features):
        return 1 - super().fit_predict(features)  # the opposite numbering to predict


class TooManyClusters(SplitByMedian):
    n_clusters = 1


class LoadReturnsNothing(SplitByMedian):
    def load(self, directory):
        super().load(directory)


def test_the_guide_s_plugin_passes_the_guide_s_test(tmp_path: Path, monkeypatch):
    """docs/plugins.md's example plugin, checked by the test the guide shows for it."""
    import types

    guide = (Path(__file__).parent.parent / "docs" / "plugins.md").read_text()
    plugin = guide.split("`imgclust_median.py` implements one hook")[1].split("```python\n")[1]
    test = guide.split("## Testing a plugin with `imgclust.testing`")[1].split("```python\n")[1]
    module = types.ModuleType("imgclust_median")
    exec(plugin.split("```")[0], module.__dict__)
    monkeypatch.setitem(sys.modules, "imgclust_median", module)
    namespace: dict = {}
    exec(test.split("```")[0], namespace)
    namespace["test_split_by_median_keeps_the_clusterer_contract"](tmp_path)


def test_the_hooks_reference_s_encoder_passes(tmp_path: Path):
    """docs/hooks.md's example encoder keeps the contract it documents, the run's trust
    boundary included: it is stateless, so checking it needs no trust."""
    reference = (Path(__file__).parent.parent / "docs" / "hooks.md").read_text()
    example = reference.split("class RowMeans:")[0].rsplit("```python\n", 1)[1]
    example += "class RowMeans:" + reference.split("class RowMeans:")[1].split("```")[0]
    namespace: dict = {}
    exec(example, namespace)
    features = check_encoder(namespace["RowMeans"], tmp_path=tmp_path, trust=False)
    assert features.shape == (300, 8)


def test_the_documented_clusterer_passes(tmp_path: Path):
    labels = check_clusterer(SplitByMedian, settings={"feature": 1}, tmp_path=tmp_path)
    assert set(np.unique(labels)) == {0, 1}


@pytest.mark.parametrize(
    "broken, message",
    [
        (WrongLabelCount, r"fit_predict\(features\) returned labels of shape \(299,\) for 300"),
        (FloatLabels, r"returned float32 labels; they must be integers"),
        (PredictsOtherNumbers, r"predict\(\) on the training features agrees with fit_predict"),
        (TooManyClusters, r"was asked for n_clusters=1 but found 2 clusters"),
        (LoadReturnsNothing, r"load\(\) returned None"),
    ],
)
def test_a_broken_clusterer_fails_with_a_message_naming_it_and_the_rule(broken, message):
    with pytest.raises(AssertionError, match=message) as failure:
        check_clusterer(broken, sample_features(), name="broken")
    assert str(failure.value).startswith("clusterer 'broken': ")


class TinyDataset:
    """Four 3x3 images; subclasses break one rule each."""

    splits = ("all",)

    def load(self, split="all"):
        from imgclust.stages.interfaces import ImageSet

        images = np.arange(36, dtype=np.uint8).reshape(4, 3, 3, 1)
        return ImageSet(images, np.array([0, 1, 0, 1]), ["a", "b", "c", "d"], ["even", "odd"])


class RepeatedIds(TinyDataset):
    def load(self, split="all"):
        data = super().load(split)
        data.ids = ["a", "a", "b", "c"]
        return data


class ClassNamesAsDict(TinyDataset):
    def load(self, split="all"):
        data = super().load(split)
        data.class_names = {0: "zero", 1: "one"}
        return data


class LabelsPastClassNames(TinyDataset):
    def load(self, split="all"):
        data = super().load(split)
        data.labels = np.array([0, 1, 2, 3])
        return data


class FloatsOutOfRange(TinyDataset):
    def load(self, split="all"):
        data = super().load(split)
        data.images = data.images.astype(np.float32)
        return data


class WrongLabelLength(TinyDataset):
    def load(self, split="all"):
        data = super().load(split)
        data.labels = np.array([0, 1])
        return data


def test_a_correct_dataset_passes():
    assert len(check_dataset(TinyDataset)["all"]) == 4


@pytest.mark.parametrize(
    "broken, message",
    [
        (RepeatedIds, r"the id '\w+' names more than one image; ids must be unique"),
        (LabelsPastClassNames, r"integer labels 0..3 but 2 class_names"),
        (ClassNamesAsDict, r"class_names must be a list indexed by the integer labels, not a dict"),
        (FloatsOutOfRange, r"float images in .*, not in \[0, 1\]"),
        (WrongLabelLength, r"has 4 images but 2 labels"),
    ],
)
def test_a_broken_dataset_fails_with_a_message_naming_it_and_the_rule(broken, message):
    with pytest.raises(AssertionError, match=message) as failure:
        check_dataset(broken, name="broken")
    assert str(failure.value).startswith("dataset 'broken': ")
