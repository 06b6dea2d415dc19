"""Candidate general recipes on several image sets, each with its seeds' spread.

Each cell is a real run (``imgclust.run``, plots off) of a recipe, with its own defaults and
the run's measured invariances, on one of these sets:

- ``digits``: scikit-learn's 1,797 8x8 digits;
- ``mnist``: all 70,000 MNIST images (or ``--limit N`` of them, a fixed-seed sample);
- ``mnist-mirrored``: the same images, each mirrored left to right with probability 1/2;
- ``mnist-turned``: the same images, each turned by a random multiple of 90 degrees;
- ``photo-tiles``: 5,000 28x28 grayscale tiles cut at random places from ten photographs that
  scikit-image ships (a cat, a cup of coffee, coins, the moon, a rocket, brick, grass, gravel,
  ...), 500 from each; a tile's class is the photograph it came from. It needs
  ``pip install scikit-image``.

The transformed sets are made with a fixed seed (0), whatever the run's seed. The table gives
mean, minimum and maximum of ACC and NMI over the seeds, the seeds, the wall time, and the
invariances the runs kept. Every finished run is added to the results file at once, so an
interrupted benchmark keeps what it measured, and later calls add cells to the same table.

    IMGCLUST_MNIST=DIR nice python benchmarks/general.py [--sets digits mnist ...]
        [--recipes umap-gmm ...] [--seeds 0 1 2 3 4] [--limit N] [--doc]

Figures go to ``benchmarks/results/general[-<limit>].json``; ``--doc`` writes the table into
the general section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, save_results, update_doc_section, with_runs  # noqa: E402

#: The seeds a table row needs; a cell run at fewer is listed below the table instead.
SEEDS = (0, 1, 2, 3, 4)
SETS = ("digits", "mnist", "mnist-mirrored", "mnist-turned", "photo-tiles")
RECIPES = (
    "umap-gmm",
    "sym-umap-gmm",
    "umap-gmm-recluster",
    "sym-umap-gmm-recluster",
    "pca-kmeans-recluster",
    "sym-pca-kmeans-recluster",
)
#: What a recommended recipe's run may take on all 70,000 MNIST images, on 2 CPU cores.
BUDGET_S = 600
#: the seed of the transformed sets and of the MNIST sample (fixed, unlike the runs' seeds)
SET_SEED = 0
#: scikit-image's photographs the tiles are cut from (drawings, scans and synthetic images left out)
PHOTOS = (
    "astronaut", "brick", "camera", "chelsea", "coffee",
    "coins", "grass", "gravel", "moon", "rocket",
)  # fmt: skip
TILE, TILES_PER_PHOTO, PHOTO_SIDE = 28, 500, 192


def photo_tiles() -> tuple[np.ndarray, np.ndarray]:
    """TILES_PER_PHOTO random TILE x TILE grayscale tiles of each photograph, its shorter side
    first scaled to PHOTO_SIDE pixels so that a tile shows a part of the scene, not a texture
    patch; the label is the photograph."""
    try:
        from skimage import data
    except ImportError:
        raise SystemExit(
            "the photo-tiles set needs scikit-image: pip install scikit-image"
        ) from None
    from PIL import Image

    rng = np.random.default_rng(SET_SEED)
    images, labels = [], []
    for label, name in enumerate(PHOTOS):
        photo = Image.fromarray(getattr(data, name)()).convert("L")
        scale = PHOTO_SIDE / min(photo.size)
        photo = photo.resize(
            (round(photo.width * scale), round(photo.height * scale)), Image.LANCZOS
        )
        pixels = np.asarray(photo)
        rows = rng.integers(0, pixels.shape[0] - TILE + 1, TILES_PER_PHOTO)
        cols = rng.integers(0, pixels.shape[1] - TILE + 1, TILES_PER_PHOTO)
        images += [pixels[r : r + TILE, c : c + TILE] for r, c in zip(rows, cols, strict=True)]
        labels += [label] * TILES_PER_PHOTO
    return np.stack(images)[..., None], np.asarray(labels, dtype=np.int64)


def make_set(name: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The images (N, H, W, 1) and labels of one benchmark set (digits as its dataset gives)."""
    if name == "digits":
        import imgclust

        digits = imgclust.get_dataset("digits").load("all")
        return np.asarray(digits.images), np.asarray(digits.labels, dtype=np.int64)
    if name == "photo-tiles":
        return photo_tiles()
    folder = os.environ.get("IMGCLUST_MNIST")
    if not folder:
        raise SystemExit("set IMGCLUST_MNIST to a folder holding mnist.npz")
    with np.load(Path(folder) / "mnist.npz", allow_pickle=False) as data:
        images = np.concatenate([data["x_train"], data["x_test"]])[..., None]
        labels = np.concatenate([data["y_train"], data["y_test"]]).astype(np.int64)
    rng = np.random.default_rng(SET_SEED)
    if limit:
        chosen = np.sort(rng.choice(len(images), min(limit, len(images)), replace=False))
        images, labels = images[chosen], labels[chosen]
    if name == "mnist-mirrored":
        mirrored = rng.random(len(images)) < 0.5
        images = images.copy()
        images[mirrored] = images[mirrored][:, :, ::-1]
    elif name == "mnist-turned":
        turns = rng.integers(0, 4, len(images))
        images = np.stack(
            [np.rot90(image, k, axes=(0, 1)) for image, k in zip(images, turns, strict=True)]
        )
    return np.ascontiguousarray(images), labels


def saved_sets(
    names: list[str], limit: int | None, folder: Path
) -> Iterator[tuple[str, Path, np.ndarray]]:
    """Each named set made and saved as ``folder/NAME.npz`` (``x`` images, ``y`` classes), one at
    a time: its name, its file and its classes."""
    for set_name in names:
        images, labels = make_set(set_name, limit)
        data = folder / f"{set_name}.npz"
        np.savez(data, x=images, y=labels)
        yield set_name, data, labels


def run_recipe(recipe: str, data: Path, seed: int, runs: Path) -> Any:
    """A real run (``imgclust.run``, plots off) of a recipe with its defaults on a set saved as
    an .npz, clustering all its images; the finished run."""
    import imgclust

    return imgclust.run(
        recipe,
        dataset={"name": "arrays", "path": str(data)},
        settings={"seed": seed},
        split="all",
        runs_dir=runs,
        plots=False,
    )


def run_cell(recipe: str, data: Path, seed: int, runs: Path) -> dict[str, Any]:
    """One run of a recipe on a set saved as an .npz; its scores, invariances and times."""
    started, cpu = time.perf_counter(), time.process_time()
    metrics = run_recipe(recipe, data, seed, runs).metrics
    return {
        "seed": seed,
        **{k: metrics[k] for k in ("acc", "nmi", "ari")},
        "acc_before_refiners": (metrics.get("before_refiners") or {}).get("acc"),
        "invariances": (metrics.get("invariances") or {}).get("kept"),
        "wall_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu,
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def cell(results: list[dict[str, Any]], key: str) -> str:
    """Mean (min-max) of one score over the seeds; the score itself for one seed."""
    values = [r[key] for r in results if r.get(key) is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ({min(values):.4f}-{max(values):.4f})"


def table_lines(table: dict[str, dict[str, list[dict[str, Any]]]], label: str) -> list[str]:
    """The results as Markdown: one row per recipe and set run at every seed of ``SEEDS``, then
    a list of the cells run at fewer seeds, whose spread the table cannot show."""
    lines = [
        f"**{label}** (ACC and NMI: mean (min-max) over the seeds listed):",
        "",
        "| set | recipe | seeds | ACC | NMI | wall s (mean) | invariances kept |",
        "| --- | --- | --- | --- | --- | ---: | --- |",
    ]
    fewer = []
    for set_name in SETS:
        for recipe in RECIPES:
            results = sorted(table.get(set_name, {}).get(recipe, []), key=lambda r: r["seed"])
            if not results:
                continue
            seeds = ",".join(str(r["seed"]) for r in results)
            if not set(SEEDS) <= {r["seed"] for r in results}:
                fewer.append(
                    f"- {set_name}, {recipe}, seed{'s' * (len(results) > 1)} {seeds}: "
                    f"ACC {cell(results, 'acc')}, NMI {cell(results, 'nmi')}"
                )
                continue
            kept = {", ".join(r.get("invariances") or []) or "none" for r in results}
            wall = np.mean([r["wall_s"] for r in results])
            lines.append(
                f"| {set_name} | {recipe} | {seeds} | {cell(results, 'acc')} | "
                f"{cell(results, 'nmi')} | {wall:.0f} | {' / '.join(sorted(kept))} |"
            )
    if fewer:
        lines += ["", f"Run at fewer than {len(SEEDS)} seeds, so not in the table:", "", *fewer]
    return lines


def columns() -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every saved cell run at all of ``SEEDS``, by column (an image set, and for the MNIST sets
    the images per run: "mnist, 10,000") and recipe, over all the results files."""
    found: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for path in sorted(RESULTS.glob("general*.json")):
        data = json.loads(path.read_text())
        for set_name, recipes in data.get("sets", {}).items():
            column = set_name
            if set_name.startswith("mnist"):
                column += f", {data.get('limit') or 70000:,}"
            for recipe, results in recipes.items():
                if set(SEEDS) <= {r["seed"] for r in results}:
                    found.setdefault(column, {})[recipe] = results
    return found


def mean_acc(results: list[dict[str, Any]]) -> float:
    """A cell's mean ACC over its seeds."""
    return float(np.mean([r["acc"] for r in results]))


def column_order(column: str) -> tuple[int, int]:
    """Columns in the order of ``SETS``, smaller MNIST samples first."""
    set_name, _, images = column.partition(", ")
    return SETS.index(set_name), int(images.replace(",", "") or 0)


def ranks(table: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, float]]:
    """Each recipe's rank by mean ACC in each column it was measured in (1 the best; ties share
    the mean of their places)."""
    ranked: dict[str, dict[str, float]] = {}
    for column, recipes in table.items():
        means = {recipe: mean_acc(results) for recipe, results in recipes.items()}
        for recipe, mean in means.items():
            better = sum(other > mean for other in means.values())
            tied = sum(other == mean for other in means.values())
            ranked.setdefault(recipe, {})[column] = better + (tied + 1) / 2
    return ranked


def below_umap_gmm(table: dict[str, dict[str, list[dict[str, Any]]]], recipe: str) -> list[str]:
    """The columns where a recipe's mean ACC is below ``umap-gmm``'s."""
    return [
        column
        for column in sorted(table, key=column_order)
        if recipe in table[column]
        and "umap-gmm" in table[column]
        and mean_acc(table[column][recipe]) < mean_acc(table[column]["umap-gmm"])
    ]


def recommended(table: dict[str, dict[str, list[dict[str, Any]]]]) -> str | None:
    """The rule of the recommendation: of the recipes measured in every column, at or above
    ``umap-gmm``'s mean ACC in each, whose runs on all 70,000 MNIST images keep to
    ``BUDGET_S``, the one with the best mean rank."""
    ranked = ranks(table)

    def eligible(recipe: str) -> bool:
        full = table.get("mnist, 70,000", {}).get(recipe, [])
        return (
            all(recipe in recipes for recipes in table.values())
            and not below_umap_gmm(table, recipe)
            and bool(full)
            and max(r["wall_s"] for r in full) <= BUDGET_S
        )

    kept = [recipe for recipe in ranked if eligible(recipe)]
    return min(kept, key=lambda recipe: np.mean(list(ranked[recipe].values())), default=None)


def rank_lines(table: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    """The ranks as Markdown: a row per recipe, a column per set, and which recipe the rule
    recommends."""
    order = sorted(table, key=column_order)
    ranked = ranks(table)
    lines = [
        "| recipe | " + " | ".join(order) + " | mean rank | below `umap-gmm` on |",
        "| --- |" + " ---: |" * (len(order) + 1) + " --- |",
    ]
    for recipe in sorted(ranked, key=lambda r: np.mean(list(ranked[r].values()))):
        mine = ranked[recipe]
        below = below_umap_gmm(table, recipe)
        cells = [f"{mine[c]:g}" if c in mine else "-" for c in order]
        lines.append(
            f"| `{recipe}` | {' | '.join(cells)} | {np.mean(list(mine.values())):.2f} "
            f"({len(mine)} of {len(order)}) | {', '.join(below) or 'none'} |"
        )
    choice = recommended(table)
    lines += [
        "",
        f"By the rule (measured in every column, never below `umap-gmm`, each run on all 70,000 "
        f"MNIST images within {BUDGET_S} s, then the best mean rank): "
        + (f"`{choice}`." if choice else "no recipe qualifies."),
    ]
    return lines


def merged(
    path: Path, mine: dict[str, dict[str, list[dict[str, Any]]]]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The saved table (read again now: another call may have added cells) with this call's
    cells in place of the saved ones of the same set, recipe and seed."""
    table = json.loads(path.read_text()).get("sets", {}) if path.exists() else {}
    for set_name, recipes in mine.items():
        for recipe, results in recipes.items():
            saved = table.setdefault(set_name, {}).get(recipe, [])
            table[set_name][recipe] = with_runs(saved, results)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--limit", type=int, default=None, help="MNIST images (a sample)")
    parser.add_argument("--doc", action="store_true", help="write the table into the docs")
    parser.add_argument("--from-results", action="store_true", help="run nothing; redraw")
    args = parser.parse_args(argv)
    name = "general" + (f"-{args.limit}" if args.limit else "")
    path = RESULTS / f"{name}.json"
    mine: dict[str, dict[str, list[dict[str, Any]]]] = {}  # the cells this call measured
    with tempfile.TemporaryDirectory(prefix="imgclust-general-") as folder:
        names = [] if args.from_results else args.sets
        for set_name, data, _ in saved_sets(names, args.limit, Path(folder)):
            for recipe in args.recipes:
                for seed in args.seeds:
                    result = run_cell(recipe, data, seed, Path(folder) / "runs")
                    mine.setdefault(set_name, {}).setdefault(recipe, []).append(result)
                    save_results(name, {"limit": args.limit, "sets": merged(path, mine)})
                    shown = {k: result[k] for k in ("acc", "nmi", "wall_s", "invariances")}
                    print(set_name, recipe, seed, shown, flush=True)
    table = merged(path, mine)
    sizes = {
        "digits": "digits: all 1,797 images",
        "photo-tiles": f"photo-tiles: {len(PHOTOS) * TILES_PER_PHOTO:,} tiles of "
        f"{len(PHOTOS)} photographs",
    }
    if any(name.startswith("mnist") for name in table):
        sizes["mnist"] = (
            f"MNIST sets: a fixed sample of {args.limit:,} images"
            if args.limit
            else "MNIST sets: all 70,000 images"
        )
    label = "; ".join(text for key, text in sizes.items() if any(n.startswith(key) for n in table))
    lines = table_lines(table, label)
    print("\n".join(lines))
    ranked = rank_lines(columns())
    print("\n".join(["", *ranked]))
    if args.doc:
        update_doc_section(name, "\n".join(lines))
        update_doc_section("general-ranks", "\n".join(ranked))


if __name__ == "__main__":
    main()
