"""Deep clustering recipes against the baselines: ACC, NMI, ARI, wall and CPU time per stage.

Each row is a real run (``imgclust.run``, plots off) of a recipe on a dataset, for several
seeds; the table gives the mean and spread (max - min) and the ACC the clusterer reached
before the refiners. Rows:

- ``pca-umap-gmm``: PCA 50, UMAP 10-d, GMM (the starting point of the refined recipes);
- ``umap-gmm-selflabel``: the same, then the self-label refiner;
- ``umap-gmm-recluster``: the same start, then self-label reclustering in the CNN's features;
- ``pca-kmeans-recluster``: k-means on PCA 50, then three rounds of reclustering;
- ``pca-kmeans-dcec``: k-means on PCA 50, then the dec refiner on DCEC's published network;
- ``pca-kmeans-dcec-article``: the same on the article's network;
- ``sym-umap-gmm``: the fast choice for a new image set (``pca-umap-gmm`` on symmetrised PCA);
- ``deskew-umap-gmm``, ``n2d``, ``article``: the existing recipes (MNIST only). On all of MNIST
  they are not run by default: their rows are read from ``results/mnist_quality.json``
  (``benchmarks/mnist_quality.py``), marked so; ``--rows`` runs them here instead.

    IMGCLUST_MNIST=DIR nice python benchmarks/deep.py --dataset digits|mnist [--limit N]
        [--seeds 0 1 2 3 4] [--rows NAME ...] [--set refiner.dec.max_steps=1400 ...] [--no-doc]

Figures go to ``benchmarks/results/deep-<dataset>[-<limit>].json`` and, for the full sets, to
the deep section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_results, update_doc_section, with_runs  # noqa: E402

from imgclust.plugins.recipes import PCA_KMEANS_DCEC_ARTICLE  # noqa: E402

PCA_UMAP_GMM = {
    "encoder": [
        {"name": "pca", "n_components": 50},
        {"name": "umap", "n_components": 10, "n_neighbors": 10, "min_dist": 0.0},
    ],
    "clusterer": {"name": "gmm", "n_clusters": 10, "covariance_type": "full", "n_init": 5},
}
ROWS: dict[str, dict[str, Any]] = {
    "pca-umap-gmm": {"config": PCA_UMAP_GMM},
    "umap-gmm-selflabel": {"recipe": "umap-gmm-selflabel"},
    "umap-gmm-recluster": {"recipe": "umap-gmm-recluster"},
    "pca-kmeans-recluster": {"recipe": "pca-kmeans-recluster"},
    "pca-kmeans-dcec": {"recipe": "pca-kmeans-dcec"},
    "pca-kmeans-dcec-article": {"config": PCA_KMEANS_DCEC_ARTICLE},  # withdrawn from the recipes
    "sym-umap-gmm": {"recipe": "sym-umap-gmm"},  # the fast choice, timed against the above
    "deskew-umap-gmm": {"recipe": "deskew-umap-gmm", "mnist_only": True},
    "n2d": {"recipe": "n2d", "mnist_only": True},
    "article": {"recipe": "article", "mnist_only": True},
}
PUBLISHED = (
    "Published on all 70,000 MNIST images: DEC-DA 0.985 / 0.960, IMSAT 0.984, IIC 0.993, "
    "DCEC 0.89 / 0.885, N2D 0.979 / 0.942 (ACC / NMI)."
)


def run_row(
    name: str,
    dataset: dict[str, Any],
    seed: int,
    runs: Path,
    overrides: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One run of a row (``overrides``: ``--set`` values); its scores, the ACC before the
    refiners and its timings."""
    import imgclust
    from imgclust.engine.config import normalise

    row = ROWS[name]
    settings: dict[str, Any] = {**(overrides or {}), "seed": seed}
    started, cpu = time.perf_counter(), time.process_time()
    if "recipe" in row:
        kwargs: dict[str, Any] = {"recipe": row["recipe"], "dataset": dataset}
        if dataset["name"] != "mnist":
            kwargs["split"] = "all"
    else:
        config = normalise(row["config"], name)
        kwargs = {
            "dataset": dataset,
            "encoders": config["encoder"],
            "clusterer": config["clusterer"],
            "refiners": config.get("refiner") or None,
        }
    result = imgclust.run(**kwargs, settings=settings, runs_dir=runs, plots=False)
    metrics = result.metrics
    return {
        "seed": seed,
        **{k: metrics[k] for k in ("acc", "nmi", "ari")},
        "acc_before_refiners": (metrics.get("before_refiners") or {}).get("acc"),
        "refiner_stop": metrics.get("refiner_stop"),
        "wall_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu,
        "stages": metrics.get("timings", {}),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def summarise(name: str, results: list[dict[str, Any]]) -> str:
    """One table row: each score's mean (lowest-highest) over the seeds, and the mean times."""

    def values(key: str) -> list[float]:
        return [r[key] for r in results if r.get(key) is not None]

    def spread(key: str) -> str:
        found = values(key)
        if len(found) < 2:
            return f"{found[0]:.4f}" if found else "-"
        return f"{sum(found) / len(found):.4f} ({min(found):.4f}-{max(found):.4f})"

    def mean(key: str) -> str:
        found = values(key)
        return f"{sum(found) / len(found):.0f}" if found else "-"

    seeds = ",".join(str(r["seed"]) for r in results)
    return (
        f"| {name} | {seeds} | {spread('acc')} | {spread('nmi')} | {spread('ari')} | "
        f"{spread('acc_before_refiners')} | {mean('wall_s')} | {mean('cpu_s')} |"
    )


def earlier_rows(name: str) -> dict[str, list[dict[str, Any]]]:
    """The runs an earlier call of this script saved for the same set, by row."""
    import json

    path = Path(__file__).resolve().parent / "results" / f"{name}.json"
    if not path.exists():
        return {}
    rows = json.loads(path.read_text()).get("rows", {})
    return {row: results for row, results in rows.items() if row in ROWS}


def merged(
    saved: dict[str, list[dict[str, Any]]], mine: dict[str, list[dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """The saved rows with this call's runs in place of the saved ones of the same row and seed,
    so that seeds and rows run one call at a time accumulate in one table."""
    return {**saved, **{row: with_runs(saved.get(row, []), runs) for row, runs in mine.items()}}


def stage_line(name: str, results: list[dict[str, Any]]) -> str:
    """Mean wall seconds of each stage over the seeds (stages under a second left out)."""
    stages: dict[str, list[float]] = {}
    for result in results:
        for stage, seconds in result["stages"].items():
            stages.setdefault(stage, []).append(seconds)
    shown = [f"{stage} {sum(v) / len(v):.0f}" for stage, v in stages.items() if max(v) >= 1]
    loads = [r["load_average"][0] for r in results if r.get("load_average")]
    load = f" (load average {min(loads):.1f}-{max(loads):.1f})" if loads else ""
    return f"- {name}{load}: {', '.join(shown)}"


def quality_rows(names: list[str]) -> list[str]:
    """Rows of the recipes ``benchmarks/mnist_quality.py`` measured on all of MNIST, if saved."""
    path = Path(__file__).resolve().parent / "results" / "mnist_quality.json"
    if not path.exists():
        return []
    import json

    lines = []
    for row in json.loads(path.read_text())["rows"]:
        if row["name"] == "best":  # mnist_quality.py's name for its best recipe
            row = {**row, "name": "deskew-umap-gmm"}
        if row["name"] in names:
            runs = row["runs"]
            lines.append(
                summarise(
                    f"{row['name']} (mnist_quality.py)",
                    [{**r, "acc_before_refiners": None} for r in runs],
                )
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("digits", "mnist"), default="digits")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=None)
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument(
        "--from-results", action="store_true", help="run nothing: redraw the saved table"
    )
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.overrides)
    dataset: dict[str, Any] = {"name": args.dataset}
    if args.dataset == "mnist":
        if not os.environ.get("IMGCLUST_MNIST"):
            raise SystemExit("set IMGCLUST_MNIST to a folder holding mnist.npz")
        dataset["path"] = os.environ["IMGCLUST_MNIST"]
    if args.limit:
        dataset["limit"] = args.limit
    full_mnist = args.dataset == "mnist" and not args.limit
    rows = args.rows or [
        n
        for n, r in ROWS.items()
        if (args.dataset == "mnist" or not r.get("mnist_only"))
        and not (full_mnist and r.get("mnist_only"))
    ]
    table: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="imgclust-deep-") as runs:
        for name in [] if args.from_results else rows:
            for seed in args.seeds:
                result = run_row(name, dataset, seed, Path(runs), overrides)
                table.setdefault(name, []).append(result)
                print(name, seed, {k: result[k] for k in ("acc", "nmi", "wall_s")}, flush=True)
    label = f"{args.dataset}" + (f"-{args.limit}" if args.limit else "")
    label += "".join(f"-{key.rsplit('.', 1)[-1]}{value}" for key, value in overrides.items())
    table = merged(earlier_rows(f"deep-{label}"), table)
    shown = {k: ("$IMGCLUST_MNIST" if k == "path" else v) for k, v in dataset.items()}
    save_results(f"deep-{label}", {"dataset": shown, "rows": table})  # no path of this machine
    lines = [
        f"**{label}** (mean (lowest-highest) over the seeds each row lists"
        + "".join(f"; {key} = {value}" for key, value in overrides.items())
        + "):",
        "",
        "| pipeline | seeds | ACC | NMI | ARI | ACC before refiners | wall s (mean) "
        "| CPU s (mean) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *(summarise(name, results) for name, results in table.items()),
        *(quality_rows([n for n in ROWS if n not in table]) if full_mnist else []),
        "",
        PUBLISHED,
        "",
        "Wall seconds per stage, mean over the seeds:",
        "",
        *(stage_line(name, results) for name, results in table.items()),
    ]
    print("\n".join(lines))
    if not args.no_doc and not args.limit and not overrides:
        update_doc_section(f"deep-{args.dataset}", "\n".join(lines))


if __name__ == "__main__":
    main()
