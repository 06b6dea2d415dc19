"""Each recipe's measured figures, gathered from ``benchmarks/results/*.json`` into one file.

``plugins/recipes_measured.json`` is what ``imgclust list recipes`` shows and what the README's
recipe table is made from; ``tests/test_recipe_figures.py`` checks that it, the README and the
listing all say what the results say. Run this after a benchmark has saved new results:

    python benchmarks/recipe_figures.py          # rewrite the file and the README's table

For each recipe and image set it keeps the run over the most images, then over the most seeds
(the newest on a tie): ACC and NMI as mean, lowest and highest over the seeds. The time is the
mean wall time of the runs made on 2 CPU cores for the same recipe, set and image count (the
most seeds again); ``None`` where the set was only run elsewhere.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT  # noqa: E402

from imgclust.plugins import recipes as bundled  # noqa: E402

FIGURES = ROOT / "plugins" / "recipes_measured.json"
README = ROOT / "README.md"
#: How many images each benchmark set holds when a run took all of them.
FULL = {
    "digits": 1797,
    "mnist": 70000,
    "mnist-mirrored": 70000,
    "mnist-turned": 70000,
    "photo-tiles": 5000,
}
#: The benchmarks' own names for configurations that are bundled recipes.
RECIPE_OF = {"pca-umap-gmm": "umap-gmm", "best": "deskew-umap-gmm"}
#: Results (file, recipe) not taken on a 2-core machine: their quality holds, their times are not
#: comparable (docs/benchmarks.md: 15 single-thread runs side by side on a 16-core machine).
ELSEWHERE = {("general-70000.json", "umap-gmm")}
#: Rows that do not measure the recipe as it ships, and why; they are left out.
LEFT_OUT = {
    ("mnist_quality.json", "article"): "clustered all 70,000 images, not the recipe's test split",
}
#: Why a bundled recipe has no figures, for the README's table.
NOT_MEASURED = {
    "photos": "no labelled photo set among the benchmarks",
}
#: What each image set is, for the README's table.
SET_WORDS = {
    "digits": "scikit-learn's 8x8 digits",
    "mnist": "MNIST",
    "mnist-test": "MNIST's test split (the encoder fit on its train split)",
    "mnist-mirrored": "MNIST, each image mirrored at random",
    "mnist-turned": "MNIST, each image turned by a random multiple of 90 degrees",
    "photo-tiles": "28x28 tiles of ten photographs, the photograph as the class",
}


def runs_in(path: Path) -> Iterator[tuple[str, str, int, list[dict[str, Any]]]]:
    """(recipe or benchmark name, image set, images per run, runs) for each row of a results
    file; each run has seed, acc, nmi and wall_s."""
    data = json.loads(path.read_text())
    if path.name.startswith("general"):
        for dataset, rows in data["sets"].items():
            images = data.get("limit") or FULL[dataset]
            for name, runs in rows.items():
                yield name, dataset, min(images, FULL[dataset]), runs
    elif path.name in ("deep-digits.json", "deep-mnist.json"):  # the recipes' own settings
        dataset = data["dataset"]["name"]
        for name, runs in data["rows"].items():
            yield name, dataset, data["dataset"].get("limit") or FULL[dataset], runs
    elif path.name == "mnist_quality.json":
        for row in data["rows"]:
            yield row["name"], "mnist", row["runs"][0]["n_images"], row["runs"]
    elif path.name == "article.json":  # the recipe as it ships: k-means on the test codes
        runs = [{"seed": s["seed"], **s["scores"], "wall_s": None} for s in data["seeds"]]
        runs[0]["wall_s"] = data["run"]["wall_s"]  # `imgclust run`, seed 0, start to finish
        yield "article", "mnist-test", 10000, runs


def candidates(recipes: set[str]) -> Iterator[dict[str, Any]]:
    """Every measurement of a bundled recipe in the results, before choosing."""
    for path in sorted(RESULTS.glob("*.json")):
        date = json.loads(path.read_text())["machine"]["date"]
        for name, dataset, images, runs in runs_in(path):
            recipe = RECIPE_OF.get(name, name)
            if recipe not in recipes or (path.name, name) in LEFT_OUT or not runs:
                continue
            yield {
                "recipe": recipe,
                "dataset": dataset,
                "images": images,
                "runs": runs,
                "date": date,
                "source": f"benchmarks/results/{path.name}",
                "two_cores": (path.name, name) not in ELSEWHERE,
            }


def spread(values: list[float]) -> list[float]:
    """Mean, lowest and highest, rounded as the docs print them."""
    return [round(statistics.fmean(values), 4), round(min(values), 4), round(max(values), 4)]


def build() -> dict[str, Any]:
    """The figures file's content: for each measured recipe, a measurement per image set."""
    names: list[str] = []
    bundled.register_recipes(lambda name, *args, **kwargs: names.append(name))
    found = list(candidates(set(names)))
    figures: dict[str, list[dict[str, Any]]] = {}
    for recipe in names:
        mine = [c for c in found if c["recipe"] == recipe]
        measured = []
        for dataset in sorted({c["dataset"] for c in mine}, key=list(SET_WORDS).index):
            of_set = [c for c in mine if c["dataset"] == dataset]
            best = max(of_set, key=lambda c: (c["images"], len(c["runs"]), c["date"]))
            timed = [
                c
                for c in of_set
                if c["two_cores"] and c["images"] == best["images"]
                and any(r["wall_s"] is not None for r in c["runs"])
            ]  # fmt: skip
            clock = max(timed, key=lambda c: (len(c["runs"]), c["date"]), default=None)
            walls = [r["wall_s"] for r in clock["runs"] if r["wall_s"] is not None] if clock else []
            runs = best["runs"]
            measured.append(
                {
                    "dataset": dataset,
                    "images": best["images"],
                    "seeds": sorted(r["seed"] for r in runs),
                    "acc": spread([r["acc"] for r in runs]),
                    "nmi": spread([r["nmi"] for r in runs]),
                    "seconds": round(statistics.fmean(walls)) if walls else None,
                    "source": best["source"]
                    + (f", time from {clock['source']}" if clock and clock is not best else ""),
                }
            )
        if measured:
            figures[recipe] = measured
    return {
        "about": "Measured figures of the bundled recipes, written by benchmarks/recipe_figures.py "
        "from benchmarks/results/*.json; regenerate rather than edit.",
        "recipes": figures,
    }


def render(figures: dict[str, Any]) -> str:
    """The README's recipe table: a row per recipe and image set, unmeasured recipes too."""
    names: list[str] = []
    umap: set[str] = set()

    def collect(name: str, recipe: Any, **kwargs: Any) -> None:
        names.append(name)
        if bundled.uses_umap(recipe):
            umap.add(name)

    bundled.register_recipes(collect)
    lines = [
        "| recipe | image set | images | seeds | ACC | NMI | time on 2 cores |",
        "| --- | --- | ---: | ---: | --- | --- | ---: |",
    ]
    for name in sorted(names):
        label = f"`{name}`" + (" (UMAP)" if name in umap else "")
        measured = figures["recipes"].get(name)
        if not measured:
            why = NOT_MEASURED.get(name, "")
            lines.append(f"| {label} | not measured{': ' + why if why else ''} | | | | | |")
            continue
        for m in measured:
            time = "-" if m["seconds"] is None else f"{m['seconds']:,} s"
            lines.append(
                f"| {label} | {m['dataset']} | {m['images']:,} | {len(m['seeds'])} | "
                f"{cell(m['acc'])} | {cell(m['nmi'])} | {time} |"
            )
    sets = "; ".join(f"*{k}*: {v}" for k, v in SET_WORDS.items())
    notes = (
        "ACC and NMI: the mean over the seeds, then the lowest and highest. Time: the mean wall "
        "time of one whole run on a shared 2-core CPU machine (an upper bound; `-`: the set was "
        f"run only on another machine). Image sets: {sets}. Recipes marked (UMAP) compile UMAP's "
        f"code on their first run on a machine ({bundled.UMAP_COMPILE}, once; later runs load "
        "it from the user's cache): the times above are with it cached. `imgclust list recipes` "
        "shows the same figures, from `plugins/recipes_measured.json`; "
        "[docs/benchmarks.md](docs/benchmarks.md) has each benchmark's command and every run."
    )
    return "\n".join([*lines, "", *textwrap.wrap(notes, 100, break_on_hyphens=False)])


def cell(values: list[float]) -> str:
    """'0.8860 (0.8820-0.8876)', or the value alone for one seed."""
    mean, low, high = values
    return f"{mean:.4f}" if low == high else f"{mean:.4f} ({low:.4f}-{high:.4f})"


def readme_with(table: str, text: str) -> str:
    """README text with its recipe table replaced."""
    pattern = re.compile(r"(<!-- recipes:start -->\n).*?(<!-- recipes:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit("README.md has no recipes section")
    return pattern.sub(lambda m: m.group(1) + table.rstrip() + "\n" + m.group(2), text)


def main() -> None:
    figures = build()
    FIGURES.write_text(json.dumps(figures, indent=2) + "\n")
    README.write_text(readme_with(render(figures), README.read_text()))
    print(f"wrote {FIGURES.relative_to(ROOT)} ({len(figures['recipes'])} recipes) and README.md")


if __name__ == "__main__":
    main()
