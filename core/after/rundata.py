"""Plot inputs read back from a run folder, without refitting: clusters from assignments.csv,
features from embeddings.npy, histories from metrics.json, images reloaded through the dataset
named in config.toml, and the fitted encoders from ``pipeline/`` when the run saved them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from imgclust.console import Log
from imgclust.engine.build import build_stage, load_split
from imgclust.engine.config import read_toml, validate
from imgclust.engine.pipeline import load_pipeline
from imgclust.errors import DataError, ImgclustError
from imgclust.io.imagecache import reading_a_run
from imgclust.io.outputs import read_assignments
from imgclust.io.runfiles import read_metrics
from imgclust.io.runfolder import check_self_contained
from imgclust.report.plots.inputs import NO_AUTOENCODER, PlotInputs, describe_source
from imgclust.stages.interfaces import Reconstructs


def read_features(path: Path, count: int) -> np.ndarray | None:
    """embeddings.npy as a read-only memory map, checked against the number of assignments."""
    if not path.is_file():
        return None
    try:
        features = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path.name} cannot be read ({exc}).") from None
    if len(features) != count:
        raise DataError(f"{path.name} has {len(features)} rows but assignments.csv {count}.")
    return features


def histories_from(
    metrics: dict[str, Any], key: str = "training"
) -> dict[str, dict[str, list[float]]]:
    """The training histories a run recorded in metrics.json (the refiners' under
    ``refiner_training``)."""
    training = metrics.get(key) or {}
    return {str(k): dict(v) for k, v in training.items() if isinstance(v, dict)}


def reload_images(registry: Any, config: dict[str, Any], ids: list[str]) -> Any:
    """The clustered split through the run's dataset, checked to be the same images in order.

    The run's config.toml is data: while its dataset reads, caches go only under the user's
    cache folder and decoding is bounded (:func:`imgclust.io.imagecache.reading_a_run`).
    """

    stage = build_stage(registry, "datasets", config["dataset"])
    with reading_a_run():
        data = load_split(stage.instance, stage.name, config["split"])
    assert data.ids is not None  # an ImageSet fills in its ids
    if len(data) != len(ids) or [str(i) for i in data.ids] != ids:
        raise DataError(
            f"dataset {stage.name!r} ({config['split']}) no longer holds the images this run "
            f"clustered ({len(data)} now, {len(ids)} then)"
        )
    return data


def could_reconstruct(registry: Any, config: dict[str, Any]) -> bool:
    """Whether any encoder of the run offers ``reconstruct`` (worth loading the pipeline for)."""
    for stage in config.get("encoder", []):
        try:
            target = registry.get("encoders", stage["name"]).target
        except ImgclustError:
            continue
        if isinstance(target, type) and issubclass(target, Reconstructs):
            return True
    return False


def load_encoders(run_dir: Path, registry: Any) -> list[tuple[str, Any]]:
    """The fitted encoders of the run's saved pipeline (never running code from the folder)."""

    saved = load_pipeline(run_dir, registry=registry)
    return [
        (stage.name, stage.instance)
        for stage in saved.pipeline.encoders
        if not getattr(stage, "unsaved_reason", None)
    ]


def load_run_inputs(run_dir: Path, registry: Any, log: Log = lambda message: None) -> PlotInputs:
    """Everything the plots need from a finished run folder; what cannot be had is logged."""

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(
            f"run folder {str(run_dir)!r} does not exist: give a folder `imgclust run` wrote."
        )

    check_self_contained(run_dir)
    ids, clusters, csv_labels = read_assignments(run_dir / "assignments.csv")
    features = read_features(run_dir / "embeddings.npy", len(ids))
    metrics = read_metrics(run_dir)
    config = validate(registry, read_toml(run_dir / "config.toml"))
    inputs = PlotInputs(
        clusters=clusters,
        features=features,
        labels=csv_labels,
        histories=histories_from(metrics),
        refiner_histories=histories_from(metrics, "refiner_training"),
        encoder_settings={str(e["name"]): dict(e) for e in config.get("encoder", [])},
        seed=int(config.get("seed", 0)),
        source=describe_source(config["dataset"]["name"], config.get("split")),
    )
    try:
        data = reload_images(registry, config, ids)
        inputs.images = data.images
        if data.labels is not None:
            inputs.labels, inputs.class_names = np.asarray(data.labels), data.class_names
    except (ImgclustError, OSError) as exc:
        log(f"note: images not reloaded, so the image plots are left as they were: {exc}")
    if not could_reconstruct(registry, config):
        inputs.encoders_missing = NO_AUTOENCODER
    elif not (run_dir / "pipeline").is_dir():
        inputs.encoders_missing = "the run folder keeps no fitted autoencoder (pipeline/)"
    else:
        try:
            inputs.encoders = load_encoders(run_dir, registry)
        except (ImgclustError, OSError) as exc:
            inputs.encoders_missing = "the fitted autoencoder could not be loaded"
            log(
                f"note: fitted pipeline not loaded, so reconstructions.png is left as it was: {exc}"
            )
    return inputs
