"""One clustering run, in named steps that :func:`execute` calls in order: prepare (seed, build
the pipeline, load the data), open the run folder, write its inputs, fit the encoders, cluster,
score, describe, write the results and the fitted pipeline, plot, write the metrics and the
report, finalise. The run's state passes from step to step in a :class:`RunState`.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from imgclust import __version__
from imgclust.console import Log
from imgclust.engine.build import Splits, build_pipeline, load_data, seed_everything
from imgclust.engine.chunks import fit_and_assign, is_chunked, load_for_chunks
from imgclust.engine.config import to_toml
from imgclust.engine.distributed import current_client, on_cluster, stages_of
from imgclust.engine.persist import save_pipeline
from imgclust.engine.pipeline import Pipeline
from imgclust.engine.resume import note_kept
from imgclust.errors import DataError, ImgclustError
from imgclust.io import atomic
from imgclust.io.content import write_record
from imgclust.io.outputs import csv_text
from imgclust.io.runfolder import (
    TEMPORARY_FILE,
    create_incomplete,
    created_here,
    discard,
    drop_checkpoints,
    finalise,
    lock,
    os_reason,
    remove_temporaries,
    run_name,
    unlock,
)
from imgclust.kit.invariances import Invariances, decide
from imgclust.report.page import write_report_quietly
from imgclust.report.plots import plot_run as draw
from imgclust.results.confidence import (
    ImageScores,
    cluster_quality,
    image_scores,
    outlier_threshold,
)
from imgclust.results.image_issues import ImageIssues, find_issues
from imgclust.results.label_review import LabelReview, review_labels
from imgclust.results.metrics import (
    DegenerateWarning,
    composition,
    degeneracy,
    external_scores,
    internal_scores,
    n_clusters,
)
from imgclust.results.summary import clusters_markdown, invariances_line
from imgclust.stages.interfaces import (
    Checkpoints,
    HasHistory,
    ImageSet,
    ReportsStarts,
    ReportsStop,
    UsesImageIds,
    UsesInvariances,
    requested_clusters,
)
from imgclust.stages.registry import Registry


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


@dataclass
class RunState:
    """One run on its way: what it was given and what its steps have made so far."""

    registry: Registry
    config: Mapping[str, Any]
    log: Log
    pipeline: Pipeline
    splits: Splits
    started: float  # perf_counter() when the run began
    timings: dict[str, float]
    folder: Path = Path()
    features: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    metrics: dict[str, Any] = field(default_factory=dict)
    scores: ImageScores | None = None
    issues: ImageIssues | None = None
    review: LabelReview | None = None
    invariances: Invariances | None = None
    #: A chunked run's last refiner probability and clusterer clusters of every image (its
    #: chunks wrote them; an in-memory run asks its pipeline).
    refiner_probability: np.ndarray | None = None
    clusterer_labels: np.ndarray | None = None

    @property
    def seed(self) -> int:
        """The run's seed, from its configuration."""
        return int(self.config["seed"])

    @property
    def data(self) -> ImageSet:
        """The images the run clusters."""
        return self.splits.data


def execute(
    registry: Registry,
    config: Mapping[str, Any],
    runs_dir: Path,
    *,
    log: Log = lambda message: None,
    plots: bool = True,
    after_fit: Callable[[RunResult], object] | None = None,
    folder: Path | None = None,
    keep_checkpoints: bool = False,
) -> RunResult:
    """Run a resolved config end to end and return the finished run folder's result.

    ``folder``: an interrupted run's NAME.incomplete folder to continue in (``--resume``).
    ``checkpoints/`` serves only ``--resume``: a finished run removes it unless
    ``keep_checkpoints``. With a ``dask`` key the run connects to that cluster (or starts a local
    one) and checks its workers before any work.
    """
    if config.get("dask"):
        if current_client() is None:
            with on_cluster(config["dask"], stages_of(config)):
                return execute(
                    registry,
                    config,
                    runs_dir,
                    log=log,
                    plots=plots,
                    after_fit=after_fit,
                    folder=folder,
                    keep_checkpoints=keep_checkpoints,
                )
    run = prepare(registry, config, log)
    run.folder = open_folder(config, runs_dir, folder)
    try:
        write_inputs(run)
        learn_invariances(run)
        fit_encoders(run)
        cluster(run)
        score_run(run)
        result = describe(run)
        write_results(run, result, after_fit)
        if plots:
            run.timings["plots"] = draw_plots(result, log)
        write_metrics(run, result)
        if plots:
            write_report(run)
        kept = None if keep_checkpoints else drop_checkpoints(run.folder)
        if kept:
            log(f"note: {kept}")
        result.path = finalise(run.folder)
    except BaseException as exc:
        error = _failed(run.folder, exc)
        if error is exc:
            raise
        raise error from None
    return result


# The steps of a run, in order ----------------------------------------------------------------
def prepare(registry: Registry, config: Mapping[str, Any], log: Log) -> RunState:
    """Seed, build the unfitted pipeline, load the data and check it can take the clusters."""
    seed_everything(int(config["seed"]))
    started = time.perf_counter()
    pipeline = build_pipeline(registry, config)
    clock = time.perf_counter()
    splits = load_for_chunks(registry, config, log, load_data)  # load_data unless chunked
    timings = {"load": time.perf_counter() - clock}
    _check_cluster_count(pipeline, len(splits.data))
    return RunState(registry, config, log, pipeline, splits, started, timings)


def open_folder(config: Mapping[str, Any], runs_dir: Path, folder: Path | None) -> Path:
    """A new NAME.incomplete run folder, or the interrupted one given, locked and tidied."""
    if folder is None:
        return create_incomplete(Path(runs_dir), run_name(config))
    lock(folder)
    remove_temporaries(folder)  # what a killed earlier attempt left half-written
    return folder


def write_inputs(run: RunState) -> None:
    """config.toml, the list of skipped input files, and where encoders keep checkpoints."""
    atomic.write_text(run.folder / "config.toml", to_toml(run.config))
    skipped = run.data.info.get("skipped")
    if skipped:  # unreadable input files the dataset left out
        atomic.write_text(run.folder / "skipped.txt", "\n".join(skipped) + "\n")
    for stage in run.pipeline.encoders:
        if isinstance(stage.instance, Checkpoints):
            stage.instance.checkpoint_dir = run.folder / "checkpoints" / stage.name


def learn_invariances(run: RunState) -> None:
    """Decide which transformations the images are invariant to (measured on a sample of the
    fit split, or as the ``invariances`` setting forces) and hand the decision to every stage
    that declares it uses one (:class:`UsesInvariances`)."""
    clock = time.perf_counter()
    setting = run.config.get("invariances", "auto")
    images = run.splits.fit.images
    try:  # listed files (--dask): only the few the measure samples are decoded here
        run.invariances = decide(images, setting, seed=run.seed)
    except DataError:
        if isinstance(images, np.ndarray):
            raise
        run.invariances = Invariances((), mode="not measured")  # a sampled file is unreadable
    run.log(invariances_line(run.invariances.as_metrics()))
    for stage in [*run.pipeline.encoders, *run.pipeline.refiners]:
        if isinstance(stage.instance, UsesInvariances):
            stage.instance.invariances = list(run.invariances.kept)
    run.timings["invariances"] = time.perf_counter() - clock


def fit_encoders(run: RunState) -> None:
    """Fit the encoders on the fit split; the features of the clustered split. A chunked run
    (``fit_sample``, ``--dask``) fits every stage on a sample and assigns in chunks instead."""
    if is_chunked(run.config):
        clock = time.perf_counter()
        assigned, data = fit_and_assign(
            run.pipeline, run.config, run.splits, run.folder, run.registry, run.log
        )
        run.features, run.labels = assigned.features, assigned.labels
        run.refiner_probability = assigned.probability
        run.clusterer_labels = assigned.clusterer_labels
        run.splits = replace(run.splits, data=data)
        run.timings.update(run.pipeline.timings)
        run.timings["assign"] = time.perf_counter() - clock
        return
    fit, validation = run.splits.fit, run.splits.validation
    features = run.pipeline.fit_encoders(
        fit.images,
        None if validation is None else validation.images,
        log=run.log,
        return_features=fit is run.data,
    )
    run.timings.update(run.pipeline.timings)
    if features is None:
        clock = time.perf_counter()
        features = run.pipeline.transform(run.data.images)
        run.timings[f"encode {run.config['split']}"] = time.perf_counter() - clock
    run.features = features


def cluster(run: RunState) -> None:
    """Fit the clusterer on the features: one label per image (a chunked run has them)."""
    if is_chunked(run.config):
        return
    features = run.features
    run.log(f"clustering {len(features)} feature vectors of {features.shape[1]} numbers")
    run.labels = run.pipeline.fit_clusterer(features)
    note_starts(run)
    if run.pipeline.refiners:  # they see the images and the first clustering
        for stage in run.pipeline.refiners:
            if isinstance(stage.instance, UsesImageIds):
                ids = run.data.ids if run.data.ids is not None else range(len(run.data))
                stage.instance.image_ids = [str(image_id) for image_id in ids]
        run.labels = run.pipeline.fit_refiners(run.data.images, features, log=run.log)
    run.timings.update(run.pipeline.timings)


def clusterer_starts(pipeline: Pipeline) -> list[dict[str, Any]]:
    """The clusterer's starts, one record each, where it reports them (else none)."""
    instance = pipeline.clusterer.instance
    starts = instance.starts_ if isinstance(instance, ReportsStarts) else None
    return [dict(start) for start in starts or ()]


def note_starts(run: RunState) -> None:
    """Log which of the clusterer's starts was kept, with its scores."""
    records = clusterer_starts(run.pipeline)
    kept = next((i for i, start in enumerate(records) if start.get("kept")), None)
    if kept is not None:
        scores = ", ".join(
            f"{key} {value:.4f}" for key, value in records[kept].items() if isinstance(value, float)
        )
        run.log(f"{run.pipeline.clusterer.name} kept start {kept + 1} of {len(records)} ({scores})")


def score_run(run: RunState) -> None:
    """Score the clustering; note skipped inputs and the encoders' training histories."""
    clock = time.perf_counter()
    run.metrics = score(run.features, run.labels, run.data, run.seed)
    if run.invariances is not None:
        run.metrics["invariances"] = run.invariances.as_metrics()
    if "skipped" in run.data.info:
        run.metrics["skipped"] = len(run.data.info["skipped"])
    before = run.clusterer_labels if is_chunked(run.config) else run.pipeline.clusterer_labels_
    if run.pipeline.refiners and run.data.labels is not None and before is not None:
        # what the refiners gained
        run.metrics["before_refiners"] = external_scores(np.asarray(run.data.labels), before)
    run.scores = image_scores(run.features, run.labels, _refiner_probability(run))
    flag = outlier_threshold(run.scores.outlier)
    run.metrics["confidence"] = {
        "source": run.scores.source,
        "median": round(float(np.median(run.scores.confidence)), 4),
        "outliers": int((run.scores.outlier > flag).sum()),
        "outlier_threshold": round(flag, 4) if np.isfinite(flag) else None,
    }
    run.metrics["cluster_quality"] = cluster_quality(run.labels, run.scores)
    if run.data.labels is not None:
        run.review = review_labels(run.features, run.labels, np.asarray(run.data.labels), run.seed)
        run.metrics["label_review"] = {"flagged": int(len(run.review.flagged()))}
    run.timings["score"] = time.perf_counter() - clock
    if not is_chunked(run.config):  # a chunked run never holds every image at once
        clock = time.perf_counter()
        run.issues = find_issues(run.data.images)
        run.metrics["image_issues"] = run.issues.summary()
        run.timings["issues"] = time.perf_counter() - clock


def _refiner_probability(run: RunState) -> np.ndarray | None:
    """The last refiner's probability of each image's cluster, where it gives one."""
    if is_chunked(run.config):  # its chunks scored the images they assigned
        return run.refiner_probability
    if not run.pipeline.refiners:
        return None
    scorer = getattr(run.pipeline.refiners[-1].instance, "score_samples", None)
    if not callable(scorer):
        return None
    found = scorer(run.data.images, run.features)
    probability = found.get("probability") if isinstance(found, Mapping) else None
    return None if probability is None else np.asarray(probability, np.float64)


def describe(run: RunState) -> RunResult:
    """The run's summary record and result (training histories join its metrics)."""
    config, data, pipeline, metrics = run.config, run.data, run.pipeline, run.metrics
    record = {
        "imgclust_version": __version__,
        "dataset": config["dataset"]["name"],
        "split": config["split"],
        "fit_split": config.get("fit_split", config["split"]),
        "n_images": len(data),
        "image_shape": list(data.shape),
        "feature_dim": int(run.features.shape[1]),
        "pipeline": f"{config['dataset']['name']} -> {pipeline.name}",
        "seed": run.seed,
        "metrics": metrics,
        "clusters": composition(run.labels, data.labels, data.class_names),
    }
    for stage in pipeline.encoders:
        history = stage.instance.history_ if isinstance(stage.instance, HasHistory) else None
        if history:
            metrics.setdefault("training", {})[stage.name] = history
            for key in ("loss", "val_loss"):
                if history.get(key):
                    metrics[key] = float(history[key][-1])
    starts = clusterer_starts(pipeline)
    if starts:  # which start the clusterer kept, and each start's scores
        metrics["clusterer_starts"] = starts
    for stage in pipeline.refiners:
        history = stage.instance.history_ if isinstance(stage.instance, HasHistory) else None
        if history:  # rounds or target updates, for the training plot
            metrics.setdefault("refiner_training", {})[stage.name] = history
        if isinstance(stage.instance, ReportsStop) and stage.instance.stop_reason_:
            metrics.setdefault("refiner_stop", {})[stage.name] = stage.instance.stop_reason_
    found = {"scores": run.scores, "issues": run.issues, "review": run.review}
    extras = {key: value for key, value in found.items() if value is not None}
    return RunResult(run.folder, record, run.labels, run.features, pipeline, data, extras)


def write_results(
    run: RunState, result: RunResult, after_fit: Callable[[RunResult], object] | None
) -> None:
    """clusters.md, assignments.csv, embeddings.npy and the fitted pipeline."""

    clock = time.perf_counter()
    write_outputs(result)
    if not is_chunked(run.config):  # a chunked run saved it before its chunks were assigned
        save_pipeline(run.pipeline, run.folder, run.config, run.data, registry=run.registry)
    if after_fit is not None:
        after_fit(result)
    run.timings["write"] = time.perf_counter() - clock


def draw_plots(result: RunResult, log: Log) -> float:
    """Draw the run's plots; the seconds they took (a failing plot is a warning, not an error)."""

    return draw(result, log)


def write_metrics(run: RunState, result: RunResult) -> None:
    """metrics.json and summary.json, both with the timings of every step."""
    run.timings["total"] = time.perf_counter() - run.started
    run.metrics["timings"] = {k: round(v, 3) for k, v in run.timings.items()}
    atomic.write_json(
        run.folder / "metrics.json",
        {**run.metrics, "n_images": len(run.data), "n_clusters": n_clusters(run.labels)},
    )
    atomic.write_json(run.folder / "summary.json", result.record)  # now with the timings


def write_report(run: RunState) -> None:
    """report.html from what the run wrote (a failure is a warning, not an error)."""

    write_report_quietly(run.folder, run.log)


def _failed(folder: Path, exc: BaseException) -> BaseException:
    """Clean up after a failed or interrupted run; the exception to raise, one line for OSError.

    The folder goes only when this process created it and no checkpoint is worth resuming;
    otherwise it is kept (and unlocked) and the exception names it for the resume hint.
    """

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
        metrics.update(external_scores(np.asarray(data.labels), labels))
    metrics.update(internal_scores(features, labels, seed=seed))
    metrics["noise"] = int((labels == -1).sum())
    reason = degeneracy(features, labels, seed=seed)
    if reason is not None:
        import warnings

        metrics["degenerate"] = reason
        warnings.warn(f"degenerate clustering: {reason}.", DegenerateWarning, stacklevel=2)
    return metrics


def write_outputs(result: RunResult) -> None:
    """Write clusters.md, assignments.csv, content.json (digests of what was clustered) and
    embeddings.npy (summary.json comes last)."""
    folder = result.path
    write_record(folder, result.data)
    atomic.write_text(folder / "clusters.md", clusters_markdown(result.record))
    atomic.write_text(
        folder / "assignments.csv",
        assignments_csv(result.data, result.labels, result.extras.get("scores")),
    )
    if "issues" in result.extras:
        atomic.write_text(folder / "issues.csv", issues_csv(result.data, result.extras["issues"]))
    if "review" in result.extras:
        text = label_review_csv(result.data, result.labels, result.extras["review"])
        atomic.write_text(folder / "label_review.csv", text)
    if not _written_to(result.features, folder / "embeddings.npy"):  # chunked runs map it
        atomic.write_npy(folder / "embeddings.npy", result.features)


def _rounded(value: float) -> float | str:
    """Four decimals; an infinite score as ``inf`` (a member far from a cluster with no spread)."""
    return round(float(value), 4) if np.isfinite(value) else "inf"


def _written_to(features: np.ndarray, path: Path) -> bool:
    """Whether the features are already a memory map of ``path`` (assembled from chunks)."""
    name = getattr(features, "filename", None)
    if not name:
        return False
    return Path(name).name == path.name and Path(name).parent.samefile(path.parent)


def assignments_csv(data: ImageSet, labels: np.ndarray, scores: ImageScores | None = None) -> str:
    """id, cluster, (when known) label, then confidence and outlier score of every image, safe
    to open in a spreadsheet."""
    assert data.ids is not None  # an ImageSet fills in its ids
    known = data.labels
    has_labels = known is not None
    rows = []
    for index, (image_id, cluster) in enumerate(zip(data.ids, labels, strict=True)):
        row = [image_id, int(cluster)]
        if known is not None:
            label = known[index]
            if data.class_names is not None and isinstance(label, (int, np.integer)):
                label = (
                    data.class_names[int(label)] if 0 <= label < len(data.class_names) else label
                )
            row.append(label.item() if isinstance(label, np.generic) else label)
        if scores is not None:
            row += [round(float(scores.confidence[index]), 4), _rounded(scores.outlier[index])]
        rows.append(row)
    header = ["id", "cluster", "label"] if has_labels else ["id", "cluster"]
    return csv_text(header + (["confidence", "outlier"] if scores is not None else []), rows)


def issues_csv(data: ImageSet, issues: ImageIssues) -> str:
    """Every image's issues (``;``-separated, empty for none) and the statistics behind them."""
    assert data.ids is not None  # an ImageSet fills in its ids
    rows = []
    for index, image_id in enumerate(data.ids):
        first = int(issues.duplicate_of[index])
        rows.append(
            [
                image_id,
                ";".join(issues.issues_of(index)),
                round(float(issues.brightness[index]), 4),
                round(float(issues.spread[index]), 4),
                round(float(issues.sharpness[index]), 4),
                data.ids[first] if first >= 0 else "",
            ]
        )
    header = ["id", "issues", "brightness", "spread", "sharpness", "duplicate_of"]
    return csv_text(header, rows)


def label_review_csv(data: ImageSet, clusters: np.ndarray, review: LabelReview) -> str:
    """The images whose given label most neighbours and their cluster reject, most doubtful
    first, with the label their neighbours suggest."""
    assert data.ids is not None and data.labels is not None  # a review needs labels
    rows = []
    for index in review.flagged():
        rows.append(
            [
                data.ids[index],
                _label_text(data, data.labels[index]),
                int(clusters[index]),
                _label_text(data, review.suggested[index]),
                round(float(review.agreement[index]), 4),
                round(float(review.doubt[index]), 4),
            ]
        )
    header = ["id", "label", "cluster", "suggested", "neighbours_agreeing", "doubt"]
    return csv_text(header, rows)


def _label_text(data: ImageSet, label: Any) -> Any:
    """A label as assignments.csv writes it: its class name where the dataset has names."""
    if data.class_names is not None and isinstance(label, (int, np.integer)):
        if 0 <= label < len(data.class_names):
            return data.class_names[int(label)]
    return label.item() if isinstance(label, np.generic) else label
