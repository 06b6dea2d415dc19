"""Conformance checks a plugin's tests call: does a stage keep the contract the core relies on?

``check_dataset``, ``check_encoder``, ``check_clusterer`` and ``check_refiner`` build a stage
(from a class, a factory function or an unfitted instance), run it on small data the way a run
does, and raise ``AssertionError`` with one line that names the stage and the rule it broke::

    from imgclust.testing import check_clusterer, check_encoder

    def test_my_encoder(tmp_path):
        check_encoder(MyEncoder, settings={"epochs": 1}, fast=True, tmp_path=tmp_path)

They check shapes and dtypes, that ``fit`` returns the stage, that nothing changes its input in
place, that ``save`` then ``load`` into a freshly built stage gives the same output, that
``predict`` agrees with ``fit_predict``, that two stages built with the same settings give the
same result, and that uint8 and float32 images both work. The checks that save (encoder,
clusterer, refiner) take ``tmp_path``, the folder to save into (pytest's fixture); without it
they save into a temporary folder they remove. Importing this module imports no heavy library;
scikit-learn is imported only to make the default data.
"""

from __future__ import annotations

import copy
import inspect
import pickle
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.engine.stage import canonical_order, renumber
from imgclust.errors import DataError, one_line
from imgclust.results.metrics import n_clusters
from imgclust.stages.interfaces import (
    Checkpoints,
    Embeds,
    HasHistory,
    ImageSet,
    Reconstructs,
    can_predict,
    is_stateless,
    requested_clusters,
    splits_of,
)
from imgclust.stages.kinds import STAGE_KINDS

__all__ = [
    "check_clusterer",
    "check_dataset",
    "check_encoder",
    "check_refiner",
    "sample_features",
    "sample_images",
]

#: The methods each kind of stage must have to fit and assign, and its protocol (the table of
#: stage kinds); ``save``/``load`` are checked where a stage has them (docs/plugins.md).
REQUIRED = {kind.name: kind.works_with for kind in STAGE_KINDS}
PROTOCOLS: dict[str, type] = {kind.name: kind.protocol for kind in STAGE_KINDS}
IMAGES = 300  # default sample sizes: a few hundred keeps every check to seconds
FAST_IMAGES = 100


# Default data ----------------------------------------------------------------------------------


def sample_images(n: int = IMAGES) -> np.ndarray:
    """The first ``n`` (at most 1,797) of scikit-learn's 8x8 digits as uint8 (n, 8, 8, 1) images."""
    from sklearn.datasets import load_digits

    digits = load_digits().images[:n]
    return np.round(digits * (255.0 / 16.0)).astype(np.uint8)[..., None]


def sample_features(n: int = IMAGES, dim: int = 8, centers: int = 5, seed: int = 0) -> np.ndarray:
    """(n, dim) float32 features in ``centers`` Gaussian blobs (scikit-learn's ``make_blobs``)."""
    from sklearn.datasets import make_blobs

    features, _ = make_blobs(n_samples=n, n_features=dim, centers=centers, random_state=seed)
    return features.astype(np.float32)


# The checks ------------------------------------------------------------------------------------


def check_dataset(
    dataset_or_factory: Any,
    *,
    settings: Mapping[str, Any] | None = None,
    splits: list[str] | None = None,
    name: str | None = None,
    sample: int = 1000,
) -> dict[str, ImageSet]:
    """Check a dataset: every split (or ``splits``) loads a sound, repeatable :class:`ImageSet`.

    Sound means (N, H, W, C) uint8 or float32 in [0, 1] (checked on the first ``sample``
    images), one label (or none) and one unique id per image, class names that cover the integer
    labels, and images of one size in every split. Returns the loaded image sets by split.
    """
    stage = _Stage("dataset", dataset_or_factory, settings, name)
    dataset = stage.build()
    offered = _offered_splits(stage, dataset)
    wanted = list(offered) if splits is None else list(splits)
    for split in wanted:
        stage.require(split in offered, f"offers splits {offered}, not {split!r}")
    loaded = {
        split: _check_image_set(
            stage, stage.call(f"load({split!r})", dataset.load, split), split, sample
        )
        for split in wanted
    }
    shapes = {split: tuple(data.images.shape[1:]) for split, data in loaded.items()}
    if len(set(shapes.values())) > 1:
        stage.fail(
            f"its splits hold images of different sizes {shapes}: an encoder fitted on one "
            "split must encode the others, so every split needs one (H, W, C)"
        )
    first = wanted[0]
    again = stage.call(f"load({first!r}) of a second dataset", stage.build().load, first)
    _check_same_load(stage, loaded[first], again, first, sample)
    return loaded


def check_encoder(
    encoder_or_factory: Any,
    images: np.ndarray | None = None,
    *,
    settings: Mapping[str, Any] | None = None,
    name: str | None = None,
    fast: bool = False,
    tmp_path: Path | None = None,
    trust: bool = True,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> np.ndarray:
    """Check an encoder on ``images`` (default: a few hundred 8x8 uint8 digits); return features.

    ``fit`` returns the encoder and leaves its input alone; ``transform`` gives (N, D) float32
    finite features (or, for an encoder that prepares images for the next, (N, H, W, C) images);
    uint8 images and the same images as float32 in [0, 1] encode alike; ``save`` then ``load``
    into a fresh encoder, and a second encoder of the same settings, give the same features
    (within ``rtol``/``atol`` of the features' scale). Capabilities it offers (``reconstruct``,
    ``history_``, ``embedding_``, ``checkpoint_dir``) are checked too. ``fast=True`` uses 100
    images and skips the second fit on float32 images: pass tiny settings (``epochs=1``) as well
    for stages that train. ``trust`` is handed to a ``load`` that takes it (its own files).
    """
    stage = _Stage("encoder", encoder_or_factory, settings, name)
    images = sample_images(FAST_IMAGES if fast else IMAGES) if images is None else images
    _check_input(images, "check_encoder", "images", (2, 4))
    untouched = np.array(images, copy=True)
    n = len(images)

    encoder = stage.build()
    _fit(stage, encoder, images, None, untouched)
    features = _encode(stage, encoder, images, "transform(images)")
    stage.require(np.array_equal(images, untouched), "transform() changed its input array in place")
    _check_same(
        stage,
        features,
        _encode(stage, encoder, images, "a second transform(images)"),
        "transform() of the same images twice gives different features",
        rtol,
        atol,
    )
    _check_capabilities(stage, encoder, images, features)
    _check_other_dtype(stage, encoder, images, features, rtol, atol)

    with _workspace(tmp_path) as folder:
        restored = _round_trip(stage, encoder, folder / "saved", trust)
        _check_same(
            stage,
            features,
            _encode(stage, restored, images, "transform() after load()"),
            "after save() and load() into a freshly built encoder, transform() gives other "
            "features: save must keep every fitted value",
            rtol,
            atol,
        )
        twin = stage.build()
        if isinstance(twin, Checkpoints):
            twin.checkpoint_dir = folder / "checkpoints"  # as a run sets it: must not change a fit
        _fit(stage, twin, images, None, untouched)
        _check_same(
            stage,
            features,
            _encode(stage, twin, images, "transform() of a second encoder"),
            "two encoders built with the same settings give different features for the same "
            "images: seed every random thing (a `seed` setting)",
            rtol,
            atol,
        )
    if not fast and images.ndim == 4 and images.dtype == np.uint8:
        floats = _as_float_images(images)
        third = stage.build()
        _fit(stage, third, floats, floats[: max(1, n // 5)], floats.copy())
        encoded = _encode(stage, third, floats, "transform() after a fit on float32 images")
        stage.require(
            encoded.shape[1:] == features.shape[1:],
            f"fitted on float32 images it gives features of shape {encoded.shape[1:]}, on uint8 "
            f"images {features.shape[1:]}: the pixel type must not change the feature size",
        )
    return features


def check_clusterer(
    clusterer_or_factory: Any,
    features: np.ndarray | None = None,
    *,
    settings: Mapping[str, Any] | None = None,
    name: str | None = None,
    fast: bool = False,
    tmp_path: Path | None = None,
    trust: bool = True,
    agreement: float = 1.0,
) -> np.ndarray:
    """Check a clusterer on ``features`` (default: float32 points in 5 blobs); return its labels.

    ``fit_predict`` gives one int label per row (-1 for noise), no more clusters than
    ``n_clusters``, and leaves its input alone; a second clusterer of the same settings gives the
    same labels. Where it can predict, ``predict`` on the training features agrees with
    ``fit_predict`` (on at least ``agreement`` of the rows: lower it for approximate methods),
    a point's cluster does not depend on the other points in the call, and ``save`` then ``load``
    into a fresh clusterer predicts the same. ``fast=True`` uses 100 points.
    """
    stage = _Stage("clusterer", clusterer_or_factory, settings, name)
    features = sample_features(FAST_IMAGES if fast else IMAGES) if features is None else features
    _check_input(features, "check_clusterer", "features", (2,))
    untouched = np.array(features, copy=True)
    n = len(features)

    clusterer = stage.build()
    labels = stage.call("fit_predict(features)", clusterer.fit_predict, features)
    _check_labels(stage, labels, n, "fit_predict(features)")
    stage.require(
        np.array_equal(features, untouched), "fit_predict() changed its input array in place"
    )
    k = requested_clusters(clusterer)
    found = n_clusters(labels)
    if isinstance(k, int):
        stage.require(found <= k, f"was asked for n_clusters={k} but found {found} clusters")

    predicting = can_predict(clusterer)
    if predicting:
        predicted = _predict(stage, clusterer, features, "predict(training features)")
        share = float(np.mean(predicted == labels))
        stage.require(
            share >= agreement,
            f"predict() on the training features agrees with fit_predict() on {share:.1%} of "
            f"them (needed {agreement:.1%}): both must number the clusters alike",
        )
        head = min(7, n)
        stage.require(
            np.array_equal(
                _predict(stage, clusterer, features[:head], "predict()"), predicted[:head]
            ),
            f"predict() of the first {head} rows differs from predict() of all rows: a point's "
            "cluster must not depend on the other points in the call",
        )
        with _workspace(tmp_path) as folder:
            restored = _round_trip(stage, clusterer, folder / "saved", trust)
            stage.require(
                can_predict(restored),
                "cannot predict after save() and load(), though it could before",
            )
            again = _predict(stage, restored, features, "predict() after load()")
            stage.require(
                np.array_equal(again, predicted),
                f"after save() and load() into a freshly built clusterer, predict() changes "
                f"{int(np.sum(again != predicted))} of {n} labels: save must keep the fitted model",
            )
    twin = stage.build()
    twin_labels = stage.call("fit_predict() of a second clusterer", twin.fit_predict, features)
    _check_labels(stage, twin_labels, n, "fit_predict() of a second clusterer")
    stage.require(
        np.array_equal(twin_labels, labels),
        f"two clusterers built with the same settings label {int(np.sum(twin_labels != labels))} "
        f"of {n} points differently: seed every random thing (a `seed` setting)",
    )
    return labels


def sample_labels(features: np.ndarray, k: int = 5, seed: int = 0) -> np.ndarray:
    """k-means labels of ``features``, numbered largest cluster first: a clusterer's output."""
    from sklearn.cluster import KMeans

    found = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(features)
    return renumber(found, canonical_order(found))


def check_refiner(
    refiner_or_factory: Any,
    images: np.ndarray | None = None,
    features: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    *,
    settings: Mapping[str, Any] | None = None,
    name: str | None = None,
    fast: bool = False,
    tmp_path: Path | None = None,
    trust: bool = True,
    agreement: float = 1.0,
) -> np.ndarray:
    """Check a refiner on images, features and labels (default: 8x8 digits, their pixels and
    k-means labels in 5 clusters); return its refined labels.

    ``fit_predict`` gives one int label per image in the numbers it was given (no new cluster
    numbers) and leaves its inputs alone; ``predict`` on the training images agrees with it (on
    at least ``agreement`` of them), an image's cluster does not depend on the other images in
    the call, ``save`` then ``load`` into a fresh refiner predicts the same, and a second
    refiner of the same settings gives labels that agree as well. ``fast=True`` uses 100 images.
    """
    stage = _Stage("refiner", refiner_or_factory, settings, name)
    if images is None:
        images = sample_images(FAST_IMAGES if fast else IMAGES)
    _check_input(images, "check_refiner", "images", (4,))
    if features is None:
        features = images.reshape(len(images), -1).astype(np.float32) / 255.0
    _check_input(features, "check_refiner", "features", (2,))
    if labels is None:
        labels = sample_labels(features)
    originals = [np.array(a, copy=True) for a in (images, features, labels)]
    n = len(images)

    refiner = stage.build()
    refined = stage.call(
        "fit_predict(images, features, labels)", refiner.fit_predict, images, features, labels
    )
    _check_labels(stage, refined, n, "fit_predict(images, features, labels)")
    for given, original, what in zip(
        (images, features, labels), originals, ("images", "features", "labels"), strict=True
    ):
        stage.require(np.array_equal(given, original), f"fit_predict() changed its {what} in place")
    new = sorted(set(np.unique(refined[refined >= 0])) - set(np.unique(labels[labels >= 0])))
    stage.require(
        not new,
        f"fit_predict() returned cluster numbers it was not given ({new[:5]}): a refiner keeps "
        "the clusters' numbers",
    )

    def predicted(fitted: Any, index: Any, what: str) -> np.ndarray:
        found = stage.call(what, fitted.predict, images[index], features[index])
        _check_labels(stage, found, len(images[index]), what)
        return found

    on_training = predicted(refiner, slice(None), "predict(training images, features)")
    share = float(np.mean(on_training == refined))
    stage.require(
        share >= agreement,
        f"predict() on the training images agrees with fit_predict() on {share:.1%} of them "
        f"(needed {agreement:.1%}): both must number the clusters alike",
    )
    head = min(7, n)
    stage.require(
        np.array_equal(predicted(refiner, slice(0, head), "predict()"), on_training[:head]),
        f"predict() of the first {head} images differs from predict() of all images: an "
        "image's cluster must not depend on the other images in the call",
    )
    with _workspace(tmp_path) as folder:
        restored = _round_trip(stage, refiner, folder / "saved", trust)
        again = predicted(restored, slice(None), "predict() after load()")
        stage.require(
            np.array_equal(again, on_training),
            f"after save() and load() into a freshly built refiner, predict() changes "
            f"{int(np.sum(again != on_training))} of {n} labels: save must keep the fitted model",
        )
    twin = stage.build()
    twin_labels = stage.call(
        "fit_predict() of a second refiner", twin.fit_predict, images, features, labels
    )
    _check_labels(stage, twin_labels, n, "fit_predict() of a second refiner")
    same = float(np.mean(twin_labels == refined))
    stage.require(
        same >= agreement,
        f"two refiners built with the same settings agree on {same:.1%} of the images (needed "
        f"{agreement:.1%}): seed every random thing (a `seed` setting)",
    )
    return refined


# Building and reporting ------------------------------------------------------------------------


class _Stage:
    """One stage under check: builds it afresh each time and words failures with its name."""

    def __init__(
        self, kind: str, target: Any, settings: Mapping[str, Any] | None, name: str | None
    ) -> None:
        self.kind = kind
        self.label = f"{kind} {name or _name_of(target)!r}"
        values = dict(settings or {})
        if _is_factory(target, PROTOCOLS[kind]):
            self._factory: Callable[[], Any] = lambda: target(**values)
        else:
            if values:
                raise TypeError(f"check_{kind}: settings need a class or factory, not an instance.")
            pristine = _copy(target, kind)
            unused = [target]
            self._factory = lambda: unused.pop() if unused else _copy(pristine, kind)

    def build(self) -> Any:
        """A new stage with the same settings, checked for the methods its kind needs."""
        stage = self.call("building it", self._factory)
        missing = [m for m in REQUIRED[self.kind] if not callable(getattr(stage, m, None))]
        if missing:
            needed = ", ".join(REQUIRED[self.kind])
            article = "an" if self.kind[0] in "aeiou" else "a"
            self.fail(
                f"the object built ({type(stage).__name__}) has no {', '.join(missing)} "
                f"method; {article} {self.kind} needs {needed}"
            )
        return stage

    def call(self, what: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the stage; an exception it raises becomes a failure that says where."""
        try:
            return function(*args, **kwargs)
        except AssertionError:
            raise
        except Exception as exc:
            self.fail(f"{what} raised {type(exc).__name__}: {one_line(exc)}", exc)

    def require(self, condition: Any, message: str) -> None:
        """Fail with ``message`` unless ``condition`` holds."""
        if not condition:
            self.fail(message)

    def fail(self, message: str, cause: BaseException | None = None) -> None:
        """Raise the one-line ``AssertionError`` that names the stage."""
        raise AssertionError(f"{self.label}: {message}") from cause


def _is_factory(target: Any, protocol: type) -> bool:
    """A class or a function that builds the stage, as opposed to a stage already built."""
    return isinstance(target, type) or (callable(target) and not isinstance(target, protocol))


def _copy(stage: Any, kind: str) -> Any:
    """A deep copy of an unfitted stage instance, for the builds after the first."""
    try:
        return copy.deepcopy(stage)
    except Exception as exc:
        raise TypeError(
            f"check_{kind}: cannot copy the {kind} instance given ({one_line(exc)}); "
            "pass its class or a factory function instead."
        ) from None


def _name_of(target: Any) -> str:
    """The name failures use by default: the class or function name."""
    function = getattr(target, "func", target)  # functools.partial
    if isinstance(function, type) or inspect.isfunction(function):
        return function.__name__
    return type(target).__name__


@contextmanager
def _workspace(tmp_path: Path | None) -> Iterator[Path]:
    """A fresh folder for saved stages: inside ``tmp_path`` when given, else a temporary one."""
    if tmp_path is not None:
        Path(tmp_path).mkdir(parents=True, exist_ok=True)
        yield Path(tempfile.mkdtemp(prefix="imgclust-check-", dir=tmp_path))
        return
    with tempfile.TemporaryDirectory(prefix="imgclust-check-") as folder:
        yield Path(folder)


def _check_input(array: Any, function: str, what: str, ndims: tuple[int, ...]) -> None:
    """Data handed to a check must be a NumPy array of a usable shape (the caller's mistake)."""
    if not isinstance(array, np.ndarray) or array.ndim not in ndims or len(array) < 2:
        shapes = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{function}: {what} must be a {shapes} NumPy array of at least 2 rows.")


# Encoders --------------------------------------------------------------------------------------


def _fit(stage: _Stage, encoder: Any, images: np.ndarray, validation: Any, untouched: Any) -> None:
    """Fit as the pipeline does; it must return the encoder and leave its input alone."""
    what = "fit(images, validation=None)" if validation is None else "fit(images, validation)"
    returned = stage.call(what, encoder.fit, images, validation=validation)
    if returned is None:
        stage.fail(
            "fit() returned None; it must return the encoder itself (end with `return self`)"
        )
    stage.require(
        returned is encoder,
        f"fit() returned a {type(returned).__name__}, not the encoder itself (`return self`)",
    )
    stage.require(np.array_equal(images, untouched), "fit() changed its input array in place")


def _encode(stage: _Stage, encoder: Any, images: np.ndarray, what: str) -> np.ndarray:
    """Output of ``transform``, checked: (N, D) float32 features, or images for the next stage."""
    out = stage.call(what, encoder.transform, images)
    _check_output(stage, out, len(images), f"{what} returned")
    return out


def _check_output(stage: _Stage, out: Any, n: int, what: str) -> None:
    """(n, D) finite float32 features, or (n, H, W, C) images by the image contract."""
    if not isinstance(out, np.ndarray):
        stage.fail(f"{what} a {type(out).__name__}, not a NumPy array")
    stage.require(
        out.ndim in (2, 4) and len(out) == n,
        f"{what} shape {out.shape} for {n} inputs; expected ({n}, D) features",
    )
    if out.ndim == 2:
        stage.require(
            out.dtype == np.float32,
            f"{what} {out.dtype} features; they must be float32 (halves memory, and what "
            "clusterers expect): convert with .astype(np.float32)",
        )
        stage.require(out.shape[1] >= 1, f"{what} features with no columns")
        bad = int((~np.isfinite(out)).any(axis=1).sum())
        stage.require(not bad, f"{what} NaN or infinite features in {bad} of {n} rows")
    else:  # images for the next encoder (deskew): the image contract
        stage.require(
            out.dtype in (np.uint8, np.float32),
            f"{what} {out.dtype} images; images must be uint8 or float32 in [0, 1]",
        )
        if out.dtype == np.float32:
            stage.require(
                np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1,
                f"{what} float32 images outside [0, 1]",
            )


def _check_capabilities(stage: _Stage, encoder: Any, images: np.ndarray, features: Any) -> None:
    """What an encoder offers beyond the required methods must have the shape the core reads."""
    if isinstance(encoder, Embeds) and encoder.embedding_ is not None:
        embedding = encoder.embedding_
        stage.require(
            isinstance(embedding, np.ndarray)
            and embedding.shape == features.shape
            and embedding.dtype == features.dtype,
            f"embedding_ after fit is {getattr(embedding, 'shape', type(embedding).__name__)} "
            f"{getattr(embedding, 'dtype', '')}; the run uses it in place of transform(), so it "
            f"must be {features.shape} {features.dtype} like transform's output",
        )
    if isinstance(encoder, HasHistory) and encoder.history_:
        history = encoder.history_
        ok = isinstance(history, Mapping) and all(
            isinstance(k, str) and all(isinstance(v, (int, float)) for v in values)
            for k, values in history.items()
        )
        stage.require(ok, "history_ must map names (loss, val_loss) to lists of numbers per epoch")
    if isinstance(encoder, Reconstructs):
        some = images[: min(8, len(images))]
        rebuilt = stage.call("reconstruct(images)", encoder.reconstruct, some)
        stage.require(
            isinstance(rebuilt, np.ndarray)
            and rebuilt.size == some.size
            and len(rebuilt) == len(some),
            f"reconstruct() of {some.shape} inputs returned "
            f"{getattr(rebuilt, 'shape', type(rebuilt).__name__)}; it must rebuild each input",
        )
        stage.require(np.isfinite(rebuilt).all(), "reconstruct() returned NaN or infinite values")


def _check_other_dtype(
    stage: _Stage, encoder: Any, images: np.ndarray, features: np.ndarray, rtol: float, atol: float
) -> None:
    """uint8 images and the same images as float32 in [0, 1] must encode alike."""
    if images.ndim != 4:
        return
    if images.dtype == np.uint8:
        floats = _as_float_images(images)
        out = _encode(stage, encoder, floats, "transform() of the images as float32 in [0, 1]")
        _check_same(
            stage,
            features,
            out,
            "the same images as uint8 and as float32 in [0, 1] give different features: "
            "scale uint8 pixels by 1/255 and take float32 pixels as they are",
            rtol,
            atol,
        )
    elif images.dtype == np.float32:
        as_bytes = np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)
        out = _encode(stage, encoder, as_bytes, "transform() of the images as uint8")
        stage.require(
            out.shape == features.shape,
            f"uint8 images give features of shape {out.shape}, float32 ones {features.shape}",
        )


def _as_float_images(images: np.ndarray) -> np.ndarray:
    """uint8 images as float32 in [0, 1], as a dataset could have given them."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    return np.array(images, dtype=np.float32)


def _check_same(
    stage: _Stage, expected: np.ndarray, got: np.ndarray, message: str, rtol: float, atol: float
) -> None:
    """Equal within tolerance, relative to the size of the values; uint8 images read as [0, 1]."""
    if expected.shape != got.shape:
        stage.fail(f"{message} (shape {got.shape}, not {expected.shape})")
    a, b = _as_float_images(expected), _as_float_images(got)
    scale = max(1.0, float(np.max(np.abs(a))) if a.size else 1.0)
    slack = atol * scale + (1.5 / 255 if np.uint8 in (expected.dtype, got.dtype) else 0.0)
    if not np.allclose(a, b, rtol=rtol, atol=slack):
        stage.fail(f"{message} (largest difference {float(np.max(np.abs(a - b))):.3g})")


def _round_trip(stage: _Stage, fitted: Any, folder: Path, trust: bool) -> Any:
    """Keep and restore the fitted stage as a saved pipeline does: a stateless stage is built
    again from its settings; one with ``save``/``load`` is saved into a new folder (it exists and
    is empty) and loaded into a fresh stage; one without is pickled, which needs ``trust``."""
    if is_stateless(fitted):
        return stage.build()
    has = [m for m in ("save", "load") if callable(getattr(fitted, m, None))]
    if len(has) == 1:
        stage.fail(f"it has {has[0]} but no {'load' if has[0] == 'save' else 'save'}: give it both")
    if not has:
        stage.require(
            trust,
            "it has no save/load, so a run pickles it and predicting needs --trust: give it save "
            "and load, or stateless = True if fit keeps nothing (this check ran with trust=False)",
        )
        return stage.call(
            "pickling it, as a run does for a stage without save",
            lambda: pickle.loads(pickle.dumps(fitted, protocol=pickle.HIGHEST_PROTOCOL)),
        )
    folder.mkdir(parents=True)
    stage.call(f"save(directory) of the fitted {stage.kind}", fitted.save, folder)
    fresh = stage.build()
    load = fresh.load
    takes_trust = "trust" in inspect.signature(load).parameters
    arguments = {"trust": trust} if takes_trust else {}
    loaded = stage.call("load(directory) into a freshly built one", load, folder, **arguments)
    if loaded is None:
        stage.fail(f"load() returned None; it must return the loaded {stage.kind} (`return self`)")
    stage.require(
        isinstance(loaded, PROTOCOLS[stage.kind]),
        f"load() returned a {type(loaded).__name__}, not a {stage.kind}",
    )
    return loaded


# Clusterers ------------------------------------------------------------------------------------


def _predict(stage: _Stage, clusterer: Any, features: np.ndarray, what: str) -> np.ndarray:
    """``predict``, its labels checked."""
    labels = stage.call(what, clusterer.predict, features)
    _check_labels(stage, labels, len(features), what)
    return labels


def _check_labels(stage: _Stage, labels: Any, n: int, what: str) -> None:
    """(n,) integer labels, clusters from 0 and -1 for noise."""
    if not isinstance(labels, np.ndarray):
        stage.fail(f"{what} returned a {type(labels).__name__}, not a NumPy array of labels")
    stage.require(
        labels.shape == (n,),
        f"{what} returned labels of shape {labels.shape} for {n} rows; it must return one "
        f"label per row, shape ({n},)",
    )
    stage.require(
        labels.dtype.kind in "iu",
        f"{what} returned {labels.dtype} labels; they must be integers (-1 for noise)",
    )
    stage.require(
        n == 0 or int(labels.min()) >= -1,
        f"{what} returned label {int(labels.min())}; clusters are numbered from 0, -1 is noise",
    )


# Datasets --------------------------------------------------------------------------------------


def _offered_splits(stage: _Stage, dataset: Any) -> tuple[str, ...]:
    """The dataset's split names: text, each once."""
    offered = stage.call("reading splits", splits_of, dataset)
    stage.require(
        offered and all(isinstance(s, str) for s in offered) and len(set(offered)) == len(offered),
        f"splits must name each split once, as text; got {offered!r}",
    )
    return offered


def _check_image_set(stage: _Stage, data: Any, split: str, sample: int) -> ImageSet:
    """What ``load`` returned must be a sound :class:`ImageSet` (values checked on a sample)."""
    what = f"load({split!r})"
    if not isinstance(data, ImageSet):
        stage.fail(f"{what} returned a {type(data).__name__}, not an imgclust.ImageSet")
    try:
        data.validate(f"{stage.label} ({split})")
    except DataError as exc:
        stage.fail(f"{what}: {one_line(exc)}")
    n = len(data)
    height, width, channels = data.shape
    stage.require(
        min(height, width, channels) >= 1, f"{what} returned images of shape {data.shape}"
    )
    if data.labels is not None:
        labels = np.asarray(data.labels)
        stage.require(
            labels.shape == (n,) and labels.dtype.kind in "biuU",
            f"{what} returned labels of shape {labels.shape} and dtype {labels.dtype}; "
            f"they must be ({n},) integers or text",
        )
        if data.class_names is not None and labels.dtype.kind in "iu" and n:
            stage.require(
                0 <= labels.min() and labels.max() < len(data.class_names),
                f"{what} returned integer labels {int(labels.min())}..{int(labels.max())} but "
                f"{len(data.class_names)} class_names; class_names[label] names each label",
            )
    return data


def _check_same_load(
    stage: _Stage, first: ImageSet, again: ImageSet, split: str, sample: int
) -> None:
    """Two datasets of the same settings load the same images, labels and ids."""
    message = f"two datasets built with the same settings load different {{}} for {split!r}"
    _check_image_set(stage, again, split, sample)
    stage.require(len(first) == len(again), message.format("numbers of images"))
    stage.require(
        np.array_equal(np.asarray(first.images[:sample]), np.asarray(again.images[:sample])),
        message.format("images"),
    )
    assert first.ids is not None and again.ids is not None  # an ImageSet fills in its ids
    stage.require(list(map(str, first.ids)) == list(map(str, again.ids)), message.format("ids"))
    same_labels = (first.labels is None and again.labels is None) or (
        first.labels is not None
        and again.labels is not None
        and np.array_equal(np.asarray(first.labels), np.asarray(again.labels))
    )
    stage.require(same_labels, message.format("labels"))
