"""``imgclust predict`` and ``imgclust evaluate``: put new images into a finished run's clusters.

Inputs are image files, ``.npy``/``.npz`` arrays, and folders of either. Image files are read as
the pipeline was fitted (its height and width, grayscale or RGB); arrays must already match, and
hold a stack of images (N, H, W[, C]) or one image (H, W) or (H, W, C).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ..errors import DataError, SettingsError

if TYPE_CHECKING:  # numpy loads with the first command that needs it, not with the CLI
    import numpy as np

ARRAY_SUFFIXES = (".npy", ".npz")


@dataclass
class Batch:
    """Images from one input, named by ``ids``, with labels when the input has them."""

    source: str
    ids: list[str]
    images: np.ndarray
    labels: np.ndarray | None = None


# Reading inputs ----------------------------------------------------------------------------
def read_inputs(inputs: list[str], saved: Any) -> Iterator[Batch]:
    """Each input as a batch of images prepared as the pipeline was fitted (one at a time)."""
    check_inputs(inputs)
    size, mode = _file_reading(saved)
    loose: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_file() and path.suffix.lower() not in ARRAY_SUFFIXES:
            loose.append(path)
            continue
        if loose:
            yield _image_files(loose, size, mode, saved)
            loose = []
        if path.is_dir():
            yield from _folder(path, text, size, mode, saved)
        else:
            yield _array_file(path, text, saved)
    if loose:
        yield _image_files(loose, size, mode, saved)


def check_inputs(inputs: list[str]) -> None:
    """Every input is a file or a folder that exists, before any is opened (a FIFO named
    ``x.npy`` would block the reader forever)."""
    from ..io.paths import check_input_file

    for text in inputs:
        if not os.path.lexists(text):
            raise DataError(
                f"input {text!r} does not exist: give image files, folders or .npy/.npz."
            )
        check_input_file(text, "input", folders=True)


def _file_reading(saved: Any) -> tuple[tuple[int, int], str | None]:
    """The size and colour mode image files are read with: the fitted height, width, channels."""
    height, width, channels = saved.input_shape
    return (height, width), {1: "grayscale", 3: "rgb"}.get(channels)


def _fit_setting(saved: Any) -> str:
    """How the run brought its image files to size (``image-folder``'s ``fit``; else stretch)."""
    from ..io.images import FITS

    preprocessing = (saved.manifest or {}).get("preprocessing") or {}
    dataset = preprocessing.get("dataset") or {}
    fit = dataset.get("fit", "stretch") if isinstance(dataset, dict) else "stretch"
    if fit not in FITS:
        raise DataError(
            f"the run's manifest names an unknown image fit {str(fit)[:40]!r} (one of "
            f"{', '.join(FITS)}): the pipeline folder was altered."
        )
    return fit


def _need_mode(mode: str | None, saved: Any, what: str) -> str:
    if mode is None:
        raise DataError(
            f"this pipeline was fitted on images with {saved.input_shape[2]} channels; image "
            f"files ({what}) can only be read as grayscale or RGB: give arrays instead."
        )
    return mode


def _image_files(files: list[Path], size: tuple[int, int], mode: str | None, saved: Any) -> Batch:
    """Image files named one by one: each must be readable."""
    import warnings

    from ..io.images import DEFAULT_EXTENSIONS, load_image_files

    mode = _need_mode(mode, saved, str(files[0]))
    bad = [str(f) for f in files if f.suffix.lower() not in DEFAULT_EXTENSIONS]
    if bad:
        raise DataError(
            f"input {bad[0]!r} is neither an image ({', '.join(DEFAULT_EXTENSIONS)}) nor an array "
            "(.npy, .npz) nor a folder."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_image_files(files, None, size, mode, workers=1, fit=_fit_setting(saved))
    skipped = data.info.get("skipped") or []
    if skipped:
        raise DataError(f"cannot read image {skipped[0]}")
    name = str(files[0]) if len(files) == 1 else f"{len(files)} image files"
    return Batch(name, [str(f) for f in files], saved.prepare(data.images, "image files"))


def _image_folder(
    folder: Path, text: str, size: tuple[int, int], mode: str | None, saved: Any
) -> Batch:
    """Every image below a folder, read as ``image-folder`` reads them (unreadable ones skipped)."""
    from ..io.images import FolderReading, check_workers

    mode = _need_mode(mode, saved, text)
    fit = _fit_setting(saved)
    reading = FolderReading(folder, size, mode, cache=False, workers=check_workers(None), fit=fit)
    data = reading.load()
    ids = [(Path(text) / name).as_posix() for name in data.ids]
    import numpy as np

    labels = None
    if data.labels is not None and data.class_names is not None:
        labels = np.asarray([data.class_names[int(i)] for i in data.labels], dtype=object)
    return Batch(text, ids, saved.prepare(data.images, f"images in {text!r}"), labels)


def _folder(
    folder: Path, text: str, size: tuple[int, int], mode: str | None, saved: Any
) -> Iterator[Batch]:
    """A folder's arrays (``.npy``/``.npz`` below it, one batch), then its image files."""
    from ..io.images import DEFAULT_EXTENSIONS

    arrays = folder_arrays(folder, text, saved)
    if arrays is not None:
        yield arrays
    if arrays is None or files_below(folder, DEFAULT_EXTENSIONS):
        yield _image_folder(folder, text, size, mode, saved)


def files_below(folder: Path, suffixes: tuple[str, ...]) -> list[Any]:
    """The files below ``folder`` ending in ``suffixes`` (as ``scan_folder`` finds them), or []."""
    from ..io.images import scan_folder

    try:
        return scan_folder(folder, True, suffixes)
    except DataError:  # it says so when there are none
        return []


def folder_arrays(folder: Path, text: str, saved: Any) -> Batch | None:
    """Every array file below a folder as one batch (None when it has none): ``dir/x.npy`` for a
    file holding one image, ``dir/x.npy:i`` for the images of a stack."""
    import numpy as np

    found = files_below(folder, ARRAY_SUFFIXES)
    if not found:
        return None
    batches = [_array_file(Path(f.path), (Path(text) / f.name).as_posix(), saved) for f in found]
    with_labels = all(batch.labels is not None for batch in batches)
    labels = np.concatenate([b.labels for b in batches]) if with_labels else None  # type: ignore[misc]
    return Batch(
        text,
        [image_id for batch in batches for image_id in batch.ids],
        np.concatenate([batch.images for batch in batches]),
        labels,
    )


def _array_file(path: Path, text: str, saved: Any) -> Batch:
    """A ``.npy``/``.npz``: a stack of images, or one image shaped as the pipeline's input."""
    import numpy as np

    from ..io.arrays import arrange, check_labels, read_arrays

    raw, labels, _ = read_arrays(path, key_hint=PREDICT_KEYS)
    single = _is_one_image(raw.shape, saved.input_shape)
    images, _ = arrange(raw[None] if single else raw, "last", text)
    images = saved.prepare(images, f"images in {text!r}")
    ids = [text] if single else [f"{text}:{i}" for i in range(len(images))]
    if labels is not None:
        labels = np.asarray(labels).reshape(-1) if single else labels
        try:
            labels = np.asarray(check_labels(labels, len(images), text))
        except DataError:
            labels = None  # labels that do not fit the images are not scored
    return Batch(text, ids, images, labels)


def _is_one_image(shape: tuple[int, ...], input_shape: tuple[int, int, int]) -> bool:
    """Whether an array of ``shape`` is one image of the pipeline's (H, W, C), not a stack."""
    height, width, channels = input_shape
    return tuple(shape) == (height, width) or tuple(shape) == (height, width, channels)


# what predict says when an .npz holds no array it reads as images (it has no key option)
PREDICT_KEYS = "name the images x, images, x_train or arr_0 in the .npz"


# Predict -----------------------------------------------------------------------------------
def predict_rows(
    saved: Any, inputs: list[str], centres: Any = None
) -> tuple[list[str], list[list[Any]]]:
    """The CSV header and one row (id, cluster, distance or probability, label) per image;
    with the run's ``centres`` (:class:`imgclust.confidence.RunCentres`) also each image's
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
    from ..confidence import RunCentres
    from ..finished import open_run, read_run_features
    from ..runfolder import is_run_folder

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
    """The rows as CSV, safe to open in a spreadsheet (see :func:`imgclust.outputs.csv_cell`)."""
    from ..outputs import csv_text

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
    trust: bool = typer.Option(
        False, "--trust", help="Allow pickled stages (they can run code): only for runs you trust."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    dask: str | None = typer.Option(
        None, "--dask", help="Assign on Dask: a scheduler address, local or local:N."
    ),
) -> None:
    """Assign new images to a finished run's clusters: id, cluster, distance or probability."""
    from ..finished import printable, run_sources
    from ..outputs import claim_output, write_output
    from ..persist import load_pipeline

    check_inputs(inputs)
    if output is not None:
        output = claim_output(
            output, force=force, inputs=[run, *inputs], protected=run_sources(run)
        )
    saved = load_pipeline(run, trust=trust)
    saved.check_can_predict()
    notes = []
    if dask is None:
        from ..io.imagecache import reading_a_run

        centres, why_not = run_centres(Path(run))
        if centres is None:
            notes.append(f"no confidence or outlier scores: {why_not}")
        with reading_a_run():  # the pipeline's size cannot blow tiny files up without bound
            header, rows = predict_rows(saved, inputs, centres)
    else:  # files decoded and images assigned on the workers, each loading the saved pipeline
        from ..chunks import predict_on_cluster
        from ..distributed import on_cluster, parse_address, stages_of

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

    from ..config import apply_sets
    from ..metrics import external_scores, n_clusters
    from ..plugins_host import get_registry
    from ..runner import load_split
    from ..settings import resolve

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
    values = resolve(what, entry.target, {k: v for k, v in stage.items() if k != "name"})
    from ..io.imagecache import reading_a_run

    named = any(a.split("=", 1)[0].strip() == "dataset.cache_dir" for a in sets)
    with reading_a_run(cache_dir_given=named):  # the saved settings do not choose where it writes
        data = load_split(entry.target(**values), name, split)
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
    from ..content import check_images, read_record
    from ..errors import ContentChangedError
    from ..finished import open_run
    from ..runfolder import is_run_folder

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
    trust: bool = typer.Option(
        False, "--trust", help="Allow pickled stages (they can run code): only for runs you trust."
    ),
    allow_changed: bool = typer.Option(
        False,
        "--allow-changed",
        help="Score the run's split even when its images changed since the run (reported).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Score a finished run's pipeline on a labelled split: ACC, NMI, ARI, purity."""
    from ..persist import load_pipeline

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
