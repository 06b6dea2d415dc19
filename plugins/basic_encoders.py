"""Encoders without a neural network: ``flatten`` (raw pixels) and ``pca``.

Both read their input a batch at a time, so a uint8 memory map of a million images is never
held as floats all at once (``flatten``'s output is, by definition, every pixel as float32).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from imgclust.errors import DataError, SettingsError
from imgclust.kit import as_matrix, hookimpl, map_batches, read_json, read_npz, sample_matrix

PCA_KEYS = ("components_", "mean_", "explained_variance_", "input_shape")


class FlattenEncoder:
    """Raw pixels scaled to [0, 1], one row per image: the baseline feature."""

    def fit(self, images: np.ndarray, validation: np.ndarray | None = None) -> FlattenEncoder:
        self.input_shape_ = tuple(images.shape[1:])
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        return as_matrix(images)

    def save(self, directory: Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        state = json.dumps({"input_shape": self.input_shape_})
        (Path(directory) / "flatten.json").write_text(state)

    def load(self, directory: Path) -> FlattenEncoder:
        state = read_json(Path(directory) / "flatten.json", "encoder 'flatten': flatten.json")
        self.input_shape_ = tuple(state["input_shape"])
        return self


class PCAEncoder:
    """Principal components of the flattened input, fitted on a sample, applied batch by batch.

    The fit sees a fixed-seed sample of at most ``max_fit`` rows (and at most 512 MiB of
    float32); ``transform`` projects every row in batches into a float32 (N, n_components) array.

    Parameters
    ----------
    n_components : int
        Number of components kept (capped at the input's size).
    whiten : bool
        Scale components to unit variance.
    max_fit : int
        Fit on a fixed-seed sample of at most this many rows (fewer for large images).
    seed : int
        Seed of the sample and the randomized solver.
    """

    def __init__(
        self, n_components: int = 50, whiten: bool = False, max_fit: int = 100_000, seed: int = 0
    ) -> None:
        if n_components < 1:
            raise SettingsError("encoder 'pca' needs n_components >= 1.")
        self.n_components = n_components
        self.whiten = whiten
        self.max_fit = max_fit
        self.seed = seed

    def fit(self, images: np.ndarray, validation: np.ndarray | None = None) -> PCAEncoder:
        from sklearn.decomposition import PCA

        self.input_shape_ = tuple(images.shape[1:])
        x = sample_matrix(images, self.max_fit, self.seed)
        k = min(self.n_components, x.shape[0], x.shape[1])
        self.pca_ = PCA(n_components=k, whiten=self.whiten, random_state=self.seed).fit(x)
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        return map_batches(images, self.pca_.transform, int(self.pca_.n_components_))

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        p = self.pca_
        np.savez(
            directory / "pca.npz",
            components_=p.components_,
            mean_=p.mean_,
            explained_variance_=p.explained_variance_,
            input_shape=np.array(self.input_shape_),
        )

    def load(self, directory: Path) -> PCAEncoder:
        from sklearn.decomposition import PCA

        path = Path(directory) / "pca.npz"
        state = read_npz(path, f"encoder 'pca': {path.name}", PCA_KEYS)  # each member read once
        components = state["components_"]
        if components.ndim != 2 or state["mean_"].shape != components.shape[1:]:
            raise DataError(f"encoder 'pca': {path.name} holds arrays that do not fit together.")
        pca = PCA(n_components=len(components), whiten=self.whiten)
        pca.components_ = components
        pca.mean_ = state["mean_"]
        pca.explained_variance_ = state["explained_variance_"]
        pca.n_components_ = len(components)
        pca.n_features_in_ = components.shape[1]
        self.input_shape_ = tuple(int(v) for v in state["input_shape"])
        self.pca_ = pca
        return self


@hookimpl
def register_encoders(register):
    register("flatten", FlattenEncoder, summary="raw pixels scaled to [0, 1] (no learning)")
    register(
        "pca", PCAEncoder, summary="principal components of the pixels or of the previous features"
    )
