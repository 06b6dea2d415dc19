"""One adapter that turns any scikit-learn clusterer into an imgclust clusterer.

It maps ``n_clusters`` onto the estimator's own name for it (GaussianMixture's
``n_components``), offers ``predict`` only where the estimator (or a ``predict_with`` function,
such as hdbscan's ``approximate_predict``) can assign new points, and saves fitted models as
plain arrays and values (``state.npz`` and ``estimator.json``): a listed set of attributes for
the classes it knows (k-means centroids, Gaussian mixture parameters), every fitted attribute that
is an array or a plain value for any other estimator, checked by reloading before it counts as
saved. Methods that cannot assign new points save only their settings and labels. A model that
needs pickle saves through :class:`PickleFormat`, which loads only behind an explicit ``trust``.

Loading trusts nothing in the folder to choose code: the estimator is built by the registered
factory, the folder's class name must match what that factory builds, its parameters must be
parameters of that class with plain JSON values, and its fitted attributes must be data.
"""

from __future__ import annotations

import importlib
import math
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.errors import DataError, ImgclustError, one_line
from imgclust.io import atomic
from imgclust.io.bounded import read_json, read_npz
from imgclust.kit.arrays import check_finite
from imgclust.stages.host import get_registry
from imgclust.stages.interfaces import can_predict

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
# Attributes that describe the machine, not the model: never saved, set afresh when loading.
RUNTIME_KEYS = ("_n_threads",)
STATE_FILE = "state.npz"
META_FILE = "estimator.json"
FORMATS = ("arrays", "pickle", "labels")
PREDICTING = ("kmeans", "minibatch-kmeans", "gmm", "hdbscan")
# Rows of the fit's features kept in memory (never saved) to check that a save reloads alike.
PROBE_ROWS = 256
PLAIN = (type(None), bool, int, float, str)
_FITTED_NAME = re.compile(r"^_?[A-Za-z][A-Za-z0-9_]*$")

Predictor = Callable[[Any, np.ndarray], np.ndarray]


def writable(features: np.ndarray) -> np.ndarray:
    """The features, copied when read-only (a memory-mapped file): some libraries' compiled
    code (hdbscan's) takes writable memory views and fails on read-only input."""
    return features if features.flags.writeable else np.array(features)


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
    the core can treat every clusterer's k alike. ``counts`` names parameters that are a count
    or a fraction (``int | float`` settings): a float below 1 becomes that share of the rows
    being fitted (see :func:`count_of`). ``predict_with(estimator, features)`` assigns
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
        counts: tuple[str, ...] = (),
    ) -> None:
        self.make = make
        self.counts = tuple(counts)
        self.params = dict(params or {})
        self.k_param = k_param
        self.name = name or getattr(make, "__name__", "clusterer")
        self.predict_with = predict_with
        self.persist = persist
        self.check = check
        self.estimator_: Any = None
        self.labels_: np.ndarray | None = None
        self._predicts: bool | None = None
        self._probe: np.ndarray | None = None  # rows of the fit, to check a save; never saved

    def __getattr__(self, attribute: str) -> Any:
        """The fitted estimator's fitted attributes (``cluster_centers_``, ``n_iter_``) are the
        adapter's, as scikit-learn users expect of a fitted clusterer."""
        estimator = self.__dict__.get("estimator_")
        if attribute.endswith("_") and not attribute.startswith("_") and estimator is not None:
            return getattr(estimator, attribute)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attribute!r}")

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

    def _build(self, n_rows: int | None = None, **overrides: Any) -> Any:
        """The estimator, its count-or-fraction settings resolved for ``n_rows`` rows and
        ``overrides`` in place of the clusterer's own parameters."""
        params = {**self.params, **overrides}
        if n_rows is not None:
            for key in self.counts:
                if params.get(key) is not None:
                    params[key] = count_of(params[key], n_rows)
        return self.make(**params)

    def fit_predict(self, features: np.ndarray) -> np.ndarray:
        """Fit on (N, D) features and return one label per row (-1 for noise)."""
        check_features(features, self.n_clusters)
        if self.check is not None:
            self.check(features)
        features = writable(features)
        self.estimator_, labels = self._fit(features)
        self.labels_ = np.asarray(labels, dtype=np.int64)
        self._probe = np.array(features[:PROBE_ROWS])
        return self.labels_

    def _fit(self, features: np.ndarray) -> tuple[Any, np.ndarray]:
        """A fitted estimator and its label of each row (checked features); subclasses change
        how the estimator is chosen, not the checks around it."""
        estimator = self._build(len(features))
        if hasattr(estimator, "fit_predict"):
            return estimator, estimator.fit_predict(features)
        return estimator, estimator.fit(features).labels_

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Assign new points to the fitted clusters (-1 where a method calls them noise)."""
        if not self.can_predict:
            raise ImgclustError(cannot_predict_message(self.name) + ".")
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
        features = writable(features)
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
        """Save the fitted model without pickle where it can: arrays (``state.npz``) and plain
        values (``estimator.json``), checked by reloading them; the ``persist`` format where the
        stage gives one; only the labels of a method that cannot assign new points anyway.

        A model whose fitted state is not arrays and plain values, and that has no ``persist``
        format, raises a one-line error that says why instead of saving part of it.
        """
        if self.estimator_ is None:
            raise ImgclustError(f"clusterer {self.name!r} is not fitted yet: nothing to save.")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        estimator = self.estimator_
        cls = type(estimator)
        meta: dict[str, Any] = {
            "estimator": cls.__name__,
            "class": f"{cls.__module__}.{cls.__name__}",
            "name": self.name,
            "params": _jsonable(estimator.get_params()),
        }
        state: dict[str, np.ndarray] = {}
        if cls.__name__ in ARRAY_STATE or (self.persist is None and self.can_predict):
            state, values, runtime, left_out = fitted_state(estimator)
            meta.update(format="arrays", values=values, runtime=runtime, left_out=left_out)
        elif self.persist is not None:
            meta["format"] = "pickle"
            self.persist.save(estimator, directory)
        else:
            meta["format"] = "labels"
        if self.labels_ is not None:
            state["labels_"] = self.labels_
        atomic.write_npz(directory / STATE_FILE, state)
        atomic.write_json(directory / META_FILE, meta)
        if meta["format"] == "arrays":
            self._check_saved(directory, meta["left_out"])

    def _check_saved(self, directory: Path, left_out: list[str]) -> None:
        """Reload what ``save`` wrote and refuse it unless it assigns points as the model does."""
        probe = self._probe_rows()
        what = f"clusterer {self.name!r} ({type(self.estimator_).__name__})"
        missing = f"; it keeps {', '.join(left_out)} as Python objects" if left_out else ""
        try:
            copy = SklearnClusterer(
                self.make, self.params, k_param=self.k_param, name=self.name
            ).load(directory)
            same = probe is not None and np.array_equal(copy.predict(probe), self.predict(probe))
            problem = "" if same else "it assigns points differently after reloading"
        except Exception as exc:  # any failure means the arrays do not describe the model
            problem = f"reloading it fails ({one_line(exc)})"
        if probe is None:
            problem = "there are no points to check that it reloads alike"
        if problem:
            for name in (STATE_FILE, META_FILE):
                (directory / name).unlink(missing_ok=True)
            raise ImgclustError(f"{what} cannot be saved without pickle: {problem}{missing}.")

    def _probe_rows(self) -> np.ndarray | None:
        """Points to compare a reloaded model on: rows of the fit, else random rows."""
        if self._probe is not None:
            return self._probe
        width = getattr(self.estimator_, "n_features_in_", None)
        if not isinstance(width, (int, np.integer)) or width < 1:
            return None
        return np.random.default_rng(0).normal(size=(PROBE_ROWS, int(width)))

    def load(self, directory: Path, trust: bool = False) -> SklearnClusterer:
        """Rebuild the fitted model from ``save``'s files. The estimator is the one this
        clusterer's factory builds; the folder only gives its checked parameters, arrays and
        plain values. A pickled model is read only when ``trust`` is true.
        """
        directory = Path(directory)
        where = f"{directory.parent.name}/{directory.name}"
        meta = read_meta(directory, where)
        fmt = meta.get("format", "arrays")
        estimator = self._build()
        check_estimator_key(meta, type(estimator).__name__, self.name, where)
        state = read_arrays(directory / STATE_FILE, f"{where}/{STATE_FILE}")
        labels = state.pop("labels_", None)
        if fmt == "pickle":
            if self.persist is None:
                raise ImgclustError(f"{where}: clusterer {self.name!r} cannot read pickles.")
            estimator = self.persist.load(directory, trust=trust)
        else:
            apply_params(estimator, meta.get("params", {}), f"{where}/{META_FILE}")
            if fmt == "arrays":
                restore_state(estimator, state, meta, where)
        if fmt == "labels":
            self._predicts = False
        if labels is not None and (labels.ndim != 1 or labels.dtype.kind not in "iu"):
            raise ImgclustError(f"{where}/{STATE_FILE}: labels_ are not one integer per point.")
        self.estimator_ = estimator
        self.labels_ = None if labels is None else labels.astype(np.int64)
        return self


def fitted_state(
    estimator: Any,
) -> tuple[dict[str, np.ndarray], dict[str, Any], list[str], list[str]]:
    """The estimator's fitted attributes split into arrays, plain values, runtime attributes
    (set afresh when loading) and those that are neither (left out, named in the save).
    """
    listed = ARRAY_STATE.get(type(estimator).__name__)
    arrays: dict[str, np.ndarray] = {}
    if listed is not None:
        arrays = {a: np.asarray(getattr(estimator, a)) for a in listed if hasattr(estimator, a)}
        return arrays, {}, list(RUNTIME_STATE.get(type(estimator).__name__, ())), []
    params = set(estimator.get_params(deep=False))
    values: dict[str, Any] = {}
    runtime: list[str] = []
    left_out: list[str] = []
    for key, value in vars(estimator).items():
        if key in params or not _FITTED_NAME.match(key) or hasattr(type(estimator), key):
            continue
        if key in RUNTIME_KEYS:
            runtime.append(key)
        elif isinstance(value, np.ndarray) and value.dtype.kind in "biufcU":
            arrays[key] = value
        elif isinstance(value, np.generic) and value.dtype.kind in "biufcU":
            arrays[key] = np.asarray(value)
        elif isinstance(value, PLAIN) and _finite_or_not_float(value):
            values[key] = value
        else:
            left_out.append(key)
    return arrays, values, runtime, sorted(left_out)


def _finite_or_not_float(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def read_meta(directory: Path, where: str) -> dict[str, Any]:
    """``estimator.json`` as a mapping of the expected shape, or a one-line error."""
    path = directory / META_FILE
    try:
        meta = read_json(path, f"{where}/{META_FILE}")
    except FileNotFoundError:
        raise ImgclustError(f"{where} holds no saved clusterer ({META_FILE}).") from None
    except (OSError, ValueError) as exc:
        raise ImgclustError(f"cannot read {where}/{META_FILE}: {one_line(exc)}") from None
    if not isinstance(meta, dict):
        raise ImgclustError(f"{where}/{META_FILE} is not a JSON object: the file is damaged.")
    checks = {
        "params": dict,
        "values": dict,
        "runtime": list,
        "left_out": list,
        "format": str,
    }
    for key, kind in checks.items():
        if key in meta and not isinstance(meta[key], kind):
            raise ImgclustError(
                f"{where}/{META_FILE}: {key!r} is {type(meta[key]).__name__}, not "
                f"{kind.__name__}: the file is damaged or was altered."
            )
    if meta.get("format", "arrays") not in FORMATS:
        raise ImgclustError(
            f"{where}/{META_FILE}: unknown format {meta.get('format')!r} "
            f"(known: {', '.join(FORMATS)})."
        )
    return meta


def check_estimator_key(meta: dict[str, Any], built: str, name: str, where: str) -> None:
    """Refuse a folder whose estimator is not the class this clusterer's factory builds.

    The class is never imported from what the folder says; the name is only compared.
    """
    named = [meta[key] for key in ("estimator", "class") if key in meta]
    if not named:
        raise ImgclustError(f"{where}/{META_FILE} names no estimator: the file is damaged.")
    for value in named:
        short = value.rpartition(".")[2] if isinstance(value, str) else None
        if short != built:
            raise ImgclustError(
                f"{where}/{META_FILE} names the estimator {value!r}, but clusterer {name!r} "
                f"builds {built}: the folder was altered or made by another plugin, and nothing "
                "it names is imported."
            )


def apply_params(estimator: Any, params: dict[str, Any], where: str) -> None:
    """Set saved parameters that are the class's own, with plain values of the right kind."""
    known = estimator.get_params()
    cls = type(estimator).__name__
    for key, value in params.items():
        if key not in known:
            raise ImgclustError(
                f"{where}: {cls} has no parameter {key!r}; the file was altered or written for "
                "another scikit-learn version."
            )
        if not isinstance(value, PLAIN) or not _same_kind(known[key], value):
            raise ImgclustError(
                f"{where}: parameter {key!r} of {cls} is {_short_repr(value)} "
                f"({type(value).__name__}); expected a {type(known[key]).__name__} like "
                f"{_short_repr(known[key])}."
            )
    try:
        estimator.set_params(**params)
        validate = getattr(estimator, "_validate_params", None)
        if callable(validate):
            validate()
    except Exception as exc:  # scikit-learn's own check of each parameter
        raise ImgclustError(f"{where}: {one_line(exc)}") from None


def _same_kind(current: Any, value: Any) -> bool:
    """Whether a saved plain value may replace ``current`` (None goes with anything plain)."""
    if value is None or current is None:
        return True
    if isinstance(current, bool) or isinstance(value, bool):
        return isinstance(current, bool) and isinstance(value, bool)
    if isinstance(current, (int, np.integer)):
        return isinstance(value, int)
    if isinstance(current, (float, np.floating)):
        return isinstance(value, (int, float))
    if isinstance(current, str):
        return isinstance(value, str)
    return False  # a callable or an object: never set from a file


def restore_state(
    estimator: Any, state: dict[str, np.ndarray], meta: dict[str, Any], where: str
) -> None:
    """Set saved fitted attributes: data only, never a method, parameter or class attribute."""
    cls = type(estimator).__name__
    listed = ARRAY_STATE.get(cls)
    params = set(estimator.get_params(deep=False))
    values = meta.get("values", {})
    for key in [*state, *values]:
        allowed = (
            isinstance(key, str)
            and _FITTED_NAME.match(key)
            and key not in params
            and key not in RUNTIME_KEYS
            and not hasattr(type(estimator), key)
            and (listed is None or key in listed)
        )
        if not allowed:
            raise ImgclustError(
                f"{where}: {key!r} is not a fitted attribute of {cls}: the folder was altered."
            )
    for key, value in values.items():
        if not isinstance(value, PLAIN):
            raise ImgclustError(f"{where}/{META_FILE}: value {key!r} is not a plain value.")
        setattr(estimator, key, value)
    for key, array in state.items():
        setattr(estimator, key, array.item() if array.ndim == 0 else array)
    runtime = set(RUNTIME_STATE.get(cls, ())) | set(meta.get("runtime", ()))
    for key in RUNTIME_KEYS:
        if key in runtime:
            setattr(estimator, key, _runtime_value(key))


def read_arrays(path: Path, where: str) -> dict[str, np.ndarray]:
    """A ``.npz`` of plain arrays, each checked to hold the data its header claims (so that a
    forged header cannot make numpy allocate more than the file holds) and read without pickle.
    """
    if not Path(path).exists():
        raise ImgclustError(f"{where} is missing: the saved clusterer is incomplete.")
    return read_npz(Path(path), where)


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        registry = get_registry()
        names = []
        for name in registry.names("clusterers"):
            try:
                instance = registry.get("clusterers", name).factory()
            except Exception:
                continue
            if can_predict(instance):
                names.append(name)
        return names or list(PREDICTING)
    except Exception:
        return list(PREDICTING)


def cannot_predict_message(name: str) -> str:
    """'clusterer NAME cannot assign new images; refit with one that can: kmeans, gmm, ...'."""
    able = ", ".join(predicting_clusterers()) or "none installed"
    return f"clusterer {name!r} cannot assign new images; refit with one that can: {able}"


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is None or isinstance(v, (bool, int, float, str))}


def check_features(features: np.ndarray, n_clusters: int | None = None) -> None:
    """Reject empty, non-2-D or non-finite features, and more clusters than points."""
    if features.ndim != 2:
        raise DataError(f"features must be (N, D); got shape {features.shape}.")
    if len(features) == 0:
        raise DataError("there are no features to cluster: the data is empty.")
    check_finite(features, "feature rows", "check the input images or the encoder")
    if isinstance(n_clusters, int) and n_clusters > len(features):
        raise DataError(
            f"asked for {n_clusters} clusters but there are only {len(features)} images: "
            "lower clusterer.n_clusters."
        )


def count_of(value: int | float, n_rows: int) -> int:
    """A count-or-fraction setting as a count: a float below 1 is that share of ``n_rows``
    (rounded up, at least 1); anything else is a count already."""
    if isinstance(value, float) and 0 < value < 1:
        return max(1, math.ceil(value * n_rows))
    return int(value)


class LazyEstimator:
    """Builds ``module.class_name``, importing it only when called (keeps startup fast).

    It declares which estimator a factory builds, and pickles by name (unlike a closure).
    """

    def __init__(self, module: str, class_name: str) -> None:
        self.module = module
        self.class_name = class_name
        self.__name__ = class_name

    def __call__(self, **params: Any) -> Any:
        return getattr(importlib.import_module(self.module), self.class_name)(**params)

    def __repr__(self) -> str:
        return f"LazyEstimator({self.module!r}, {self.class_name!r})"


def lazy_estimator(module: str, class_name: str) -> LazyEstimator:
    """A constructor that imports ``module.class_name`` only when called (keeps startup fast)."""
    return LazyEstimator(module, class_name)
