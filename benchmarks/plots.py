"""What the pictures cost: the plotting stage plus report.html (the explorer) for 1,797 and 10,000
images, each in a fresh process (imports and loading UMAP's cached machine code included), and
the size of the page for 10,000 and 70,000 images.

Cases: scikit-learn's digits (1,797 images, pca 10, kmeans 10); MNIST's test split (10,000,
pca 50, kmeans 10) when ``IMGCLUST_MNIST`` names a copy of MNIST, else 10,000 synthetic digit-like
28x28 images; MNIST's 70,000 (or synthetic) for the page size only. Each case runs the pipeline
without plots, then times ``plot_run`` and ``write_report`` on the result.

The first-run cases (``--first-run``, MNIST needed) time the plots of the article's run on a
fresh install: each in a fresh process whose user cache (numba's compiled code included) starts
empty, the map chosen as ``auto`` does (PCA until UMAP's code is compiled), then forced to UMAP
(what a first run paid before: numba compiling), then UMAP again with the code now cached.

    nice python benchmarks/plots.py [--render] [--first-run]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import RESULTS, save_results, update_doc_section

CASES = ("digits", "10000", "70000")


def synthetic(n: int) -> tuple[Any, Any]:
    """``n`` digit-like 28x28 uint8 images (the scale benchmark's) and their digit labels."""
    import numpy as np
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    digits = load_digits()
    picks = rng.integers(0, len(digits.images), n)
    big = np.kron(digits.images[picks] * (255.0 / 16.0), np.ones((3, 3)))
    out = np.zeros((n, 28, 28))
    out[:, 2:26, 2:26] = big
    out += rng.normal(0, 8, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8), digits.target[picks]


def dataset_of(case: str, folder: Path) -> tuple[dict[str, Any], str, str]:
    """The dataset stage for a case, the split, and what the images are."""
    if case == "digits":
        return {"name": "digits"}, "all", "digits"
    mnist = os.environ.get("IMGCLUST_MNIST")
    if mnist:
        return {"name": "mnist", "path": mnist}, "test" if case == "10000" else "all", "MNIST"
    import numpy as np

    images, labels = synthetic(int(case))
    np.save(folder / "images.npy", images)
    np.save(folder / "labels.npy", labels)
    stage = {"name": "arrays", "images": str(folder / "images.npy")}
    stage["labels"] = str(folder / "labels.npy")
    return stage, "all", "synthetic digits"


def measure(case: str) -> dict[str, Any]:
    """One case in this process: the run without plots, then the plots and the page, timed."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    from imgclust import api
    from imgclust.engine.runner import RunResult
    from imgclust.report.page import write_report
    from imgclust.report.plots import plot_run

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        dataset, split, what = dataset_of(case, folder)
        components = 10 if case == "digits" else 50
        done = api.run(
            dataset=dataset,
            encoders={"name": "pca", "n_components": components},
            clusterer={"name": "kmeans", "n_clusters": 10, "n_init": 1},
            split=split,
            runs_dir=folder / "runs",
            plots=False,  # plot_run below draws and times them
        )
        result = RunResult(
            done.path, done.summary, done.labels, done.features, done.pipeline, done.data
        )
        lines: list[str] = []
        clock = time.perf_counter()
        plot_seconds = plot_run(result, lines.append)
        clock = time.perf_counter()
        write_report(done.path)
        report_seconds = time.perf_counter() - clock
        page = (done.path / "report.html").stat().st_size
        opened = open_seconds(done.path / "report.html")
        return {
            "case": case,
            "images": len(done.labels),
            "what": what,
            "plots_s": round(plot_seconds, 2),
            "report_s": round(report_seconds, 2),
            "total_s": round(plot_seconds + report_seconds, 2),
            "page_mb": round(page / 1e6, 2),
            "open_s": opened,
            "log": [line for line in lines if line.startswith(("plotted", "warning"))],
        }


FIRST_RUN = {
    "auto": "auto (PCA: UMAP not compiled yet)",
    "umap-cold": "UMAP, compiling on first use",
    "umap-cached": "UMAP, compiled code cached",
}


def measure_first_run(mode: str) -> dict[str, Any]:
    """The article recipe (1 training epoch: the plots do not depend on it) without plots, then
    its plots and page timed, in this process; the map as ``mode`` says."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ["IMGCLUST_PLOT_MAP"] = "auto" if mode == "auto" else "umap"
    from imgclust import api
    from imgclust.engine.runner import RunResult
    from imgclust.report.page import write_report
    from imgclust.report.plots import plot_run

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        done = api.run(
            "article",
            settings={"dataset": {"path": os.environ["IMGCLUST_MNIST"]}, "encoder": {"epochs": 1}},
            runs_dir=folder / "runs",
            plots=False,
        )
        result = RunResult(
            done.path, done.summary, done.labels, done.features, done.pipeline, done.data
        )
        lines: list[str] = []
        plot_seconds = plot_run(result, lines.append)
        clock = time.perf_counter()
        write_report(done.path)
        report_seconds = time.perf_counter() - clock
        return {
            "mode": mode,
            "images": len(done.labels),
            "run_s": round(float(done.metrics.get("timings", {}).get("total", 0.0)), 1),
            "plots_s": round(plot_seconds, 2),
            "report_s": round(report_seconds, 2),
            "total_s": round(plot_seconds + report_seconds, 2),
            "log": [line for line in lines if line.startswith(("plotted", "warning", "map"))],
        }


def first_run_cases() -> list[dict[str, Any]]:
    """The three first-run modes, each in a fresh process; the last two share one cache."""
    cases = []
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        for mode, cache in (("auto", first), ("umap-cold", second), ("umap-cached", second)):
            env = {**os.environ, "XDG_CACHE_HOME": cache}
            env.pop("NUMBA_CACHE_DIR", None)
            argv = [sys.executable, __file__, "--first-run-case", mode]
            done = subprocess.run(argv, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise SystemExit(f"first-run case {mode} failed:\n{done.stderr[-3000:]}")
            cases.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return cases


ARTICLE_RUN_S = 220  # `imgclust run` of the article recipe as published (docs/benchmarks.md)


def first_run_markdown(data: dict[str, Any]) -> str:
    """The docs section: one row per first-run mode."""
    rows = [
        "| map | plots (s) | report.html (s) | together (s) | share of a 220 s article run |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in data["cases"]:
        rows.append(
            f"| {FIRST_RUN[r['mode']]} | {r['plots_s']:.1f} | {r['report_s']:.1f} | "
            f"{r['total_s']:.1f} | {r['total_s'] / ARTICLE_RUN_S:.0%} |"
        )
    machine = data["machine"]
    load = data.get("load") or [0.0]
    rows.append(
        f"\nMeasured by `IMGCLUST_MNIST=DIR nice python benchmarks/plots.py --first-run` on "
        f"{machine['cpus']} CPUs ({machine['date']}, load average {min(load):.1f} to "
        f"{max(load):.1f}): the article recipe (conv-ae as published, k-means 10, the 10,000 "
        "test images clustered; 1 training epoch instead of 3, which the plots do not depend on), "
        "each mode in a fresh process whose user cache starts empty, as on a fresh install "
        "(*cached*: the process after *compiling*, sharing its cache). The share is of the "
        f"{ARTICLE_RUN_S} s the published recipe's whole run took (see above)."
    )
    return "\n".join(rows)


def open_seconds(page: Path) -> float | None:
    """Seconds headless Chromium takes to load the page and draw the explorer (None without
    chromium, chromedriver or selenium)."""
    import shutil

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError:
        return None
    if not chromium or not driver:
        return None
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        clock = time.perf_counter()
        browser.get(page.as_uri())
        WebDriverWait(browser, 120).until(
            lambda d: d.execute_script("return document.body.dataset.explorer") == "ready"
        )
        return round(time.perf_counter() - clock, 2)
    finally:
        browser.quit()


def in_fresh_process(case: str) -> dict[str, Any]:
    """:func:`measure` in a new interpreter, so imports and cache loading are counted."""
    argv = [sys.executable, __file__, "--case", case]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"case {case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(data: dict[str, Any]) -> str:
    """The docs section: one row per case."""
    rows = [
        "| images | what | plots (s) | report.html (s) | together (s) | page (MB) | opens in (s) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in data["cases"]:
        timed = r["case"] != "70000"
        rows.append(
            f"| {r['images']:,} | {r['what']} | "
            + (
                f"{r['plots_s']:.1f} | {r['report_s']:.1f} | {r['total_s']:.1f}"
                if timed
                else "- | - | -"
            )
            + f" | {r['page_mb']:.1f} | "
            + ("-" if r.get("open_s") is None else f"{r['open_s']:.1f}")
            + " |"
        )
    machine = data["machine"]
    rows.append(
        f"\nMeasured by `benchmarks/plots.py` on {machine['cpus']} CPUs ({machine['date']}), each "
        "case in a fresh process with UMAP's compiled code already cached (the first run on a "
        "machine compiles it once, tens of seconds). The map is UMAP on a 3,000-point sample; "
        "the pipeline is pca then kmeans, so no reconstructions or training curves are drawn. "
        "*opens in*: headless Chromium loading the page until the explorer has drawn its map "
        "and first gallery page."
    )
    if data.get("load"):
        low, high = min(data["load"]), max(data["load"])
        rows.append(
            f"\nThe machine was shared: load average {low:.1f} to {high:.1f} on its "
            f"{machine['cpus']} cores during the cases, so the times are upper bounds."
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=CASES, help="measure one case here (internal)")
    parser.add_argument("--render", action="store_true", help="only rewrite the docs section")
    parser.add_argument("--first-run-case", choices=FIRST_RUN, help="internal")
    parser.add_argument(
        "--first-run", action="store_true", help="time the article run's plots on a fresh install"
    )
    args = parser.parse_args()
    if args.case:
        print(json.dumps(measure(args.case)))
        return
    if args.first_run_case:
        print(json.dumps(measure_first_run(args.first_run_case)))
        return
    if args.render:
        update_doc_section("plots", markdown(json.loads((RESULTS / "plots.json").read_text())))
        first = RESULTS / "plots-first-run.json"
        if first.is_file():
            update_doc_section("plots-first-run", first_run_markdown(json.loads(first.read_text())))
        return
    if args.first_run:
        if not os.environ.get("IMGCLUST_MNIST"):
            raise SystemExit("--first-run times the article's run: set IMGCLUST_MNIST")
        load = [os.getloadavg()[0]]
        cases = first_run_cases()
        load.append(os.getloadavg()[0])
        for case in cases:
            print(json.dumps(case))
        path = save_results(
            "plots-first-run", {"cases": cases, "load": [round(v, 1) for v in load]}
        )
        update_doc_section("plots-first-run", first_run_markdown(json.loads(path.read_text())))
        return
    in_fresh_process("digits")  # warm UMAP's cache of compiled code, as any earlier run has
    load = [os.getloadavg()[0]]
    cases = [in_fresh_process(case) for case in CASES]
    load.append(os.getloadavg()[0])
    for case in cases:
        print(json.dumps(case))
    path = save_results("plots", {"cases": cases, "load": [round(v, 1) for v in load]})
    update_doc_section("plots", markdown(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
