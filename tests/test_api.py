"""The Python API: the README's example, imgclust.run, get_dataset/get_encoder/get_clusterer,
Pipeline fit/predict/save/load, canonical cluster numbers, and every mistake as one ImgclustError.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import imgclust
from imgclust.engine.stage import Stage, canonical_order, renumber
from imgclust.errors import DataError, ImgclustError, PluginError, SettingsError
from imgclust.results.metrics import external_scores

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = {"name": "digits", "limit": 300}


def readme_python_block() -> str:
    """The code block of the README's "From Python" section, exactly as printed."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### From Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's From Python section has no python block"
    return match.group(1)


def digits_images(limit: int | None = None) -> np.ndarray:
    return imgclust.get_dataset("digits", limit=limit).load("all").images


def small_run(runs_dir: Path, **kwargs) -> imgclust.Run:
    settings = {"encoder": {"n_components": 8}, "clusterer": {"n_clusters": 6, "n_init": 2}}
    return imgclust.run(
        dataset=SMALL,
        encoders=["pca"],
        clusterer="kmeans",
        settings=settings,
        runs_dir=runs_dir,
        **{"plots": False, **kwargs},
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> imgclust.Run:
    """One small digits run shared by the read-only tests below."""
    from imgclust.stages.host import reset_host

    reset_host()
    return small_run(tmp_path_factory.mktemp("runs"))


# The README --------------------------------------------------------------------------------------
def test_the_readme_python_example_runs_as_printed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_python_block(), "README.md", "exec"), namespace)
    run, pipe, labels = namespace["run"], namespace["pipe"], namespace["labels"]
    assert isinstance(run, imgclust.Run)
    assert run.path.is_dir() and run.path.resolve().parent == (tmp_path / "runs").resolve()
    assert (run.path / "report.html").is_file() and (run.path / "plots" / "map.png").is_file()
    assert 0.5 < run.metrics["acc"] <= 1
    assert namespace["scores"] == external_scores(namespace["y"], namespace["mine"].labels)
    assert namespace["mine"].path.name.endswith("-in-memory-pca-kmeans")
    assert run.labels.shape == (500,) and run.features.shape == (500, 20)
    assert isinstance(pipe, imgclust.Pipeline)
    assert (tmp_path / "my-pipeline" / "manifest.json").is_file()
    np.testing.assert_array_equal(labels, pipe.predict(namespace["new_images"]))
    assert labels.shape == (10,)


# imgclust.run ------------------------------------------------------------------------------------
def test_run_returns_a_typed_result_matching_its_folder(finished):
    run = finished
    assert isinstance(run.pipeline, imgclust.Pipeline)
    assert run.config["clusterer"] == {"name": "kmeans", **run.config["clusterer"]}
    assert run.config["clusterer"]["n_clusters"] == 6
    assert run.config["encoder"][0]["n_components"] == 8
    assert run.config["dataset"]["limit"] == 300
    on_disk = json.loads((run.path / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(run.metrics))
    assert run.metrics["n_clusters"] == 6 and run.metrics["n_images"] == 300
    assert sum(c["size"] for c in run.clusters) == 300
    np.testing.assert_array_equal(np.load(run.path / "embeddings.npy"), run.features)
    assert "digits -> pca -> kmeans" in repr(run)


def test_run_clusters_are_numbered_by_size_largest_first(finished):
    sizes = np.bincount(finished.labels[finished.labels != -1])
    assert list(sizes) == sorted(sizes, reverse=True)
    assert [c["cluster"] for c in finished.clusters] == list(range(len(sizes)))


def test_the_same_run_twice_writes_identical_assignments(finished, tmp_path):
    again = small_run(tmp_path)
    first = (finished.path / "assignments.csv").read_bytes()
    assert (again.path / "assignments.csv").read_bytes() == first
    assert (again.path / "clusters.md").read_bytes() == (finished.path / "clusters.md").read_bytes()


def test_a_saved_run_pipeline_predicts_the_runs_own_labels(finished):
    images = finished.data.images
    np.testing.assert_array_equal(imgclust.load(finished.path).predict(images), finished.labels)
    np.testing.assert_array_equal(finished.pipeline.predict(images), finished.labels)
    manifest = imgclust.load(finished.path).manifest
    assert sorted(manifest["cluster_order"]) == list(range(6))


def test_summary_json_has_the_timings_that_json_prints(finished):
    summary = json.loads((finished.path / "summary.json").read_text())
    timings = summary["metrics"]["timings"]
    assert {"load", "fit pca", "cluster kmeans", "score", "write", "total"} <= set(timings)
    metrics = json.loads((finished.path / "metrics.json").read_text())
    assert timings == metrics["timings"]
    assert summary == json.loads(json.dumps(finished.summary))


def test_run_is_the_api_function_and_the_runner_is_its_own_module():
    from imgclust.api import run
    from imgclust.engine.runner import execute

    assert imgclust.run is run and callable(execute)


def test_run_takes_a_recipe_and_numpy_values(tmp_path):
    run = imgclust.run(
        "pixels-kmeans",
        dataset={"name": "digits", "limit": np.int64(120)},
        settings={"clusterer.n_clusters": np.int64(3), "seed": np.int32(2)},
        runs_dir=tmp_path,
        plots=False,
    )
    assert run.config["recipe"] == "pixels-kmeans" and run.config["seed"] == 2
    assert run.metrics["n_clusters"] == 3 and len(run.labels) == 120


def test_settings_name_a_chained_encoder(tmp_path):
    run = imgclust.run(
        dataset=SMALL,
        encoders=[{"name": "pca", "n_components": 12}, "flatten"],
        clusterer={"name": "kmeans", "n_clusters": 4, "n_init": 1},
        settings={"encoder.pca": {"whiten": True}},
        runs_dir=tmp_path,
        plots=False,
    )
    assert run.config["encoder"][0] == {**run.config["encoder"][0], "n_components": 12}
    assert run.config["encoder"][0]["whiten"] is True
    assert run.features.shape == (300, 12)


def same_check(message: str) -> str:
    """An error message without the way its setting and value were written."""
    message = re.sub(r"^(--set '[^']*'|setting '[^']*'): ", "", message)
    return message.split(" = ")[0]


def _cli_error(cli, *sets: str) -> str:
    args = ["run", "--dataset", "digits", "--encoder", "pca", "--clusterer", "kmeans"]
    result = cli(*args, *[a for s in sets for a in ("--set", s)], "--no-plots")
    assert result.exit_code != 0
    return result.stderr.strip().removeprefix("Error: ")


@pytest.mark.parametrize(
    ("settings", "as_set"),
    [
        ({"clusterer": {"n_clusterz": 3}}, "clusterer.n_clusterz=3"),
        ({"clusterer": {"n_clusters": "many"}}, "clusterer.n_clusters=many"),
        ({"dataset": {"limitt": 5}}, "dataset.limitt=5"),
        ({"colour": "red"}, "colour=red"),
    ],
)
def test_settings_fail_exactly_as_set_does(settings, as_set, cli, tmp_path):
    with pytest.raises(SettingsError) as caught:
        imgclust.run(
            dataset="digits", encoders=["pca"], clusterer="kmeans", settings=settings,
            runs_dir=tmp_path, plots=False,
        )  # fmt: skip
    from_cli = _cli_error(cli, as_set)
    message = str(caught.value)
    assert "\n" not in message
    # the same check fails with the same words; only how the setting and its value are quoted
    # differ ("--set 'x=3'" and '3' on the command line, "setting 'x'" and 3 from Python)
    assert same_check(message) == same_check(from_cli)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"dataset": "digitz"}, PluginError, "Did you mean 'digits'"),
        ({"clusterer": "kmean"}, PluginError, "Did you mean 'kmeans'"),
        ({"encoders": ["pca", "umapp"]}, PluginError, "Did you mean 'umap'"),
        ({"settings": {"clusterer": {"n_clusters": 2.5}}}, SettingsError, "not a valid int"),
        ({"settings": {"clusterer": {"n_clusters": True}}}, SettingsError, "not a valid int"),
        ({"settings": {"encoder": {"whiten": "perhaps"}}}, SettingsError, "not a valid bool"),
        ({"settings": {"seed": 1.5}}, SettingsError, "seed must be an integer"),
        ({"seed": "zero"}, SettingsError, "seed must be an integer"),
        ({"settings": [("clusterer.n_clusters", 3)]}, SettingsError, "must be a mapping"),
        ({"settings": {3: 4}}, SettingsError, "setting names are text"),
        ({"dataset": {"limit": 5}}, SettingsError, "needs a 'name'"),
        ({"dataset": 7}, SettingsError, "must be a name"),
        ({"encoders": []}, SettingsError, "encoders is empty"),
        ({"encoders": 3}, SettingsError, "encoders must be a name"),
        ({"split": 0}, SettingsError, "split must be a name"),
        ({"settings": {"split": "nope"}}, SettingsError, "has no split 'nope'"),
        ({"config": "missing.toml"}, ImgclustError, "does not exist"),
    ],
)
def test_run_mistakes_are_one_line_errors(kwargs, error, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    given = {"dataset": SMALL, "encoders": ["pca"], "clusterer": "kmeans", **kwargs}
    with pytest.raises(error) as caught:
        imgclust.run(**given, runs_dir=tmp_path / "runs", plots=False)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_chained_encoders_need_to_be_named(tmp_path):
    with pytest.raises(SettingsError, match="chains 2 encoders"):
        imgclust.run(
            dataset=SMALL,
            encoders=["pca", "flatten"],
            clusterer="kmeans",
            settings={"encoder": {"n_components": 3}},
            runs_dir=tmp_path,
        )


def test_runs_dir_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "runs"
    target.write_text("not a folder")
    with pytest.raises(ImgclustError, match="is a file"):
        small_run(target)
    assert target.read_text() == "not a folder"


# Arrays in memory -------------------------------------------------------------------------------
def test_run_clusters_arrays_in_memory_into_a_run_folder_like_any_other(tmp_path, cli):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images[:300] / 16).astype(np.float64)  # (N, H, W) float64 in [0, 1]
    labels = digits.target[:300]
    ids = [f"digit-{i:03d}" for i in range(300)]
    settings = {"encoder": {"n_components": 8}, "clusterer": {"n_clusters": 10, "n_init": 2}}
    run = imgclust.run(
        images=images, labels=labels, ids=ids, encoders=["pca"], clusterer="kmeans",
        settings=settings, runs_dir=tmp_path / "runs", plots=False,
    )  # fmt: skip
    assert run.path.name.endswith("-in-memory-pca-kmeans")
    assert not (run.path / "report.html").exists() and not (run.path / "plots").exists()
    assert run.metrics["acc"] > 0.6 and run.data.images.shape == (300, 8, 8, 1)
    rows = (run.path / "assignments.csv").read_text().splitlines()
    assert rows[1].startswith("digit-000,") and len(rows) == 301
    np.testing.assert_array_equal(run.pipeline.predict(images[:50]), run.labels[:50])
    again = cli("predict", run.path, str(_saved(tmp_path, images[:20])), "--json")
    assert again.exit_code == 0, again.stderr
    # without labels: a run with internal scores only
    unlabelled = imgclust.run(
        images=(images * 255).astype(np.uint8), encoders=["pca"], clusterer="kmeans",
        settings=settings, runs_dir=tmp_path / "runs", plots=False,
    )  # fmt: skip
    assert "acc" not in unlabelled.metrics and "silhouette" in unlabelled.metrics
    # what needs the images again says, in one line, how to keep them
    for command in (("evaluate", run.path), ("export", run.path, tmp_path / "out")):
        result = cli(*command)
        assert result.exit_code != 0 and "numpy.save" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_recipe_runs_on_arrays_in_memory_without_a_warning_about_its_splits(tmp_path):
    """A recipe written for a dataset with splits ("mnist", split "all") takes images in memory
    quietly: the in-memory dataset declares the one split it has, so the recipe's split holds."""
    import warnings

    images = (np.random.default_rng(0).random((60, 8, 8)) * 255).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = imgclust.run(
            "pixels-kmeans", images=images, runs_dir=tmp_path, plots=False,
            settings={"clusterer.n_clusters": 3},
        )  # fmt: skip
    assert run.config["split"] == "all"


def _saved(folder: Path, images: np.ndarray) -> Path:
    path = folder / "new.npy"
    np.save(path, images.astype(np.float32))
    return path


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"dataset": "digits"}, SettingsError, "not both"),
        ({"images": None, "labels": [1, 2]}, SettingsError, "pass the images too"),
        ({"images": np.zeros((4, 64))}, DataError, "flat vectors"),
        ({"images": np.zeros((4, 8, 8)), "labels": [1, 2]}, DataError, "4 images but 2 labels"),
        ({"images": np.zeros((2, 8, 8)), "ids": ["a", "a"]}, DataError, "some repeat"),
        ({"images": np.zeros((2, 8, 8)), "ids": "ab"}, DataError, "list of names"),
        ({"images": np.array(["a", "b"])}, DataError, "must hold numbers"),
        ({"images": np.zeros((2, 8, 8)), "settings": {"dask": "local:1"}}, SettingsError, "Dask"),
    ],
)
def test_in_memory_mistakes_are_one_line_errors(kwargs, error, words, tmp_path):
    given = {"encoders": ["pca"], "clusterer": "kmeans", "images": np.zeros((4, 8, 8)), **kwargs}
    with pytest.raises(error) as caught:
        imgclust.run(**given, runs_dir=tmp_path / "runs", plots=False)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "runs").exists()


# Notebooks ---------------------------------------------------------------------------------------
def test_a_run_shows_its_summary_scores_montages_and_report_in_a_notebook(tmp_path):
    import dataclasses

    run = small_run(tmp_path, plots=True)
    view = run._repr_html_()
    assert run.path.name in view and "ACC" in view and f"{run.metrics['acc']:.4f}" in view
    assert view.count('<img src="data:image/png;base64,') == 1  # clusters.png: every cluster
    assert f'href="{(run.path / "report.html").as_posix()}"' in view
    # a hostile summary is escaped; a link planted among the montages is not embedded
    (run.path / "plots" / "clusters").mkdir()
    (run.path / "plots" / "clusters" / "cluster-0.png").symlink_to("/etc/hostname")
    forged = dataclasses.replace(run, summary={"pipeline": "<script>alert(1)</script>"})
    view = forged._repr_html_()
    assert "<script>" not in view and "&lt;script&gt;" in view and "cluster-0.png" not in view


def test_a_run_without_plots_and_a_pipeline_show_themselves(finished):
    view = finished._repr_html_()
    assert "<img" not in view and "imgclust report" in view and "report.html" in view
    pipe = finished.pipeline._repr_html_()
    assert "Pipeline, fitted, for 8x8x1 images" in pipe
    assert pipe.index("encoder <b>pca</b>") < pipe.index("clusterer <b>kmeans</b>")
    assert "<th>n_clusters</th><td>6</td>" in pipe
    unfitted = imgclust.Pipeline(["pca"], "kmeans")._repr_html_()
    assert "Pipeline, unfitted" in unfitted


# get_dataset / get_encoder / get_clusterer -------------------------------------------------------
def test_get_stage_builds_checked_stages_that_act_as_the_instance():
    dataset = imgclust.get_dataset("digits", limit=40)
    assert isinstance(dataset, Stage) and dataset.name == "digits"
    assert len(dataset.load("all")) == 40
    encoder = imgclust.get_encoder("pca", n_components="5")  # strings convert, as --set's do
    assert encoder.settings["n_components"] == 5 and encoder.instance.n_components == 5
    clusterer = imgclust.get_clusterer("kmeans", n_clusters=np.int64(4))
    assert clusterer.settings["n_clusters"] == 4 and clusterer.settings["seed"] == 0
    features = encoder.fit(digits_images(60)).transform(digits_images(60))
    assert features.shape == (60, 5)
    assert clusterer.fit_predict(features).shape == (60,)


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda: imgclust.get_encoder("pcaa"), PluginError, "Did you mean 'pca'"),
        (lambda: imgclust.get_dataset("mnistt"), PluginError, "Did you mean 'mnist'"),
        (lambda: imgclust.get_clusterer("kmeans", k=3), SettingsError, "Accepted: n_clusters"),
        (lambda: imgclust.get_clusterer("kmeans", n_clusters=[3]), SettingsError, "valid int"),
        (lambda: imgclust.get_encoder("pca", n_components=None), SettingsError, "valid int"),
        (lambda: imgclust.get_dataset("image-folder"), SettingsError, "needs the setting"),
        (lambda: imgclust.get_encoder(3), SettingsError, "name must be text"),
        (lambda: imgclust.get_clusterer("gmm", n_clusters=0), SettingsError, "n_clusters >= 1"),
    ],
)
def test_get_stage_mistakes_are_one_line_errors(call, error, words):
    with pytest.raises(error) as caught:
        call()
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_more_clusters_than_images_is_one_line():
    pipe = imgclust.Pipeline(["pca"], imgclust.get_clusterer("kmeans", n_clusters=100))
    with pytest.raises(DataError, match="only 50 images"):
        pipe.fit(digits_images(50))


# Pipeline ----------------------------------------------------------------------------------------
def test_pipeline_from_names_and_from_stages_agree():
    images = digits_images(400)
    by_name = imgclust.Pipeline(["pca"], "kmeans").fit_predict(images)
    by_stage = imgclust.Pipeline(
        [imgclust.get_encoder("pca")], imgclust.get_clusterer("kmeans")
    ).fit_predict(images)
    np.testing.assert_array_equal(by_name, by_stage)
    by_mapping = imgclust.Pipeline({"name": "pca"}, {"name": "kmeans", "n_clusters": 10})
    np.testing.assert_array_equal(by_mapping.fit_predict(images), by_name)


def test_pipeline_takes_hw_and_hwc_uint8_and_float_images():
    images = digits_images(300)
    pipe = imgclust.Pipeline(["pca"], imgclust.get_clusterer("kmeans", n_clusters=5))
    labels = pipe.fit_predict(images[..., 0])
    assert pipe.input_shape == (8, 8, 1)
    np.testing.assert_array_equal(pipe.predict(images), labels)
    np.testing.assert_array_equal(pipe.predict(images.astype(np.float32) / 255), labels)
    np.testing.assert_array_equal(pipe.predict(images.astype(np.float64) / 255), labels)
    assert pipe.transform(images[..., 0]).shape == (300, 50)  # pca keeps 50 by default
    sizes = np.bincount(labels)
    assert list(sizes) == sorted(sizes, reverse=True)


def test_pipeline_save_load_round_trip_keeps_numbers(tmp_path):
    images = digits_images(300)
    pipe = imgclust.Pipeline(
        [imgclust.get_encoder("pca", n_components=12)],
        imgclust.get_clusterer("gmm", n_clusters=4),
    ).fit(images)
    folder = pipe.save(tmp_path / "nested" / "pipe")
    loaded = imgclust.load(folder)
    assert isinstance(loaded, imgclust.Pipeline) and loaded.can_predict
    assert loaded.input_shape == (8, 8, 1) and loaded.manifest["input"]["dtype"] == "uint8"
    assert loaded.manifest["seed"] is None and "dataset" not in loaded.manifest["preprocessing"]
    np.testing.assert_array_equal(loaded.predict(images), pipe.labels_)
    labels, scores = loaded.assign(images[:20])
    assert "probability" in scores and labels.shape == (20,)
    assert loaded.encoders[0].settings["n_components"] == 12
    # a loaded pipeline saves again, and the copy predicts the same
    again = imgclust.load(loaded.save(tmp_path / "copy"))
    np.testing.assert_array_equal(again.predict(images), pipe.labels_)


def test_the_cli_reads_a_pipeline_saved_from_python(tmp_path, cli):
    images = digits_images(300)
    pipe = imgclust.Pipeline(["pca"], imgclust.get_clusterer("kmeans", n_clusters=10)).fit(images)
    folder = pipe.save(tmp_path / "pipe")
    np.save(tmp_path / "images.npy", images[:7])
    result = cli("predict", folder, tmp_path / "images.npy", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["assignments"]
    assert [r["cluster"] for r in rows] == pipe.labels_[:7].tolist()
    result = cli("evaluate", folder)
    assert result.exit_code != 0 and "pass --dataset NAME" in result.stderr
    result = cli("evaluate", folder, "--dataset", "digits", "--set", "dataset.limit=300", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["n_images"] == 300


def test_save_never_overwrites_what_it_did_not_make(tmp_path):
    pipe = imgclust.Pipeline(["pca"], imgclust.get_clusterer("kmeans", n_clusters=3))
    with pytest.raises(ImgclustError, match="not fitted"):
        pipe.save(tmp_path / "early")
    assert not (tmp_path / "early").exists()
    pipe.fit(digits_images(100))
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ImgclustError, match="not a pipeline imgclust saved"):
        pipe.save(precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me too")
    with pytest.raises(ImgclustError, match="not a pipeline imgclust saved"):
        pipe.save(a_file)
    assert a_file.read_text() == "keep me too"
    empty = tmp_path / "empty"
    empty.mkdir()
    pipe.save(empty)
    with pytest.raises(ImgclustError, match="overwrite=True"):
        pipe.save(empty)
    pipe.save(empty, overwrite=True)
    assert imgclust.load(empty).can_predict


def test_pipeline_mistakes_are_one_line_errors():
    pipe = imgclust.Pipeline(["pca"], imgclust.get_clusterer("kmeans", n_clusters=3))
    with pytest.raises(ImgclustError, match="not fitted"):
        pipe.predict(digits_images(10))
    with pytest.raises(ImgclustError, match="not fitted"):
        pipe.transform(digits_images(10))
    with pytest.raises(SettingsError, match="must be a name"):
        imgclust.Pipeline([42], "kmeans")
    with pytest.raises(PluginError, match="Did you mean 'kmeans'"):
        imgclust.Pipeline(["pca"], "kmaens")
    pipe.fit(digits_images(100))
    bad = {
        "wrong size": np.zeros((3, 9, 9), np.uint8),
        "flat vectors": np.zeros((3, 64), np.uint8),
        "no images": np.zeros((0, 8, 8), np.uint8),
        "NaN": np.full((3, 8, 8), np.nan, np.float32),
        "out of range": np.full((3, 8, 8), 900.0),
        "text": np.full((3, 8, 8), "x"),
        "ragged": [[1, 2], [3]],
    }
    for what, images in bad.items():
        with pytest.raises(DataError) as caught:
            pipe.predict(images)
        assert "\n" not in str(caught.value), what


def test_a_clusterer_that_cannot_predict_fits_but_says_so(tmp_path):
    images = digits_images(200)
    pipe = imgclust.Pipeline(["pca"], imgclust.get_clusterer("agglomerative", n_clusters=4))
    labels = pipe.fit_predict(images)
    assert labels.shape == (200,) and not pipe.can_predict
    with pytest.raises(ImgclustError, match="cannot assign new images.*kmeans"):
        pipe.predict(images)
    loaded = imgclust.load(pipe.save(tmp_path / "agg"))
    with pytest.raises(ImgclustError, match="cannot assign new images"):
        loaded.predict(images)
    assert loaded.transform(images).shape == (200, 50)


def test_a_bare_registered_instance_keeps_its_name_and_settings(tmp_path):
    from imgclust.plugins.basic_encoders import PCAEncoder

    pipe = imgclust.Pipeline([PCAEncoder(n_components=6)], imgclust.get_clusterer("kmeans"))
    assert pipe.encoders[0].name == "pca" and pipe.encoders[0].settings["n_components"] == 6
    images = digits_images(200)
    pipe.fit(images)
    loaded = imgclust.load(pipe.save(tmp_path / "bare"))
    assert loaded.manifest["encoders"][0]["settings"]["n_components"] == 6
    np.testing.assert_array_equal(loaded.predict(images), pipe.labels_)


def test_an_unregistered_encoder_fits_and_predicts_but_is_not_saved(tmp_path):
    class PCA:  # a stranger's class whose name looks like a registered one
        def fit(self, images, validation=None):
            return self

        def transform(self, images):
            return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255

    images = digits_images(120)
    pipe = imgclust.Pipeline(PCA(), imgclust.get_clusterer("kmeans", n_clusters=3)).fit(images)
    np.testing.assert_array_equal(pipe.predict(images), pipe.labels_)
    with pytest.raises(ImgclustError, match="'PCA\\(\\)' is not a registered stage"):
        pipe.save(tmp_path / "stranger")
    assert not (tmp_path / "stranger").exists()


# Canonical numbers -------------------------------------------------------------------------------
def test_canonical_order_is_by_size_then_first_member():
    raw = np.array([7, 3, 3, -1, 5, 7, 5, 9, 3])
    order = canonical_order(raw)
    # 3 has three members; 7 and 5 two each (7 comes first); 9 one
    assert order.tolist() == [3, 7, 5, 9]
    assert renumber(raw, order).tolist() == [1, 0, 0, -1, 2, 1, 2, 3, 0]
    # a number the fit never produced stays distinct and stable; identity without an order
    assert renumber(np.array([4, 3, -1]), order).tolist() == [8, 0, -1]
    assert renumber(raw, None).tolist() == raw.tolist()


def test_the_clusterers_own_numbers_are_permuted_not_changed():
    images = digits_images(300)
    pipe = imgclust.Pipeline(["pca"], imgclust.get_clusterer("kmeans", n_clusters=5)).fit(images)
    raw = pipe.clusterer.instance.predict(pipe.transform(images))
    pairs = set(zip(raw.tolist(), pipe.labels_.tolist(), strict=True))
    assert len(pairs) == 5  # one canonical number per raw number


def test_an_old_manifest_without_cluster_order_means_identity(finished, tmp_path):
    import shutil

    folder = tmp_path / "old"
    shutil.copytree(finished.path / "pipeline", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["cluster_order"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    loaded = imgclust.load(folder)
    images = finished.data.images
    raw = loaded.clusterer.instance.predict(loaded.transform(images))
    np.testing.assert_array_equal(loaded.predict(images), raw)


@pytest.mark.parametrize("damage", [[0, 0, 1], ["a"], "0,1", [True], [-3], {"0": 1}])
def test_a_damaged_cluster_order_is_refused(finished, tmp_path, damage):
    import shutil

    folder = tmp_path / "damaged"
    shutil.copytree(finished.path / "pipeline", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["cluster_order"] = damage
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="cluster_order"):
        imgclust.load(folder)


# Import cost -------------------------------------------------------------------------------------
def test_the_api_names_import_no_heavy_library():
    """``import imgclust`` imports nothing heavy; its API names import scikit-learn's base
    classes only (their objects are scikit-learn estimators), never a network library."""
    code = (
        "import sys, imgclust\n"
        "heavy = ('tensorflow', 'keras', 'umap', 'numba', 'hdbscan', 'matplotlib', 'sklearn')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "for name in ('run', 'Run', 'Pipeline', 'Stage', 'load', 'get_dataset', 'get_encoder',\n"
        "             'get_clusterer', 'ImgclustError'):\n"
        "    getattr(imgclust, name)\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["[]", "['sklearn']"]
