"""Building a run's stages and loading its images: what the runner, the chunked engine and the
commands that read a finished run share, below all of them."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from imgclust.console import Log
from imgclust.engine.pipeline import Pipeline
from imgclust.engine.stage import Stage, instantiate
from imgclust.errors import DataError, SettingsError
from imgclust.stages.interfaces import ImageSet, splits_of
from imgclust.stages.registry import Registry
from imgclust.stages.settings import stage_settings


def seed_everything(seed: int) -> None:
    """Seed Python's and NumPy's global generators (stages get the seed through settings)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)


def build_stage(registry: Registry, kind: str, stage: Mapping[str, Any]) -> Stage:
    """Call a stage's factory with its resolved settings."""
    entry = registry.get(kind, stage["name"])
    return instantiate(kind, stage["name"], entry.target, stage_settings(stage))


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


@dataclass
class Splits:
    """The images a run clusters, the images its encoders learn from, and the validation images."""

    data: ImageSet
    fit: ImageSet
    validation: ImageSet | None


def load_data(registry: Registry, config: Mapping[str, Any], log: Log) -> Splits:
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
    return Splits(data, fit, validation)
