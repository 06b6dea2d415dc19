"""The ``umap`` encoder: UMAP (umap-learn) to a few dimensions, usually after another encoder.

umap-learn (and numba, which compiles on first use) is imported only when this encoder fits or
loads. With a seed, UMAP runs single-threaded and gives the same embedding every time; with
``seed=none`` it uses every core and varies from run to run. The fitted embedding of the
training inputs is kept as ``embedding_``, so the pipeline does not re-embed them.

umap-learn has no format but pickle for a fitted model. ``save`` therefore keeps what placing
new inputs needs as plain files instead: the training inputs and their embedding (an ``.npz``)
and UMAP's fitted numbers (JSON). ``load`` rebuilds the model from them without running code
from the folder, with an exact nearest-neighbour search (scikit-learn's) in place of UMAP's
approximate one. A model these files cannot describe (another metric, sparse inputs, settings
outside ``RANGES``) is saved as ``umap.pkl``, which loads only with ``trust=True``.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.errors import DataError, SettingsError
from imgclust.kit import (
    PickleFormat,
    as_matrix,
    atomic,
    check_finite,
    hookimpl,
    import_umap,
    read_npz,
)

#: The fitted model as plain files: UMAP's numbers (JSON), the training inputs and embedding.
STATE_FILE, ARRAYS_FILE = "umap_state.json", "umap_state.npz"
STATE_BYTES = 64 * 1024  # the numbers of a model; a larger file is not one
#: Metrics scikit-learn's neighbour search measures exactly as UMAP does, blank inputs included
#: (no extra arguments); a model fitted with another is saved as a pickle.
EXACT_METRICS = ("euclidean", "manhattan", "chebyshev")
#: Ranges of the saved numbers, which set how much work placing a new input takes; a model
#: fitted outside them (by hand) is saved as a pickle, so what saves plainly always loads.
RANGES: dict[str, tuple[float, float]] = {
    "n_neighbors": (2, 1_000),
    "n_epochs": (3, 5_000),  # placing new inputs runs a third of them, at least one
    "min_dist": (0, 100),
    "local_connectivity": (0, 10),
    "repulsion_strength": (0, 100),
    "negative_sample_rate": (0, 50),
    "transform_seed": (0, 2**32 - 1),
    "random_state": (0, 2**32 - 1),
    "a": (1e-6, 1e6),
    "b": (1e-6, 1e6),
    "initial_alpha": (0, 100),
}
WHOLE = ("n_neighbors", "n_epochs", "negative_sample_rate", "transform_seed", "random_state")
OPTIONAL = ("n_epochs", "random_state")  # None: UMAP's choice, no seed


class UMAPEncoder:
    """Uniform Manifold Approximation and Projection of the flattened input.

    Parameters
    ----------
    n_components : int
        Dimensions of the embedding (10 for clustering, 2 for a picture).
    n_neighbors : int
        Neighbours that define the local structure: small keeps fine detail, large the shape.
    min_dist : float
        How tightly points may pack; 0 suits clustering.
    metric : str
        Distance between inputs: euclidean, cosine, correlation, manhattan, ...
    n_epochs : int | None
        Optimisation epochs (default: UMAP's choice, 200 on large data).
    verbose : bool
        Print UMAP's progress on stderr.
    seed : int | None
        Seed: reproducible and single-threaded; none uses every core but varies.
    """

    def __init__(
        self,
        n_components: int = 10,
        n_neighbors: int = 15,
        min_dist: float = 0.1,
        metric: str = "euclidean",
        n_epochs: int | None = None,
        verbose: bool = False,
        seed: int | None = 0,
    ) -> None:
        if n_components < 1:
            raise SettingsError("encoder 'umap' needs n_components >= 1.")
        if n_neighbors < 2:
            raise SettingsError("encoder 'umap' needs n_neighbors >= 2.")
        if min_dist < 0:
            raise SettingsError("encoder 'umap' needs min_dist >= 0.")
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.metric = metric
        self.n_epochs = n_epochs
        self.verbose = verbose
        self.seed = seed
        self.model_: Any = None
        self.embedding_: np.ndarray | None = None

    def _model(self, n: int) -> Any:
        if n <= self.n_components + 1:
            raise DataError(
                f"encoder 'umap' needs more than n_components + 1 = {self.n_components + 1} "
                f"images; got {n}."
            )
        umap = import_umap()
        return umap.UMAP(
            n_components=self.n_components,
            n_neighbors=min(self.n_neighbors, n - 1),
            min_dist=self.min_dist,
            metric=self.metric,
            n_epochs=self.n_epochs,
            random_state=self.seed,
            verbose=self.verbose,
        )

    def fit(self, images: np.ndarray, validation: np.ndarray | None = None) -> UMAPEncoder:
        """Embed the inputs; the embedding of these inputs becomes ``embedding_``."""
        x = as_matrix(images)
        check_finite(x, "inputs of encoder 'umap'", "check the images or the previous encoder")
        model = self._model(len(x))
        try:
            self.model_ = _quiet(model.fit, x)
        except ValueError as exc:
            raise SettingsError(f"encoder 'umap' could not embed the data: {exc}") from None
        self.embedding_ = np.asarray(self.model_.embedding_, dtype=np.float32)
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Embed new inputs into the fitted space (UMAP's own ``transform``)."""
        if self.model_ is None:
            raise DataError("encoder 'umap' is not fitted yet: fit it first.")
        x = as_matrix(images)
        fitted = getattr(self.model_, "_raw_data", None)
        if fitted is not None and fitted.ndim == 2 and x.shape[1] != fitted.shape[1]:
            raise DataError(
                f"encoder 'umap' was fitted on {fitted.shape[1]} numbers per input; got "
                f"{x.shape[1]}: give it what the stage before it gave at fit."
            )
        return np.asarray(_quiet(self.model_.transform, x), dtype=np.float32)

    def save(self, directory: Path) -> None:
        """Write the fitted model as plain files (``umap_state.json``, ``umap_state.npz``), or as
        ``umap.pkl`` where they cannot describe it, and ``umap.json`` (the settings)."""
        directory = Path(directory)
        if self.model_ is None:
            raise DataError("encoder 'umap' is not fitted: nothing to save.")
        state = plain_state(self.model_)
        if state is None:
            _UMAP_PICKLE.save(self.model_, directory)
        else:
            numbers, arrays = state
            atomic.write_npz(directory / ARRAYS_FILE, arrays)
            atomic.write_json(directory / STATE_FILE, numbers)
        atomic.write_json(directory / "umap.json", self.settings())

    def load(self, directory: Path, trust: bool = False) -> UMAPEncoder:
        """Read a saved model: from its plain files with no trust needed, or from a pickle
        (an older run, an unusual metric) only with ``trust=True``."""
        directory = Path(directory)
        if (directory / STATE_FILE).exists():
            self.model_ = model_from_state(directory)
        else:
            self.model_ = _UMAP_PICKLE.load(directory, trust=trust)
        self.embedding_ = None
        return self

    def settings(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "n_neighbors": self.n_neighbors,
            "min_dist": self.min_dist,
            "metric": self.metric,
            "n_epochs": self.n_epochs,
            "seed": self.seed,
        }


def plain_state(model: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """What placing new inputs needs of a fitted UMAP, as JSON numbers and arrays; None where
    those cannot describe the model (then it is pickled)."""
    raw = getattr(model, "_raw_data", None)
    plain = (
        isinstance(model.metric, str)
        and model.metric in EXACT_METRICS
        and not model.metric_kwds
        and model.output_metric == "euclidean"
        and not model.densmap
        and model.transform_mode == "embedding"
        and not getattr(model, "_sparse_data", True)
        and getattr(model, "_disconnection_distance", None) == math.inf
        and isinstance(raw, np.ndarray)
        and raw.ndim == 2
    )
    if not plain:
        return None
    numbers = {
        "metric": model.metric,
        "n_neighbors": model._n_neighbors,
        "n_epochs": model.n_epochs,
        "min_dist": model.min_dist,
        "local_connectivity": model.local_connectivity,
        "repulsion_strength": model.repulsion_strength,
        "negative_sample_rate": model.negative_sample_rate,
        "transform_seed": model.transform_seed,
        "random_state": model.random_state,
        "a": model._a,
        "b": model._b,
        "initial_alpha": model._initial_alpha,
    }
    try:
        numbers = _checked_numbers(numbers)
    except (ValueError, TypeError, OverflowError):
        return None
    arrays = {
        "inputs": np.ascontiguousarray(raw, dtype=np.float32),
        "embedding": np.ascontiguousarray(model.embedding_, dtype=np.float32),
    }
    return numbers, arrays


def model_from_state(directory: Path) -> Any:
    """A UMAP model rebuilt from ``plain_state``'s files, every number checked first: it places
    new inputs as the fitted one does, finding their neighbours exactly."""
    where = f"encoder 'umap': {STATE_FILE}"
    try:
        with open(directory / STATE_FILE, "rb") as handle:
            text = handle.read(STATE_BYTES + 1)
        if len(text) > STATE_BYTES:
            raise ValueError(f"it is larger than {STATE_BYTES} bytes")
        numbers = _checked_numbers(json.loads(text))
    except (OSError, ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise DataError(f"{where} cannot be read: {reason}; save the run again.") from None
    arrays = read_npz(
        directory / ARRAYS_FILE, f"encoder 'umap': {ARRAYS_FILE}", ("inputs", "embedding")
    )
    inputs, embedding = _checked_arrays(arrays, numbers["n_neighbors"])
    import joblib

    umap = import_umap()
    model = umap.UMAP(
        n_components=embedding.shape[1],
        n_neighbors=numbers["n_neighbors"],
        min_dist=numbers["min_dist"],
        metric=numbers["metric"],
        n_epochs=numbers["n_epochs"],
        local_connectivity=numbers["local_connectivity"],
        repulsion_strength=numbers["repulsion_strength"],
        negative_sample_rate=numbers["negative_sample_rate"],
        transform_seed=numbers["transform_seed"],
        random_state=numbers["random_state"],
    )
    model._raw_data, model.embedding_ = inputs, embedding
    model._input_hash = joblib.hash(inputs)  # as fit hashes them: its own inputs map exactly
    model._a, model._b = numbers["a"], numbers["b"]
    model._initial_alpha = numbers["initial_alpha"]
    model._n_neighbors = numbers["n_neighbors"]
    model._disconnection_distance = math.inf  # what UMAP uses for these metrics
    model._small_data, model._sparse_data, model._metric_kwds = False, False, {}
    model._supervised = False
    model.tqdm_kwds = {"disable": True}
    model._knn_search_index = ExactNeighbours(inputs, numbers["metric"])
    return model


class ExactNeighbours:
    """Stands in for UMAP's approximate neighbour index when placing new inputs: scikit-learn's
    exact search over the training inputs (in bounded chunks), answering as the index does."""

    _angular_trees = False  # what the index would say; it only sets the approximation's slack

    def __init__(self, inputs: np.ndarray, metric: str) -> None:
        from sklearn.neighbors import NearestNeighbors

        self._search = NearestNeighbors(algorithm="brute", metric=metric).fit(inputs)

    def query(self, x: np.ndarray, k: int, epsilon: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest training inputs of each row: their indices and distances."""
        distances, indices = self._search.kneighbors(np.asarray(x, dtype=np.float32), k)
        return indices.astype(np.int32), distances.astype(np.float32)


def _checked_numbers(found: Any) -> dict[str, Any]:
    """The numbers of a model, each of its kind and within RANGES (a stranger may have written
    them, and they set how much work placing new inputs takes)."""
    if not isinstance(found, dict):
        raise ValueError("it is not a JSON object")
    metric = found["metric"]
    if metric not in EXACT_METRICS:
        raise ValueError(f"metric {str(metric)[:40]!r} is not one of {', '.join(EXACT_METRICS)}")
    numbers: dict[str, Any] = {"metric": metric}
    for key, (low, high) in RANGES.items():
        value = found[key]
        if value is None and key in OPTIONAL:
            numbers[key] = None
            continue
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} is not a number")
        if not low <= value <= high:  # also refuses NaN, infinities and huge integers
            raise ValueError(f"{key} = {str(value)[:40]} is outside {low} to {high}")
        if key in WHOLE and value != int(value):
            raise ValueError(f"{key} is not a whole number")
        numbers[key] = int(value) if key in WHOLE else float(value)
    return numbers


def _checked_arrays(arrays: dict[str, np.ndarray], n_neighbors: int) -> tuple[np.ndarray, ...]:
    """The training inputs and their embedding as float32: 2-D, finite, one row each, more rows
    than neighbours."""
    where = f"encoder 'umap': {ARRAYS_FILE}"
    checked = []
    for name in ("inputs", "embedding"):
        array = arrays[name]
        if array.ndim != 2 or array.dtype.kind not in "fiu" or 0 in array.shape:
            raise DataError(f"{where}: {name} is not a 2-D array of numbers; save the run again.")
        with np.errstate(over="ignore"):  # a number too large for float32 is refused below
            array = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            raise DataError(f"{where}: {name} holds NaN or infinite values; save the run again.")
        checked.append(array)
    inputs, embedding = checked
    if len(inputs) != len(embedding) or len(inputs) <= n_neighbors:
        raise DataError(
            f"{where}: {len(inputs)} inputs, {len(embedding)} embedded, for {n_neighbors} "
            "neighbours: the files do not belong together; save the run again."
        )
    return inputs, embedding


class _UMAPPickle(PickleFormat):
    filename = "umap.pkl"


_UMAP_PICKLE = _UMAPPickle()


def _quiet(method: Any, x: np.ndarray) -> Any:
    """Call UMAP without its warning that a seed turns off parallelism (documented above)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        stdout = sys.stdout
        sys.stdout = sys.stderr  # UMAP's verbose output is progress, not results
        try:
            return method(x)
        finally:
            sys.stdout = stdout


@hookimpl
def register_encoders(register):
    register(
        "umap",
        UMAPEncoder,
        summary="UMAP (umap-learn) to a few dimensions; chain it after pca or an autoencoder",
    )
