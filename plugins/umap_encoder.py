"""The ``umap`` encoder: UMAP (umap-learn) to a few dimensions, usually after another encoder.

umap-learn (and numba, which compiles on first use) is imported only when this encoder fits or
loads. With a seed, UMAP runs single-threaded and gives the same embedding every time; with
``seed=none`` it uses every core and varies from run to run. The fitted embedding of the
training inputs is kept as ``embedding_``, so the pipeline does not re-embed them.

umap-learn has no format but pickle for a fitted model, so ``save`` writes ``umap.pkl`` and
``load`` reads it only with ``trust=True``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.errors import DataError, SettingsError
from imgclust.kit import PickleFormat, as_matrix, atomic, check_finite, hookimpl, import_umap


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
        """Write ``umap.pkl`` (the fitted model) and ``umap.json`` (the settings)."""
        directory = Path(directory)
        _UMAP_PICKLE.save(self.model_, directory)

        atomic.write_json(directory / "umap.json", self.settings())

    def load(self, directory: Path, trust: bool = False) -> UMAPEncoder:
        """Read a saved model; it is a pickle, so this needs ``trust=True``."""
        self.model_ = _UMAP_PICKLE.load(Path(directory), trust=trust)
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
