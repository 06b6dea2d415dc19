"""Each recipe's measured figures come from one file made from the benchmarks' results, which
``imgclust list recipes`` and the README's recipe table both show; the first-run compile of
UMAP is said wherever a UMAP recipe is named."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from imgclust.errors import PluginError
from imgclust.plugins import recipes as bundled
from imgclust.stages.hookspecs import hookimpl
from imgclust.stages.host import get_host
from imgclust.stages.registry import Registry

ROOT = Path(__file__).parent.parent
FIGURES = ROOT / "plugins" / "recipes_measured.json"


@pytest.fixture(scope="module")
def generator():
    """benchmarks/recipe_figures.py, the script that writes the figures file and the table."""
    spec = importlib.util.spec_from_file_location(
        "recipe_figures", ROOT / "benchmarks" / "recipe_figures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bundled_recipes() -> dict[str, dict]:
    """The bundled recipes' configurations by name, as the plugin registers them."""
    found: dict[str, dict] = {}
    bundled.register_recipes(lambda name, recipe, **kwargs: found.setdefault(name, recipe))
    return found


def test_the_figures_file_is_what_the_benchmark_results_say(generator):
    """Regenerate with: python benchmarks/recipe_figures.py."""
    assert json.loads(FIGURES.read_text()) == generator.build()


def test_the_readme_table_is_made_from_the_figures_file(generator):
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- recipes:start -->\n")[1].split("<!-- recipes:end -->")[0]
    assert table.rstrip() == generator.render(json.loads(FIGURES.read_text())).rstrip()


def test_every_bundled_recipe_is_measured_or_says_why_not(generator):
    measured = json.loads(FIGURES.read_text())["recipes"]
    for name in bundled_recipes():
        assert name in measured or name in generator.NOT_MEASURED, name
    assert not set(measured) & set(generator.NOT_MEASURED)


def test_a_measurement_carries_seeds_spread_and_time_from_its_source(generator):
    """umap-gmm on all of MNIST: of two five-seed measurements of all the images, the later (the
    2-core runs of deep.py's pca-umap-gmm), with their time; on mirrored MNIST, measured only
    on another machine, the quality without a time."""
    measured = {m["dataset"]: m for m in generator.build()["recipes"]["umap-gmm"]}
    mnist, mirrored = measured["mnist"], measured["mnist-mirrored"]
    runs = json.loads((ROOT / "benchmarks/results/deep-mnist.json").read_text())["rows"]
    accs = [r["acc"] for r in runs["pca-umap-gmm"]]
    walls = [r["wall_s"] for r in runs["pca-umap-gmm"]]
    assert mnist["seeds"] == [0, 1, 2, 3, 4] and mnist["images"] == 70000
    assert mnist["acc"] == [round(sum(accs) / 5, 4), round(min(accs), 4), round(max(accs), 4)]
    assert mnist["seconds"] == round(sum(walls) / len(walls))
    assert mnist["source"] == "benchmarks/results/deep-mnist.json"
    general = json.loads((ROOT / "benchmarks/results/general-70000.json").read_text())["sets"]
    accs = [r["acc"] for r in general["mnist-mirrored"]["umap-gmm"]]
    assert mirrored["acc"] == [round(sum(accs) / 5, 4), round(min(accs), 4), round(max(accs), 4)]
    assert mirrored["seconds"] is None


def test_list_recipes_shows_the_figures_file(cli):
    result = cli("list", "recipes", "--json")
    assert result.exit_code == 0, result.stderr
    listed = {item["name"]: item["measured"] for item in json.loads(result.stdout)}
    measured = json.loads(FIGURES.read_text())["recipes"]
    for name in bundled_recipes():
        assert listed[name] == measured.get(name, []), name


def test_the_listing_prints_a_line_per_image_set_and_says_when_unmeasured(cli, monkeypatch):
    """A recipe registered without figures (a third party's) says it was not measured."""
    monkeypatch.setenv("COLUMNS", "250")  # a line per recipe line, unwrapped

    def register_recipes(register):
        register("my-recipe", {"dataset": {"name": "digits"}, "clusterer": {"name": "kmeans"}})

    get_host().register(SimpleNamespace(register_recipes=hookimpl(register_recipes)), "mine")
    result = cli("list", "recipes")
    assert result.exit_code == 0, result.stderr
    blocks = re.split(r"\n(?=\S)", result.stdout)
    text = {block.split()[0]: " ".join(block.split()) for block in blocks if block.strip()}
    assert "measured: not yet" in text["my-recipe"]
    recluster = text["umap-gmm-recluster"]
    assert "mnist, 70,000 images, 5 seeds: ACC 0.9894 (0.9881-0.9900), NMI" in recluster
    assert "digits, 1,797 images, 5 seeds: ACC" in recluster and "584 s" in recluster
    assert "mnist-turned, 70,000 images, 5 seeds" in text["sym-umap-gmm"]
    assert "not timed on 2 cores" in text["umap-gmm"]  # five seeds on a 16-core machine


@pytest.mark.parametrize(
    "measured, message",
    [
        ({"dataset": "x"}, r"cannot read \(missing 'seeds'\)"),
        ("fast", r"cannot read \(not a mapping\)"),
        (
            [{"dataset": "x", "images": 5, "seeds": [0], "acc": [1, 1], "nmi": [1, 1, 1]}],
            r"cannot read \(tuple index out of range\)",
        ),
        (
            [{"dataset": "x", "images": 5, "seeds": [], "acc": [1, 1, 1], "nmi": [1, 1, 1]}],
            "without seeds",
        ),
        (
            [{"dataset": "x", "images": 5, "seeds": [0], "acc": ["nan"] * 3, "nmi": [1, 1, 1]}],
            "finite figures",
        ),
        ([{"dataset": "x", "wrong": 1}], r"unknown keys \['wrong'\]"),
    ],
)
def test_figures_imgclust_cannot_read_are_one_line(measured, message):
    register = Registry().register("recipes", "mine")
    with pytest.raises(PluginError, match=message) as error:
        register("r", {"clusterer": {"name": "kmeans"}}, measured=measured)
    assert "\n" not in str(error.value) and "plugin 'mine'" in str(error.value)


def test_only_recipes_carry_figures():
    register = Registry().register("encoders", "mine")
    with pytest.raises(PluginError, match="only recipes carry them"):
        register("e", dict, measured=[{"dataset": "x"}])


# The first run of a UMAP recipe -----------------------------------------------------------------
def umap_recipes() -> list[str]:
    return sorted(name for name, recipe in bundled_recipes().items() if bundled.uses_umap(recipe))


def test_the_listing_says_what_a_umap_recipe_s_first_run_compiles(cli):
    assert {"umap-gmm", "sym-umap-gmm", "n2d", "umap-gmm-recluster"} <= set(umap_recipes())
    items = {i["name"]: i for i in json.loads(cli("list", "recipes", "--json").stdout)}
    for name, item in items.items():
        says = "compiles UMAP (about 20-25 s, once)" in item["summary"]
        assert says is (name in umap_recipes()), name


@pytest.mark.parametrize(
    "page", ["README.md", *(f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md")))]
)
def test_every_page_naming_a_umap_recipe_says_its_first_run_compiles(page):
    """A page that names a UMAP recipe also says the first run compiles UMAP's code."""
    text = (ROOT / page).read_text()
    named = [n for n in umap_recipes() if re.search(rf"`{re.escape(n)}`|--recipe {n}\b", text)]
    if named:
        assert re.search(r"compil", text), f"{page} names {named} without the first-run compile"


def test_a_recipe_registered_with_none_or_no_figures_has_none():
    registry = Registry()
    register = registry.register("recipes", "mine")
    register("a", {"clusterer": {"name": "kmeans"}}, measured=None)
    register("b", {"clusterer": {"name": "kmeans"}})
    assert registry.get("recipes", "a").measured == registry.get("recipes", "b").measured == ()
