"""``imgclust predict`` and ``imgclust evaluate``: put new images into a finished run's clusters.

Inputs are image files, ``.npy``/``.npz`` arrays, and folders of either. Image files are read as
the pipeline was fitted (its height and width, grayscale or RGB); arrays must already match, and
hold a stack of images (N, H, W[, C]) or one image (H, W) or (H, W, C).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from imgclust.after.finished import open_run, read_run_features, run_sources
from imgclust.cli.options import AS_JSON, TRUST_RUN
from imgclust.console import printable
from imgclust.engine.build import load_split
from imgclust.engine.cluster_predict import predict_on_cluster
from imgclust.engine.config import apply_sets
from imgclust.engine.distributed import on_cluster, parse_address, stages_of
from imgclust.engine.pipeline import load_pipeline
from imgclust.errors import ContentChangedError, DataError, SettingsError
from imgclust.io.content import check_images, read_record
from imgclust.io.imagecache import reading_a_run
from imgclust.io.inputs import Batch, check_inputs, read_inputs
from imgclust.io.outputs import claim_output, csv_text, write_output
from imgclust.io.runfolder import is_run_folder
from imgclust.results.confidence import RunCentres
from imgclust.results.metrics import external_scores, n_clusters
from imgclust.stages.host import get_registry
from imgclust.stages.settings import resolve

if TYPE_CHECKING:  # numpy loads with the first command that needs it, not with the CLI
    import numpy as np


# Predict -----------------------------------------------------------------------------------
def predict_rows(
    saved: Any, inputs: list[str], centres: Any = None
) -> tuple[list[str], list[list[Any]]]:
    """The CSV header and one row (id, cluster, distance or probability, label) per image;
    with the run's ``centres`` (:class:`imgclust.results.confidence.RunCentres`) also each image's
    confidence and outlier score, computed as the run computed its own."""
    batches: list[tuple[Batch, np.ndarray, dict[str, np.ndarray]]] = []
    for batch in read_inputs(inputs, saved):
        labels, scores, features = saved.assign_with_features(batch.images)
        if centres is not None:
            scores = {**scores, **_run_scores(saved, centres, features, labels, scores)}
        batches.append((batch, labels, scores))
    score_names = sorted({name for _, _, scores in batches for name in scores} - set(RUN_SCORES))
    score_names += list(RUN_SCORES) if centres is not None else []
    with_labels = any(batch.labels is not None for batch, _, _ in batches)
    header = ["id", "cluster", *score_names, *(["label"] if with_labels else [])]
    rows: list[list[Any]] = []
    for batch, labels, scores in batches:
        for i, image_id in enumerate(batch.ids):
            row: list[Any] = [image_id, int(labels[i])]
            row += [_number(scores[name][i]) if name in scores else "" for name in score_names]
            if with_labels:
                row.append("" if batch.labels is None else _plain(batch.labels[i]))
            rows.append(row)
    return header, rows


# the per-image scores assignments.csv has, in its order and rounding
RUN_SCORES = ("confidence", "outlier")


def _run_scores(
    saved: Any, centres: Any, features: Any, labels: Any, scores: dict[str, Any]
) -> dict[str, Any]:
    """Confidence and outlier score of new images against the run's clusters: the margin
    between the nearest two centres, or the last refiner's probability where the run has one."""
    probability = scores.get("probability") if saved.refiners else None
    found = centres.scores(features, labels, probability)
    return {"confidence": found.confidence.round(4), "outlier": found.outlier.round(4)}


def run_centres(run: Path) -> tuple[Any, str]:
    """The run's cluster centres and scales from its embeddings.npy and assignments.csv, or
    None and why not (a bare pipeline folder, a run without embeddings)."""

    if not is_run_folder(run):
        return None, "a pipeline folder holds no run's clusters to score against"
    try:
        finished = open_run(run, "predict")
        features = read_run_features(finished)
    except DataError as exc:
        return None, str(exc).rstrip(".")
    return RunCentres.of_run(features, finished.clusters), ""


def _number(value: Any) -> float | str:
    """Six decimals; an infinite score (an outlier of a cluster with no spread) as ``inf``."""
    number = float(value)
    return round(number, 6) if math.isfinite(number) else "inf"


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def to_csv(header: list[str], rows: list[list[Any]]) -> str:
    """The rows as CSV, safe to open in a spreadsheet (see :func:`imgclust.io.outputs.csv_cell`)."""

    return csv_text(header, rows)


def predict_command(
    run: Path = typer.Argument(..., help="A finished run folder (it holds pipeline/)."),
    inputs: list[str] = typer.Argument(
        ..., help="Image files, .npy/.npz arrays (a stack or one image), folders of either."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the CSV to this new file (default: stdout)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Let --output replace an existing file (never an input)."
    ),
    trust: bool = TRUST_RUN,
    as_json: bool = AS_JSON,
    dask: str | None = typer.Option(
        None, "--dask", help="Assign on Dask: a scheduler address, local or local:N."
    ),
) -> None:
    """Assign new images to a finished run's clusters: id, cluster, distance or probability."""

    check_inputs(inputs)
    if output is not None:
        output = claim_output(
            output, force=force, inputs=[run, *inputs], protected=run_sources(run)
        )
    saved = load_pipeline(run, trust=trust)
    saved.check_can_predict()
    notes = []
    if dask is None:
        centres, why_not = run_centres(Path(run))
        if centres is None:
            notes.append(f"no confidence or outlier scores: {why_not}")
        with reading_a_run():  # the pipeline's size cannot blow tiny files up without bound
            header, rows = predict_rows(saved, inputs, centres)
    else:  # files decoded and images assigned on the workers, each loading the saved pipeline
        needs = stages_of({"encoder": saved.encoders and [{"name": e.name} for e in saved.encoders],
                           "clusterer": {"name": saved.clusterer.name}})  # fmt: skip
        with on_cluster(parse_address(dask), needs):
            header, rows = predict_on_cluster(saved, run, inputs, trust)
        notes.append(
            "no confidence or outlier scores with --dask (the features stay on the workers)"
        )
    for line in notes:
        typer.echo(f"note: {printable(line)}", err=True)
    text = to_csv(header, rows)
    counts = Counter(int(row[1]) for row in rows)
    if output is not None:
        write_output(output, text, force=force)
    if as_json:
        record: dict[str, Any] = {
            "run": str(run),
            "pipeline": saved.pipeline.name,
            "n_images": len(rows),
            "clusters": {str(k): counts[k] for k in sorted(counts)},
            "output": None if output is None else str(output),
        }
        if output is None:
            record["assignments"] = [dict(zip(header, row, strict=True)) for row in rows]
        typer.echo(json.dumps(record, indent=2))
        return
    if output is None:
        typer.echo(text, nl=False)
        return
    largest = ", ".join(f"{k}: {n}" for k, n in counts.most_common(5))
    typer.echo(
        f"assigned {len(rows)} images to {len([k for k in counts if k != -1])} clusters "
        f"(largest {largest}); wrote {output}"
    )


# Evaluate ----------------------------------------------------------------------------------
def evaluation(
    saved: Any,
    dataset: str | None,
    split: str | None,
    sets: list[str],
    run: Path | None = None,
    allow_changed: bool = False,
) -> dict[str, Any]:
    """Predict a labelled split with a saved pipeline and score it against the labels. When
    that is the split a finished ``run`` clustered, its images are first checked against the
    digests the run recorded (refused when changed, unless ``allow_changed``)."""
    import numpy as np

    registry = get_registry()
    trained = dict(saved.manifest["preprocessing"].get("dataset") or {})
    if dataset is None and not trained:
        raise SettingsError(
            "this pipeline was saved from Python and names no dataset: pass --dataset NAME."
        )
    stage = trained if dataset in (None, trained.get("name")) else {"name": dataset}
    for assignment in sets:
        if not assignment.strip().startswith(("dataset.", "split=")):
            raise SettingsError(f"--set {assignment!r}: evaluate takes only dataset.KEY=VALUE.")
    config = apply_sets({"dataset": stage}, sets)
    stage = config["dataset"]
    split = split or config.get("split") or saved.manifest["preprocessing"].get("split") or "all"
    name = stage["name"]
    entry = registry.get("datasets", name)
    what = f"dataset {name!r}"
    values = resolve(what, entry.factory, {k: v for k, v in stage.items() if k != "name"})

    named = any(a.split("=", 1)[0].strip() == "dataset.cache_dir" for a in sets)
    with reading_a_run(cache_dir_given=named):  # the saved settings do not choose where it writes
        data = load_split(entry.factory(**values), name, split)
    content = ""
    own = dataset in (None, trained.get("name")) and not sets
    if run is not None and own:
        content = _check_run_content(run, data, split, allow_changed)
    if data.labels is None:
        raise DataError(
            f"{what} ({split}) has no labels to score against: use `imgclust predict` instead."
        )
    labels, _ = saved.assign(data.images)
    truth = np.asarray(data.labels)
    scores = external_scores(truth, labels)
    return {
        "dataset": name,
        "split": split,
        "n_images": len(labels),
        **scores,
        "n_clusters": n_clusters(labels),
        "noise": int((labels == -1).sum()),
        **({"content": content} if content else {}),
    }


def _check_run_content(run: Path, data: Any, split: str, allow_changed: bool) -> str:
    """When ``run`` is a finished run folder that clustered ``split``, check ``data`` against
    its recorded digests; what changed (allowed), or ''."""

    if not is_run_folder(run):
        return ""
    finished = open_run(run, "evaluate")
    if finished.config.get("split") != split:
        return ""
    record = read_record(finished.path, len(finished.ids))
    if [str(i) for i in data.ids] != finished.ids:
        if not allow_changed:
            raise ContentChangedError(
                f"the dataset no longer holds the images run {run.name!r} clustered "
                f"({len(data)} now, {len(finished.ids)} then): run it again, or pass "
                "--allow-changed to score the data as it is now (reported)."
            )
        return "the dataset now holds other images than the run clustered (--allow-changed)"
    return check_images(finished.path, record, data, "evaluate", allow_changed).describe()


def evaluate_command(
    run: Path = typer.Argument(..., help="A finished run folder (it holds pipeline/)."),
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help="Dataset (default: the run's)."
    ),
    split: str | None = typer.Option(None, "--split", help="Split to score (default: the run's)."),
    sets: list[str] | None = typer.Option(
        None, "--set", "-s", help="dataset.key=value; repeatable."
    ),
    trust: bool = TRUST_RUN,
    allow_changed: bool = typer.Option(
        False,
        "--allow-changed",
        help="Score the run's split even when its images changed since the run (reported).",
    ),
    as_json: bool = AS_JSON,
) -> None:
    """Score a finished run's pipeline on a labelled split: ACC, NMI, ARI, purity."""

    saved = load_pipeline(run, trust=trust)
    saved.check_can_predict()
    record = {
        "run": str(run),
        "pipeline": saved.pipeline.name,
        **evaluation(saved, dataset, split, list(sets or []), Path(run), allow_changed),
    }
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    typer.echo(
        f"{record['pipeline']} on {record['dataset']} ({record['split']}), "
        f"{record['n_images']} images, {record['n_clusters']} clusters"
    )
    typer.echo(
        f"ACC {record['acc']:.4f}  NMI {record['nmi']:.4f}  ARI {record['ari']:.4f}  "
        f"purity {record['purity']:.4f}" + (f"  noise {record['noise']}" if record["noise"] else "")
    )
    if record.get("content"):
        typer.echo(f"note: {record['content']}")


def register(app: Any) -> None:
    """Add ``predict`` and ``evaluate`` to the CLI."""
    app.command("predict")(predict_command)
    app.command("evaluate")(evaluate_command)
