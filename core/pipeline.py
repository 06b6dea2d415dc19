"""A chain of encoders, a clusterer and optional refiners that turns images into cluster labels.

``Pipeline`` is the one class for both: built from stages (``imgclust.get_encoder(...)``) or
names and fitted in memory, or loaded from a folder by ``imgclust.load``. Cluster numbers are
canonical: the largest cluster is 0, ties go to the cluster whose first member comes first,
and noise stays -1, so the same seed gives the same numbers whatever the clusterer called them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .arrays import check_finite
from .console import Log
from .errors import DataError, ImgclustError, PluginError, SettingsError
from .interfaces import (
    Clusterer,
    Embeds,
    Encoder,
    ImageSet,
    ReportsStop,
    ScoresSamples,
    can_predict,
)

ENCODED_ADVICE = "check the input images or the encoder's settings"


@dataclass
class Stage:
    """A named stage instance with its resolved settings; it answers for the instance too.

    ``imgclust.get_encoder("pca", n_components=20)`` returns one: ``stage.fit(...)``,
    ``stage.transform(...)`` and every other attribute reach the encoder it wraps.
    """

    name: str
    instance: Any
    settings: dict[str, Any] = field(default_factory=dict)
    unsaved_reason: str | None = None

    def __getattr__(self, attribute: str) -> Any:
        """Anything a Stage does not have itself is the wrapped instance's."""
        if attribute.startswith("__") or attribute in _STAGE_FIELDS:
            raise AttributeError(attribute)
        return getattr(self.instance, attribute)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        return f"<Stage {self.name}({shown})>"


_STAGE_FIELDS = frozenset(f.name for f in fields(Stage))


class Pipeline:
    """Encoders in order (the first sees images, each next one the previous one's features),
    then a clusterer, then optional refiners (each sees the images, the features and the labels
    so far, and assigns new images itself). ``fit`` learns all of them; ``transform`` and
    ``predict`` apply them.

    Stages may be ``Stage`` objects (``imgclust.get_encoder(...)``), registered names
    (``Pipeline(["pca"], "kmeans")``), ``{"name": ..., setting: value}`` mappings, or bare
    objects with ``fit``/``transform`` (``fit_predict``) that fit and predict but save only
    when they are registered stages. Images are
    (N, H, W) or (N, H, W, C) (or channel-first), uint8 0..255 or float in [0, 1].
    """

    def __init__(
        self,
        encoders: Sequence[Stage | str | Mapping[str, Any]] | Stage | str,
        clusterer: Stage | str | Mapping[str, Any],
        *,
        refiners: Sequence[Stage | str | Mapping[str, Any]] = (),
        registry: Any = None,
    ) -> None:
        if isinstance(encoders, (Stage, str, Mapping)) or _is_stage_object("encoders", encoders):
            encoders = [encoders]
        if not isinstance(encoders, Iterable):
            raise SettingsError(
                "a pipeline's encoders are a list of stages or names, "
                f"not {type(encoders).__name__}."
            )
        self.encoders: list[Stage] = [_as_stage("encoders", e, registry) for e in encoders]
        self.clusterer: Stage = _as_stage("clusterers", clusterer, registry)
        if isinstance(refiners, (Stage, str, Mapping)) or _is_stage_object("refiners", refiners):
            refiners = [refiners]
        self.refiners: list[Stage] = [_as_stage("refiners", r, registry) for r in refiners]
        #: Each refiner's input numbers, largest refined cluster first (as ``cluster_order``).
        self.refiner_orders: list[np.ndarray | None] = [None] * len(self.refiners)
        self.clusterer_labels_: np.ndarray | None = None  # the labels before any refiner
        self.timings: dict[str, float] = {}
        self.labels_: np.ndarray | None = None
        self.encoders_fitted = False
        self.cluster_order: np.ndarray | None = None  # clusterer's numbers, largest cluster first
        self.input_shape: tuple[int, ...] | None = None  # (H, W, C) of the images fit saw
        self.input_dtype: str | None = None
        self.manifest: dict[str, Any] | None = None  # set when saved or loaded
        self.path: Path | None = None  # the pipeline folder it was saved to or loaded from

    @classmethod
    def from_manifest(
        cls,
        encoders: list[Stage],
        clusterer: Stage,
        manifest: dict[str, Any],
        root: Path,
        shape: tuple[int, ...],
        refiners: Sequence[Stage] = (),
    ) -> Pipeline:
        """A pipeline rebuilt from a saved folder: its stages, manifest and cluster numbering."""
        pipeline = cls(encoders, clusterer, refiners=refiners)
        pipeline.manifest = manifest
        pipeline.path = Path(root)
        pipeline.input_shape = tuple(shape)
        pipeline.input_dtype = str((manifest.get("input") or {}).get("dtype") or "") or None
        pipeline.cluster_order = _read_cluster_order(manifest.get("cluster_order"), root)
        saved = manifest.get("refiners") or []
        pipeline.refiner_orders = [
            _read_cluster_order(info.get("cluster_order"), root) for info in saved
        ]
        return pipeline

    @property
    def name(self) -> str:
        stages = [*self.encoders, self.clusterer, *self.refiners]
        return " -> ".join(s.name for s in stages)

    @property
    def pipeline(self) -> Pipeline:
        """Itself: code written for the loaded-pipeline wrapper reads ``saved.pipeline``."""
        return self

    def __repr__(self) -> str:
        shape = f" for {_describe(self.input_shape)} images" if self.input_shape else ""
        state = "fitted" if self.is_fitted else "unfitted"
        return f"<Pipeline {self.name}{shape}, {state}>"

    def _repr_html_(self) -> str:
        """Jupyter's view: the stages in order with their settings, as scikit-learn draws one."""
        from .notebook import pipeline_html

        return pipeline_html(self)

    @property
    def is_fitted(self) -> bool:
        return self.labels_ is not None or self.manifest is not None

    # Fitting -----------------------------------------------------------------------------------
    def fit(self, images: Any, validation: Any = None) -> Pipeline:
        """Fit the encoders and the clusterer on the same images; return the pipeline."""
        prepared = self.prepare(images, check_shape=False)
        if validation is not None:
            validation = self.prepare(validation, "validation images", check_shape=False)
        features = self.fit_encoders(prepared, validation)
        assert features is not None
        self.fit_clusterer(features)
        self.fit_refiners(prepared, features)
        return self

    def fit_predict(self, images: Any, validation: Any = None) -> np.ndarray:
        """Fit on the images and return their clusters (-1 for noise)."""
        labels = self.fit(images, validation).labels_
        assert labels is not None
        return labels

    def fit_encoders(
        self,
        images: np.ndarray,
        validation: np.ndarray | None = None,
        log: Log | None = None,
        *,
        return_features: bool = True,
    ) -> np.ndarray | None:
        """Fit each encoder in turn and return the features of ``images`` after the last.

        ``images`` are (N, H, W, C) uint8 or float32 in [0, 1], as a dataset gives them. With
        ``return_features=False`` the last encoder does not encode its training input, which
        saves a pass when a different split is clustered.
        """
        if getattr(images, "ndim", 0) == 4:
            self.input_shape = tuple(int(v) for v in images.shape[1:])
            self.input_dtype = str(images.dtype)
        self.manifest = None
        self.path = None
        self.encoders_fitted = False
        self.labels_ = None
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
                self.encoders_fitted = True
                return None
            start = time.perf_counter()
            with stage_boundary("encoder", stage):
                fitted = encoder.embedding_ if isinstance(encoder, Embeds) else None
                encoded = fitted if fitted is not None else encoder.transform(features)
                if validation is not None and not last:
                    validation = check_output(stage, encoder.transform(validation), len(validation))
            features = check_output(stage, encoded, len(features))
            self.timings[f"encode {stage.name}"] = time.perf_counter() - start
        self.encoders_fitted = True
        return check_encoded(features, self.encoders[-1] if self.encoders else None)

    def fit_clusterer(self, features: np.ndarray) -> np.ndarray:
        """Cluster the features; number the clusters canonically; remember and return labels."""
        start = time.perf_counter()
        with stage_boundary("clusterer", self.clusterer):
            found = self.clusterer.instance.fit_predict(features)
        raw = check_labels(self.clusterer, found, len(features))
        self.cluster_order = canonical_order(raw)
        self.labels_ = renumber(raw, self.cluster_order)
        self.timings[f"cluster {self.clusterer.name}"] = time.perf_counter() - start
        self.clusterer_labels_ = self.labels_
        return self.labels_

    def fit_refiners(
        self, images: np.ndarray, features: np.ndarray, log: Log | None = None
    ) -> np.ndarray:
        """Refine the clusterer's labels with each refiner in turn; remember and return them.

        Each refiner gets the images, the features and the labels so far (canonical numbers)
        and returns labels in the same numbers; they are renumbered canonically again.
        """
        if self.labels_ is None:
            self._check_fitted()
        labels = self.labels_
        assert labels is not None
        for position, stage in enumerate(self.refiners):
            if log:
                log(f"refining {len(labels)} labels with {stage.name}")
            start = time.perf_counter()
            with stage_boundary("refiner", stage):
                found = stage.instance.fit_predict(images, features, labels.copy())
            raw = check_labels(stage, found, len(labels), kind="refiner")
            if log and isinstance(stage.instance, ReportsStop) and stage.instance.stop_reason_:
                log(f"{stage.name} stopped: {stage.instance.stop_reason_}")
            self.refiner_orders[position] = canonical_order(raw)
            labels = renumber(raw, self.refiner_orders[position])
            self.timings[f"refine {stage.name}"] = time.perf_counter() - start
        self.labels_ = labels
        return labels

    # Applying ----------------------------------------------------------------------------------
    def prepare(
        self, images: Any, source: str = "images", *, check_shape: bool = True
    ) -> np.ndarray:
        """Images as (N, H, W, C) uint8 or float32 in [0, 1], checked against the fitted shape."""
        from .io.arrays import to_nhwc

        if isinstance(images, ImageSet):
            images = images.images
        array = images if isinstance(images, np.ndarray) else _as_array(images, source)
        if not check_shape or self.input_shape is None:
            return to_nhwc(array, "auto", source)
        height, width, channels = self.input_shape
        if array.ndim == 3 and channels == 1 and array.shape[1:] == (height, width):
            array = array[..., None]
        if array.ndim != 4:
            raise DataError(
                f"{source} must be (N, H, W, C) or (N, H, W); got shape {tuple(array.shape)}."
            )
        order = "last"
        if array.shape[1:] != (height, width, channels):
            if array.shape[1:] == (channels, height, width):
                order = "first"
            else:
                raise DataError(
                    f"{source} are {_describe(array.shape[1:])} but this pipeline was fitted on "
                    f"{_describe(self.input_shape)} images: resize or convert them (image files "
                    "are resized and converted automatically)."
                )
        if len(array) == 0:
            raise DataError(f"{source} hold no images.")
        return to_nhwc(array, order, source)

    def transform(self, images: Any) -> np.ndarray:
        """Features of new images through every fitted encoder: (N, D) float32."""
        if not (self.encoders_fitted or self.manifest is not None):
            self._check_fitted()
        for stage in self.encoders:
            if stage.unsaved_reason:
                raise ImgclustError(
                    f"this pipeline's encoders were not all saved: {stage.unsaved_reason}."
                )
        features: Any = self.prepare(images)
        for stage in self.encoders:
            with stage_boundary("encoder", stage):
                encoded = stage.instance.transform(features)
            features = check_output(stage, encoded, len(features))
        return check_encoded(features, self.encoders[-1] if self.encoders else None)

    def predict(self, images: Any) -> np.ndarray:
        """The cluster of each new image (-1 for noise), numbered as the fit numbered them."""
        return self.assign(images)[0]

    def assign(self, images: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Clusters of new images, with a per-image distance or probability where there is one."""
        labels, scores, _ = self.assign_with_features(images)
        return labels, scores

    def assign_with_features(
        self, images: Any
    ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """:meth:`assign`, and the features the images were clustered by (encoded once), which
        score them against the run's clusters as the run scored its own."""
        self.check_can_predict()
        if self.refiners:
            return self._assign_refined(self.prepare(images))
        features = self.transform(images)
        clusterer: Clusterer = self.clusterer.instance
        with stage_boundary("clusterer", self.clusterer):
            found = clusterer.predict(features)
        labels = renumber(check_labels(self.clusterer, found, len(features)), self.cluster_order)
        scores: dict[str, np.ndarray] = {}
        scorer = clusterer.score_samples if isinstance(clusterer, ScoresSamples) else None
        if callable(scorer):
            try:
                found = scorer(features)
            except Exception:
                found = None
            if isinstance(found, Mapping):
                scores = {str(k): np.asarray(v, dtype=np.float64) for k, v in found.items()}
            elif isinstance(found, np.ndarray) and found.shape == labels.shape:
                scores = {"score": found.astype(np.float64)}
        return labels, scores, features

    def _assign_refined(
        self, images: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """The last refiner assigns new images (from the images and their features)."""
        features = self.transform(images)
        stage = self.refiners[-1]
        with stage_boundary("refiner", stage):
            found = stage.instance.predict(images, features)
        raw = check_labels(stage, found, len(features), kind="refiner")
        labels = renumber(raw, self.refiner_orders[-1])
        scores: dict[str, np.ndarray] = {}
        scorer = getattr(stage.instance, "score_samples", None)
        if callable(scorer):
            try:
                found = scorer(images, features)
            except Exception:
                found = None
            if isinstance(found, Mapping):
                scores = {str(k): np.asarray(v, dtype=np.float64) for k, v in found.items()}
        return labels, scores, features

    @property
    def can_predict(self) -> bool:
        """Whether new images can be assigned (the clusterer, or the last refiner, predicts)."""
        if self.manifest is not None:
            return bool(self.manifest.get("can_predict"))
        if self.refiners:
            return self.labels_ is not None and callable(
                getattr(self.refiners[-1].instance, "predict", None)
            )
        return self.labels_ is not None and can_predict(self.clusterer.instance)

    def check_can_predict(self) -> None:
        """Raise one clear line when this pipeline cannot assign new images."""
        self._check_fitted()
        if self.can_predict:
            return
        if self.refiners:
            reason = (self.manifest or {}).get("reason") or "its last refiner cannot predict"
            raise ImgclustError(f"this pipeline cannot predict: {reason}.")
        stage = self.clusterer
        clusterer_info = (self.manifest or {}).get("clusterer") or {}
        if not clusterer_info.get("can_predict", True) or not can_predict(stage.instance):
            from .sklearn_adapter import cannot_predict_message

            raise ImgclustError(cannot_predict_message(stage.name) + ".")
        reason = (self.manifest or {}).get("reason")
        raise ImgclustError(f"this pipeline cannot predict: {reason}.")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise ImgclustError(
                f"this pipeline ({self.name}) is not fitted: call fit(images) first."
            )

    # Saving ------------------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the fitted pipeline to a new folder that ``imgclust.load`` reads; return it.

        An existing folder is replaced only with ``overwrite=True`` and only if it holds a
        pipeline imgclust wrote.
        """
        from .persist import save_pipeline
        from .plugins_host import get_registry

        self._check_fitted()
        registry = get_registry()
        for kind, stage in [
            *(("encoders", e) for e in self.encoders),
            ("clusterers", self.clusterer),
            *(("refiners", r) for r in self.refiners),
        ]:
            if registry.find(kind, stage.name) is None:
                raise ImgclustError(
                    f"{kind[:-1]} {stage.name!r} is not a registered stage, so imgclust.load "
                    "could not rebuild it: register it through a plugin (docs/plugins.md)."
                )
        target = Path(path)
        if os.path.lexists(target) and not (
            target.is_dir() and not target.is_symlink() and not any(target.iterdir())
        ):
            check_replaceable(target, overwrite)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.manifest = save_pipeline(self, target, registry=registry, subfolder=None)
        self.path = target
        return target


def check_replaceable(target: Path, overwrite: bool) -> None:
    """Refuse to replace ``target`` unless it holds nothing but a pipeline imgclust saved (its
    mark, manifest and stage folders) and ``overwrite`` is set; one line that says why."""
    from .persist import MARK, foreign_entry, is_marked

    if target.is_symlink() or not target.is_dir() or not is_marked(target):
        raise ImgclustError(
            f"{str(target)!r} exists and is not a pipeline imgclust saved (it has no {MARK} "
            "mark): choose a new folder; imgclust replaces only folders it made."
        )
    extra = foreign_entry(target)
    if extra is not None:
        raise ImgclustError(
            f"{str(target)!r} holds {extra!r} besides the pipeline imgclust saved: choose a new "
            "folder; imgclust replaces only a folder that holds nothing but its pipeline."
        )
    if not overwrite:
        raise ImgclustError(
            f"{str(target)!r} already holds a pipeline imgclust saved: choose a new folder or "
            "pass overwrite=True to replace it."
        )


# Canonical cluster numbers --------------------------------------------------------------------
def canonical_order(labels: np.ndarray) -> np.ndarray:
    """The clusterer's cluster numbers, largest cluster first, ties by their first member."""
    found = np.asarray(labels, dtype=np.int64)
    found = found[found != -1]
    values, first, counts = np.unique(found, return_index=True, return_counts=True)
    return values[np.lexsort((first, -counts))]


def renumber(labels: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """Labels in canonical numbers: ``order[i]`` becomes ``i``; noise (-1) stays -1.

    A number the fit never produced (a mixture component no training image chose) becomes
    ``len(order) + number``, distinct and the same on every call; other negatives are noise.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if order is None:
        return labels
    values, inverse = np.unique(labels, return_inverse=True)
    position = {int(v): i for i, v in enumerate(order)}
    mapped = np.array(
        [position.get(int(v), len(order) + int(v) if v >= 0 else -1) for v in values],
        dtype=np.int64,
    )
    return mapped[inverse].reshape(labels.shape)


def _read_cluster_order(value: Any, root: Path) -> np.ndarray | None:
    """A manifest's ``cluster_order``: absent means the clusterer's own numbers."""
    if value is None:
        return None
    valid = (
        isinstance(value, list)
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        and len(set(value)) == len(value)
    )
    if not valid:
        raise DataError(
            f"the manifest in {str(root)!r} has a damaged cluster_order (it must list distinct "
            "cluster numbers): the pipeline folder was altered; save or run it again."
        )
    return np.asarray(value, dtype=np.int64)


# Building stages ------------------------------------------------------------------------------
def _as_stage(kind: str, value: Any, registry: Any) -> Stage:
    """A Stage from a Stage, a registered name or a ``{"name": ..., ...}`` mapping."""
    if isinstance(value, Stage):
        return value
    if isinstance(value, str):
        return make_stage(kind, value, {}, registry=registry)
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        settings = {k: v for k, v in value.items() if k != "name"}
        return make_stage(kind, value["name"], settings, registry=registry)
    if _is_stage_object(kind, value):
        return _wrap_instance(kind, value, registry)
    what = kind[:-1]
    methods = {"encoders": "fit and transform", "refiners": "fit_predict and predict"}
    raise SettingsError(
        f"a pipeline's {what} must be a name, a {{'name': ...}} mapping, "
        f"imgclust.get_{what}(name, ...) or an object with "
        f"{methods.get(kind, 'fit_predict')}; "
        f"got {type(value).__name__}."
    )


def _is_stage_object(kind: str, value: Any) -> bool:
    needed = {"encoders": ("fit", "transform"), "refiners": ("fit_predict", "predict")}.get(
        kind, ("fit_predict",)
    )
    return all(callable(getattr(value, method, None)) for method in needed)


def _wrap_instance(kind: str, instance: Any, registry: Any) -> Stage:
    """A Stage for a bare stage object: its registered name, and settings read the way
    scikit-learn reads parameters (attributes named like its factory's keyword arguments).
    """
    from .settings import settings_of

    if registry is None:
        from .plugins_host import get_registry

        registry = get_registry()
    cls = type(instance)
    names = registry.names_of(kind, cls)
    if len(names) != 1:  # "Name()" can never be a registered name, so save refuses it clearly
        return Stage(f"{cls.__name__}()", instance, {})
    settings = {key: getattr(instance, key) for key in settings_of(cls) if hasattr(instance, key)}
    return Stage(names[0], instance, settings)


def make_stage(
    kind: str, name: str, settings: Mapping[str, Any], *, registry: Any = None, seed: int = 0
) -> Stage:
    """Build a registered stage with settings checked exactly as ``--set`` checks them."""
    from .config import _resolve_stage, stage_settings

    if registry is None:
        from .plugins_host import get_registry

        registry = get_registry()
    if not isinstance(name, str):
        raise SettingsError(f"a {kind[:-1]} name must be text, not {type(name).__name__}.")
    resolved = _resolve_stage(registry, kind, {**settings, "name": name}, seed)
    entry = registry.get(kind, name)
    return instantiate(kind, name, entry.target, stage_settings(resolved))


def instantiate(kind: str, name: str, factory: Any, settings: dict[str, Any]) -> Stage:
    """A stage its factory built from checked settings; a factory's refusal is one line."""
    try:
        instance = factory(**settings)
    except ImgclustError:
        raise
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{kind[:-1]} {name!r} rejected its settings: {exc}") from None
    return Stage(name, instance, settings)


def _as_array(images: Any, source: str) -> np.ndarray:
    try:
        return np.asarray(images)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source} are not an array of images: {exc}.") from None


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
    check_finite(features, f"images encoded by {who}", ENCODED_ADVICE)
    return features


def _describe(shape: tuple[int, ...]) -> str:
    """'28x28 with 1 channel'."""
    if len(shape) != 3:
        return "x".join(str(v) for v in shape)
    height, width, channels = shape
    return f"{height}x{width} with {channels} channel{'s' if channels != 1 else ''}"


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
    check_finite(array, f"images encoded by the {who}", ENCODED_ADVICE)
    return array


def check_labels(stage: Stage, labels: Any, expected: int, kind: str = "clusterer") -> np.ndarray:
    """A clusterer's (or refiner's) labels: one integer per input, -1 for noise, none below."""
    who = describe_stage(kind, stage)
    try:
        array = np.asarray(labels)
    except Exception as exc:
        raise PluginError(f"{who} returned {type(labels).__name__}, not labels: {exc}") from exc
    if array.ndim != 1:
        raise PluginError(f"{who} returned labels of shape {array.shape}; expected ({expected},).")
    if len(array) != expected:
        raise PluginError(
            f"{kind} {stage.name!r} returned {len(array)} labels for {expected} images; it "
            f"must return one per image (fix or report it to "
            f"{_origin_or_author(stage, kind)})."
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
