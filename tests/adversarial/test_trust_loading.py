"""Crafted run folders: without --trust, nothing in the folder chooses what code runs.

Each attack edits a private copy of a finished digits -> pca -> kmeans run and is tried through
``imgclust.load()`` and the commands that load a run (``predict``, ``evaluate``, ``report``).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import pickle
import shutil
import stat
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import imgclust
from imgclust.errors import ImgclustError

CLUSTERER = Path("pipeline") / "clusterer-kmeans"


class Marker:
    """Unpickling this creates a file: proof that code from the pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (str(self.path),))


def digit_images(n: int = 5) -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[:n] * (255 / 16)).astype(np.uint8)[..., None]


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def edit_estimator(run: Path, change) -> None:
    edit_json(run / CLUSTERER / "estimator.json", change)


def edit_manifest(run: Path, change) -> None:
    edit_json(run / "pipeline" / "manifest.json", change)


def one_line_failure(result) -> str:
    """The stderr of a failed command, checked to be one clear line."""
    assert result.exit_code != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "unexpected" not in lines[0] and "Traceback" not in result.stderr
    return lines[0]


def make_report_load_the_pipeline(run: Path) -> None:
    """``report`` loads the pipeline only for an encoder that reconstructs: name one."""
    config = run / "config.toml"
    text = config.read_text()
    start, end = text.index("[[encoder]]"), text.index("[clusterer]")
    config.write_text(text[:start] + '[[encoder]]\nname = "conv-ae"\n\n' + text[end:])


def try_every_way(cli, run: Path, tmp_path: Path) -> list[str]:
    """Load the tampered run through the API, predict, evaluate and report; return the errors."""
    messages = []
    with pytest.raises(ImgclustError) as caught:
        imgclust.load(run)
    messages.append(str(caught.value))
    inputs = tmp_path / "new.npy"
    np.save(inputs, digit_images())
    messages.append(one_line_failure(cli("predict", run, inputs)))
    messages.append(one_line_failure(cli("evaluate", run)))
    make_report_load_the_pipeline(run)
    report = cli("report", run, "--json")
    assert "Traceback" not in report.stderr and "unexpected" not in report.stderr
    notes = [line for line in report.stderr.splitlines() if "pipeline not loaded" in line]
    assert notes, report.stderr
    messages.append(notes[0])
    return messages


# Estimators named by the folder --------------------------------------------------------------
def test_a_compressed_pickle_reached_through_a_dataset_fetcher_never_runs(run_copy, tmp_path, cli):
    """``fetch_olivetti_faces(data_home=<run folder>)`` would ``joblib.load`` a zlib pickle."""
    marker = tmp_path / "pwned"
    home = run_copy / CLUSTERER
    (home / "olivetti_py3.pkz").write_bytes(zlib.compress(pickle.dumps(Marker(marker))))
    edit_estimator(
        run_copy,
        lambda m: m.update(
            {
                "class": "sklearn.datasets.fetch_olivetti_faces",
                "format": "labels",
                "params": {"data_home": str(home), "download_if_missing": False},
            }
        ),
    )
    messages = try_every_way(cli, run_copy, tmp_path)
    assert not marker.exists()
    for message in messages:
        assert "pickle" in message or "fetch_olivetti_faces" in message, message


def test_only_the_estimator_the_plugin_builds_is_rebuilt(run_copy, tmp_path, cli):
    """``dump_svmlight_file`` named as the class would write any file the user can write."""
    written = tmp_path / "written-by-the-folder.txt"
    edit_estimator(
        run_copy,
        lambda m: m.update(
            {
                "class": "sklearn.datasets.dump_svmlight_file",
                "format": "labels",
                "params": {"X": [[1.0]], "y": [1], "f": str(written)},
            }
        ),
    )
    messages = try_every_way(cli, run_copy, tmp_path)
    assert not written.exists()
    for message in messages:
        assert "dump_svmlight_file" in message and "KMeans" in message, message


@pytest.mark.parametrize(
    "name",
    [
        "sklearn.cluster.Birch",
        "sklearn.cluster._kmeans.MiniBatchKMeans",
        "os.system",
        "builtins.eval",
        "",
        None,
        42,
        ["sklearn.cluster.KMeans"],
    ],
)
def test_an_estimator_class_other_than_the_plugins_is_refused(run_copy, name):
    edit_estimator(run_copy, lambda m: m.update({"class": name}))
    with pytest.raises(ImgclustError, match="KMeans"):
        imgclust.load(run_copy)


def test_a_short_estimator_key_other_than_the_plugins_is_refused(run_copy):
    edit_estimator(run_copy, lambda m: m.update({"estimator": "Birch"}))
    with pytest.raises(ImgclustError, match="Birch.*KMeans"):
        imgclust.load(run_copy)


@pytest.mark.parametrize(
    "params, word",
    [
        ({"evil": 1}, "evil"),
        ({"__class__": "x"}, "__class__"),
        ({"n_clusters": "ten"}, "n_clusters"),
        ({"n_clusters": [10]}, "n_clusters"),
        ({"n_clusters": {"a": 1}}, "n_clusters"),
        ({"n_clusters": 2.5}, "n_clusters"),
        ({"n_clusters": True}, "n_clusters"),
        ({"n_clusters": -3}, "n_clusters"),
        ({"tol": "0.1"}, "tol"),
        ({"algorithm": "bogus"}, "algorithm"),
        ({"init": [[0.0] * 8] * 10}, "init"),
    ],
)
def test_estimator_parameters_are_checked_against_the_class(run_copy, cli, tmp_path, params, word):
    edit_estimator(run_copy, lambda m: m["params"].update(params))
    with pytest.raises(ImgclustError, match=word):
        imgclust.load(run_copy)
    inputs = tmp_path / "new.npy"
    np.save(inputs, digit_images())
    assert word in one_line_failure(cli("predict", run_copy, inputs))


@pytest.mark.parametrize("params", ["n_clusters=10", ["n_clusters"], 7])
def test_estimator_parameters_must_be_a_mapping(run_copy, params):
    edit_estimator(run_copy, lambda m: m.update({"params": params}))
    with pytest.raises(ImgclustError, match="estimator.json"):
        imgclust.load(run_copy)


@pytest.mark.parametrize("text", ["{not json", "[]", '"x"', "\udcff"])
def test_a_damaged_estimator_file_is_one_line(run_copy, cli, tmp_path, text):
    (run_copy / CLUSTERER / "estimator.json").write_text(text, errors="surrogateescape")
    with pytest.raises(ImgclustError, match="estimator.json"):
        imgclust.load(run_copy)


@pytest.mark.parametrize(
    "key, value",
    [
        ("predict", np.zeros(3)),  # a method of the class
        ("__dict__", np.zeros(3)),
        ("n_clusters", np.array(3)),  # a parameter, not fitted state
        ("evil", np.zeros(3)),  # not among the fitted attributes of KMeans
    ],
)
def test_fitted_state_cannot_overwrite_methods_or_parameters(run_copy, key, value):
    path = run_copy / CLUSTERER / "state.npz"
    with np.load(path, allow_pickle=False) as archive:
        state = {k: archive[k] for k in archive.files}
    state[key] = value
    with open(path, "wb") as handle:
        np.savez(handle, **state)
    with pytest.raises(ImgclustError, match=key):
        imgclust.load(run_copy)


def test_an_array_that_claims_more_data_than_its_file_holds_is_refused(run_copy):
    """A ``.npy`` header of 10^12 float64 in a tiny file would allocate before failing."""
    import zipfile

    path = run_copy / CLUSTERER / "state.npz"
    with np.load(path, allow_pickle=False) as archive:
        state = {k: archive[k] for k in archive.files}
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in state.items():
            with archive.open(f"{key}.npy", "w") as member:
                np.lib.format.write_array(member, value)
        header = {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
        with archive.open("inertia_x.npy", "w") as member:
            np.lib.format.write_array_header_1_0(member, header)
    with pytest.raises(ImgclustError, match="inertia_x"):
        imgclust.load(run_copy)


# Pickles the audit must see --------------------------------------------------------------------
@pytest.mark.parametrize(
    "compress",
    [zlib.compress, gzip.compress, bz2.compress, lzma.compress],
    ids=["zlib", "gzip", "bz2", "lzma"],
)
def test_a_compressed_pickle_anywhere_in_the_folder_is_refused(run_copy, tmp_path, compress):
    marker = tmp_path / "pwned"
    (run_copy / CLUSTERER / "cache.bin").write_bytes(compress(pickle.dumps(Marker(marker))))
    with pytest.raises(ImgclustError, match="cache.bin.*pickle.*--trust"):
        imgclust.load(run_copy)
    assert not marker.exists()


# Paths that leave the folder -------------------------------------------------------------------
def outside_copy(run: Path, tmp_path: Path, relative: Path) -> Path:
    """Move a file or folder of the run outside it and leave a symlink in its place."""
    target = tmp_path / "elsewhere" / relative.name
    target.parent.mkdir(exist_ok=True)
    shutil.move(run / relative, target)
    (run / relative).symlink_to(target)
    return target


@pytest.mark.parametrize(
    "relative",
    [
        CLUSTERER / "state.npz",
        CLUSTERER / "estimator.json",
        CLUSTERER,
        Path("pipeline") / "encoder-0-pca",
        Path("pipeline") / "manifest.json",
        Path("pipeline"),
    ],
    ids=lambda p: str(p),
)
def test_a_symlink_out_of_the_run_folder_is_refused(run_copy, tmp_path, cli, relative):
    outside_copy(run_copy, tmp_path, relative)
    with pytest.raises(ImgclustError, match="outside"):
        imgclust.load(run_copy)
    with pytest.raises(ImgclustError, match="outside"):
        imgclust.load(run_copy, trust=True)  # trust is about pickles, not about leaving the folder
    inputs = tmp_path / "new.npy"
    np.save(inputs, digit_images())
    assert "outside" in one_line_failure(cli("predict", run_copy, inputs, "--trust"))


def test_a_symlink_that_stays_inside_the_pipeline_folder_is_followed(run_copy):
    state = run_copy / CLUSTERER / "state.npz"
    shutil.move(state, run_copy / "pipeline" / "kept.npz")
    state.symlink_to(Path("..") / "kept.npz")
    assert imgclust.load(run_copy).predict(digit_images()).shape == (5,)


def test_a_fifo_in_the_folder_is_refused_instead_of_blocking(run_copy):
    state = run_copy / CLUSTERER / "state.npz"
    state.unlink()
    os.mkfifo(state)
    with pytest.raises(ImgclustError, match="not a regular file"):
        imgclust.load(run_copy)


@pytest.mark.parametrize("folder", ["../../elsewhere", "/tmp", ".", "..", "a/b", "", 5, None])
def test_stage_folders_named_by_the_manifest_stay_inside(run_copy, folder):
    edit_manifest(run_copy, lambda m: m["clusterer"].update(dir=folder))
    with pytest.raises(ImgclustError, match="folder|dir"):
        imgclust.load(run_copy)


# The manifest ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape",
    [[20000, 20000, 1], [10**30, 8, 1], [8, 8, 0], [8, 8, 7], [-8, 8, 1], [0, 8, 1], [8, 8]],
    ids=str,
)
def test_a_bad_or_huge_input_shape_is_refused_before_anything_is_allocated(
    run_copy, cli, tmp_path, shape
):
    edit_manifest(run_copy, lambda m: m["input"].update(shape=shape))
    with pytest.raises(ImgclustError, match="input shape"):
        imgclust.load(run_copy)
    inputs = tmp_path / "new.npy"
    np.save(inputs, digit_images())
    assert "input shape" in one_line_failure(cli("predict", run_copy, inputs))


@pytest.mark.parametrize("shape", [["8", 8, 1], [8.5, 8, 1], [True, 8, 1], "8x8", None, {}])
def test_an_input_shape_of_the_wrong_types_is_refused(run_copy, shape):
    edit_manifest(run_copy, lambda m: m["input"].update(shape=shape))
    with pytest.raises(ImgclustError, match="input shape"):
        imgclust.load(run_copy)


def test_the_pixel_limit_is_stated_and_can_be_changed(run_copy, cli, tmp_path, monkeypatch):
    from PIL import Image

    from imgclust.engine.manifest import MAX_INPUT_PIXELS

    edit_manifest(run_copy, lambda m: m["input"].update(shape=[20000, 20000, 1]))
    with pytest.raises(ImgclustError, match=f"{MAX_INPUT_PIXELS:,}.*IMGCLUST_MAX_INPUT_PIXELS"):
        imgclust.load(run_copy)
    # three small PNGs against a limit lowered below the (real) fitted 8x8
    edit_manifest(run_copy, lambda m: m["input"].update(shape=[8, 8, 1]))
    for i in range(3):
        Image.fromarray(digit_images()[i, ..., 0]).save(tmp_path / f"{i}.png")
    monkeypatch.setenv("IMGCLUST_MAX_INPUT_PIXELS", "63")
    assert "64 pixels" in one_line_failure(cli("predict", run_copy, *tmp_path.glob("*.png")))
    monkeypatch.setenv("IMGCLUST_MAX_INPUT_PIXELS", "lots")
    assert "IMGCLUST_MAX_INPUT_PIXELS" in one_line_failure(cli("predict", run_copy, tmp_path))
    monkeypatch.setenv("IMGCLUST_MAX_INPUT_PIXELS", "64")
    result = cli("predict", run_copy, *tmp_path.glob("*.png"))
    assert result.exit_code == 0, result.stderr


WRONG_TYPES = {
    "encoders-string": lambda m: m.update(encoders="pca"),
    "encoders-items": lambda m: m.update(encoders=[5]),
    "encoders-none": lambda m: m.update(encoders=None),
    "clusterer-list": lambda m: m.update(clusterer=["kmeans"]),
    "clusterer-name": lambda m: m["clusterer"].update(name=5),
    "clusterer-name-list": lambda m: m["clusterer"].update(name=["kmeans"]),
    "clusterer-settings": lambda m: m["clusterer"].update(settings="n_clusters=10"),
    "clusterer-settings-values": lambda m: m["clusterer"].update(settings={"n_clusters": [1]}),
    "clusterer-saved": lambda m: m["clusterer"].update(saved="yes"),
    "clusterer-format": lambda m: m["clusterer"].update(format=["native"]),
    "clusterer-reason": lambda m: m["clusterer"].update(saved=False, reason={"a": 1}),
    "clusterer-can-predict": lambda m: m["clusterer"].update(can_predict="no"),
    "encoder-settings": lambda m: m["encoders"][0].update(settings=[1, 2]),
    "encoder-plugin": lambda m: m["encoders"][0].update(name="pixie", plugin={"x": 1}),
    "input": lambda m: m.update(input=[8, 8, 1]),
    "preprocessing": lambda m: m.update(preprocessing="digits"),
    "preprocessing-dataset": lambda m: m["preprocessing"].update(dataset=["digits"]),
    "can-predict": lambda m: m.update(can_predict="true"),
    "reason": lambda m: m.update(can_predict=False, reason=["x"]),
    "needs-trust": lambda m: m.update(needs_trust="no"),
    "whole": lambda m: (m.clear(), m.update(format="imgclust-pipeline", format_version=1)),
}


@pytest.mark.parametrize("change", list(WRONG_TYPES.values()), ids=list(WRONG_TYPES))
def test_a_manifest_with_values_of_the_wrong_type_is_one_line(run_copy, cli, tmp_path, change):
    edit_manifest(run_copy, change)
    with pytest.raises(ImgclustError):
        imgclust.load(run_copy)
    inputs = tmp_path / "new.npy"
    np.save(inputs, digit_images())
    one_line_failure(cli("predict", run_copy, inputs))
    one_line_failure(cli("evaluate", run_copy))


def test_a_manifest_that_is_not_an_object_is_one_line(run_copy, cli):
    (run_copy / "pipeline" / "manifest.json").write_text("[1, 2, 3]")
    with pytest.raises(ImgclustError, match="manifest"):
        imgclust.load(run_copy)
    one_line_failure(cli("evaluate", run_copy))


# Plugins ---------------------------------------------------------------------------------------
def test_a_clusterer_name_two_plugins_register_is_reported_as_a_collision(run_copy, cli, tmp_path):
    from imgclust.stages.hookspecs import hookimpl
    from imgclust.stages.host import get_host

    def register_clusterers(register):
        register("kmeans", lambda **settings: None)

    get_host().register(
        SimpleNamespace(register_clusterers=hookimpl(register_clusterers)), name="kmeans-twin"
    )
    # the manifest records which plugin made the stage: that one loads, the twin is never built
    loaded = imgclust.load(run_copy)
    assert loaded.clusterer.instance is not None and loaded.clusterer.name == "kmeans"

    def other_plugin(manifest):
        manifest["clusterer"]["plugin"] = "not-an-owner"

    edit_manifest(run_copy, other_plugin)
    with pytest.raises(ImgclustError, match="registered by both plugins.*kmeans-twin") as caught:
        imgclust.load(run_copy)
    assert "not installed" not in str(caught.value)


# What saving leaves behind -----------------------------------------------------------------------
def test_the_pipeline_folder_has_the_same_mode_as_the_rest_of_the_run(pristine_run):
    mask = os.umask(0)
    os.umask(mask)
    expected = 0o777 & ~mask
    assert stat.S_IMODE((pristine_run / "pipeline").stat().st_mode) == expected
    assert stat.S_IMODE(pristine_run.stat().st_mode) == expected


def test_the_threat_model_states_the_limits_the_code_applies():
    from imgclust.engine.manifest import MAX_CHANNELS, MAX_INPUT_PIXELS, MAX_PIXELS_ENV
    from imgclust.io.memory import MAX_RATIO
    from imgclust.plugins.umap_encoder import STATE_BYTES

    text = (Path(__file__).parents[2] / "docs" / "predict.md").read_text()
    assert f"{MAX_INPUT_PIXELS:,}" in text and MAX_PIXELS_ENV in text
    assert f"1 to {MAX_CHANNELS} channels" in text and f"{MAX_RATIO} times" in text
    assert f"`umap_state.json`, at most {STATE_BYTES // 1024} KiB" in text
