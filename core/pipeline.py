"""A fitted chain of encoders and a clusterer that turns images into cluster labels."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DataError, ImgclustError
from .interfaces import Clusterer, Embeds, Encoder, can_predict

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
            encoder.fit(features, validation=validation)
            self.timings[f"fit {stage.name}"] = time.perf_counter() - start
            if last and not return_features:
                return None
            start = time.perf_counter()
            fitted = encoder.embedding_ if isinstance(encoder, Embeds) else None
            features = fitted if fitted is not None else encoder.transform(features)
            if validation is not None and not last:
                validation = encoder.transform(validation)
            self.timings[f"encode {stage.name}"] = time.perf_counter() - start
        return check_encoded(features)

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Features of new images through every fitted encoder."""
        features: Any = images
        for stage in self.encoders:
            features = stage.instance.transform(features)
        return check_encoded(features)

    def fit_clusterer(self, features: np.ndarray) -> np.ndarray:
        """Cluster the features; remember and return the labels."""
        start = time.perf_counter()
        self.labels_ = np.asarray(self.clusterer.instance.fit_predict(features), dtype=np.int64)
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
        return np.asarray(clusterer.predict(self.transform(images)), dtype=np.int64)


def check_encoded(features: Any) -> np.ndarray:
    """Features must be a finite (N, D) float array; reshape (N, ...) and say clearly when not."""
    features = np.asarray(features)
    if features.ndim == 1:
        raise DataError(f"the encoder returned shape {features.shape}; expected (N, D).")
    if features.ndim > 2:
        features = features.reshape(len(features), -1)
    if features.dtype != np.float32:
        features = features.astype(np.float32)
    if not np.isfinite(features).all():
        bad = int((~np.isfinite(features)).any(axis=1).sum())
        raise DataError(
            f"{bad} of {len(features)} encoded images have NaN or infinite features: "
            "check the input images or the encoder's settings."
        )
    return features
