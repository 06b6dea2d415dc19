"""One clustering run: load the data, fit the pipeline, cluster, score, write the run folder."""

from __future__ import annotations

import random
import shlex
import sys
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, atomic
from .config import stage_settings, to_toml
from .errors import DataError, ImgclustError, SettingsError
from .interfaces import Checkpoints, HasHistory, ImageSet, requested_clusters, splits_of
from .metrics import (
    DegenerateWarning,
    composition,
    degeneracy,
    external_scores,
    internal_scores,
)
from .outputs import csv_text
from .pipeline import Pipeline, Stage
from .registry import Registry
from .runfolder import (
    TEMPORARY_FILE,
    create_incomplete,
    created_here,
    discard,
    finalise,
    lock,
    os_reason,
    remove_temporaries,
    run_name,
    unlock,
)
from .summary import clusters_markdown

Log = Callable[[str], None]


@dataclass
class RunResult:
    """What a finished run produced: its folder, labels, features and the summary record."""

    path: Path
    record: dict[str, Any]
    labels: np.ndarray
    features: np.ndarray
    pipeline: Pipeline
    data: ImageSet
    extras: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed Python's and NumPy's global generators (stages get the seed through settings)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)


def build_stage(registry: Registry, kind: str, stage: Mapping[str, Any]) -> Stage:
    """Call a stage's factory with its resolved settings."""
    entry = registry.get(kind, stage["name"])
    settings = stage_settings(stage)
    try:
        instance = entry.target(**settings)
    except ImgclustError:
        raise
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{kind[:-1]} {stage['name']!r} rejected its settings: {exc}") from None
    return Stage(stage["name"], instance, settings)


def build_pipeline(registry: Registry, config: Mapping[str, Any]) -> Pipeline:
    """The unfitted pipeline a resolved config describes."""
    encoders = [build_stage(registry, "encoders", e) for e in config["encoder"]]
    refiners = [build_stage(registry, "refiners", r) for r in config.get("refiner") or []]
    clusterer = build_stage(registry, "clusterers", config["clusterer"])
    return Pipeline(encoders, clusterer, refiners=refiners)


def load_split(dataset: Any, name: str, split: str) -> ImageSet:
    """Load one split, checking that the dataset has it and that the images are sound."""
    splits = list(splits_of(dataset))
    if split not in splits:
        raise SettingsError(
            f"dataset {name!r} has no split {split!r}; it has {', '.join(splits)}. "
            "Pass --split or --set split=NAME."
        )
    data = dataset.load(split)
    if not isinstance(data, ImageSet):
        raise DataError(f"dataset {name!r} returned {type(data).__name__}, not an ImageSet.")
    return data.validate(f"dataset {name!r} ({split})")


def load_data(
    registry: Registry, config: Mapping[str, Any], log: Log
) -> dict[str, ImageSet | None]:
    """The clustered split, the split the encoders learn from, and the validation split."""
    stage = build_stage(registry, "datasets", config["dataset"])
    split = config["split"]
    loaded: dict[str, ImageSet] = {}

    def get(which: str) -> ImageSet:
        if which not in loaded:
            log(f"loading {stage.name} ({which})")
            loaded[which] = load_split(stage.instance, stage.name, which)
        return loaded[which]

    data = get(split)
    fit = get(config.get("fit_split", split))
    validation = get(config["validation_split"]) if config.get("validation_split") else None
    for other in (fit, validation):
        if other is not None and other.shape != data.shape:
            raise DataError(
                f"splits of {stage.name!r} differ in image shape: {other.shape} and {data.shape}."
            )
    return {"data": data, "fit": fit, "validation": validation}


def execute(
    registry: Registry,
    config: Mapping[str, Any],
    runs_dir: Path,
    *,
    log: Log = lambda message: None,
    plots: bool = True,
    after_fit: Callable[[RunResult], None] | None = None,
    folder: Path | None = None,
) -> RunResult:
    """Run a resolved config end to end and return the finished run folder's result."""
    seed = int(config["seed"])
    seed_everything(seed)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    pipeline = build_pipeline(registry, config)
    clock = time.perf_counter()
    splits = load_data(registry, config, log)
    timings["load"] = time.perf_counter() - clock
    data, fit_data, validation = splits["data"], splits["fit"], splits["validation"]
    _check_cluster_count(pipeline, len(data))

    # ``folder``: an interrupted run's NAME.incomplete folder to continue in (imgclust run --resume)
    if folder is None:
        folder = create_incomplete(Path(runs_dir), run_name(config))
    else:
        lock(folder)
        remove_temporaries(folder)  # what a killed earlier attempt left half-written
    try:
        atomic.write_text(folder / "config.toml", to_toml(config))
        if data.info.get("skipped"):  # unreadable input files the dataset left out
            atomic.write_text(folder / "skipped.txt", "\n".join(data.info["skipped"]) + "\n")
        for stage in pipeline.encoders:
            if isinstance(stage.instance, Checkpoints):
                stage.instance.checkpoint_dir = folder / "checkpoints" / stage.name
        fit_images = fit_data.images
        features = pipeline.fit_encoders(
            fit_images,
            None if validation is None else validation.images,
            log=log,
            return_features=fit_data is data,
        )
        timings.update(pipeline.timings)
        if features is None:
            clock = time.perf_counter()
            features = pipeline.transform(data.images)
            timings[f"encode {config['split']}"] = time.perf_counter() - clock
        log(f"clustering {len(features)} feature vectors of {features.shape[1]} numbers")
        labels = pipeline.fit_clusterer(features)
        if pipeline.refiners:
            labels = pipeline.fit_refiners(data.images, features, log=log)
        timings.update(pipeline.timings)

        clock = time.perf_counter()
        metrics = score(features, labels, data, seed)
        if "skipped" in data.info:
            metrics["skipped"] = len(data.info["skipped"])
        if pipeline.refiners and data.labels is not None:  # what the refiners gained
            metrics["before_refiners"] = external_scores(
                pipeline.clusterer_labels_, np.asarray(data.labels)
            )
        timings["score"] = time.perf_counter() - clock
        record = {
            "imgclust_version": __version__,
            "dataset": config["dataset"]["name"],
            "split": config["split"],
            "fit_split": config.get("fit_split", config["split"]),
            "n_images": len(data),
            "image_shape": list(data.shape),
            "feature_dim": int(features.shape[1]),
            "pipeline": f"{config['dataset']['name']} -> {pipeline.name}",
            "seed": seed,
            "metrics": metrics,
            "clusters": composition(labels, data.labels, data.class_names),
        }
        result = RunResult(folder, record, labels, features, pipeline, data)
        for stage in pipeline.encoders:
            history = stage.instance.history_ if isinstance(stage.instance, HasHistory) else None
            if history:
                metrics.setdefault("training", {})[stage.name] = history
                for key in ("loss", "val_loss"):
                    if history.get(key):
                        metrics[key] = float(history[key][-1])
        clock = time.perf_counter()
        write_outputs(result)
        from .persist import save_pipeline

        save_pipeline(pipeline, folder, config, data, registry=registry)
        if after_fit is not None:
            after_fit(result)
        timings["write"] = time.perf_counter() - clock
        if plots:
            from .plots import plot_run

            timings["plots"] = plot_run(result, log)
        timings["total"] = time.perf_counter() - started
        metrics["timings"] = {k: round(v, 3) for k, v in timings.items()}
        atomic.write_json(
            folder / "metrics.json",
            {**metrics, "n_images": len(data), "n_clusters": _n_clusters(labels)},
        )
        atomic.write_json(folder / "summary.json", result.record)  # now with the timings
        if plots:
            from .report_html import write_report_quietly

            write_report_quietly(folder, log)
        result.path = finalise(folder)
    except BaseException as exc:
        error = _failed(folder, exc)
        if error is exc:
            raise
        raise error from None
    return result


def _failed(folder: Path, exc: BaseException) -> BaseException:
    """Clean up after a failed or interrupted run; the exception to raise, one line for OSError.

    The folder goes only when this process created it and no checkpoint is worth resuming;
    otherwise it is kept (and unlocked) and the exception names it for the resume hint.
    """
    from .resume import note_kept

    worth_keeping = not created_here(folder) or _has_checkpoints(folder)
    if isinstance(exc, OSError):
        hint = f"; resume with: imgclust run --resume {shlex.quote(str(folder))}"
        reason = f"cannot write the run folder {str(folder)!r}: {os_reason(exc)}"
        exc = ImgclustError(reason + (hint if worth_keeping else ""))
    if worth_keeping or not discard(folder):
        unlock(folder)
        if folder.is_dir():
            note_kept(exc, folder)
    return exc


def _has_checkpoints(folder: Path) -> bool:
    try:
        files = (p for p in (folder / "checkpoints").glob("**/*") if p.is_file())
        return any(not TEMPORARY_FILE.match(p.name) for p in files)
    except OSError:
        return False


def _n_clusters(labels: np.ndarray) -> int:
    return int(len(np.unique(labels[labels != -1])))


def _check_cluster_count(pipeline: Pipeline, n_images: int) -> None:
    k = requested_clusters(pipeline.clusterer.instance)
    if isinstance(k, int) and k > n_images:
        raise DataError(
            f"asked for {k} clusters but the dataset has only {n_images} images: "
            "lower clusterer.n_clusters."
        )


def score(features: np.ndarray, labels: np.ndarray, data: ImageSet, seed: int) -> dict[str, Any]:
    """External scores when labels exist, internal ones always (they need no labels).

    Degenerate features (all one point, or fewer distinct points than clusters) are recorded
    under ``degenerate`` with a one-line warning, and their internal scores are None.
    """
    metrics: dict[str, Any] = {}
    if data.labels is not None:
        metrics.update(external_scores(labels, np.asarray(data.labels)))
    metrics.update(internal_scores(features, labels, seed=seed))
    metrics["noise"] = int((labels == -1).sum())
    reason = degeneracy(features, labels, seed=seed)
    if reason is not None:
        import warnings

        metrics["degenerate"] = reason
        warnings.warn(f"degenerate clustering: {reason}.", DegenerateWarning, stacklevel=2)
    return metrics


def write_outputs(result: RunResult) -> None:
    """Write clusters.md, assignments.csv and embeddings.npy (summary.json comes last)."""
    folder = result.path
    atomic.write_text(folder / "clusters.md", clusters_markdown(result.record))
    atomic.write_text(folder / "assignments.csv", assignments_csv(result.data, result.labels))
    atomic.write_npy(folder / "embeddings.npy", result.features)


def assignments_csv(data: ImageSet, labels: np.ndarray) -> str:
    """id, cluster and (when known) label of every image, safe to open in a spreadsheet."""
    has_labels = data.labels is not None
    rows = []
    for index, (image_id, cluster) in enumerate(zip(data.ids, labels, strict=True)):
        row = [image_id, int(cluster)]
        if has_labels:
            label = data.labels[index]
            if data.class_names is not None and isinstance(label, (int, np.integer)):
                label = (
                    data.class_names[int(label)] if 0 <= label < len(data.class_names) else label
                )
            row.append(label.item() if isinstance(label, np.generic) else label)
        rows.append(row)
    return csv_text(["id", "cluster", "label"] if has_labels else ["id", "cluster"], rows)


class _CallableModule(types.ModuleType):
    """``imgclust.run`` is both this module and the Python API's ``run`` function.

    Importing a submodule binds its name on the package, so the module named ``run`` would hide
    a function of that name; calling the module calls :func:`imgclust.api.run` instead.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .api import run

        return run(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
