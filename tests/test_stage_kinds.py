"""One table of stage kinds: the registry, the API, the command line, the listing and the
conformance kit all read it; and the previous release's import paths still work, with a warning."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import imgclust
from imgclust.stages.kinds import PIPELINE_KINDS, REGISTERED, STAGE_KINDS, stage_kind
from imgclust.testing import PROTOCOLS, REQUIRED


def test_every_reader_agrees_with_the_table():
    registry = imgclust.get_registry()
    assert set(registry.entries) == set(REGISTERED)
    assert [k.name for k in PIPELINE_KINDS] == ["encoder", "clusterer", "refiner"]
    for kind in STAGE_KINDS:
        assert REQUIRED[kind.name] == kind.works_with  # save/load only where a stage has them
        assert PROTOCOLS[kind.name] is kind.protocol
        assert set(kind.works_with) <= set(kind.required)
        assert stage_kind(kind.name) is stage_kind(kind.registry) is kind
    with pytest.raises(imgclust.SettingsError, match="not a kind of stage"):
        stage_kind("recipe")


def test_a_run_takes_refiners_from_python_and_names_them(tmp_path):
    run = imgclust.run(
        dataset={"name": "digits", "limit": 200},
        encoders=["pca"],
        clusterer={"name": "kmeans", "n_clusters": 10},
        refiners=[{"name": "self-label", "rounds": 1, "epochs": 1}],
        plots=False,
        runs_dir=tmp_path,
    )
    assert [r["name"] for r in run.config["refiner"]] == ["self-label"]
    assert run.config["refiner"][0]["epochs"] == 1
    assert "self-label" in run.path.name
    with pytest.raises(imgclust.SettingsError, match="refiners must be a name"):
        imgclust.run(dataset="digits", encoders=["pca"], clusterer="kmeans", refiners=3)


def test_the_command_line_takes_refiner_and_its_settings(cli, tmp_path):
    result = cli(
        "run", "--dataset", "digits", "--set", "dataset.limit=200", "--encoder", "pca",
        "--clusterer", "kmeans", "--refiner", "self-label", "--set", "refiner.rounds=1",
        "--set", "refiner.epochs=1", "--no-plots", "--runs-dir", tmp_path, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    config = (next(tmp_path.iterdir()) / "config.toml").read_text()
    assert "[[refiner]]" in config and 'name = "self-label"' in config


def test_a_plugin_of_the_previous_release_still_imports_and_hears_where_to_go(tmp_path):
    """Old documented paths import the same modules, with a DeprecationWarning naming the new
    import (a fresh process, so that no earlier import hides the warning)."""
    plugin = tmp_path / "old_style_plugin.py"
    plugin.write_text(
        textwrap.dedent("""
        import warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            from imgclust.autoencoder import KerasAutoencoder
            from imgclust.keras_support import import_keras
            from imgclust.sklearn_adapter import SklearnClusterer, lazy_estimator
            from imgclust.interfaces import ImageSet
            from imgclust.hookspecs import hookimpl
            from imgclust import atomic
        import imgclust.kit as kit
        assert KerasAutoencoder is kit.KerasAutoencoder and import_keras is kit.import_keras
        assert SklearnClusterer is kit.SklearnClusterer and ImageSet is kit.ImageSet
        assert hookimpl is kit.hookimpl and atomic.write_json is kit.atomic.write_json
        moved = [str(w.message) for w in caught if w.category is DeprecationWarning]
        assert len(moved) == 6, moved
        assert "from imgclust.kit import KerasAutoencoder" in moved[0], moved[0]
        print("ok")
    """)
    )
    result = subprocess.run(
        [sys.executable, str(plugin)], capture_output=True, text=True, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr[-2000:]
