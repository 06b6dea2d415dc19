"""The interfaces every stage implements, and the image container they share.

They are small, scikit-learn flavoured ``Protocol``s: a plugin needs no base class, only the
methods below. Arrays are NumPy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from imgclust.errors import DataError


@dataclass
class ImageSet:
    """Images with optional labels: what a dataset's ``load(split)`` returns.

    ``images`` is (N, H, W, C), uint8 or float32 in [0, 1], possibly a memory map.
    ``ids`` names each image (a relative path or an index), ``labels`` is (N,) or None.
    """

    images: np.ndarray
    labels: np.ndarray | None = None
    ids: Sequence[str] | None = None
    class_names: Sequence[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ids is None:
            self.ids = [str(i) for i in range(len(self.images))]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Height, width and channels of one image."""
        return tuple(self.images.shape[1:])

    def validate(self, name: str = "dataset") -> ImageSet:
        """Check shape, dtype and consistency; raise :class:`DataError` with one clear line."""
        images = self.images
        if len(images) == 0:
            raise DataError(f"{name} holds no images: point it at data that has some.")
        if images.ndim != 4:
            raise DataError(f"{name} images must be (N, H, W, C); got shape {tuple(images.shape)}.")
        if images.dtype != np.uint8 and images.dtype != np.float32:
            raise DataError(
                f"{name} images must be uint8 or float32 in [0, 1]; got {images.dtype}."
            )
        check_scale(images, name)
        if self.labels is not None and len(self.labels) != len(images):
            raise DataError(f"{name} has {len(images)} images but {len(self.labels)} labels.")
        if self.ids is not None and len(self.ids) != len(images):
            raise DataError(f"{name} has {len(images)} images but {len(self.ids)} ids.")
        twice = None if self.ids is None else first_repeated(map(str, self.ids))
        if twice is not None:
            raise DataError(
                f"{name}: the id {twice[:80]!r} names more than one image; ids must be unique "
                "(they key assignments.csv, predict and export)."
            )
        if isinstance(self.class_names, (str, bytes, Mapping)):
            raise DataError(
                f"{name}: class_names must be a list indexed by the integer labels, not a "
                f"{type(self.class_names).__name__}."
            )
        return self

    def subset(self, index: np.ndarray | slice) -> ImageSet:
        """A view of some of the images, with their labels and ids."""
        ids = np.asarray(self.ids, dtype=object)[index].tolist()
        labels = None if self.labels is None else self.labels[index]
        return ImageSet(self.images[index], labels, ids, self.class_names, dict(self.info))


def first_repeated(values: Iterable[str]) -> str | None:
    """The first value seen a second time, or None when all are distinct."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


SCALE_CHUNK_BYTES = 64 * 2**20  # read at most this much of a memory map at once to check it


def check_scale(images: np.ndarray, name: str) -> None:
    """Float images must be finite and in [0, 1]; anything else is refused, never rescaled.

    uint8 means 0..255 and floats mean 0..1, nothing else: a run, its ``predict`` and
    ``Pipeline.fit`` all read images through this one rule, so they can never scale the same
    images differently. A memory map is read a chunk at a time.
    """
    if images.dtype.kind != "f" or images.size == 0:
        return
    rows = max(1, SCALE_CHUNK_BYTES // max(1, images[:1].nbytes))
    low, high = np.inf, -np.inf
    for start in range(0, len(images), rows):
        chunk = np.asarray(images[start : start + rows])
        if not np.isfinite(chunk).all():
            raise DataError(
                f"{name}: images with NaN or infinite values: replace them, or leave those "
                "images out."
            )
        low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    if low < 0 or high > 1:
        hint = "divide by 255" if high > 16 else "divide by their largest value (16 for digits)"
        raise DataError(
            f"{name}: float images in {low:g}..{high:g}, not in [0, 1]: give uint8 0..255 "
            f"or floats in [0, 1] ({hint} first); imgclust never guesses a scale."
        )


@runtime_checkable
class Dataset(Protocol):
    """A source of images; its splits are named by :class:`HasSplits` (only "all" without it)."""

    def load(self, split: str = "all") -> ImageSet:
        """The images of one split as an :class:`ImageSet` (N, H, W, C), uint8 or float32."""


@runtime_checkable
class Encoder(Protocol):
    """Turns images (or the previous encoder's features) into (N, D) float32 features."""

    def fit(self, images: np.ndarray, validation: np.ndarray | None = None) -> Encoder:
        """Learn from ``images`` (checking on ``validation`` where it trains) and return self."""

    def transform(self, images: np.ndarray) -> np.ndarray:
        """One (D,) float32 row of features per input: an (N, D) array."""

    def save(self, directory: Path) -> None:
        """Write the fitted state into an existing, empty ``directory`` (no pickle by default)."""

    def load(self, directory: Path) -> Encoder:
        """Read what ``save`` wrote into this freshly built stage and return it."""


@runtime_checkable
class Clusterer(Protocol):
    """Groups (N, D) features into clusters numbered from 0; -1 means noise."""

    def fit_predict(self, features: np.ndarray) -> np.ndarray:
        """Fit on ``features`` and return one int label per row: an (N,) array."""

    def save(self, directory: Path) -> None:
        """Write the fitted state into an existing, empty ``directory`` (no pickle by default)."""

    def load(self, directory: Path) -> Clusterer:
        """Read what ``save`` wrote into this freshly built stage and return it."""


@runtime_checkable
class Refiner(Protocol):
    """Improves a clusterer's labels from the images (self-labelling, DEC); assigns new images."""

    def fit_predict(
        self, images: np.ndarray, features: np.ndarray, labels: np.ndarray
    ) -> np.ndarray:
        """Learn from the images, features and the labels so far; return refined (N,) labels."""

    def predict(self, images: np.ndarray, features: np.ndarray) -> np.ndarray:
        """The cluster of each new image, numbered as ``fit_predict`` numbered them."""

    def save(self, directory: Path) -> None:
        """Write the fitted state into an existing, empty ``directory`` (no pickle by default)."""

    def load(self, directory: Path) -> Refiner:
        """Read what ``save`` wrote into this freshly built stage and return it."""


# Capabilities: optional parts of a stage the core uses where present, asked with isinstance.


@runtime_checkable
class HasSplits(Protocol):
    """A dataset that names the splits ``load`` accepts, e.g. ("train", "test", "all")."""

    splits: Sequence[str]


@runtime_checkable
class Reconstructs(Protocol):
    """An encoder that rebuilds its input images (an autoencoder): drawn in reconstructions.png."""

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """The rebuilt images, as many numbers as the input, float32 in [0, 1]."""


@runtime_checkable
class HasHistory(Protocol):
    """An encoder that records per-epoch values (``loss``, ``val_loss``) for the training plot;
    or a refiner that records its course (``changed``: the share of labels changed, ``loss``)
    per round, or per target update with the ``step`` of each, kept in ``metrics.json``'s
    ``refiner_training`` and drawn in the training plot."""

    history_: Mapping[str, Sequence[float]]


@runtime_checkable
class ReportsStop(Protocol):
    """A refiner that says when and why it stopped (the run's log and ``refiner_stop`` in
    ``metrics.json``), e.g. "labels changed 0.0008 < tolerance 0.001 at step 2240"."""

    stop_reason_: str


@runtime_checkable
class ReportsStarts(Protocol):
    """A clusterer that tried several starts and says which it kept and why (the run's log and
    ``clusterer_starts`` in ``metrics.json``): one record per start with its ``seed``, its
    scores (such as ``neighbour_information`` and ``score``) and ``kept``."""

    starts_: Sequence[Mapping[str, Any]]


@runtime_checkable
class Checkpoints(Protocol):
    """An encoder that checkpoints its fit into ``checkpoint_dir`` (set by the run) to resume."""

    checkpoint_dir: Path | None


@runtime_checkable
class Embeds(Protocol):
    """An encoder whose fit leaves the features of its training input in ``embedding_`` (UMAP)."""

    embedding_: np.ndarray | None


@runtime_checkable
class Predicts(Protocol):
    """A clusterer that assigns new points to its fitted clusters."""

    def predict(self, features: np.ndarray) -> np.ndarray:
        """One int label per row of ``features`` (-1 for noise), as ``fit_predict`` numbers them."""


@runtime_checkable
class MayPredict(Predicts, Protocol):
    """A clusterer whose ``predict`` works only where ``can_predict`` is true (a wrapped model)."""

    can_predict: bool


@runtime_checkable
class ScoresSamples(Protocol):
    """A clusterer that rates each point's membership (distance or probability) for predict."""

    def score_samples(self, features: np.ndarray) -> Mapping[str, np.ndarray] | np.ndarray:
        """(N,) scores, or a mapping of score names to (N,) arrays."""


@dataclass(frozen=True)
class FileListing:
    """A dataset's image files, listed but not decoded: each is decoded where it is read, to
    ``size`` (H, W) in ``mode`` ("grayscale" or "rgb") as ``fit`` says, refusing images over
    ``max_pixels``. ``names`` are the images' ids; ``info`` is what ``ImageSet.info`` would hold."""

    paths: tuple[str, ...]
    size: tuple[int, int]
    mode: str
    names: list[str]
    max_pixels: int | None = None
    fit: str = "stretch"
    labels: np.ndarray | None = None
    class_names: Sequence[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class ListsFiles(Protocol):
    """A dataset of image files that can name them without decoding them: on Dask each worker
    then decodes only the files of its own chunks, and nothing is decoded in the client."""

    def list_files(self) -> FileListing:
        """The files ``load("all")`` would decode, in the same order, with their labels."""


@runtime_checkable
class HasClusterCount(Protocol):
    """A clusterer told how many clusters to find (None where the method finds the count)."""

    n_clusters: int | None


@runtime_checkable
class WrapsEstimator(Protocol):
    """A clusterer around a fitted scikit-learn-style model, kept as ``estimator_``."""

    estimator_: Any


@runtime_checkable
class ScoresBIC(Protocol):
    """A fitted model with a likelihood (a Gaussian mixture): sweep-k can choose k by its BIC."""

    def bic(self, features: np.ndarray) -> float:
        """The Bayesian information criterion of ``features`` under the model (lower is better)."""


@runtime_checkable
class Stateless(Protocol):
    """A stage its factory and settings rebuild whole (``stateless = True``): nothing to save.

    A saved pipeline records it without files and rebuilds it from its settings when loaded,
    instead of pickling it or marking the run as unable to predict."""

    stateless: bool


@runtime_checkable
class UsesInvariances(Protocol):
    """A stage that augments or symmetrises with the transformations the images are invariant
    to ("mirror", "quarter-turn", ...: see ``imgclust.kit.invariances``). A run sets
    ``invariances`` before fitting; None means the stage decides from its own training images.
    """

    invariances: Sequence[str] | None


@runtime_checkable
class UsesImageIds(Protocol):
    """A refiner that reads per-image input keyed by image id, such as labels a person curated
    in the explorer. A run sets ``image_ids`` (one per image, in order) before fitting it."""

    image_ids: Sequence[str] | None


#: The capability protocols, in the order the hook reference lists them.
CAPABILITIES = (
    HasSplits,
    Reconstructs,
    HasHistory,
    ReportsStop,
    ReportsStarts,
    Checkpoints,
    Embeds,
    Predicts,
    MayPredict,
    ScoresSamples,
    HasClusterCount,
    WrapsEstimator,
    ScoresBIC,
    Stateless,
    UsesInvariances,
    UsesImageIds,
    ListsFiles,
)


def splits_of(dataset: object) -> tuple[str, ...]:
    """The splits a dataset offers: its ``splits``, or just "all" when it names none."""
    return tuple(dataset.splits) if isinstance(dataset, HasSplits) else ("all",)


def requested_clusters(clusterer: object) -> int | None:
    """The number of clusters a clusterer was asked for, or None where it finds the count."""
    return clusterer.n_clusters if isinstance(clusterer, HasClusterCount) else None


def is_stateless(stage: object) -> bool:
    """Whether a stage declares that it holds no fitted state (``stateless = True``)."""
    return isinstance(stage, Stateless) and stage.stateless is True


def can_predict(stage: object) -> bool:
    """Whether a clusterer or refiner can assign new points: its ``can_predict`` flag, else
    whether it has a ``predict``. The one rule the pipeline, its persistence and the chunked
    and distributed runs ask."""
    if isinstance(stage, MayPredict) and stage.can_predict is not None:
        return bool(stage.can_predict)
    return isinstance(stage, Predicts)
