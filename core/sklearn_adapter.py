"""One adapter that turns any scikit-learn clusterer into an imgclust clusterer.

It maps ``n_clusters`` onto the estimator's own name for it (GaussianMixture's
``n_components``), offers ``predict`` only where the estimator (or a ``predict_with`` function,
such as hdbscan's ``approximate_predict``) can assign new points, and saves fitted models as
plain arrays where it knows how (k-means centroids, Gaussian mixture parameters). Methods that
cannot assign new points save only their settings and labels. A model that needs pickle saves
through :class:`PickleFormat`, which loads only behind an explicit ``trust`` flag.
"""

from __future__ import annotations

import importlib
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import atomic
from .errors import DataError, ImgclustError

# Fitted attributes that describe a model completely, per estimator class, for pickle-free saving.
ARRAY_STATE = {
    "KMeans": ["cluster_centers_", "labels_", "inertia_", "n_iter_", "n_features_in_"],
    "MiniBatchKMeans": [
        "cluster_centers_",
        "labels_",
        "inertia_",
        "n_iter_",
        "n_steps_",
        "n_features_in_",
    ],
    "GaussianMixture": [
        "weights_",
        "means_",
        "covariances_",
        "precisions_",
        "precisions_cholesky_",
        "converged_",
        "n_iter_",
        "lower_bound_",
        "n_features_in_",
    ],
}
# Fitted attributes that are not arrays but must exist for ``predict`` after loading.
# (k-means's ``predict`` reads ``_n_threads``, which ``fit`` sets; without it a loaded model fails.)
RUNTIME_STATE = {"KMeans": ("_n_threads",), "MiniBatchKMeans": ("_n_threads",)}
STATE_FILE = "state.npz"
META_FILE = "estimator.json"
PREDICTING = ("kmeans", "minibatch-kmeans", "gmm", "hdbscan")

Predictor = Callable[[Any, np.ndarray], np.ndarray]


class PickleFormat:
    """Saves a fitted estimator with pickle (``model.pkl``), for libraries that offer nothing else.

    Unpickling can run code hidden in the file, so ``load`` refuses unless ``trust`` is true.
    """

    filename = "model.pkl"

    def save(self, estimator: Any, directory: Path) -> None:
        atomic.write_bytes(Path(directory) / self.filename, pickle.dumps(estimator, protocol=5))

    def load(self, directory: Path, trust: bool = False) -> Any:
        path = Path(directory) / self.filename
        if not trust:
            raise ImgclustError(
                f"refusing to unpickle {path}: pickle can run code hidden in the file; "
                "load it with trust=True (--trust) only if you made that run yourself."
            )
        if not path.exists():
            raise ImgclustError(f"{path} is missing: the saved clusterer is incomplete.")
        with open(path, "rb") as handle:
            return pickle.load(handle)  # noqa: S301 - only behind the explicit trust flag


class SklearnClusterer:
    """Wraps a scikit-learn clusterer built by ``make(**params)``.

    ``k_param`` names the estimator's parameter for the number of clusters, if any, so that
    the core can treat every clusterer's k alike. ``predict_with(estimator, features)`` assigns
    new points for estimators whose prediction lives outside the class; ``persist`` saves and
    loads estimators that have no array format (e.g. :class:`PickleFormat`).
    """

    def __init__(
        self,
        make: Callable[..., Any],
        params: dict[str, Any] | None = None,
        *,
        k_param: str | None = "n_clusters",
        name: str = "",
        predict_with: Predictor | None = None,
        persist: PickleFormat | None = None,
        check: Callable[[np.ndarray], None] | None = None,
    ) -> None:
        self.make = make
        self.params = dict(params or {})
        self.k_param = k_param
        self.name = name or getattr(make, "__name__", "clusterer")
        self.predict_with = predict_with
        self.persist = persist
        self.check = check
        self.estimator_: Any = None
        self.labels_: np.ndarray | None = None
        self._predicts: bool | None = None

    # Interface ---------------------------------------------------------------------------
    @property
    def n_clusters(self) -> int | None:
        """The requested number of clusters, where the method takes one."""
        return self.params.get(self.k_param) if self.k_param else None

    @property
    def can_predict(self) -> bool:
        """Whether the fitted model can assign new points."""
        if self.predict_with is not None:
            return True
        if self._predicts is None:
            estimator = self.estimator_ if self.estimator_ is not None else self._build()
            self._predicts = callable(getattr(estimator, "predict", None))
        return self._predicts

    def _build(self) -> Any:
        return self.make(**self.params)

    def fit_predict(self, features: np.ndarray) -> np.ndarray:
        """Fit on (N, D) features and return one label per row (-1 for noise)."""
        check_features(features, self.n_clusters)
        if self.check is not None:
            self.check(features)
        self.estimator_ = self._build()
        if hasattr(self.estimator_, "fit_predict"):
            labels = self.estimator_.fit_predict(features)
        else:
            labels = self.estimator_.fit(features).labels_
        self.labels_ = np.asarray(labels, dtype=np.int64)
        return self.labels_

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Assign new points to the fitted clusters (-1 where a method calls them noise)."""
        if not self.can_predict:
            raise ImgclustError(
                f"clusterer {self.name!r} cannot assign new points; refit with one that can "
                f"({', '.join(predicting_clusterers())})."
            )
        if self.estimator_ is None:
            raise ImgclustError(f"clusterer {self.name!r} is not fitted yet: fit it first.")
        check_features(features)
        expected = getattr(self.estimator_, "n_features_in_", None)
        if expected is None and self.estimator_ is not None:
            raw = getattr(self.estimator_, "_raw_data", None)
            expected = None if raw is None else raw.shape[1]
        if expected is not None and features.shape[1] != expected:
            raise DataError(
                f"clusterer {self.name!r} was fitted on {expected} features per image; "
                f"got {features.shape[1]}: use the same encoders as the fit."
            )
        if self.predict_with is not None:
            labels = self.predict_with(self.estimator_, features)
        else:
            labels = self.estimator_.predict(features)
        return np.asarray(labels, dtype=np.int64)

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
        """Save the fitted model: arrays (``state.npz``) where the class has an array format,
        the ``persist`` format where one is given, else only the labels of a method that cannot
        assign new points anyway; always ``estimator.json`` with the class and its settings.
        """
        if self.estimator_ is None:
            raise ImgclustError(f"clusterer {self.name!r} is not fitted yet: nothing to save.")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cls = type(self.estimator_)
        attributes = ARRAY_STATE.get(cls.__name__)
        if attributes is not None:
            fmt = "arrays"
            state = {
                a: np.asarray(getattr(self.estimator_, a))
                for a in attributes
                if hasattr(self.estimator_, a)
            }
        elif self.persist is not None:
            fmt = "pickle"
            self.persist.save(self.estimator_, directory)
            state = {}
        elif not self.can_predict:
            fmt = "labels"
            state = {}
        else:
            raise ImgclustError(
                f"clusterer {self.name!r} ({cls.__name__}) has no format to save to."
            )
        if self.labels_ is not None:
            state["labels_"] = self.labels_
        _write_npz(directory / STATE_FILE, state)
        meta = {
            "class": f"{cls.__module__}.{cls.__name__}",
            "format": fmt,
            "name": self.name,
            "params": _jsonable(self.estimator_.get_params()),
        }
        atomic.write_json(directory / META_FILE, meta)

    def load(self, directory: Path, trust: bool = False) -> SklearnClusterer:
        """Rebuild the fitted model from ``save``'s files. Arrays and labels are read without
        unpickling; a pickled model is read only when ``trust`` is true.
        """
        directory = Path(directory)
        try:
            meta = json.loads((directory / META_FILE).read_text())
        except FileNotFoundError:
            raise ImgclustError(f"{directory} holds no saved clusterer ({META_FILE}).") from None
        except (OSError, ValueError) as exc:
            raise ImgclustError(f"cannot read {directory / META_FILE}: {exc}") from None
        fmt = meta.get("format", "arrays")
        with np.load(directory / STATE_FILE, allow_pickle=False) as archive:
            state = {key: archive[key] for key in archive.files}
        labels = state.pop("labels_", None)
        if fmt == "pickle":
            if self.persist is None:
                raise ImgclustError(f"{directory}: clusterer {self.name!r} cannot read pickles.")
            estimator = self.persist.load(directory, trust=trust)
        else:
            estimator = _rebuild(meta, directory)
            for key, value in state.items():
                setattr(estimator, key, value.item() if value.ndim == 0 else value)
            for key in RUNTIME_STATE.get(type(estimator).__name__, ()):
                setattr(estimator, key, _runtime_value(key))
        if fmt == "labels":
            self._predicts = False
        self.estimator_ = estimator
        self.labels_ = None if labels is None else labels.astype(np.int64)
        return self


def _runtime_value(key: str) -> Any:
    """What ``fit`` would have set for a runtime attribute (threads: scikit-learn's own choice)."""
    if key == "_n_threads":
        try:
            from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

            return int(_openmp_effective_n_threads())
        except (ImportError, AttributeError):  # pragma: no cover - private helper moved
            return 1
    raise KeyError(key)


def predicting_clusterers() -> list[str]:
    """Names of the installed clusterers that can assign new points (their default settings)."""
    try:
        from .interfaces import can_predict
        from .plugins_host import get_registry

        registry = get_registry()
        names = []
        for name in registry.names("clusterers"):
            try:
                instance = registry.entries["clusterers"][name].target()
            except Exception:
                continue
            if can_predict(instance):
                names.append(name)
        return names or list(PREDICTING)
    except Exception:
        return list(PREDICTING)


def _rebuild(meta: dict[str, Any], directory: Path) -> Any:
    """An unfitted estimator of the saved class: only scikit-learn classes are imported."""
    module_name, _, class_name = str(meta.get("class", "")).rpartition(".")
    if not module_name.startswith("sklearn."):
        raise ImgclustError(f"{directory}: unknown estimator {meta.get('class')!r}.")
    if meta.get("format", "arrays") == "arrays" and class_name not in ARRAY_STATE:
        raise ImgclustError(f"{directory}: no array format for {meta.get('class')!r}.")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
        return cls(**meta.get("params", {}))
    except (ImportError, AttributeError, TypeError) as exc:
        raise ImgclustError(f"{directory}: cannot rebuild {meta.get('class')!r}: {exc}") from None


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic.write_bytes(path, buffer.getvalue())


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
