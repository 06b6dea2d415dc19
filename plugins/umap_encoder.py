"""The ``umap`` encoder: UMAP (umap-learn) to a few dimensions, usually after another encoder.

umap-learn (and numba, which compiles on first use) is imported only when this encoder fits or
loads. With a seed, UMAP runs single-threaded and gives the same embedding every time; with
``seed=none`` it uses every core and varies from run to run. The fitted embedding of the
training inputs is kept as ``embedding_``, so the pipeline does not re-embed them.

umap-learn has no format but pickle for a fitted model. ``save`` therefore keeps what placing
new inputs needs as plain files instead: the training inputs and their embedding (an ``.npz``)
and UMAP's fitted numbers (JSON). ``load`` rebuilds the model from them without running code
from the folder, with an exact nearest-neighbour search (scikit-learn's) in place of UMAP's
approximate one. A model these files cannot describe (a metric scikit-learn does not measure
the same way, sparse inputs, densMAP) is saved as ``umap.pkl``, which loads only with
``trust=True``.
"""

from __future__ import annotations

import io
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
#: Metrics scikit-learn's neighbour search measures exactly as UMAP does (no extra arguments);
#: a model fitted with another is saved as a pickle.
EXACT_METRICS = (
    "euclidean", "manhattan", "chebyshev", "cosine", "correlation", "canberra", "braycurtis",
)  # fmt: skip
#: Bounds on the saved numbers that set how much work placing new inputs takes.
MAX_EPOCHS, MAX_NEGATIVE_SAMPLES = 100_000, 1_000


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
            buffer = io.BytesIO()
            np.savez(buffer, inputs=arrays["inputs"], embedding=arrays["embedding"])
            atomic.write_bytes(directory / ARRAYS_FILE, buffer.getvalue())
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
        and isinstance(raw, np.ndarray)
        and raw.ndim == 2
    )
    if not plain:
        return None
    numbers = {
        "metric": model.metric,
        "n_neighbors": int(model.n_neighbors),
        "n_epochs": None if model.n_epochs is None else int(model.n_epochs),
        "min_dist": float(model.min_dist),
        "local_connectivity": float(model.local_connectivity),
        "repulsion_strength": float(model.repulsion_strength),
        "negative_sample_rate": int(model.negative_sample_rate),
        "transform_seed": int(model.transform_seed),
        "random_state": None if model.random_state is None else int(model.random_state),
        "a": float(model._a),
        "b": float(model._b),
        "initial_alpha": float(model._initial_alpha),
        "disconnection_distance": _finite_or_none(model._disconnection_distance),
        "input_hash": str(model._input_hash),
    }
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
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise DataError(f"{where} cannot be read: {reason}; save the run again.") from None
    arrays = read_npz(
        directory / ARRAYS_FILE, f"encoder 'umap': {ARRAYS_FILE}", ("inputs", "embedding")
    )
    inputs, embedding = _checked_arrays(arrays, numbers["n_neighbors"])
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
    model._a, model._b = numbers["a"], numbers["b"]
    model._initial_alpha = numbers["initial_alpha"]
    distance = numbers["disconnection_distance"]
    model._disconnection_distance = math.inf if distance is None else distance
    model._input_hash = numbers["input_hash"]
    model._n_neighbors = numbers["n_neighbors"]
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


def _finite_or_none(value: float) -> float | None:
    """A distance for JSON: None stands for infinity (no limit)."""
    return float(value) if math.isfinite(value) else None


def _checked_numbers(found: Any) -> dict[str, Any]:
    """The saved numbers, each of its kind and in its range (they set how much work placing
    new inputs takes, and a stranger may have written them)."""
    if not isinstance(found, dict):
        raise ValueError("it is not a JSON object")

    def number(key: str, low: float, high: float, kind: type = float) -> Any:
        value = found[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} is not a number")
        if kind is int and value != int(value):
            raise ValueError(f"{key} is not a whole number")
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"{key} = {value} is outside {low} to {high}")
        return kind(value)

    metric = found["metric"]
    if metric not in EXACT_METRICS:
        raise ValueError(f"metric {str(metric)[:40]!r} is not one of {', '.join(EXACT_METRICS)}")
    epochs, seed = found["n_epochs"], found["random_state"]
    distance = found["disconnection_distance"]
    input_hash = found["input_hash"]
    if not isinstance(input_hash, str) or len(input_hash) > 128:
        raise ValueError("input_hash is not a digest")
    return {
        "metric": metric,
        "n_neighbors": number("n_neighbors", 2, 10_000, int),
        "n_epochs": None if epochs is None else number("n_epochs", 1, MAX_EPOCHS, int),
        "min_dist": number("min_dist", 0, 1e6),
        "local_connectivity": number("local_connectivity", 0, 10_000),
        "repulsion_strength": number("repulsion_strength", 0, 1e6),
        "negative_sample_rate": number("negative_sample_rate", 0, MAX_NEGATIVE_SAMPLES, int),
        "transform_seed": number("transform_seed", 0, 2**32 - 1, int),
        "random_state": None if seed is None else number("random_state", 0, 2**32 - 1, int),
        "a": number("a", 1e-6, 1e6),
        "b": number("b", 1e-6, 1e6),
        "initial_alpha": number("initial_alpha", 0, 1e6),
        "disconnection_distance": None
        if distance is None
        else number("disconnection_distance", 0, 1e30),
        "input_hash": input_hash,
    }


def _checked_arrays(arrays: dict[str, np.ndarray], n_neighbors: int) -> tuple[np.ndarray, ...]:
    """The training inputs and their embedding: 2-D, finite, one row each, enough rows."""
    where = f"encoder 'umap': {ARRAYS_FILE}"
    inputs, embedding = arrays.get("inputs"), arrays.get("embedding")
    for name, array in (("inputs", inputs), ("embedding", embedding)):
        if array is None or array.ndim != 2 or array.dtype.kind != "f" or 0 in array.shape:
            raise DataError(f"{where}: {name} is not a 2-D array of numbers; save the run again.")
        if not np.isfinite(array).all():
            raise DataError(f"{where}: {name} holds NaN or infinite values; save the run again.")
    assert inputs is not None and embedding is not None
    if len(inputs) != len(embedding) or len(inputs) <= n_neighbors:
        raise DataError(
            f"{where}: {len(inputs)} inputs, {len(embedding)} embedded, for {n_neighbors} "
            "neighbours: the files do not belong together; save the run again."
        )
    return inputs.astype(np.float32, copy=False), embedding.astype(np.float32, copy=False)


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
