"""The one public namespace for stage authors: what a dataset, encoder, clusterer or refiner plugin
builds on. Everything here keeps its name across releases; the rest of ``imgclust`` below the
top-level API is internal and may move.

- hooks and the image container: ``hookimpl``, ``ImageSet``, ``FileListing`` (what a
  ``list_files`` dataset returns)
- errors a user can act on: ``ImgclustError``, ``SettingsError``, ``DataError``
- settings: ``check_limit`` (a bounded count from a stage's keyword argument)
- Keras: ``import_keras`` (on first use), ``KerasAutoencoder`` (the autoencoder base),
  ``CODE_LAYER``, ``predict_in_batches``; UMAP: ``import_umap``
- scikit-learn: ``SklearnClusterer``, ``lazy_estimator``, ``PickleFormat`` (the adapter),
  ``NeighbourSelected`` (the adapter whose kept start is checked by neighbour information)
- arrays and memory: ``as_matrix``, ``map_batches``, ``sample_matrix``, ``sample_index``,
  ``to_float``, ``check_finite``, ``check_inflation``, ``inflation_cap``
- files a stage writes and reads: ``atomic`` (``write_json``, ``write_npy``, ``write_bytes``,
  ``write_text``: whole or not at all), ``read_npy``, ``read_npz`` (bounded readers),
  ``check_input_file`` (a named input checked before it is opened), ``read_csv_cell``,
  ``human`` (a byte count in words)
- image files and arrays for datasets: ``FolderReading``, ``DEFAULT_EXTENSIONS``, ``check_fit``,
  ``check_max_pixels``, ``check_mode``, ``check_size``, ``check_workers``,
  ``normalise_extensions``, ``load_arrays``, ``InMemoryImages``, ``IN_MEMORY``
- comparing clusterings without labels: ``neighbour_pairs``, ``neighbour_information``
- invariances measured from the images: ``decide``, ``apply_element``, ``symmetry_group``,
  ``Element``, ``TRANSFORMS``, ``DISCRETE``
"""

from __future__ import annotations

from imgclust.errors import DataError, ImgclustError, SettingsError
from imgclust.io import atomic
from imgclust.io.arrays import IN_MEMORY, InMemoryImages, load_arrays
from imgclust.io.bounded import read_json, read_npy, read_npz
from imgclust.io.images import (
    DEFAULT_EXTENSIONS,
    FolderReading,
    check_fit,
    check_max_pixels,
    check_mode,
    check_size,
    check_workers,
    normalise_extensions,
)
from imgclust.io.memory import check_inflation, human, inflation_cap
from imgclust.io.outputs import read_csv_cell
from imgclust.io.paths import check_input_file
from imgclust.kit.arrays import (
    as_matrix,
    check_finite,
    map_batches,
    sample_index,
    sample_matrix,
    to_float,
)
from imgclust.kit.autoencoder import CODE_LAYER, KerasAutoencoder, predict_in_batches
from imgclust.kit.criteria import neighbour_information, neighbour_pairs
from imgclust.kit.invariances import (
    DISCRETE,
    TRANSFORMS,
    Element,
    apply_element,
    decide,
    symmetry_group,
)
from imgclust.kit.keras import import_keras
from imgclust.kit.sklearn import PickleFormat, SklearnClusterer, lazy_estimator
from imgclust.kit.starts import SELECT, NeighbourSelected
from imgclust.kit.umap import import_umap
from imgclust.stages.hookspecs import hookimpl
from imgclust.stages.interfaces import FileListing, ImageSet
from imgclust.stages.settings import check_limit

__all__ = [
    "CODE_LAYER",
    "DEFAULT_EXTENSIONS",
    "DISCRETE",
    "IN_MEMORY",
    "SELECT",
    "TRANSFORMS",
    "DataError",
    "Element",
    "FileListing",
    "FolderReading",
    "ImageSet",
    "ImgclustError",
    "InMemoryImages",
    "KerasAutoencoder",
    "NeighbourSelected",
    "PickleFormat",
    "SettingsError",
    "SklearnClusterer",
    "apply_element",
    "as_matrix",
    "atomic",
    "check_finite",
    "check_fit",
    "check_inflation",
    "check_input_file",
    "check_limit",
    "check_max_pixels",
    "check_mode",
    "check_size",
    "check_workers",
    "decide",
    "hookimpl",
    "human",
    "import_keras",
    "import_umap",
    "inflation_cap",
    "lazy_estimator",
    "load_arrays",
    "map_batches",
    "neighbour_information",
    "neighbour_pairs",
    "normalise_extensions",
    "predict_in_batches",
    "read_npy",
    "read_json",
    "read_npz",
    "read_csv_cell",
    "sample_index",
    "sample_matrix",
    "symmetry_group",
    "to_float",
]
