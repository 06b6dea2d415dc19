"""``Pipeline.save(folder, overwrite=True)`` replaces only a folder that holds nothing but a
pipeline imgclust wrote (its mark, manifest and stage folders); a stage without a file format
is declared stateless or warned about when the pipeline is saved, not when predict is tried."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest

import imgclust
from imgclust import hookimpl
from imgclust.engine.persist import MARK, StageNotSavedWarning
from imgclust.errors import ImgclustError
from imgclust.stages.host import get_host


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images[:200, :, :, None].astype(np.uint8)


def fitted(images: np.ndarray) -> imgclust.Pipeline:
    return imgclust.Pipeline(
        [imgclust.get_encoder("pca", n_components=6)],
        imgclust.get_clusterer("kmeans", n_clusters=4),
    ).fit(images)


def test_a_folder_with_a_manifest_json_of_its_own_is_never_replaced(tmp_path, images):
    app = tmp_path / "web-app"
    (app / "src").mkdir(parents=True)
    (app / "src" / "index.js").write_text("console.log(1)")
    (app / "README.md").write_text("my app")
    (app / "manifest.json").write_text('{"name": "my app"}')
    with pytest.raises(ImgclustError) as refused:
        fitted(images).save(app, overwrite=True)
    message = str(refused.value)
    assert "is not a pipeline imgclust saved" in message and "overwrite" not in message
    assert len(message.splitlines()) == 1
    assert (app / "src" / "index.js").read_text() == "console.log(1)"
    assert (app / "README.md").read_text() == "my app"


def test_a_saved_pipeline_with_a_users_file_added_is_never_replaced(tmp_path, images):
    folder = fitted(images).save(tmp_path / "pipe")
    (folder / "notes.md").write_text("mine")
    with pytest.raises(ImgclustError, match=r"holds 'notes.md' besides the pipeline") as refused:
        fitted(images).save(folder, overwrite=True)
    assert "overwrite" not in str(refused.value)
    assert (folder / "notes.md").read_text() == "mine"


def test_a_pipeline_imgclust_saved_is_replaced_only_with_overwrite(tmp_path, images):
    folder = fitted(images).save(tmp_path / "pipe")
    assert (folder / MARK).is_file()
    with pytest.raises(ImgclustError, match="pass overwrite=True"):
        fitted(images).save(folder)
    other = imgclust.Pipeline(
        [imgclust.get_encoder("pca", n_components=5)],
        imgclust.get_clusterer("kmeans", n_clusters=3),
    ).fit(images)
    other.save(folder, overwrite=True)
    assert imgclust.load(folder).encoders[0].settings["n_components"] == 5


def test_a_link_to_a_saved_pipeline_is_not_replaced(tmp_path, images):
    folder = fitted(images).save(tmp_path / "pipe")
    link = tmp_path / "link"
    link.symlink_to(folder, target_is_directory=True)
    with pytest.raises(ImgclustError, match="is not a pipeline imgclust saved"):
        fitted(images).save(link, overwrite=True)
    assert link.is_symlink() and (folder / MARK).is_file()


def test_a_pipeline_saved_before_the_mark_still_loads_but_is_not_replaced(tmp_path, images):
    pipe = fitted(images)
    folder = pipe.save(tmp_path / "old")
    (folder / MARK).unlink()
    np.testing.assert_array_equal(imgclust.load(folder).predict(images), pipe.labels_)
    with pytest.raises(ImgclustError, match="has no .imgclust-pipeline mark"):
        pipe.save(folder, overwrite=True)
    assert (folder / "manifest.json").is_file()


class Centred:
    """A test encoder with fitted state and no file format: it cannot be saved without pickle."""

    def fit(self, images, validation=None):
        self.mean_ = np.asarray(images, dtype=np.float32).reshape(len(images), -1).mean(axis=0)
        self.hook_ = lambda x: x  # unpicklable: the pipeline cannot keep this stage
        return self

    def transform(self, images):
        return np.asarray(images, dtype=np.float32).reshape(len(images), -1) - self.mean_


class Flat:
    """A test encoder with nothing fitted, declared so: it needs no save/load."""

    stateless = True

    def fit(self, images, validation=None):
        return self

    def transform(self, images):
        return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0


def register(**encoders: type) -> None:
    get_host().register(
        SimpleNamespace(
            register_encoders=hookimpl(
                lambda register: [register(name, cls) for name, cls in encoders.items()]
            )
        ),
        name="test-stateless",
    )


def test_a_stage_without_save_is_warned_about_when_the_run_saves_it(tmp_path, images):
    register(centred=Centred)
    pipe = imgclust.Pipeline(
        [imgclust.get_encoder("centred")], imgclust.get_clusterer("kmeans", n_clusters=4)
    ).fit(images)
    with pytest.warns(StageNotSavedWarning, match="the saved pipeline cannot predict: encoder"):
        pipe.save(tmp_path / "pipe")


def test_the_cli_run_says_at_once_that_it_cannot_predict(tmp_path, cli, images):
    register(centred=Centred)
    np.save(tmp_path / "x.npy", images)
    with pytest.warns(StageNotSavedWarning, match="cannot predict: encoder 'centred'"):
        result = cli(
            "run", "--dataset", "arrays", "--encoder", "centred", "--clusterer", "kmeans",
            "--set", f"dataset.path={tmp_path / 'x.npy'}", "--set", "clusterer.n_clusters=3",
            "--runs-dir", tmp_path / "runs", "--no-plots",
        )  # fmt: skip
    assert result.exit_code == 0, result.stderr


def test_a_stateless_stage_saves_no_files_and_predicts_without_trust(tmp_path, images):
    register(flat=Flat)
    pipe = imgclust.Pipeline(
        [imgclust.get_encoder("flat")], imgclust.get_clusterer("kmeans", n_clusters=4)
    ).fit(images)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StageNotSavedWarning)
        folder = pipe.save(tmp_path / "pipe")
    assert pipe.manifest["encoders"][0]["format"] == "stateless"
    assert sorted(p.name for p in folder.iterdir()) == [MARK, "clusterer-kmeans", "manifest.json"]
    loaded = imgclust.load(folder)
    assert not loaded.manifest["needs_trust"]
    np.testing.assert_array_equal(loaded.predict(images), pipe.labels_)


def test_a_manifest_calling_a_stateful_stage_stateless_is_refused(tmp_path, images):
    import json

    register(flat=Flat, centred=Centred)
    folder = (
        imgclust.Pipeline(
            [imgclust.get_encoder("flat")], imgclust.get_clusterer("kmeans", n_clusters=4)
        )
        .fit(images)
        .save(tmp_path / "pipe")
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["encoders"][0]["name"] = "centred"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ImgclustError, match="does not declare it stateless"):
        imgclust.load(folder)


def test_a_resumed_runs_pipeline_link_is_refused_not_followed(tmp_path, images):
    """A run folder's pipeline/ that links elsewhere is never emptied through the link."""
    from imgclust.engine.persist import save_pipeline

    elsewhere = tmp_path / "precious"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    run = tmp_path / "run.incomplete"
    run.mkdir()
    (run / "pipeline").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ImgclustError, match="is a link or a file"):
        save_pipeline(fitted(images), run)
    assert (elsewhere / "keep.txt").read_text() == "mine"
    assert [p.name for p in run.iterdir()] == ["pipeline"]
