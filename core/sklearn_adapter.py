"""One adapter that turns any scikit-learn clusterer into an imgclust clusterer.

It maps ``n_clusters`` onto the estimator's own name for it (GaussianMixture's
``n_components``), offers ``predict`` only where the estimator has one, and saves fitted models
as plain arrays where it knows how (k-means centroids, Gaussian mixture parameters).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import DataError, ImgclustError

# Fitted attributes that describe a model completely, per estimator class, for pickle-free saving.
ARRAY_STATE = {
    "KMeans": ["cluster_centers_", "labels_", "inertia_", "n_iter_", "n_features_in_"],
    "MiniBatchKMeans": ["cluster_centers_", "labels_", "inertia_", "n_iter_", "n_steps_", "n_features_in_"],
    "GaussianMixture": [
        "weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_",
        "converged_", "n_iter_", "lower_bound_", "n_features_in_",
    ],
}


class SklearnClusterer:
    """Wraps a scikit-learn clusterer built by ``make(**params)``.

    ``k_param`` names the estimator's parameter for the number of clusters, if any, so that
    the core can treat every clusterer's k alike.
    """

    def __init__(
        self,
        make: Callable[..., Any],
        params: dict[str, Any] | None = None,
        *,
        k_param: str | None = "n_clusters",
        name: str = "",
    ) -> None:
        self.make = make
        self.params = dict(params or {})
        self.k_param = k_param
        self.name = name or getattr(make, "__name__", "clusterer")
        self.estimator_: Any = None
        self.labels_: np.ndarray | None = None

    # Interface ---------------------------------------------------------------------------
    @property
    def n_clusters(self) -> int | None:
        """The requested number of clusters, where the method takes one."""
        return self.params.get(self.k_param) if self.k_param else None

    @property
    def can_predict(self) -> bool:
        """Whether the fitted model can assign new points."""
        estimator = self.estimator_ if self.estimator_ is not None else self._build()
        return callable(getattr(estimator, "predict", None))

    def _build(self) -> Any:
        return self.make(**self.params)

    def fit_predict(self, features: np.ndarray) -> np.ndarray:
        """Fit on (N, D) features and return one label per row (-1 for noise)."""
        check_features(features, self.n_clusters)
        self.estimator_ = self._build()
        if hasattr(self.estimator_, "fit_predict"):
            labels = self.estimator_.fit_predict(features)
        else:
            labels = self.estimator_.fit(features).labels_
        self.labels_ = np.asarray(labels, dtype=np.int64)
        return self.labels_

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Assign new points to the fitted clusters."""
        if self.estimator_ is None:
            raise ImgclustError(f"clusterer {self.name!r} is not fitted yet.")
        if not callable(getattr(self.estimator_, "predict", None)):
            raise ImgclustError(f"clusterer {self.name!r} cannot assign new points.")
        check_features(features)
        return np.asarray(self.estimator_.predict(features), dtype=np.int64)

    def score_samples(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Per-point confidence: distance to the centroid or the mixture's probability."""
        estimator = self.estimator_
        if hasattr(estimator, "predict_proba"):
            return {"probability": estimator.predict_proba(features).max(axis=1)}
        if hasattr(estimator, "transform") and hasattr(estimator, "cluster_centers_"):
            return {"distance": estimator.transform(features).min(axis=1)}
        return {}

    # Persistence -------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Save the fitted model as arrays (``state.npz``) plus ``estimator.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cls = type(self.estimator_)
        attributes = ARRAY_STATE.get(cls.__name__)
        if attributes is None:
            raise ImgclustError(
                f"clusterer {self.name!r} ({cls.__name__}) has no array format to save to."
            )
        state = {a: np.asarray(getattr(self.estimator_, a)) for a in attributes if hasattr(self.estimator_, a)}
        np.savez(directory / "state.npz", **state)
        meta = {"class": f"{cls.__module__}.{cls.__name__}", "params": _jsonable(self.estimator_.get_params())}
        (directory / "estimator.json").write_text(json.dumps(meta, indent=2))

    def load(self, directory: Path) -> SklearnClusterer:
        """Rebuild the fitted model from ``save``'s arrays; nothing is unpickled."""
        directory = Path(directory)
        meta = json.loads((directory / "estimator.json").read_text())
        module_name, _, class_name = meta["class"].rpartition(".")
        if class_name not in ARRAY_STATE or not module_name.startswith("sklearn."):
            raise ImgclustError(f"{directory}: unknown estimator {meta['class']!r}.")
        cls = getattr(importlib.import_module(module_name), class_name)
        estimator = cls(**meta["params"])
        with np.load(directory / "state.npz", allow_pickle=False) as state:
            for key in state.files:
                value = state[key]
                setattr(estimator, key, value.item() if value.ndim == 0 else value)
        self.estimator_ = estimator
        self.labels_ = getattr(estimator, "labels_", None)
        return self


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is None or isinstance(v, (bool, int, float, str))}


def check_features(features: np.ndarray, n_clusters: int | None = None) -> None:
    """Reject empty, non-2-D or non-finite features, and more clusters than points."""
    if features.ndim != 2:
        raise DataError(f"features must be (N, D); got shape {features.shape}.")
    if len(features) == 0:
        raise DataError("there are no features to cluster: the data is empty.")
    if not np.isfinite(features).all():
        bad = int((~np.isfinite(features)).any(axis=1).sum())
        raise DataError(
            f"{bad} of {len(features)} feature rows contain NaN or infinite values: "
            "check the input images or the encoder."
        )
    if isinstance(n_clusters, int) and n_clusters > len(features):
        raise DataError(
            f"asked for {n_clusters} clusters but there are only {len(features)} images: "
            "lower clusterer.n_clusters."
        )


def lazy_estimator(module: str, class_name: str) -> Callable[..., Any]:
    """A constructor that imports ``module.class_name`` only when called (keeps startup fast)."""

    def make(**params: Any) -> Any:
        return getattr(importlib.import_module(module), class_name)(**params)

    make.__name__ = class_name
    return make
