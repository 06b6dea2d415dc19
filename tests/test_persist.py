"""A run's saved pipeline: the manifest, load and predict, every predicting clusterer's round
trip, stages that cannot be saved, format versions, and folders that try to run code.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import imgclust
from imgclust.engine.manifest import FORMAT_VERSION, MANIFEST, read_manifest
from imgclust.engine.persist import save_pipeline
from imgclust.engine.pipeline import Pipeline, load_pipeline
from imgclust.engine.stage import Stage
from imgclust.errors import DataError, ImgclustError, PluginError
from imgclust.stages.hookspecs import hookimpl
from imgclust.stages.host import get_host, get_registry
from imgclust.stages.interfaces import ImageSet, can_predict

FAST = ["--dataset", "digits", "--encoder", "pca", "--clusterer", "kmeans", "--no-plots"]
SMALL = [
    "--dataset",
    "digits",
    "--set",
    "dataset.limit=300",
    "--clusterer",
    "kmeans",
    "--set",
    "clusterer.n_init=2",
]


def digits(limit: int | None = None) -> ImageSet:
    from imgclust.plugins.digits import DigitsDataset

    return DigitsDataset(limit=limit).load("all")


def run_cli(*args: str) -> None:
    from imgclust.cli.app import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert exc.code in (0, None), f"imgclust {' '.join(map(str, args))} exited {exc.code}"


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory) -> Path:
    """One finished digits + pca + kmeans run, shared (read-only) by the tests below."""
    from imgclust.stages.host import reset_host

    reset_host()
    runs = tmp_path_factory.mktemp("runs")
    run_cli("run", *FAST, "--set", "encoder.n_components=20", "--runs-dir", runs)
    [folder] = list(runs.iterdir())
    return folder


@pytest.fixture
def run_copy(fitted_run, tmp_path) -> Path:
    """A private copy of the fitted run that a test may damage."""
    return Path(shutil.copytree(fitted_run, tmp_path / fitted_run.name))


def run_labels(folder: Path) -> np.ndarray:
    with open(folder / "assignments.csv") as handle:
        return np.array([int(row["cluster"]) for row in csv.DictReader(handle)])


# The manifest --------------------------------------------------------------------------------
def test_every_run_folder_holds_its_pipeline_and_a_manifest(fitted_run):
    root = fitted_run / "pipeline"
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["imgclust_version"] == imgclust.__version__
    assert manifest["plugins"]["basic-encoders"]["version"] == imgclust.__version__
    assert manifest["input"] == {"shape": [8, 8, 1], "dtype": "uint8"}
    assert manifest["preprocessing"]["dataset"]["name"] == "digits"
    assert "255" in manifest["preprocessing"]["scaling"]
    [encoder] = manifest["encoders"]
    assert encoder["name"] == "pca" and encoder["settings"]["n_components"] == 20
    assert encoder["plugin"] == "basic-encoders" and encoder["format"] == "native"
    assert manifest["clusterer"]["settings"]["n_clusters"] == 10
    assert manifest["can_predict"] is True and manifest["n_clusters"] == 10
    assert manifest["needs_trust"] is False
    assert (root / encoder["dir"]).is_dir() and (root / manifest["clusterer"]["dir"]).is_dir()
    assert encoder["dir"] == "encoder-0-pca" and manifest["clusterer"]["dir"] == "clusterer-kmeans"


def test_fit_then_predict_on_the_same_images_gives_the_runs_labels(fitted_run):
    saved = imgclust.load(fitted_run)
    data = digits()
    expected = run_labels(fitted_run)
    assert np.array_equal(saved.predict(data.images), expected)
    # float32 in [0, 1] and (N, H, W) input are the same images
    as_float = data.images[..., 0].astype(np.float32) / np.float32(255)
    assert np.array_equal(saved.predict(as_float), expected)
    features = saved.transform(data.images[:5])
    assert features.shape == (5, 20) and features.dtype == np.float32
    assert np.allclose(features, np.load(fitted_run / "embeddings.npy")[:5], atol=1e-5)
    assert saved.manifest["clusterer"]["name"] == "kmeans"


def test_predict_refuses_other_sizes_and_channel_counts(fitted_run):
    saved = load_pipeline(fitted_run)
    with pytest.raises(DataError, match=r"9x8 with 1 channel .* fitted on 8x8 with 1 channel"):
        saved.predict(np.zeros((3, 9, 8, 1), np.uint8))
    with pytest.raises(DataError, match=r"8x8 with 3 channels .* fitted on 8x8 with 1 channel"):
        saved.predict(np.zeros((3, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="must be"):
        saved.predict(np.zeros((8, 8), np.uint8))


# Every clusterer that can predict ----------------------------------------------------------
def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated blobs of 4x4 one-channel float images, and fresh points of them."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.1, 0.9, size=(3, 16))
    fit = np.concatenate([c + rng.normal(0, 0.02, (60, 16)) for c in centres])
    new = np.concatenate([c + rng.normal(0, 0.02, (10, 16)) for c in centres])
    shape = (-1, 4, 4, 1)
    return (
        np.clip(fit, 0, 1).astype(np.float32).reshape(shape),
        np.clip(new, 0, 1).astype(np.float32).reshape(shape),
    )


def _small_settings(factory) -> dict:
    from imgclust.stages.settings import settings_of

    known = settings_of(factory)
    wanted = {"n_clusters": 3, "min_cluster_size": 10}
    return {k: v for k, v in wanted.items() if k in known}


def _save_fitted(tmp_path: Path, clusterer_name: str) -> tuple[Pipeline, np.ndarray, Path]:
    registry = get_registry()
    factory = registry.get("clusterers", clusterer_name).target
    settings = _small_settings(factory)
    from imgclust.plugins.basic_encoders import FlattenEncoder

    clusterer = Stage(clusterer_name, factory(**settings), settings)
    pipeline = Pipeline([Stage("flatten", FlattenEncoder())], clusterer)
    fit, new = _blobs()
    pipeline.fit(fit)
    config = {"seed": 0, "split": "all", "dataset": {"name": "arrays", "path": "blobs.npy"}}
    save_pipeline(pipeline, tmp_path, config, ImageSet(fit))
    return pipeline, new, tmp_path


def _bundled_clusterers() -> list[str]:
    registry = get_registry()
    names = [
        n
        for n in registry.names("clusterers")
        if registry.entries["clusterers"][n].plugin
        in {name for name, info in get_host().plugins.items() if info.bundled}
    ]
    return names


PREDICTING = [
    n for n in _bundled_clusterers() if can_predict(get_registry().get("clusterers", n).target())
]
NOT_PREDICTING = [n for n in _bundled_clusterers() if n not in PREDICTING]


def test_the_predicting_clusterers_are_the_expected_ones():
    assert "kmeans" in PREDICTING
    for name in ("gmm", "minibatch-kmeans", "hdbscan"):
        if name in _bundled_clusterers():
            assert name in PREDICTING


@pytest.mark.parametrize("name", PREDICTING)
def test_save_load_round_trip_of_every_predicting_clusterer(tmp_path, name):
    pipeline, new, folder = _save_fitted(tmp_path, name)
    manifest = read_manifest(folder)
    assert manifest["can_predict"], manifest["reason"]
    pickled = manifest["needs_trust"]
    assert pickled == any(p.suffix == ".pkl" for p in (folder / "pipeline").rglob("*"))
    if pickled:
        with pytest.raises(ImgclustError, match="--trust"):
            load_pipeline(folder)
    saved = load_pipeline(folder, trust=pickled)
    expected = pipeline.predict(new)
    labels, scores = saved.assign(new)
    assert np.array_equal(labels, expected)
    assert len(set(labels.tolist()) - {-1}) == 3
    scorer = getattr(pipeline.clusterer.instance, "score_samples", None)
    fresh_scores = scorer(pipeline.transform(new)) if callable(scorer) else {}
    assert set(scores) == set(fresh_scores)
    for key in scores:
        assert np.allclose(scores[key], fresh_scores[key])


@pytest.mark.parametrize("name", NOT_PREDICTING)
def test_a_clusterer_that_cannot_predict_says_so_and_names_those_that_can(tmp_path, name):
    pipeline, new, folder = _save_fitted(tmp_path, name)
    manifest = read_manifest(folder)
    assert manifest["can_predict"] is False and "cannot assign new images" in manifest["reason"]
    saved = load_pipeline(folder)
    assert saved.transform(new).shape == (30, 16)  # the encoders still work
    with pytest.raises(ImgclustError, match=f"{name}.*cannot assign new images.*kmeans"):
        saved.predict(new)


# Stages that cannot be saved ---------------------------------------------------------------
class NoFormat:
    """Test encoder without a file format: pickled when it can be, else not saved."""

    def __init__(self, picklable: bool = True) -> None:
        self.picklable = picklable

    def fit(self, images, validation=None):
        self.mean_ = np.asarray(images, dtype=np.float32).reshape(len(images), -1).mean(axis=0)
        if not self.picklable:
            self.hook_ = lambda x: x  # an attribute the factory does not rebuild
        return self

    def transform(self, images):
        return np.asarray(images, dtype=np.float32).reshape(len(images), -1) - self.mean_

    def save(self, directory):
        raise ImgclustError("no file format")

    def load(self, directory):
        raise AssertionError("never called: there is nothing to load")


def register_test_encoder() -> None:
    get_host().register(
        SimpleNamespace(
            register_encoders=hookimpl(lambda register: register("no-format", NoFormat))
        ),
        name="test-no-format",
    )


def test_a_picklable_stage_without_a_format_is_pickled_and_loads_only_when_trusted(cli, runs_dir):
    register_test_encoder()
    # the warning says why: the stage's own save failed, and with what
    with pytest.warns(UserWarning, match="its save raised ImgclustError: no file format; its"):
        result = cli("run", *SMALL, "--encoder", "no-format", "--no-plots", "--runs-dir", runs_dir)
    assert result.exit_code == 0, result.stderr
    [folder] = list(runs_dir.iterdir())
    manifest = read_manifest(folder)
    assert manifest["encoders"][0]["format"] == "pickle" and manifest["can_predict"]
    assert manifest["encoders"][0]["needs_trust"] and manifest["needs_trust"]
    with pytest.raises(ImgclustError, match="pickle.*--trust"):
        load_pipeline(folder)
    saved = load_pipeline(folder, trust=True)
    assert np.array_equal(saved.predict(digits(limit=300).images), run_labels(folder))


def test_a_stage_that_cannot_be_saved_does_not_fail_the_run(cli, runs_dir):
    register_test_encoder()
    result = cli(
        "run",
        *SMALL,
        "--encoder",
        "no-format",
        "--set",
        "encoder.picklable=false",
        "--no-plots",
        "--runs-dir",
        runs_dir,
    )
    assert result.exit_code == 0, result.stderr
    [folder] = list(runs_dir.iterdir())
    manifest = read_manifest(folder)
    assert manifest["can_predict"] is False
    assert "no-format" in manifest["reason"] and "hook_" in manifest["reason"]
    saved = load_pipeline(folder, trust=True)
    with pytest.raises(ImgclustError, match="cannot predict.*no-format"):
        saved.predict(digits(limit=300).images)
    predicted = cli("predict", folder, folder / "embeddings.npy")
    assert predicted.exit_code != 0 and "cannot predict" in predicted.stderr


# Formats and damage ------------------------------------------------------------------------
def _edit_manifest(folder: Path, **changes) -> None:
    path = folder / "pipeline" / MANIFEST
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_a_newer_format_version_is_refused_clearly(run_copy):
    _edit_manifest(run_copy, format_version=FORMAT_VERSION + 1)
    with pytest.raises(DataError, match="newer imgclust.*upgrade"):
        load_pipeline(run_copy)


@pytest.mark.parametrize("version", ["1", None, 0, True])
def test_an_unknown_format_version_is_refused_clearly(run_copy, version):
    _edit_manifest(run_copy, format_version=version)
    with pytest.raises(DataError, match="unknown pipeline format version"):
        load_pipeline(run_copy)


def test_a_folder_without_a_pipeline_is_a_clear_error(tmp_path, run_copy):
    with pytest.raises(DataError, match="holds no fitted pipeline"):
        load_pipeline(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_pipeline(tmp_path / "nope")
    (run_copy / "pipeline" / MANIFEST).write_text("{not json")
    with pytest.raises(DataError, match="manifest.json' is not valid JSON"):
        load_pipeline(run_copy)


def test_a_stage_from_a_missing_plugin_is_named(run_copy):
    manifest = json.loads((run_copy / "pipeline" / MANIFEST).read_text())
    manifest["encoders"][0].update(name="pixie", plugin="imgclust-pixie", plugin_version="2.0")
    (run_copy / "pipeline" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PluginError, match="encoder 'pixie' from imgclust-pixie 2.0.*not installed"):
        load_pipeline(run_copy)


@pytest.mark.parametrize(
    "package, said",
    [
        (
            "imgclust-pix",
            r"from the package imgclust-pix 2.0 \(plugin 'pix'\).*pip install "
            r"imgclust-pix, then",
        ),
        ("evil\x1b[2J; rm -rf ~", r"from pix 2.0, which is not installed: install that plugin"),
    ],
)
def test_a_missing_plugin_is_named_by_the_package_to_install(run_copy, package, said):
    """The manifest records each plugin's package; a name that is not a plain package name (a
    stranger's manifest) is left out of the message."""
    manifest = json.loads((run_copy / "pipeline" / MANIFEST).read_text())
    manifest["encoders"][0].update(name="pixie", plugin="pix", plugin_version="2.0")
    manifest["plugins"]["pix"] = {"distribution": package, "version": "2.0", "bundled": False}
    (run_copy / "pipeline" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PluginError, match=said) as failure:
        load_pipeline(run_copy)
    assert "\x1b" not in str(failure.value)


def test_the_manifest_cannot_point_outside_the_pipeline_folder(run_copy):
    manifest = json.loads((run_copy / "pipeline" / MANIFEST).read_text())
    manifest["clusterer"]["dir"] = "../../elsewhere"
    (run_copy / "pipeline" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="unsafe folder"):
        load_pipeline(run_copy)


# Security: loading a run folder never runs code from it --------------------------------------
class Marker:
    """Unpickling this creates a file: proof that code from the pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (str(self.path),))


def malicious_pickle(marker: Path) -> bytes:
    return pickle.dumps(Marker(marker))


def test_the_malicious_pickle_really_runs_code_when_unpickled(tmp_path):
    marker = tmp_path / "control-marker"
    pickle.loads(malicious_pickle(marker))
    assert marker.exists()  # so its absence below means the pickle was never loaded


@pytest.mark.parametrize("target", ["clusterer-kmeans/state.npz", "encoder-0-pca/pca.npz"])
def test_arrays_replaced_by_a_malicious_pickle_are_never_unpickled(run_copy, tmp_path, target):
    marker = tmp_path / "pwned"
    (run_copy / "pipeline" / target).write_bytes(malicious_pickle(marker))
    with pytest.raises(ImgclustError, match="pickled Python objects.*--trust"):
        load_pipeline(run_copy)
    assert not marker.exists()
    # even with trust, array files are read without unpickling
    with pytest.raises(ImgclustError):
        load_pipeline(run_copy, trust=True)
    assert not marker.exists()


def test_a_malicious_pickled_stage_runs_only_when_trusted(cli, runs_dir, tmp_path):
    register_test_encoder()
    assert (
        cli("run", *SMALL, "--encoder", "no-format", "--no-plots", "--runs-dir", runs_dir).exit_code
        == 0
    )
    [folder] = list(runs_dir.iterdir())
    [state] = list((folder / "pipeline").rglob("*.pkl"))
    marker = tmp_path / "pwned"
    state.write_bytes(malicious_pickle(marker))
    with pytest.raises(ImgclustError, match="pickled Python objects.*--trust"):
        load_pipeline(folder)
    result = cli("predict", folder, folder / "embeddings.npy")
    assert result.exit_code != 0 and "--trust" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    with pytest.raises(ImgclustError):  # the explicit opt-in does unpickle (then fails)
        load_pipeline(folder, trust=True)
    assert marker.exists()


def lambda_keras_archive(path: Path) -> Path:
    """A ``.keras`` archive whose model config holds a Lambda layer with serialized code."""
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "m",
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "InputLayer",
                    "config": {"batch_shape": [None, 4], "dtype": "float32", "name": "input"},
                },
                {
                    "module": "keras.layers",
                    "class_name": "Lambda",
                    "config": {
                        "name": "lambda",
                        "function": {
                            "class_name": "__lambda__",
                            "config": {
                                "code": "4wEAAAAAAAAAAAAAAAEAAAADAAAA",
                                "defaults": None,
                                "closure": None,
                            },
                        },
                    },
                },
            ],
        },
    }
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        archive.writestr("config.json", json.dumps(config))
    return path


def test_a_keras_file_with_a_lambda_layer_is_refused_before_keras_sees_it(run_copy):
    lambda_keras_archive(run_copy / "pipeline" / "encoder-0-pca" / "model.keras")
    with pytest.raises(ImgclustError, match="model.keras holds a Keras Lambda layer.*--trust"):
        load_pipeline(run_copy)


def _keras_lambda_model(path: Path, marker: Path) -> Path:
    """A real Keras model whose Lambda layer creates ``marker`` whenever it is called."""
    import keras

    inputs = keras.Input(shape=(4,))
    outputs = keras.layers.Lambda(
        lambda x, m=str(marker): (__import__("os").makedirs(m, exist_ok=True), x)[1]
    )(inputs)
    keras.Model(inputs, outputs).save(path)
    shutil.rmtree(marker, ignore_errors=True)  # building the model called the Lambda once
    return path


@pytest.mark.slow
def test_a_real_keras_lambda_never_runs_even_through_the_encoders_load(tmp_path, cli, runs_dir):
    if "conv-ae" not in get_registry().names("encoders"):
        pytest.skip("the conv-ae encoder is not installed")
    result = cli(
        "run",
        "--dataset",
        "digits",
        "--encoder",
        "conv-ae",
        "--clusterer",
        "kmeans",
        "--set",
        "encoder.epochs=1",
        "--no-plots",
        "--runs-dir",
        runs_dir,
    )
    assert result.exit_code == 0, result.stderr
    [folder] = list(runs_dir.iterdir())
    [model] = list((folder / "pipeline" / "encoder-0-conv-ae").glob("*.keras"))
    marker = tmp_path / "pwned"
    _keras_lambda_model(model, marker)
    assert not marker.exists()
    with pytest.raises(ImgclustError, match="Lambda.*--trust"):
        load_pipeline(folder)
    assert not marker.exists()
    # trust skips imgclust's own check; Keras's safe_mode in the encoder still refuses
    with pytest.raises(ImgclustError, match="(?i)lambda|safe_mode"):
        load_pipeline(folder, trust=True)
    assert not marker.exists()
