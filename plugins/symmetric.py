"""The ``sym-pca`` encoder: principal components made invariant to the image set's own
symmetries (a mirror, flips, quarter turns), as measured by ``imgclust.kit.invariances``.

For the group G that the kept exact transformations generate, each image ``x`` gets
``[mean_g f(g x), mean_g |f(g x) - mean_g f(g x)|]`` where ``f`` is PCA fitted on the images
and their transformed copies: for a mirror alone, ``[(f(x) + f(m x)) / 2, |f(x) - f(m x)| / 2]``.
A mirrored image then gets exactly the features of the original, so clusters no longer split
by which way an object faces; the second half keeps how asymmetric each image is. Where the
set has no such symmetry the encoder is plain PCA.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.errors import DataError, ImgclustError, SettingsError
from imgclust.kit import (
    DISCRETE,
    TRANSFORMS,
    Element,
    apply_element,
    atomic,
    decide,
    hookimpl,
    map_batches,
    read_json,
    read_npz,
    sample_matrix,
    symmetry_group,
)

STATE_FILE = "sym_pca.npz"
META_FILE = "sym_pca.json"
#: most components and input numbers a saved state may claim (a bound on what load allocates)
MAX_COMPONENTS = 4096
MAX_INPUT = 1 << 24


class SymmetricPCA:
    """PCA features averaged over the image set's symmetries (mirror, flips, quarter turns),
    with their spread beside them; plain PCA where the set has none.

    Parameters
    ----------
    n_components : int
        Principal components of the images (the features have twice as many when the set has
        a symmetry).
    max_fit : int
        PCA is fitted on at most this many images, transformed copies included.
    seed : int
        Seed of the fit's sample, the solver and, outside a run, the invariance measurement.
    """

    def __init__(self, n_components: int = 50, max_fit: int = 100_000, seed: int = 0) -> None:
        if n_components < 1 or max_fit < 2:
            raise SettingsError("encoder 'sym-pca' needs n_components >= 1 and max_fit >= 2.")
        self.n_components = int(n_components)
        self.max_fit = int(max_fit)
        self.seed = int(seed)
        #: set by a run (UsesInvariances); None: measured on the images given to fit
        self.invariances: list[str] | None = None
        self.group_: list[Element] = [(0, False)]
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None
        self.input_shape_: tuple[int, ...] | None = None

    def fit(self, images: np.ndarray, validation: np.ndarray | None = None) -> SymmetricPCA:
        """Find the symmetry group (given, or measured) and PCA of the images and their copies."""
        from sklearn.decomposition import PCA

        images = _as_images(images)
        kept = self.invariances
        if kept is None:
            kept = list(decide(images, "auto", seed=self.seed).kept)
        height, width = images.shape[1:3]
        self.group_ = symmetry_group([k for k in kept if k in DISCRETE], height == width)
        self.input_shape_ = tuple(int(v) for v in images.shape[1:])
        per_image = max(1, self.max_fit // len(self.group_))
        sample = sample_matrix(images, per_image, self.seed)  # the sample pca draws
        if len(self.group_) > 1:
            shaped = sample.reshape(len(sample), *self.input_shape_)
            sample = np.concatenate(
                [apply_element(shaped, e).reshape(len(shaped), -1) for e in self.group_]
            )
        k = min(self.n_components, sample.shape[0], sample.shape[1])
        pca = PCA(n_components=k, random_state=self.seed).fit(sample)  # the solver pca uses
        self.mean_ = pca.mean_.astype(np.float32)
        self.components_ = pca.components_.astype(np.float32)
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        """(N, D) float32: the symmetrised components, then their spread (D = 2k, or k).
        Without symmetries the projection is scikit-learn's own (``x @ W.T - mean @ W.T``) in
        pca's batches, so that the features are pca's to the last bit and recipes built on
        either agree exactly."""
        if self.components_ is None or self.mean_ is None:
            raise ImgclustError("encoder 'sym-pca' is not fitted: call fit() first.")
        images = _as_images(images)
        if tuple(images.shape[1:]) != self.input_shape_:
            raise DataError(
                f"encoder 'sym-pca' was fitted on {self.input_shape_} images; got "
                f"{tuple(images.shape[1:])}."
            )
        components, mean = self.components_, self.mean_
        offset = mean.reshape(1, -1) @ components.T
        shape = images.shape[1:]

        def features(rows: np.ndarray) -> np.ndarray:
            if len(self.group_) == 1:  # scikit-learn's own projection, as pca's
                projected = rows @ components.T
                projected -= offset
                return projected
            shaped = rows.reshape(len(rows), *shape)
            stacked = np.stack(
                [
                    (apply_element(shaped, e).reshape(len(rows), -1) - mean) @ components.T
                    for e in self.group_
                ]
            )
            centre = stacked.mean(axis=0)
            return np.concatenate([centre, np.abs(stacked - centre).mean(axis=0)], axis=1)

        k = len(components)
        return map_batches(images, features, 2 * k if len(self.group_) > 1 else k)

    def save(self, directory: Path) -> None:
        """The mean and components as a plain .npz, the group and shape as JSON."""
        if self.components_ is None or self.mean_ is None:
            raise ImgclustError("encoder 'sym-pca' is not fitted: nothing to save.")
        directory = Path(directory)
        atomic.write_json(
            directory / META_FILE,
            {
                "group": [[int(t), bool(m)] for t, m in self.group_],
                "input_shape": list(self.input_shape_ or ()),
                "invariances": list(self.invariances or []),
            },
        )
        atomic.write_npz(
            directory / STATE_FILE, {"mean": self.mean_, "components": self.components_}
        )

    def load(self, directory: Path) -> SymmetricPCA:
        """Read what ``save`` wrote, checking every size before it is used (no pickle)."""
        directory = Path(directory)
        try:
            meta = read_json(directory / META_FILE, f"encoder 'sym-pca': {META_FILE}")
            group = [(int(t) % 4, bool(m)) for t, m in meta["group"]]
            shape = tuple(int(v) for v in meta["input_shape"])
            invariances = [str(v) for v in meta.get("invariances") or [] if v in TRANSFORMS]
            if not 1 <= len(group) <= 8 or len(shape) != 3 or min(shape) < 1:
                raise ValueError("the group or the input shape is damaged")
            size = math.prod(shape)
            path = directory / STATE_FILE
            with zipfile.ZipFile(path) as archive:
                _check_header(archive, "mean", (size,), size)
                _check_header(archive, "components", None, size)
            state = read_npz(path, f"encoder 'sym-pca': {STATE_FILE}", ("mean", "components"))
            mean = np.asarray(state["mean"], dtype=np.float32)
            components = np.asarray(state["components"], dtype=np.float32)
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            reason = " ".join(str(exc).split())[:200]
            raise DataError(f"encoder 'sym-pca': cannot read its saved state: {reason}") from None
        self.group_, self.input_shape_, self.invariances = group, shape, invariances
        self.mean_, self.components_ = mean, components
        return self


def _check_header(
    archive: zipfile.ZipFile, key: str, shape: tuple[int, ...] | None, size: int
) -> None:
    """Refuse an array of the wrong shape before it is read into memory."""
    found = _npz_shape(archive, key)
    if shape is not None and found != shape:
        raise ValueError(f"{key} has shape {found}, expected {shape}")
    if shape is None and (
        len(found) != 2 or found[1] != size or not 1 <= found[0] <= MAX_COMPONENTS
    ):
        raise ValueError(f"{key} has shape {found}, expected (k <= {MAX_COMPONENTS}, {size})")
    if size > MAX_INPUT:
        raise ValueError(f"images of {size} numbers exceed the limit of {MAX_INPUT}")


def _npz_shape(archive: zipfile.ZipFile, key: str) -> tuple[int, ...]:
    """The shape an .npz member declares in its header, read without loading its data."""
    from numpy.lib import format as npy_format

    with archive.open(f"{key}.npy") as member:
        version = npy_format.read_magic(member)
        reader = (
            npy_format.read_array_header_1_0
            if version == (1, 0)
            else npy_format.read_array_header_2_0
        )
        shape, _, dtype = reader(member)
    if dtype.hasobject:
        raise ValueError(f"{key} holds Python objects")
    return tuple(int(v) for v in shape)


def _as_images(images: Any) -> np.ndarray:
    """(N, H, W, C) images; anything else is a one-line error."""
    if getattr(images, "ndim", 0) == 3:
        images = np.asarray(images)[..., None]
    if getattr(images, "ndim", 0) != 4 or len(images) == 0:
        raise DataError(
            "encoder 'sym-pca' needs images (N, H, W, C) and must come first in the chain; got "
            f"shape {tuple(getattr(images, 'shape', ()))}."
        )
    return images


@hookimpl
def register_encoders(register):
    register(
        "sym-pca",
        SymmetricPCA,
        summary="PCA averaged over the image set's measured symmetries (mirror, flips, quarter "
        "turns), with their spread; plain PCA where it has none",
    )
