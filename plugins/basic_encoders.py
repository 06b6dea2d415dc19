"""Encoders without a neural network: ``flatten`` (raw pixels) and ``pca``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from imgclust.arrays import as_matrix
from imgclust.errors import SettingsError
from imgclust.hookspecs import hookimpl


class FlattenEncoder:
    """Raw pixels scaled to [0, 1], one row per image: the baseline feature."""

    def fit(self, images: np.ndarray, validation: np.ndarray | None = None) -> FlattenEncoder:
        self.input_shape_ = tuple(images.shape[1:])
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        return as_matrix(images)

    def save(self, directory: Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "flatten.json").write_text(json.dumps({"input_shape": self.input_shape_}))

    def load(self, directory: Path) -> FlattenEncoder:
        self.input_shape_ = tuple(json.loads((Path(directory) / "flatten.json").read_text())["input_shape"])
        return self


class PCAEncoder:
    """Principal components of the flattened input, fitted on at most ``max_fit`` rows.

    Parameters
    ----------
    n_components : int
        Number of components kept (capped at the input's size).
    whiten : bool
        Scale components to unit variance.
    max_fit : int
        Fit on a fixed-seed sample of at most this many rows; transform every row.
    seed : int
        Seed of the sample and the randomized solver.
    """

    def __init__(self, n_components: int = 50, whiten: bool = False, max_fit: int = 100_000, seed: int = 0) -> None:
        if n_components < 1:
            raise SettingsError("encoder 'pca' needs n_components >= 1.")
        self.n_components = n_components
        self.whiten = whiten
        self.max_fit = max_fit
        self.seed = seed

    def fit(self, images: np.ndarray, validation: np.ndarray | None = None) -> PCAEncoder:
        from sklearn.decomposition import PCA

        self.input_shape_ = tuple(images.shape[1:])
        index = np.arange(len(images))
        if len(index) > self.max_fit:
            index = np.sort(np.random.default_rng(self.seed).choice(index, self.max_fit, replace=False))
        x = as_matrix(images[index] if len(index) < len(images) else images)
        k = min(self.n_components, x.shape[0], x.shape[1])
        self.pca_ = PCA(n_components=k, whiten=self.whiten, random_state=self.seed).fit(x)
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        return self.pca_.transform(as_matrix(images)).astype(np.float32)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        p = self.pca_
        np.savez(directory / "pca.npz", components_=p.components_, mean_=p.mean_,
                 explained_variance_=p.explained_variance_, input_shape=np.array(self.input_shape_))

    def load(self, directory: Path) -> PCAEncoder:
        from sklearn.decomposition import PCA

        with np.load(Path(directory) / "pca.npz", allow_pickle=False) as state:
            pca = PCA(n_components=len(state["components_"]), whiten=self.whiten)
            pca.components_ = state["components_"]
            pca.mean_ = state["mean_"]
            pca.explained_variance_ = state["explained_variance_"]
            pca.n_components_ = len(state["components_"])
            pca.n_features_in_ = state["components_"].shape[1]
            self.input_shape_ = tuple(int(v) for v in state["input_shape"])
        self.pca_ = pca
        return self


@hookimpl
def register_encoders(register):
    register("flatten", FlattenEncoder, summary="raw pixels scaled to [0, 1] (no learning)")
    register("pca", PCAEncoder, summary="principal components of the pixels or of the previous features")
