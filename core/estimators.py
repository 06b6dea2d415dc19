"""scikit-learn's estimator contract for imgclust's pipeline and stages, through its own classes.

``imgclust.Pipeline`` and what ``imgclust.get_encoder``/``get_clusterer``/``get_refiner``/
``get_dataset`` and ``imgclust.load`` return are scikit-learn estimators: ``BaseEstimator`` with
``TransformerMixin`` (encoders) or ``ClusterMixin`` (clusterers, refiners, the pipeline), so
``get_params``/``set_params``, ``sklearn.base.clone``, ``sklearn.pipeline.Pipeline`` steps and
``GridSearchCV`` work on them. A stage's parameters are its settings, the keyword arguments of
its plugin's factory; ``set_params`` rebuilds the stage with them, checked as ``--set`` checks
them. A pipeline's nested parameters are ``clusterer__SETTING`` and ``STAGE__SETTING`` for each
encoder and refiner, named as ``sklearn.pipeline.make_pipeline`` names steps.

The command line never imports this module, so it never pays for importing scikit-learn when
it only lists or explains; the engine's classes are the same objects without these faces, and
:func:`as_estimator` gives any engine stage or pipeline its face.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, cast

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin, clone
from sklearn.utils import Tags
from sklearn.utils._available_if import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from imgclust.engine.pipeline import Pipeline as EnginePipeline
from imgclust.engine.stage import Stage, make_stage
from imgclust.errors import DataError, SettingsError
from imgclust.stages.host import get_registry
from imgclust.stages.interfaces import can_predict
from imgclust.stages.kinds import CLUSTERER, DATASET, ENCODER, REFINER, STAGE_KINDS
from imgclust.stages.settings import settings_of

__all__ = [
    "ClustererStage",
    "InvalidDataError",
    "InvalidParameterError",
    "DatasetStage",
    "EncoderStage",
    "Pipeline",
    "RefinerStage",
    "StageEstimator",
    "as_estimator",
]


class InvalidParameterError(SettingsError, ValueError):
    """A setting given through scikit-learn's API is not valid: a ValueError, as scikit-learn's
    own estimators raise (``GridSearchCV`` and ``set_params`` callers expect one)."""


class InvalidDataError(DataError, ValueError):
    """Data given through scikit-learn's API cannot be clustered: a ValueError, as scikit-learn's
    estimators raise."""


@contextmanager
def value_errors() -> Iterator[None]:
    """imgclust's one-line settings and data errors, raised as scikit-learn's ValueError kin."""
    try:
        yield
    except (InvalidParameterError, InvalidDataError):
        raise
    except SettingsError as exc:
        raise InvalidParameterError(*exc.args) from None
    except DataError as exc:
        raise InvalidDataError(*exc.args) from None


#: Methods scikit-learn calls by name with a contract of its own: a stage's face has one only
#: where it defines it (``predict``, ``transform``), never the plugin's method of that name.
SKLEARN_METHODS = frozenset(
    {
        "decision_function",
        "fit_transform",
        "get_feature_names_out",
        "inverse_transform",
        "partial_fit",
        "predict",
        "predict_log_proba",
        "predict_proba",
        "score",
        "score_samples",
        "split",
        "transform",
    }
)


class StageEstimator(BaseEstimator):
    """What every stage kind shares as an estimator: settings as parameters, clone, fitted-ness."""

    kind: ClassVar[str] = ""
    # These attributes come from ``Stage``; declared for the type checker.
    name: str
    instance: Any
    settings: dict[str, Any]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The stage's settings: its factory's keyword arguments with their current values."""
        return dict(self.settings)

    def set_params(self, **params: Any) -> StageEstimator:
        """Rebuild the stage with these settings changed (checked as ``--set`` checks them).

        A rejected value leaves the stage as it was. Values equal to what the checks make of
        them are kept as given, so ``get_params`` returns what ``set_params`` was handed.
        """
        if not params:
            return self
        with value_errors():
            return self._rebuilt(params)

    def _rebuilt(self, params: dict[str, Any]) -> StageEstimator:
        unknown = sorted(set(params) - set(self._setting_names()))
        if unknown:
            raise SettingsError(
                f"{self.kind[:-1]} {self.name!r} has no setting {unknown[0]!r}; its settings "
                f"are {', '.join(self._setting_names()) or 'none'}."
            )
        if get_registry().find(self.kind, self.name) is None:  # a bare object: its own params
            self.instance.set_params(**params)
            self.settings = {**self.settings, **params}
            return self
        rebuilt = make_stage(self.kind, self.name, {**self.settings, **params})
        settings = dict(rebuilt.settings)
        for key, value in params.items():
            if _same_value(settings.get(key), value):
                settings[key] = value
        self.instance = rebuilt.instance
        self.settings = settings
        self.__dict__.pop("_fitted", None)
        return self

    def __sklearn_clone__(self) -> StageEstimator:
        """A new unfitted stage of the same name and settings, built by its plugin again."""
        if get_registry().find(self.kind, self.name) is None:  # a bare object: clone it
            return type(self)(self.name, clone(self.instance), dict(self.settings))
        stage = make_stage(self.kind, self.name, self.settings)
        return as_estimator(stage, self.kind)

    def __sklearn_is_fitted__(self) -> bool:
        """Fitted through this face, or part of a fitted (or loaded) pipeline."""
        return bool(self.__dict__.get("_fitted"))

    def __getattr__(self, attribute: str) -> Any:
        """As scikit-learn's estimators: settings are attributes, and the instance's methods and
        fitted attributes (``labels_``) show through, except private names and methods that
        scikit-learn gives a meaning the plugin's may not have (``stage.instance`` has them all)."""
        if attribute.startswith("_") or attribute in SKLEARN_METHODS:
            raise AttributeError(attribute)
        settings = self.__dict__.get("settings") or {}
        if attribute in settings:
            return settings[attribute]
        found = Stage.__getattr__(self, attribute)
        if callable(found) or attribute.endswith("_"):
            return found
        raise AttributeError(
            f"{type(self).__name__} {self.name!r} has no setting {attribute!r} "
            "(its plugin's own attributes are on .instance)"
        )

    def __repr__(self) -> str:
        return Stage.__repr__(self)

    def _setting_names(self) -> list[str]:
        entry = get_registry().find(self.kind, self.name)
        return list(self.settings) if entry is None else list(settings_of(entry.factory))

    def _mark_fitted(self) -> None:
        self.__dict__["_fitted"] = True


class DatasetStage(StageEstimator, Stage):
    """A dataset with scikit-learn's parameters and ``clone``; ``.load(split)`` reads it."""

    kind = DATASET.registry


class EncoderStage(TransformerMixin, StageEstimator, Stage):
    """An encoder as a scikit-learn transformer: ``fit(X, y=None, *, validation=None)``,
    ``transform(X)``, ``fit_transform``; X is images, or features for a later encoder."""

    kind = ENCODER.registry

    def fit(self, X: Any, y: Any = None, *, validation: Any = None) -> EncoderStage:
        """Fit the encoder on X (``y`` is ignored); return the stage."""
        images = validate_data(self, X, reset=True, allow_nd=True)
        with value_errors():
            self.instance.fit(images, validation=validation)
        self._mark_fitted()
        return self

    def transform(self, X: Any) -> np.ndarray:
        """The features of X: (N, D)."""
        check_is_fitted(self)
        images = validate_data(self, X, reset=False, allow_nd=True)
        with value_errors():
            return np.asarray(self.instance.transform(images))

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = []
        return tags


class ClustererStage(ClusterMixin, StageEstimator, Stage):
    """A clusterer as scikit-learn's: ``fit(X)`` sets ``labels_``, ``fit_predict``, and
    ``predict`` where the clusterer can assign new points."""

    kind = CLUSTERER.registry

    def fit(self, X: Any, y: Any = None) -> ClustererStage:
        """Cluster X (features, (N, D)); ``labels_`` holds each row's cluster, -1 for noise."""
        features = validate_data(self, X, reset=True)
        with value_errors():
            self.labels_ = np.asarray(self.instance.fit_predict(features), dtype=np.int64)
        self._mark_fitted()
        return self

    def fit_predict(self, X: Any, y: Any = None, **kwargs: Any) -> np.ndarray:
        """Cluster X and return ``labels_``."""
        return self.fit(X, y).labels_

    @available_if(lambda self: can_predict(self.instance))
    def predict(self, X: Any) -> np.ndarray:
        """The cluster of each new row, from the fitted clusters."""
        check_is_fitted(self)
        features = validate_data(self, X, reset=False)
        with value_errors():
            return np.asarray(self.instance.predict(features), dtype=np.int64)


class RefinerStage(ClusterMixin, StageEstimator, Stage):
    """A refiner as a scikit-learn clusterer of images, given their features and first labels:
    ``fit(X, y=None, *, features, labels)``; ``predict(X, *, features)`` where it assigns."""

    kind = REFINER.registry

    def fit(
        self, X: Any, y: Any = None, *, features: Any = None, labels: Any = None
    ) -> RefinerStage:
        """Refine ``labels`` of images X (with their ``features``); set ``labels_``."""
        if features is None or labels is None:
            raise SettingsError(
                f"refiner {self.name!r} fits on images with features=... and labels=... (the "
                "features and clusters the pipeline's encoders and clusterer gave them)."
            )
        self.labels_ = np.asarray(
            self.instance.fit_predict(np.asarray(X), np.asarray(features), np.asarray(labels)),
            dtype=np.int64,
        )
        self._mark_fitted()
        return self

    def fit_predict(
        self, X: Any, features: Any = None, labels: Any = None, *, y: Any = None
    ) -> np.ndarray:
        """Refine and return ``labels_``; called as a refiner plugin's own
        ``fit_predict(images, features, labels)``, positionally or by keyword."""
        return self.fit(X, y, features=features, labels=labels).labels_

    @available_if(lambda self: callable(getattr(self.instance, "predict", None)))
    def predict(self, X: Any, features: Any = None) -> np.ndarray:
        """The cluster of each new image, from the images and their features (as a refiner
        plugin's own ``predict(images, features)``)."""
        check_is_fitted(self)
        if features is None:
            raise SettingsError(
                f"refiner {self.name!r} assigns images given their features: "
                "predict(images, features)."
            )
        return np.asarray(self.instance.predict(np.asarray(X), np.asarray(features)))

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # images with features and labels beside them
        return tags


STAGE_CLASSES: dict[str, type[Stage]] = {
    DATASET.registry: DatasetStage,
    ENCODER.registry: EncoderStage,
    CLUSTERER.registry: ClustererStage,
    REFINER.registry: RefinerStage,
}
assert set(STAGE_CLASSES) == {kind.registry for kind in STAGE_KINDS}


class Pipeline(ClusterMixin, TransformerMixin, EnginePipeline, BaseEstimator):
    """:class:`imgclust.engine.pipeline.Pipeline` as a scikit-learn clusterer and transformer.

    ``fit(X, y=None, *, validation=None)``, ``predict``, ``fit_predict`` and ``transform`` (the
    features); parameters ``encoders``, ``clusterer``, ``refiners`` and the nested
    ``clusterer__SETTING`` and ``STAGE__SETTING`` (``pca__n_components``).
    """

    def __init__(
        self,
        encoders: Sequence[Stage | str | Mapping[str, Any]] | Stage | str,
        clusterer: Stage | str | Mapping[str, Any],
        *,
        refiners: Sequence[Stage | str | Mapping[str, Any]] = (),
        registry: Any = None,
    ) -> None:
        EnginePipeline.__init__(self, encoders, clusterer, refiners=refiners, registry=registry)
        self.registry = registry
        _give_stages_faces(self)

    def fit(self, images: Any, y: Any = None, *, validation: Any = None) -> Pipeline:
        EnginePipeline.fit(self, images, y, validation=validation)
        _mark_stages_fitted(self)
        return self

    def fit_predict(
        self, images: Any, y: Any = None, *, validation: Any = None, **kwargs: Any
    ) -> np.ndarray:
        return EnginePipeline.fit_predict(self, images, y, validation=validation)

    def __sklearn_is_fitted__(self) -> bool:
        return self.is_fitted

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, str]:
        """Jupyter asks for this before ``_repr_html_``: the pipeline's own view of its stages,
        not scikit-learn's diagram of its four parameters."""
        return {"text/plain": repr(self), "text/html": self._repr_html_()}

    def __sklearn_clone__(self) -> Pipeline:
        """An unfitted pipeline of clones of the same stages."""
        return type(self)(
            [clone(stage) for stage in self.encoders],
            clone(self.clusterer),
            refiners=[clone(stage) for stage in self.refiners],
            registry=self.registry,
        )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """``encoders``, ``clusterer``, ``refiners``, ``registry`` and, with ``deep``, each
        stage's settings as ``clusterer__SETTING`` or ``STAGE__SETTING``."""
        params: dict[str, Any] = {
            "encoders": self.encoders,
            "clusterer": self.clusterer,
            "refiners": self.refiners,
            "registry": self.registry,
        }
        if deep:
            for step, stage in self.named_steps.items():
                for key, value in stage.get_params(deep=True).items():
                    params[f"{step}__{key}"] = value
        return params

    def set_params(self, **params: Any) -> Pipeline:
        """Replace whole stages (``clusterer=...``) first, then change stages' settings."""
        with value_errors():
            return self._set(params)

    def _set(self, params: dict[str, Any]) -> Pipeline:
        top = {key: params.pop(key) for key in list(params) if "__" not in key}
        unknown = sorted(set(top) - {"encoders", "clusterer", "refiners", "registry"})
        if unknown:
            raise SettingsError(
                f"a pipeline has no parameter {unknown[0]!r}: use encoders, clusterer, refiners "
                "or STAGE__SETTING (see get_params())."
            )
        if top:
            merged = {**self.get_params(deep=False), **top}
            EnginePipeline.__init__(
                self,
                merged["encoders"],
                merged["clusterer"],
                refiners=merged["refiners"],
                registry=merged["registry"],
            )
            self.registry = merged["registry"]
            _give_stages_faces(self)
        by_step: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            step, _, setting = key.partition("__")
            by_step.setdefault(step, {})[setting] = value
        steps = self.named_steps
        for step, values in by_step.items():
            if step not in steps:
                raise SettingsError(
                    f"this pipeline has no stage {step!r}: its stages are "
                    f"{', '.join(steps)} (parameters STAGE__SETTING)."
                )
            steps[step].set_params(**values)
        if params or top:
            self.labels_ = None
            self.manifest = None
            self.encoders_fitted = False
        return self

    @property
    def named_steps(self) -> dict[str, StageEstimator]:
        """Each stage by the name its nested parameters use: ``clusterer``, and each encoder's
        and refiner's name (``pca``, ``pca-2`` for a second one), as make_pipeline names steps."""
        chains = [*self.encoders, *self.refiners]
        counts = Counter(stage.name for stage in chains)
        seen: Counter[str] = Counter()
        named: dict[str, StageEstimator] = {}
        for stage in chains:
            seen[stage.name] += 1
            step = stage.name if counts[stage.name] == 1 else f"{stage.name}-{seen[stage.name]}"
            named[step] = stage  # type: ignore[assignment]
        named["clusterer"] = self.clusterer  # type: ignore[assignment]
        return named

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # images: (N, H, W) or (N, H, W, C)
        tags.input_tags.three_d_array = True
        return tags


def as_estimator(obj: Any, kind: str | None = None) -> Any:
    """The same stage or pipeline with its scikit-learn face (the object itself, re-classed).

    An engine ``Stage`` of ``kind`` becomes that kind's stage class; an engine ``Pipeline``
    becomes :class:`Pipeline` with faces on its stages, fitted if it was.
    """
    if isinstance(obj, EnginePipeline):
        if not isinstance(obj, Pipeline):
            obj.__class__ = Pipeline
            cast(Pipeline, obj).registry = None
        _give_stages_faces(obj)
        if obj.is_fitted:
            _mark_stages_fitted(obj)
        return obj
    if isinstance(obj, Stage) and kind is not None:
        wanted = STAGE_CLASSES[kind]
        if not isinstance(obj, wanted):
            obj.__class__ = wanted
        return obj
    return obj


def _give_stages_faces(pipeline: EnginePipeline) -> None:
    for stage in pipeline.encoders:
        as_estimator(stage, ENCODER.registry)
    as_estimator(pipeline.clusterer, CLUSTERER.registry)
    for stage in pipeline.refiners:
        as_estimator(stage, REFINER.registry)


def _mark_stages_fitted(pipeline: EnginePipeline) -> None:
    for stage in [*pipeline.encoders, pipeline.clusterer, *pipeline.refiners]:
        if isinstance(stage, StageEstimator):
            stage._mark_fitted()


def _same_value(made: Any, given: Any) -> bool:
    """Whether the checked setting is what was given (so the given object can be kept)."""
    try:
        return type(made) is type(given) and bool(made == given)
    except Exception:
        return False
