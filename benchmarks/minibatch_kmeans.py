"""minibatch-kmeans on 1,000,000 x 50 float32 blobs: time and inertia of each stopping setting.

The registered ``minibatch-kmeans`` stage (as a run builds it) fits ten overlapping Gaussian
blobs (``distributed.blobs``) once per seed for each setting; the settings take turns, so that
the machine's load falls on all of them alike. Per setting: the median wall and CPU time over the
seeds, mini-batch steps (which do not depend on the load), inertia on all points (float64 sum of
squared distances to the assigned centre) with its spread over the seeds, and accuracy against
the blobs; the load average is noted before and after each fit. The first setting is the
baseline; inertia is compared with its median. Blobs are easy data, so with IMGCLUST_MNIST set
the same settings and seeds also cluster real features: all 70,000 MNIST images through
``pca`` (50 components).

    nice python benchmarks/minibatch_kmeans.py [--n 1000000] [--seeds 0,1,2]
        [--settings "max_no_improvement=10;max_no_improvement=7;max_no_improvement=5;..."]
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import time
from typing import Any

from common import save_results, update_doc_section
from distributed import blobs

TARGET_S = 30.0
INERTIA_TOLERANCE = 0.001  # within 0.1% of the baseline's inertia (median, and seed by seed)


def plugin_defaults() -> dict[str, Any]:
    """The plugin's settings and their defaults, read from its signature as the core does."""
    from imgclust.plugins.sklearn_clusterers import minibatch_kmeans

    return {
        name: parameter.default
        for name, parameter in inspect.signature(minibatch_kmeans).parameters.items()
        if name not in ("n_clusters", "seed")
    }


def parse_settings(text: str) -> list[dict[str, Any]]:
    """``"a=1,b=2;a=3"``: one dict of overrides per ``;``-separated setting (numbers parsed)."""
    settings = []
    for group in text.split(";"):
        pairs = [item.split("=", 1) for item in group.split(",") if item.strip()]
        settings.append({k.strip(): _number(v.strip()) for k, v in pairs})
    return settings


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def fit_once(features: Any, truth: Any, settings: dict[str, Any], seed: int) -> dict[str, Any]:
    """One fit of the plugin with ``settings`` and ``seed``: time, steps, inertia, accuracy."""
    import numpy as np

    import imgclust
    from imgclust.results.metrics import external_scores

    clusterer = imgclust.get_clusterer("minibatch-kmeans", n_clusters=10, seed=seed, **settings)
    clusterer = clusterer.instance
    load_before = os.getloadavg()[0]
    started, cpu = time.perf_counter(), time.process_time()
    labels = clusterer.fit_predict(features)
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    estimator = clusterer.estimator_
    centres = estimator.cluster_centers_
    inertia = float(((features - centres[labels]) ** 2).sum(dtype=np.float64))
    return {
        "seed": seed,
        "seconds": round(seconds, 2),
        "cpu_s": round(cpu_s, 2),
        "steps": int(estimator.n_steps_),
        "inertia": round(inertia, 1),
        "acc": round(float(external_scores(truth, labels)["acc"]), 4),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def summarise(
    settings: dict[str, Any], runs: list[dict[str, Any]], base: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """Medians and spreads of one setting's runs; inertia against the baseline's runs: their
    median, and the worst seed against the baseline with the same seed."""
    inertias = [r["inertia"] for r in runs]
    median_inertia = statistics.median(inertias)
    base_median = None if base is None else statistics.median(r["inertia"] for r in base)
    same_seed = {} if base is None else {r["seed"]: r["inertia"] for r in base}
    paired = [r["inertia"] / same_seed[r["seed"]] - 1 for r in runs if r["seed"] in same_seed]
    return {
        "settings": settings,
        "runs": runs,
        "median_s": round(statistics.median(r["seconds"] for r in runs), 2),
        "median_cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 2),
        "median_steps": statistics.median(r["steps"] for r in runs),
        "median_inertia": round(median_inertia, 1),
        "inertia_spread": [round(min(inertias), 1), round(max(inertias), 1)],
        "inertia_vs_baseline": None
        if base_median is None
        else round(median_inertia / base_median - 1, 6),
        "worst_seed_vs_baseline": round(max(paired), 6) if paired else None,
        "acc": [min(r["acc"] for r in runs), max(r["acc"] for r in runs)],
        "load_average": [
            min(v for r in runs for v in r["load_average"]),
            max(v for r in runs for v in r["load_average"]),
        ],  # fmt: skip
    }


def mnist_features() -> tuple[Any, Any] | None:
    """All 70,000 MNIST images as ``pca`` (50) features and their labels; None without MNIST."""
    import numpy as np

    import imgclust

    if not os.environ.get("IMGCLUST_MNIST"):
        return None
    data = imgclust.get_dataset("mnist").instance.load("all")
    encoder = imgclust.get_encoder("pca", n_components=50, seed=0).instance
    features = encoder.fit(data.images).transform(data.images)
    return np.asarray(features, dtype=np.float32), np.asarray(data.labels)


def measure(
    features: Any, truth: Any, candidates: list[dict[str, Any]], seeds: list[int]
) -> list[dict[str, Any]]:
    """Every setting fitted once per seed (settings taking turns); one summary row each."""
    runs: list[list[dict[str, Any]]] = [[] for _ in candidates]
    for seed in seeds:  # the settings take turns, so that load falls on each alike
        for index, settings in enumerate(candidates):
            print(f"seed {seed}: {settings} ...", flush=True)
            runs[index].append(fit_once(features, truth, settings, seed))
            print(f"  {runs[index][-1]}", flush=True)
    pairs = enumerate(zip(candidates, runs, strict=True))
    rows = [summarise(settings, fits, runs[0] if i else None) for i, (settings, fits) in pairs]
    for row in rows:
        changes = [row["inertia_vs_baseline"] or 0.0, row["worst_seed_vs_baseline"] or 0.0]
        row["within_target"] = row["median_s"] <= TARGET_S and all(
            abs(change) <= INERTIA_TOLERANCE for change in changes
        )
    return rows


def markdown(results: dict[str, Any]) -> str:
    seeds = ", ".join(str(s) for s in results["seeds"])
    lines = [
        f"`nice python benchmarks/minibatch_kmeans.py` (the `minibatch-kmeans` stage, 10 "
        f"clusters, seeds {seeds}; medians of the {len(results['seeds'])} fits; 2 cores shared "
        "with other work). The stage's defaults when measured: "
        + ", ".join(f"{k}={v}" for k, v in results["defaults"].items())
        + ".",
    ]
    lines += ["", f"{results['n']:,} x 50 float32, ten blobs:", ""]
    lines += table(results["settings"])
    if results.get("mnist"):
        lines += ["", "All 70,000 MNIST images as `pca` (50) features:", ""]
        lines += table(results["mnist"])
    return "\n".join(lines)


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| setting | median s | median CPU s | steps per seed | median inertia | inertia "
        "min-max over seeds | median vs first row | worst seed vs first row | ACC | load average |",
        "| --- | ---: | ---: | --- | ---: | --- | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        setting = ", ".join(f"{k}={v}" for k, v in row["settings"].items()) or "defaults"
        low, high = row["inertia_spread"]
        change, worst = row["inertia_vs_baseline"], row["worst_seed_vs_baseline"]
        steps = ", ".join(str(r["steps"]) for r in row["runs"])
        lines.append(
            f"| {setting} | {row['median_s']} | {row['median_cpu_s']} | {steps} | "
            f"{row['median_inertia']:,.0f} | {low:,.0f}-{high:,.0f} | "
            f"{'' if change is None else f'{change:+.4%}'} | "
            f"{'' if worst is None else f'{worst:+.4%}'} | "
            f"{row['acc'][0]}-{row['acc'][1]} | {row['load_average'][0]}-{row['load_average'][1]} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--settings",
        default="max_no_improvement=10;max_no_improvement=7;max_no_improvement=5;max_no_improvement=3",
    )
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    candidates = parse_settings(args.settings)
    results: dict[str, Any] = {"n": args.n, "seeds": seeds, "defaults": plugin_defaults()}
    results["settings"] = measure(*blobs(args.n), candidates, seeds)
    real = mnist_features()
    if real is not None:
        results["mnist"] = measure(*real, candidates, seeds)
    save_results("minibatch_kmeans", results)
    if not args.no_doc:
        update_doc_section("minibatch-kmeans", markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
