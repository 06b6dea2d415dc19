"""Local against ``--dask local:2``: wall and CPU time, client and worker memory, overhead ratio.

Each case is one ``imgclust run`` (pca 50 -> minibatch-kmeans 10 fitted on a 20,000-image
sample, or with ``--recipe NAME`` that recipe fitted on ``--fit-sample`` images; ``--no-plots``)
in a fresh process, on a uint8 ``.npy`` memory map and on a PNG folder of digit-like 28x28
images (made as ``benchmarks/scale.py`` makes them). CPU time is the command's and every process
it started (Dask's workers included); peak RSS is sampled from /proc for the client and each
worker process. The overhead ratio is distributed CPU / local CPU. The run's own timings give
the fit (on the sample) and the assignment of every image in chunks, and so the images each
worker assigns per second. Rows of other pipelines, sizes and sources already in the results
file are kept.

Then minibatch-kmeans on N x 50 features (ten overlapping Gaussian blobs): scikit-learn's old
defaults against the plugin's, time and quality (inertia on all points, accuracy against the
blobs).

    nice python benchmarks/distributed.py [--root DIR] [--arrays 100000,1000000]
        [--folders 20000] [--kmeans 1000000] [--recipe sym-umap-gmm --fit-sample 70000]

Files go under ``--root`` (default: a temporary folder, removed afterwards); never commit them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import save_results, update_doc_section
from scale import array_file, png_folder

MiB = 2**20
SAMPLE = 20_000
CHUNK = 50_000


class PeakSampler:
    """Peak RSS (VmHWM) of a process and its descendants, read from /proc every 0.2 s."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peaks, self.roles = pid, {}, {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(0.2):
            for pid in [self.pid, *descendants(self.pid)]:
                try:
                    text = Path(f"/proc/{pid}/status").read_text()
                    command = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                for line in text.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peaks[pid] = max(self.peaks.get(pid, 0), int(line.split()[1]) * 1024)
                self.roles[pid] = "client" if pid == self.pid else _role(command)

    def report(self) -> dict[str, Any]:
        self.done.set()
        self.thread.join()
        workers = [self.peaks[p] / MiB for p, r in self.roles.items() if r == "worker"]
        return {
            "client_peak_mib": round(self.peaks.get(self.pid, 0) / MiB, 1),
            "worker_peak_mib": [round(w, 1) for w in sorted(workers)],
        }


def _role(command: bytes) -> str:
    """Dask's worker processes are spawned by multiprocessing; its resource tracker is not one."""
    if b"resource_tracker" in command or b"semaphore_tracker" in command:
        return "other"
    return "worker" if b"multiprocessing" in command else "other"


def descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        parent = pending.pop()
        children = []
        for task in Path(f"/proc/{parent}/task").glob("*"):  # a thread's children are its own
            try:
                children += (task / "children").read_text().split()
            except OSError:
                continue
        found += [int(c) for c in children]
        pending += [int(c) for c in children]
    return found


def stages(recipe: str | None, fit_sample: int) -> tuple[str, list[str]]:
    """The pipeline's name in the table and its command-line options."""
    if recipe:
        return recipe, ["-r", recipe, "-s", f"fit_sample={fit_sample}"]
    return "pca-kmeans", [
        "-e", "pca", "-s", "encoder.n_components=50", "-k", "minibatch-kmeans",
        "-s", "clusterer.n_clusters=10", "-s", f"fit_sample={fit_sample}",
    ]  # fmt: skip


def run_case(
    dataset: list[str], runs: Path, dask: str | None, pipeline: list[str]
) -> dict[str, Any]:
    """One ``imgclust run`` in a fresh process: wall, CPU of it and its children, peak memory,
    and the run's own fit and assignment times."""
    command = [
        sys.executable, "-m", "imgclust", "run", *dataset, *pipeline,
        "-s", f"chunk_size={CHUNK}", "--no-plots", "--json", "--runs-dir", str(runs),
        *(["--dask", dask] if dask else []),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(  # not from benchmarks/, where this file would hide Dask's
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=runs.parent
    )
    sampler = PeakSampler(process.pid)
    out, err = process.communicate()
    wall = time.perf_counter() - started
    peaks = sampler.report()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise SystemExit(f"run failed: {err.decode()[-2000:]}")
    record = json.loads(out)
    shutil.rmtree(record["run"], ignore_errors=True)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    timings = record["metrics"].get("timings", {})
    workers = int(dask.split(":")[1]) if dask and dask.startswith("local:") else 1
    # A chunked run's "assign" holds the fit on the sample and then every chunk: the chunks'
    # share is what is left after the pipeline's own fit, encode, cluster and refine steps.
    fit = sum(
        v for k, v in timings.items() if k.startswith(("fit ", "encode ", "cluster ", "refine "))
    )
    chunks = timings["assign"] - fit if "assign" in timings else None
    return {
        "mode": dask or "local",
        "n": record["n_images"],
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "acc": record["metrics"].get("acc"),
        "fit_s": round(fit, 1),
        "chunks_s": round(chunks, 1) if chunks else None,
        "assign_per_worker_s": round(record["n_images"] / chunks / workers) if chunks else None,
        "timings": timings,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        **peaks,
    }


def compare(
    name: str, dataset: list[str], runs: Path, pipeline: str, options: list[str]
) -> list[dict[str, Any]]:
    rows = []
    for dask in (None, "local:2"):
        print(f"{name} {pipeline}: {dask or 'local'} ...", flush=True)
        rows.append(
            {"source": name, "pipeline": pipeline, **run_case(dataset, runs, dask, options)}
        )
        print(f"  {rows[-1]}", flush=True)
    rows[1]["overhead"] = round(rows[1]["cpu_s"] / rows[0]["cpu_s"], 2)
    return rows


def merged_runs(earlier: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The new rows, and the earlier ones of other pipelines, sizes, sources or modes."""

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        return (row.get("pipeline", "pca-kmeans"), row["source"], row["n"], row["mode"])

    replaced = {key(row) for row in new}
    return [row for row in earlier if key(row) not in replaced] + new


# minibatch-kmeans --------------------------------------------------------------------------
def blobs(n: int, seed: int = 0) -> tuple[Any, Any]:
    """N x 50 float32 features around ten centres that overlap a little."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (10, 50)).astype(np.float32)
    truth = rng.integers(0, 10, n)
    features = centres[truth] + rng.normal(0, 0.6, (n, 50)).astype(np.float32)
    return features.astype(np.float32), truth


def kmeans_case(n: int, settings: dict[str, Any], label: str) -> dict[str, Any]:
    import numpy as np
    from sklearn.cluster import MiniBatchKMeans

    from imgclust.results.metrics import external_scores

    features, truth = blobs(n)
    started = time.perf_counter()
    cpu = time.process_time()
    model = MiniBatchKMeans(n_clusters=10, random_state=0, **settings)
    labels = model.fit_predict(features)
    seconds = time.perf_counter() - started
    inertia = float(((features - model.cluster_centers_[labels]) ** 2).sum(dtype=np.float64))
    return {
        "settings": label,
        "n": n,
        "seconds": round(seconds, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
        "steps": int(model.n_steps_),
        "inertia": round(inertia, 1),
        "acc": round(float(external_scores(truth, labels)["acc"]), 4),
    }


OLD = {"batch_size": 1024, "n_init": 3, "max_iter": 100}


def kmeans_rows(n: int) -> list[dict[str, Any]]:
    from imgclust.plugins.sklearn_clusterers import minibatch_kmeans

    params = minibatch_kmeans().params if hasattr(minibatch_kmeans(), "params") else {}
    new = {k: params[k] for k in ("batch_size", "n_init", "max_iter", "max_no_improvement")
           if k in params}  # fmt: skip
    rows = []
    for label, settings in (("before", OLD), ("now", new)):
        print(f"minibatch-kmeans {label} {settings} ...", flush=True)
        rows.append(kmeans_case(n, settings, f"{label}: {settings}"))
        print(f"  {rows[-1]}", flush=True)
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "`nice python benchmarks/distributed.py` (2 cores shared with other work; pca-kmeans is",
        f"pca 50 -> minibatch-kmeans 10 fitted on a {SAMPLE:,}-image sample; a recipe is fitted on",
        f"the sample its row names; chunks of {CHUNK:,}; fit s is the fit on the sample,",
        "chunks s the reading, encoding and assigning of every image after it, assign/s the",
        "images each worker assigned per second then):",
        "",
        "| images | pipeline | mode | wall s | CPU s | CPU ratio | fit s | chunks s | assign/s | "
        "client peak MiB | worker peaks MiB | load | ACC |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for row in results.get("runs", []):
        workers = ", ".join(f"{w:.0f}" for w in row["worker_peak_mib"]) or "-"
        pipeline = row.get("pipeline", "pca-kmeans")
        if row.get("fit_sample"):
            pipeline += f" (fit on {row['fit_sample']:,})"
        load = row.get("load_average", ["-"])[0]
        lines.append(
            f"| {row['n']:,} {row['source']} | {pipeline} | {row['mode']} | {row['wall_s']} | "
            f"{row['cpu_s']} | {row.get('overhead', '')} | {row.get('fit_s', '-')} | "
            f"{row.get('chunks_s') or '-'} | {row.get('assign_per_worker_s') or '-'} | "
            f"{row['client_peak_mib']:.0f} | "
            f"{workers} | {load} | {row['acc'] if row['acc'] is not None else '-'} |"
        )
    if results.get("kmeans"):
        lines += ["", "minibatch-kmeans alone on N x 50 features (ten blobs):", ""]
        lines += [
            "| settings | N | s | CPU s | steps | inertia | ACC |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in results["kmeans"]:
            lines.append(
                f"| {row['settings']} | {row['n']:,} | {row['seconds']} | {row['cpu_s']} | "
                f"{row['steps']} | "
                f"{row['inertia']:,.0f} | {row['acc']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path)
    parser.add_argument("--arrays", default="100000,1000000")
    parser.add_argument("--folders", default="20000")
    parser.add_argument("--kmeans", default="1000000")
    parser.add_argument("--recipe", help="a recipe instead of pca 50 -> minibatch-kmeans 10")
    parser.add_argument("--fit-sample", type=int, default=SAMPLE)
    args = parser.parse_args()
    sizes = [int(v) for v in args.arrays.split(",") if v and int(v)]
    folders = [int(v) for v in args.folders.split(",") if v and int(v)]
    kmeans = [int(v) for v in args.kmeans.split(",") if v]
    root = args.root or Path(tempfile.mkdtemp(prefix="imgclust-distributed-"))
    root.mkdir(parents=True, exist_ok=True)
    earlier_file = Path(__file__).parent / "results" / "distributed.json"
    earlier = json.loads(earlier_file.read_text()) if earlier_file.exists() else {}
    results: dict[str, Any] = {"runs": [], "kmeans": [] if kmeans else earlier.get("kmeans", [])}
    pipeline, options = stages(args.recipe, args.fit_sample)

    def measured(source: str, dataset: list[str]) -> None:
        rows = compare(source, dataset, root / "runs", pipeline, options)
        for row in rows:
            row["fit_sample"] = args.fit_sample
        results["runs"] += rows
        save_results("distributed", {**results, "runs": merged_runs(earlier.get("runs", []),
                                                                     results["runs"])})  # fmt: skip

    try:
        for n in kmeans:
            results["kmeans"] += kmeans_rows(n)
        for n in sizes:
            measured("array", ["-d", "arrays", "-s", f"dataset.path={array_file(root, n)}"])
        for n in folders:
            folder = png_folder(root, n, os.cpu_count() or 1)
            measured("PNG", ["-d", "image-folder", "-s", f"dataset.path={folder}",
                             "-s", "dataset.cache=false"])  # fmt: skip
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    results["runs"] = merged_runs(earlier.get("runs", []), results["runs"])
    save_results("distributed", results)
    update_doc_section("distributed", markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
