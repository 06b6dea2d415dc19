"""A chain of encoders, a clusterer and optional refiners that turns images into cluster labels.

``Pipeline`` is the one class for both: built from stages (``imgclust.get_encoder(...)``) or
names and fitted in memory, or loaded from a folder by ``imgclust.load``. Cluster numbers are
canonical: the largest cluster is 0, ties go to the cluster whose first member comes first,
and noise stays -1, so the same seed gives the same numbers whatever the clusterer called them.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from imgclust.console import Log
from imgclust.engine.persist import MARK, foreign_entry, is_marked, read_stages, save_pipeline
from imgclust.engine.stage import (
    Stage,
    as_stage,
    canonical_order,
    check_encoded,
    check_labels,
    check_output,
    describe_shape,
    is_stage_object,
    renumber,
    stage_boundary,
)
from imgclust.errors import DataError, ImgclustError, SettingsError
from imgclust.io.arrays import to_nhwc
from imgclust.kit.sklearn import cannot_predict_message
from imgclust.report.notebook import pipeline_html
from imgclust.stages.host import get_registry
from imgclust.stages.interfaces import (
    Embeds,
    Encoder,
    ImageSet,
    Predicts,
    ReportsStop,
    ScoresSamples,
    can_predict,
)


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
        given: Any = encoders  # also a stage object, or a list of them, which as_stage accepts
        if isinstance(given, (Stage, str, Mapping)) or is_stage_object("encoders", given):
            given = [given]
        if not isinstance(given, Iterable):
            raise SettingsError(
                f"a pipeline's encoders are a list of stages or names, not {type(given).__name__}."
            )
        self.encoders: list[Stage] = [as_stage("encoders", e, registry) for e in given]
        self.clusterer: Stage = as_stage("clusterers", clusterer, registry)
        given = refiners
        if isinstance(given, (Stage, str, Mapping)) or is_stage_object("refiners", given):
            given = [given]
        self.refiners: list[Stage] = [as_stage("refiners", r, registry) for r in given]
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
        shape = f" for {describe_shape(self.input_shape)} images" if self.input_shape else ""
        state = "fitted" if self.is_fitted else "unfitted"
        return f"<Pipeline {self.name}{shape}, {state}>"

    def _repr_html_(self) -> str:
        """Jupyter's view: the stages in order with their settings, as scikit-learn draws one."""

        return pipeline_html(self)

    @property
    def is_fitted(self) -> bool:
        return self.labels_ is not None or self.manifest is not None

    # Fitting -----------------------------------------------------------------------------------
    def fit(self, images: Any, y: Any = None, *, validation: Any = None) -> Pipeline:
        """Fit the encoders, the clusterer and any refiners on the images; return the pipeline.

        ``y`` is ignored (scikit-learn's signature: clustering learns without labels);
        ``validation`` images, where given, let the encoders stop early.
        """
        validation = _validation_given(y, validation)
        prepared = self.prepare(images, check_shape=False)
        if validation is not None:
            validation = self.prepare(validation, "validation images", check_shape=False)
        features = self.fit_encoders(prepared, validation)
        assert features is not None
        self.fit_clusterer(features)
        self.fit_refiners(prepared, features)
        return self

    def fit_predict(self, images: Any, y: Any = None, *, validation: Any = None) -> np.ndarray:
        """Fit on the images and return their clusters (-1 for noise); ``y`` is ignored."""
        labels = self.fit(images, y, validation=validation).labels_
        assert labels is not None
        return labels

    @overload
    def fit_encoders(
        self,
        images: np.ndarray,
        validation: np.ndarray | None = None,
        log: Log | None = None,
        *,
        return_features: Literal[True] = True,
    ) -> np.ndarray: ...

    @overload
    def fit_encoders(
        self,
        images: np.ndarray,
        validation: np.ndarray | None = None,
        log: Log | None = None,
        *,
        return_features: bool,
    ) -> np.ndarray | None: ...

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
                    f"{source} are {describe_shape(array.shape[1:])} but this pipeline was "
                    f"fitted on {describe_shape(self.input_shape)} images: resize or convert "
                    "them (image files are resized and converted automatically)."
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
        clusterer: Predicts = self.clusterer.instance  # check_can_predict said it does
        with stage_boundary("clusterer", self.clusterer):
            found = clusterer.predict(features)
        labels = renumber(check_labels(self.clusterer, found, len(features)), self.cluster_order)
        scores: dict[str, np.ndarray] = {}
        scorer = clusterer.score_samples if isinstance(clusterer, ScoresSamples) else None
        if callable(scorer):
            scored: Mapping[str, np.ndarray] | np.ndarray | None
            try:
                scored = scorer(features)
            except Exception:
                scored = None
            if isinstance(scored, Mapping):
                scores = {str(k): np.asarray(v, dtype=np.float64) for k, v in scored.items()}
            elif isinstance(scored, np.ndarray) and scored.shape == labels.shape:
                scores = {"score": scored.astype(np.float64)}
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
    def assigning_stage(self) -> Stage:
        """The stage that assigns new images: the last refiner, else the clusterer."""
        return self.refiners[-1] if self.refiners else self.clusterer

    @property
    def can_predict(self) -> bool:
        """Whether new images can be assigned: fitted, and its assigning stage predicts."""
        if self.manifest is not None:
            return bool(self.manifest.get("can_predict"))
        return self.labels_ is not None and can_predict(self.assigning_stage.instance)

    def check_can_predict(self) -> None:
        """Raise one clear line when this pipeline cannot assign new images."""
        self._check_fitted()
        if self.can_predict:
            return
        if self.refiners:
            reason = (self.manifest or {}).get("reason") or (
                f"refiner {self.refiners[-1].name!r} cannot assign images it was not fitted on"
            )
            raise ImgclustError(f"this pipeline cannot predict: {reason}.")
        stage = self.clusterer
        clusterer_info = (self.manifest or {}).get("clusterer") or {}
        if not clusterer_info.get("can_predict", True) or not can_predict(stage.instance):
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


def _as_array(images: Any, source: str) -> np.ndarray:
    try:
        return np.asarray(images)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source} are not an array of images: {exc}.") from None


def _validation_given(y: Any, validation: Any) -> Any:
    """The validation images: ``validation=``, or images given where ``y`` now stands.

    Before ``fit`` took scikit-learn's ``(X, y=None)``, its second argument was the validation
    images; images there (3 or more dimensions, never labels) still count, with a warning.
    """
    if y is None or np.ndim(y) < 3:
        return validation
    if validation is not None:
        raise SettingsError("validation images were given twice: pass them as validation=...")
    warnings.warn(
        "fit's second argument is y (ignored, as in scikit-learn); pass validation images as "
        "validation=...",
        DeprecationWarning,
        stacklevel=3,
    )
    return y


def load_pipeline(run_dir: Path | str, trust: bool = False, *, registry: Any = None) -> Pipeline:
    """Rebuild a run's (or a saved pipeline's) fitted pipeline from its folder.

    Each stage is built by its installed plugin's factory with the saved settings, then loads
    its own files. Whatever ``trust`` says, every file must lie inside ``pipeline/`` and the
    manifest must be well formed; without ``trust``, pickled files and Keras Lambda layers are
    refused before any stage reads them.
    """
    saved = read_stages(run_dir, trust, registry=registry)
    return Pipeline.from_manifest(
        saved.encoders, saved.clusterer, saved.manifest, saved.root, saved.shape, saved.refiners
    )
