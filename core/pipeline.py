"""A fitted chain of encoders and a clusterer that turns images into cluster labels."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DataError, ImgclustError, PluginError
from .interfaces import Clusterer, Encoder, can_predict

Log = Callable[[str], None]


@dataclass
class Stage:
    """A named stage instance with its resolved settings."""

    name: str
    instance: Any
    settings: dict[str, Any] = field(default_factory=dict)


class Pipeline:
    """Encoders in order (the first sees images, each next one the previous one's features),
    then a clusterer. ``fit`` learns all of them; ``transform`` and ``predict`` apply them.
    """

    def __init__(self, encoders: list[Stage], clusterer: Stage) -> None:
        self.encoders = encoders
        self.clusterer = clusterer
        self.timings: dict[str, float] = {}
        self.labels_: np.ndarray | None = None

    @property
    def name(self) -> str:
        return " -> ".join([s.name for s in self.encoders] + [self.clusterer.name])

    def fit_encoders(
        self,
        images: np.ndarray,
        validation: np.ndarray | None = None,
        log: Log | None = None,
        *,
        return_features: bool = True,
    ) -> np.ndarray | None:
        """Fit each encoder in turn and return the features of ``images`` after the last.

        With ``return_features=False`` the last encoder does not encode its training input,
        which saves a pass when a different split is clustered.
        """
        features: Any = images
        for position, stage in enumerate(self.encoders):
            last = position == len(self.encoders) - 1
            if log:
                log(f"fitting encoder {stage.name} on {len(features)} inputs")
            start = time.perf_counter()
            encoder: Encoder = stage.instance
            with stage_boundary("encoder", stage):
                encoder.fit(features, validation=validation)
            self.timings[f"fit {stage.name}"] = time.perf_counter() - start
            if last and not return_features:
                return None
            start = time.perf_counter()
            with stage_boundary("encoder", stage):
                fitted = getattr(encoder, "embedding_", None)
                encoded = fitted if fitted is not None else encoder.transform(features)
                if validation is not None and not last:
                    validation = check_output(stage, encoder.transform(validation), len(validation))
            features = check_output(stage, encoded, len(features))
            self.timings[f"encode {stage.name}"] = time.perf_counter() - start
        return check_encoded(features, self.encoders[-1] if self.encoders else None)

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Features of new images through every fitted encoder."""
        features: Any = images
        for stage in self.encoders:
            with stage_boundary("encoder", stage):
                encoded = stage.instance.transform(features)
            features = check_output(stage, encoded, len(features))
        return check_encoded(features, self.encoders[-1] if self.encoders else None)

    def fit_clusterer(self, features: np.ndarray) -> np.ndarray:
        """Cluster the features; remember and return the labels."""
        start = time.perf_counter()
        with stage_boundary("clusterer", self.clusterer):
            labels = self.clusterer.instance.fit_predict(features)
        self.labels_ = check_labels(self.clusterer, labels, len(features))
        self.timings[f"cluster {self.clusterer.name}"] = time.perf_counter() - start
        return self.labels_

    def fit(self, images: np.ndarray, validation: np.ndarray | None = None) -> Pipeline:
        """Fit the encoders and the clusterer on the same images."""
        self.fit_clusterer(self.fit_encoders(images, validation))
        return self

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Assign new images to the fitted clusters."""
        clusterer: Clusterer = self.clusterer.instance
        if not can_predict(clusterer):
            from .sklearn_adapter import predicting_clusterers

            raise ImgclustError(
                f"clusterer {self.clusterer.name!r} cannot assign new images; "
                f"refit with one that can ({', '.join(predicting_clusterers())})."
            )
        features = self.transform(images)
        with stage_boundary("clusterer", self.clusterer):
            labels = clusterer.predict(features)
        return check_labels(self.clusterer, labels, len(features))


def check_encoded(features: Any, stage: Stage | None = None) -> np.ndarray:
    """Features must be a finite (N, D) float array; reshape (N, ...) and say clearly when not."""
    features = np.asarray(features)
    who = f"the {describe_stage('encoder', stage)}" if stage is not None else "the encoder"
    if features.ndim < 2:
        raise DataError(f"{who} returned shape {features.shape}; expected (N, D).")
    if features.ndim > 2:
        features = features.reshape(len(features), -1)
    if features.dtype != np.float32:
        features = features.astype(np.float32)
    if not np.isfinite(features).all():
        bad = int((~np.isfinite(features)).any(axis=1).sum())
        raise DataError(
            f"{bad} of {len(features)} images encoded by {who} have NaN or infinite features: "
            "check the input images or the encoder's settings."
        )
    return features


# Stage boundaries: a plugin's failure or malformed output is named, not met later as a riddle.
def describe_stage(kind: str, stage: Stage) -> str:
    """``encoder 'hog' from acme-imgclust 0.2``: the stage and, where known, its plugin."""
    from .plugins_host import stage_origin

    origin = stage_origin(f"{kind}s", stage.name, stage.instance)
    return f"{kind} {stage.name!r}" + (f" from {origin}" if origin else "")


@contextmanager
def stage_boundary(kind: str, stage: Stage) -> Iterator[None]:
    """Name the stage in any error raised inside it; its own one-line errors keep their text.

    Under ``IMGCLUST_DEBUG`` the original exception propagates, noted with the stage, so that
    its traceback shows; otherwise it is the ``__cause__`` of the one-line :class:`PluginError`.
    """
    try:
        yield
    except ImgclustError as exc:
        label = f"{kind} {stage.name!r}"
        if exc.args and isinstance(exc.args[0], str) and label not in exc.args[0]:
            exc.args = (f"{label}: {exc.args[0]}", *exc.args[1:])
        raise
    except MemoryError:
        raise
    except Exception as exc:
        message = f"{describe_stage(kind, stage)} failed: {_one_line(exc)}"
        if os.environ.get("IMGCLUST_DEBUG"):
            exc.add_note(message)
            raise
        raise PluginError(message) from exc


def check_output(stage: Stage, output: Any, expected: int) -> np.ndarray:
    """An encoder's output: one row per input, at least 2-D, numeric, finite."""
    who = describe_stage("encoder", stage)
    if output is None:
        raise PluginError(f"{who} returned None instead of an (N, D) array.")
    try:
        array = np.asarray(output)
    except Exception as exc:
        raise PluginError(f"{who} returned {type(output).__name__}, not an array: {exc}") from exc
    if array.ndim < 2:
        raise PluginError(f"{who} returned shape {array.shape}; expected (N, D) for N images.")
    if len(array) != expected:
        raise PluginError(
            f"encoder {stage.name!r} returned {len(array)} rows for {expected} images; it must "
            f"return one per image (fix or report it to {_origin_or_author(stage, 'encoder')})."
        )
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise PluginError(f"{who} returned {array.dtype} values; expected numbers.")
    if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array.reshape(len(array), -1))).any(axis=1).sum())
        raise DataError(
            f"{bad} of {len(array)} images encoded by the {who} have NaN or infinite features: "
            "check the input images or the encoder's settings."
        )
    return array


def check_labels(stage: Stage, labels: Any, expected: int) -> np.ndarray:
    """A clusterer's labels: one integer per input, -1 for noise and none below it."""
    who = describe_stage("clusterer", stage)
    try:
        array = np.asarray(labels)
    except Exception as exc:
        raise PluginError(f"{who} returned {type(labels).__name__}, not labels: {exc}") from exc
    if array.ndim != 1:
        raise PluginError(f"{who} returned labels of shape {array.shape}; expected ({expected},).")
    if len(array) != expected:
        raise PluginError(
            f"clusterer {stage.name!r} returned {len(array)} labels for {expected} images; it "
            f"must return one per image (fix or report it to "
            f"{_origin_or_author(stage, 'clusterer')})."
        )
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise PluginError(f"{who} returned {array.dtype} labels; expected integers.")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or (array != np.round(array)).any():
            raise PluginError(
                f"{who} returned labels that are not whole numbers (NaN or fractions)."
            )
    labels_ = array.astype(np.int64)
    if len(labels_) and labels_.min() < -1:
        raise PluginError(
            f"{who} returned label {int(labels_.min())}; labels are 0, 1, ... and -1 for noise."
        )
    return labels_


def _origin_or_author(stage: Stage, kind: str) -> str:
    from .plugins_host import stage_origin

    return stage_origin(f"{kind}s", stage.name, stage.instance) or "its author"


def _one_line(exc: BaseException) -> str:
    """``KeyError 'missing'``: the exception's type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__} {text}".strip()
