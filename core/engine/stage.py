"""One stage of a pipeline: a named instance with its settings, how it is built from a name,
a mapping or a bare object, and the checks at its boundary that name a failing plugin.

Cluster numbers are canonical: the largest cluster is 0, ties go to the cluster whose first
member comes first, and noise stays -1 (``canonical_order``, ``renumber``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from imgclust.errors import DataError, ImgclustError, PluginError, SettingsError, one_line
from imgclust.kit.arrays import check_finite
from imgclust.stages.host import get_registry, stage_origin
from imgclust.stages.kinds import stage_kind
from imgclust.stages.settings import resolve_stage, settings_of, stage_settings

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


# Building stages ------------------------------------------------------------------------------
def as_stage(kind: str, value: Any, registry: Any) -> Stage:
    """A Stage from a Stage, a registered name or a ``{"name": ..., ...}`` mapping."""
    if isinstance(value, Stage):
        return value
    if isinstance(value, str):
        return make_stage(kind, value, {}, registry=registry)
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        settings = {k: v for k, v in value.items() if k != "name"}
        return make_stage(kind, value["name"], settings, registry=registry)
    if is_stage_object(kind, value):
        return wrap_instance(kind, value, registry)
    what = stage_kind(kind)
    raise SettingsError(
        f"a pipeline's {what.name} must be a name, a {{'name': ...}} mapping, "
        f"imgclust.get_{what.name}(name, ...) or an object with "
        f"{' and '.join(what.works_with)}; got {type(value).__name__}."
    )


def is_stage_object(kind: str, value: Any) -> bool:
    """Whether a bare object has what a stage of this kind needs to fit and assign."""
    return all(callable(getattr(value, method, None)) for method in stage_kind(kind).works_with)


def wrap_instance(kind: str, instance: Any, registry: Any) -> Stage:
    """A Stage for a bare stage object: its registered name, and settings read the way
    scikit-learn reads parameters (attributes named like its factory's keyword arguments).
    """

    if registry is None:
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

    if registry is None:
        registry = get_registry()
    if not isinstance(name, str):
        raise SettingsError(f"a {kind[:-1]} name must be text, not {type(name).__name__}.")
    resolved = resolve_stage(registry, kind, {**settings, "name": name}, seed)
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


def describe_shape(shape: tuple[int, ...]) -> str:
    """'28x28 with 1 channel'."""
    if len(shape) != 3:
        return "x".join(str(v) for v in shape)
    height, width, channels = shape
    return f"{height}x{width} with {channels} channel{'s' if channels != 1 else ''}"


# Stage boundaries: a plugin's failure or malformed output is named, not met later as a riddle.
def describe_stage(kind: str, stage: Stage) -> str:
    """``encoder 'hog' from acme-imgclust 0.2``: the stage and, where known, its plugin."""

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
        message = f"{describe_stage(kind, stage)} failed: {one_line(exc, with_type=True)}"
        if os.environ.get("IMGCLUST_DEBUG"):
            if sys.version_info >= (3, 11):  # notes are new in 3.11
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
    return stage_origin(f"{kind}s", stage.name, stage.instance) or "its author"
