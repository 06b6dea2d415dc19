"""The bundled recipes: what ``imgclust list recipes`` shows, that each resolves, and that each
runs through the CLI (on digits, with small settings where a recipe trains a network)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from imgclust.engine.config import read_toml, resolve_config

RECIPES = ["article", "pixels-kmeans", "article-umap-gmm", "n2d", "deskew-umap-gmm"]
ROOT = Path(__file__).resolve().parents[1]
#: pages that present recipes to users (plugins.md and hooks.md show a plugin's own examples)
PAGES = [
    "README.md",
    *(
        f"docs/{p}"
        for p in (
            "benchmarks.md",
            "guide.md",
            "choosing-k.md",
            "predict.md",
            "report.md",
            "datasets.md",
        )
    ),
]
ON_DIGITS = ["--dataset", "digits", "--set", "dataset.limit=600", "--no-plots", "--json"]


def test_list_recipes_shows_what_each_runs(cli):
    result = cli("list", "recipes", "--json")
    assert result.exit_code == 0, result.stderr
    items = {item["name"]: item for item in json.loads(result.stdout)}
    assert set(RECIPES) <= set(items)
    assert items["n2d"]["runs"].split(" -> ")[1:] == [
        "dense-ae(dims=[500, 500, 2000], code_size=10, epochs=25, batch_size=256)",
        "umap(n_components=10, n_neighbors=20, min_dist=0.0)",
        "gmm(n_clusters=10, covariance_type=full)",
    ]
    best = items["deskew-umap-gmm"]["runs"]
    assert best.startswith("mnist [all] -> deskew -> pca(n_components=50) -> umap(")
    assert best.endswith("gmm(n_clusters=10, covariance_type=full, n_init=5)")
    text = cli("list", "recipes")
    assert text.exit_code == 0 and "deskew -> pca" in text.stdout.replace("\n", " ")


def test_article_and_baseline_recipes_are_as_published(registry):
    article = registry.get("recipes", "article").target
    assert article["encoder"] == [{"name": "conv-ae"}]
    assert article["clusterer"] == {"name": "kmeans", "n_clusters": 10}
    assert (article["fit_split"], article["validation_split"], article["split"]) == (
        "train",
        "test",
        "test",
    )
    baseline = registry.get("recipes", "pixels-kmeans").target
    assert baseline["encoder"] == [{"name": "flatten"}] and baseline["split"] == "all"


@pytest.mark.parametrize("name", RECIPES)
def test_each_recipe_resolves_against_the_installed_stages(registry, name):
    config = resolve_config(registry, recipe=name)
    assert config["recipe"] == name and config["dataset"]["name"] == "mnist"
    assert config["clusterer"]["n_clusters"] == 10 and config["seed"] == 0
    for stage in config["encoder"]:
        if "seed" in stage:
            assert stage["seed"] == 0


def test_n2d_stages_get_the_run_seed(registry):
    config = resolve_config(registry, recipe="n2d", seed=7)
    assert [e["seed"] for e in config["encoder"]] == [7, 7]
    assert config["clusterer"]["seed"] == 7


def test_pixels_kmeans_runs_on_another_dataset(cli, runs_dir):
    result = cli("run", "--recipe", "pixels-kmeans", *ON_DIGITS, "--runs-dir", runs_dir)
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["pipeline"] == "digits -> flatten -> kmeans" and record["n_images"] == 600


def test_n2d_runs_through_the_cli_with_smaller_settings(cli, runs_dir):
    result = cli(
        "run", "--recipe", "n2d", *ON_DIGITS, "--runs-dir", runs_dir,
        "--set", "encoder.dense-ae.epochs=5", "--set", "encoder.dense-ae.dims=64,32",
        "--set", "encoder.dense-ae.batch_size=32",
        "--set", "encoder.umap.n_neighbors=10", "--set", "encoder.umap.n_epochs=60",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["pipeline"] == "digits -> dense-ae -> umap -> gmm"
    assert record["feature_dim"] == 10 and record["metrics"]["acc"] > 0.5
    config = read_toml(Path(record["run"]) / "config.toml")
    assert config["recipe"] == "n2d"
    assert config["encoder"][0]["dims"] == [64, 32] and config["encoder"][0]["epochs"] == 5
    assert config["encoder"][1]["n_neighbors"] == 10 and config["encoder"][1]["min_dist"] == 0
    assert config["clusterer"]["covariance_type"] == "full"


def test_best_recipe_runs_through_the_cli(cli, runs_dir):
    result = cli(
        "run", "--recipe", "deskew-umap-gmm", *ON_DIGITS, "--runs-dir", runs_dir,
        "--set", "encoder.pca.n_components=20", "--set", "encoder.umap.n_epochs=60",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["pipeline"] == "digits -> deskew -> pca -> umap -> gmm"
    assert record["metrics"]["acc"] > 0.7
    config = read_toml(Path(record["run"]) / "config.toml")
    assert config["clusterer"]["n_init"] == 5


def test_unknown_recipe_names_the_nearest(cli):
    result = cli("run", "--recipe", "n2", "--dataset", "digits")
    assert result.exit_code != 0 and "Did you mean 'n2d'" in result.stderr


@pytest.mark.slow
@pytest.mark.mnist
def test_best_recipe_on_part_of_mnist(cli, runs_dir, mnist_path):
    result = cli(
        "run", "--recipe", "deskew-umap-gmm", "--set", f"dataset.path={mnist_path}",
        "--set", "dataset.limit=5000", "--runs-dir", runs_dir, "--no-plots", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["n_images"] == 5000 and record["pipeline"].startswith("mnist -> deskew")
    assert record["metrics"]["acc"] > 0.93


def recipe_names_in(text: str) -> set[str]:
    """Names a page presents as recipes: ``--recipe NAME``, "the `NAME` recipe", and the first
    column of a table whose first header is "recipe"."""
    names = set(re.findall(r"--recipe ([a-z0-9][a-z0-9_-]*)", text))
    names |= set(re.findall(r"`([a-z0-9][a-z0-9_-]*)`(?: \(best\))? recipe", text))
    names |= set(re.findall(r"recipe `([a-z0-9][a-z0-9_-]*)`", text))
    in_recipe_table = False
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if "|" in line else []
        if not cells:
            in_recipe_table = False
        elif cells[0] == "recipe":
            in_recipe_table = True
        elif in_recipe_table and not set(cells[0]) <= set("-: "):
            found = re.match(r"`([^`]+)`", cells[0])
            assert found, f"a recipe table's first cell names no recipe: {line}"
            names.add(found.group(1))
    return names


def test_recipe_names_finds_each_way_a_page_names_a_recipe():
    text = (
        "Run `imgclust run --recipe n2d`; the `deskew-umap-gmm` recipe is best.\n\n"
        "| recipe | runs |\n| --- | --- |\n| `article-umap-gmm` | conv-ae |\n"
        "| `best` (best), 3 seeds | deskew |\n\n| method | ACC |\n| --- | --- |\n| `x` | 1 |\n"
    )
    assert recipe_names_in(text) == {"n2d", "deskew-umap-gmm", "article-umap-gmm", "best"}


@pytest.mark.parametrize("page", PAGES)
def test_every_recipe_a_page_names_is_one_imgclust_run_finds(registry, page):
    names = recipe_names_in((ROOT / page).read_text(encoding="utf-8"))
    for name in sorted(names):
        # what imgclust run --recipe NAME does; a folder recipe needs only its folder named
        needs_path = registry.get("recipes", name).target["dataset"]["name"] == "image-folder"
        sets = ["dataset.path=."] if needs_path else []
        config = resolve_config(registry, recipe=name, sets=sets)
        assert config["recipe"] == name
    if page in ("README.md", "docs/benchmarks.md"):
        assert names, f"{page} names no recipe: the test no longer reads it"


def test_article_umap_gmm_is_the_published_article_network_then_umap_and_gmm(registry):
    recipe = registry.get("recipes", "article-umap-gmm").target
    assert recipe["encoder"][0] == {"name": "conv-ae"}  # the article's defaults, as published
    assert recipe["encoder"][1]["name"] == "umap" and recipe["encoder"][1]["n_components"] == 10
    assert recipe["clusterer"] == {"name": "gmm", "n_clusters": 10, "covariance_type": "full"}
