"""Which of the Gaussian mixture's starts to keep: likelihood, neighbour information, or both.

Runs ``sym-umap-gmm`` (10 starts) on the sets of ``general.py``, refits each of the run's
starts from its seed on the run's embedding (the same fit the clusterer made), and scores each
against the true classes. The table gives, for each margin, the ACC and NMI of the start that
``gmm``'s ``select = "neighbours"`` keeps: the likeliest unless another has more than that share
more neighbour information (margin 0: the most information; "likelihood": scikit-learn's).

    IMGCLUST_MNIST=DIR nice python benchmarks/gmm_starts.py [--sets digits ...]
        [--seeds 0 1 2 3 4] [--limit 10000] [--doc]

Figures go to ``benchmarks/results/gmm-starts.json``; ``--doc`` writes the table into
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, save_results, update_doc_section  # noqa: E402
from general import SETS, run_recipe, saved_sets  # noqa: E402

NAME = "gmm-starts"
RECIPE = "sym-umap-gmm"
MARGINS: tuple[float | str, ...] = ("likelihood", 0.0, 0.005, 0.01, 0.015, 0.02)


def measure(seed: int, data: Path, runs: Path, truth: np.ndarray) -> dict[str, Any]:
    """One run's starts: each one's seed, neighbour information, likelihood, ACC and NMI."""
    from sklearn.mixture import GaussianMixture

    from imgclust.results.metrics import external_scores

    result = run_recipe(RECIPE, data, seed, runs)
    settings = result.config["clusterer"]
    starts = []
    for start in result.metrics["clusterer_starts"]:
        mixture = GaussianMixture(
            settings["n_clusters"],
            covariance_type=settings.get("covariance_type", "full"),
            max_iter=settings.get("max_iter", 200),
            random_state=start["seed"],
        ).fit(result.features)
        scores = external_scores(truth, mixture.predict(result.features))
        starts.append({**start, "acc": scores["acc"], "nmi": scores["nmi"]})
    return {"seed": seed, "starts": starts}


def kept_scores(runs: list[dict[str, Any]], margin: float | str) -> tuple[list[float], list[float]]:
    """ACC and NMI, one per run, of the start that the rule keeps."""
    from imgclust.kit.starts import kept_start

    accs, nmis = [], []
    for run in runs:
        starts = run["starts"]
        if margin == "likelihood":
            index = max(range(len(starts)), key=lambda i: starts[i]["score"])
        else:
            index = kept_start(starts, float(margin))
        accs.append(starts[index]["acc"])
        nmis.append(starts[index]["nmi"])
    return accs, nmis


def table_lines(table: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One row per set and rule: mean (min-max) ACC and mean NMI of the kept starts."""
    lines = [
        "| set | seeds | kept by | ACC | NMI |",
        "| --- | --- | --- | --- | --- |",
    ]
    for set_name in SETS:
        runs = sorted(table.get(set_name, []), key=lambda r: r["seed"])
        if not runs:
            continue
        seeds = ",".join(str(r["seed"]) for r in runs)
        for margin in MARGINS:
            accs, nmis = kept_scores(runs, margin)
            rule = margin if margin == "likelihood" else f"margin {float(margin):.1%}"
            lines.append(
                f"| {set_name} | {seeds} | {rule} | {np.mean(accs):.4f} "
                f"({min(accs):.4f}-{max(accs):.4f}) | {np.mean(nmis):.4f} |"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--limit", type=int, default=10000, help="MNIST images (a sample)")
    parser.add_argument("--doc", action="store_true", help="write the table into the docs")
    parser.add_argument("--from-results", action="store_true", help="run nothing; redraw")
    args = parser.parse_args(argv)
    path = RESULTS / f"{NAME}.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    table: dict[str, list[dict[str, Any]]] = saved.get("sets", {})
    with tempfile.TemporaryDirectory(prefix="imgclust-starts-") as folder:
        names = [] if args.from_results else args.sets
        for set_name, data, labels in saved_sets(names, args.limit, Path(folder)):
            for seed in args.seeds:
                run = measure(seed, data, Path(folder) / "runs", labels)
                kept = [r for r in table.get(set_name, []) if r["seed"] != seed]
                table[set_name] = [*kept, run]
                save_results(NAME, {"recipe": RECIPE, "limit": args.limit, "sets": table})
                print(set_name, seed, flush=True)
    lines = table_lines(table)
    print("\n".join(lines))
    if args.doc:
        update_doc_section(NAME, "\n".join(lines))


if __name__ == "__main__":
    main()
