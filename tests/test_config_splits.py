"""A recipe's splits on another dataset: kept when that dataset has them, otherwise dropped with
one warning line that names what was dropped and why."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from imgclust.engine.config import SplitsDroppedWarning, resolve_config
from imgclust.stages.hookspecs import hookimpl
from imgclust.stages.host import get_host

ARTICLE_SPLITS = {"split": "test", "fit_split": "train", "validation_split": "test"}


def splits(config):
    return {k: config[k] for k in ARTICLE_SPLITS if k in config}


def test_a_dataset_with_the_recipes_splits_keeps_them(registry):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = resolve_config(registry, recipe="article", dataset="digits")
    assert splits(config) == ARTICLE_SPLITS


def test_a_dataset_without_them_drops_them_with_one_warning(registry):
    with pytest.warns(SplitsDroppedWarning) as caught:
        config = resolve_config(
            registry, recipe="article", dataset="arrays", sets=["dataset.path=x.npy"]
        )
    assert splits(config) == {"split": "all"}
    [warning] = caught
    assert str(warning.message).startswith(
        "dropped split=test, fit_split=train, validation_split=test (set for dataset 'mnist'): "
        "dataset 'arrays' has only all"
    )


def test_splits_the_command_line_sets_are_the_users(registry):
    with pytest.warns(SplitsDroppedWarning, match=r"^dropped fit_split=train, validation_sp"):
        config = resolve_config(
            registry, recipe="article", dataset="arrays", sets=["dataset.path=x.npy"], split="all"
        )
    assert splits(config) == {"split": "all"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = resolve_config(
            registry,
            recipe="article",
            dataset="arrays",
            sets=["dataset.path=x.npy", "fit_split=all", "validation_split=none"],
            split="all",
        )
    assert splits(config) == {"split": "all", "fit_split": "all"}


def test_a_config_files_own_splits_win_and_the_rest_carry_as_for_the_same_dataset(
    registry, tmp_path
):
    path = tmp_path / "run.toml"
    path.write_text('split = "all"\n[dataset]\nname = "digits"\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = resolve_config(registry, recipe="article", config_file=path)
        same = resolve_config(registry, recipe="article", sets=["split=all"])
    assert splits(config) == {**ARTICLE_SPLITS, "split": "all"} == splits(same)


def test_a_dataset_that_does_not_declare_its_splits_drops_them(registry):
    def shapes(limit: int = 3):
        return SimpleNamespace(load=lambda split="all": None)

    get_host().register(
        SimpleNamespace(register_datasets=hookimpl(lambda register: register("shapes", shapes))),
        name="test-shapes",
    )
    from imgclust.stages.host import get_registry

    with pytest.warns(SplitsDroppedWarning, match="dataset 'shapes' does not declare its splits"):
        config = resolve_config(get_registry(), recipe="article", dataset="shapes")
    assert splits(config) == {"split": "all"}


def test_the_cli_prints_the_warning_as_one_line_and_runs(runs_dir, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (60, 6, 6), dtype=np.uint8)
    path = tmp_path / "x.npy"
    np.save(path, images)
    result = subprocess.run(
        [
            sys.executable, "-m", "imgclust", "run", "--recipe", "article", "--dataset", "arrays",
            "--encoder", "pca", "--clusterer", "kmeans", "--set", f"dataset.path={path}",
            "--set", "clusterer.n_clusters=3", "--runs-dir", str(runs_dir), "--no-plots", "--json",
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert lines == [
        "warning: dropped split=test, fit_split=train, validation_split=test (set for dataset "
        "'mnist'): dataset 'arrays' has only all, so the run leaves them at their defaults; "
        "set them with --split or --set KEY=SPLIT."
    ]
    assert json.loads(result.stdout)["split"] == "all"
