"""Everything the plots need, gathered once: the clustered images, their clusters, features,
labels, fitted encoders and training histories. Built from a finished run in memory or from a
run folder (:mod:`imgclust.after.rundata`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imgclust.stages.interfaces import HasHistory

NOISE = -1
NO_AUTOENCODER = "no autoencoder in this pipeline (reconstructions need one)"


@dataclass
class PlotInputs:
    """What one run produced, in the shapes the plot modules read."""

    clusters: np.ndarray
    images: np.ndarray | None = None
    features: np.ndarray | None = None
    labels: np.ndarray | None = None
    class_names: Sequence[str] | None = None
    #: fitted encoders in pipeline order, as (name, instance); empty when not available
    encoders: list[tuple[str, Any]] = field(default_factory=list)
    #: why ``encoders`` is empty, said by the plots that need them
    encoders_missing: str = "the fitted encoders are not available"
    #: training history per encoder name: {"loss": [...], "val_loss": [...]}
    histories: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: per refiner name, what it recorded per round or target update: {"changed": [...], ...}
    refiner_histories: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: resolved settings per encoder name (the loss a curve measures, for its axis)
    encoder_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 0
    #: what the images are, for titles: "mnist (test)"
    source: str = "images"
    #: 2-D projections already computed, by map settings (shared by map.png and the explorer)
    projections: dict[Any, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.clusters = np.asarray(self.clusters, dtype=np.int64)

    @property
    def n(self) -> int:
        return len(self.clusters)

    def label_names(self) -> np.ndarray | None:
        """Each image's true label as display text (class names where the dataset has them)."""
        if self.labels is None:
            return None
        labels = np.asarray(self.labels)
        names = self.class_names
        if names is not None and labels.dtype.kind in "iu":
            table = np.asarray([str(n) for n in names], dtype=object)
            inside = (labels >= 0) & (labels < len(table))
            out = labels.astype(str).astype(object)
            out[inside] = table[labels[inside]]
            return out
        return labels.astype(str).astype(object)

    def label_order(self) -> list[str]:
        """Distinct label names in a natural order: class-name order, numbers by value."""
        names = self.label_names()
        if names is None:
            return []
        present = set(names.tolist())
        if self.class_names is not None:
            ordered = [str(n) for n in self.class_names if str(n) in present]
            return ordered + sorted(present - set(ordered), key=natural_key)
        return sorted(present, key=natural_key)


def natural_key(text: str) -> tuple[int, float, str]:
    """Sort numbers by value and before words: '2' < '10' < 'cat'."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def cluster_order(clusters: np.ndarray) -> tuple[list[int], dict[int, int]]:
    """Cluster ids largest first (ties by id), noise last; and the size of each."""
    ids, counts = np.unique(np.asarray(clusters), return_counts=True)
    sizes = {int(i): int(c) for i, c in zip(ids, counts, strict=True)}
    order = sorted(sizes, key=lambda c: (c == NOISE, -sizes[c], c))
    return order, sizes


def describe_source(dataset: str, split: str | None) -> str:
    """'mnist (test split)', or just 'digits' when the run clustered all of it."""
    return dataset if split in (None, "", "all") else f"{dataset} ({split} split)"


def from_result(result: Any) -> PlotInputs:
    """Plot inputs of a run that has just finished (``imgclust.engine.runner.RunResult``)."""
    data = result.data
    encoders = [(stage.name, stage.instance) for stage in result.pipeline.encoders]
    histories = {
        name: {key: list(values) for key, values in history.items()}
        for name, encoder in encoders
        if isinstance(encoder, HasHistory) and (history := encoder.history_)
    }
    refiner_histories = {
        stage.name: {k: [float(v) for v in values] for k, values in history.items()}
        for stage in result.pipeline.refiners
        if isinstance(stage.instance, HasHistory) and (history := stage.instance.history_)
    }
    split = result.record.get("split")
    source = describe_source(str(result.record.get("dataset", "images")), split)
    return PlotInputs(
        clusters=result.labels,
        images=data.images,
        features=result.features,
        labels=None if data.labels is None else np.asarray(data.labels),
        class_names=data.class_names,
        encoders=encoders,
        histories=histories,
        refiner_histories=refiner_histories,
        encoder_settings={stage.name: dict(stage.settings) for stage in result.pipeline.encoders},
        seed=int(result.record.get("seed", 0)),
        source=source,
    )
