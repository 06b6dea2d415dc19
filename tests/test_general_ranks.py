"""The recommended recipe is the one the rule of ``benchmarks/general.py`` picks from the saved
results: measured on every set, never below ``umap-gmm``, within the time budget on all of
MNIST, then the best mean rank."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from imgclust.plugins import recipes as bundled

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def general():
    """benchmarks/general.py, whose rule and saved results choose the recommendation."""
    spec = importlib.util.spec_from_file_location("general", ROOT / "benchmarks" / "general.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def runs(acc: float, wall_s: float = 60.0) -> list[dict]:
    """Five seeds' runs with one ACC and wall time."""
    return [{"seed": seed, "acc": acc, "nmi": acc, "wall_s": wall_s} for seed in range(5)]


def test_the_rule_skips_a_recipe_below_umap_gmm_or_over_budget_and_then_ranks(general):
    table = {
        "digits": {
            "umap-gmm": runs(0.88),
            "fast": runs(0.89),
            "lossy": runs(0.87),
            "slow": runs(0.95),
        },
        "mnist, 70,000": {
            "umap-gmm": runs(0.94),
            "fast": runs(0.95),
            "lossy": runs(0.99),
            "slow": runs(0.99, wall_s=general.BUDGET_S + 1),
        },
    }
    ranked = general.ranks(table)
    assert ranked["slow"] == {"digits": 1, "mnist, 70,000": 1.5}  # ties share their places
    assert ranked["lossy"]["digits"] == 4 and ranked["fast"]["mnist, 70,000"] == 3
    assert general.recommended(table) == "fast"
    table["digits"]["lossy"] = runs(0.96)  # now at or above umap-gmm everywhere, and first
    assert general.recommended(table) == "lossy"
    del table["digits"]["lossy"]  # a recipe not measured on every set is not eligible
    assert general.recommended(table) == "fast"
    text = "\n".join(general.rank_lines(table))
    assert "| `slow` | 1 | 1.5 |" in text and "`fast`." in text


def test_the_listing_recommends_what_the_rule_picks_from_the_saved_results(general):
    table = general.columns()
    assert {"digits", "photo-tiles", "mnist, 70,000", "mnist-mirrored, 70,000"} <= set(table)
    assert "mnist-turned, 70,000" in table
    assert general.recommended(table) == bundled.RECOMMENDED
