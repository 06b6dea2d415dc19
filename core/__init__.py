"""imgclust: cluster unlabelled images with neural networks, one plugin per stage.

Importing this package is cheap: heavy libraries load only when a stage that needs them runs.

From Python::

    import imgclust
    run = imgclust.run(dataset="digits", encoders=["pca"], clusterer="kmeans")
    pipe = imgclust.Pipeline([imgclust.get_encoder("pca", n_components=20)],
                             imgclust.get_clusterer("kmeans", n_clusters=10)).fit(images)
    pipe.save("my-pipeline"); imgclust.load("my-pipeline").predict(new_images)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:  # one place holds the version: pyproject.toml, read back from the installed metadata
    __version__ = version("imgclust")
except PackageNotFoundError:  # pragma: no cover - run from a source tree that is not installed
    __version__ = "0+unknown"

from imgclust import moved

moved.install()  # the previous release's import paths, with a warning naming the new one

_LAZY = {
    "run": "imgclust.api",
    "Run": "imgclust.api",
    "get_dataset": "imgclust.api",
    "get_encoder": "imgclust.api",
    "get_clusterer": "imgclust.api",
    "get_refiner": "imgclust.api",
    "load": "imgclust.api",
    "Pipeline": "imgclust.estimators",
    "Stage": "imgclust.engine.stage",
    "ImageSet": "imgclust.stages.interfaces",
    "Dataset": "imgclust.stages.interfaces",
    "Encoder": "imgclust.stages.interfaces",
    "Clusterer": "imgclust.stages.interfaces",
    "Refiner": "imgclust.stages.interfaces",
    "SklearnClusterer": "imgclust.kit.sklearn",
    "ImgclustError": "imgclust.errors",
    "DataError": "imgclust.errors",
    "PluginError": "imgclust.errors",
    "SettingsError": "imgclust.errors",
    "hookimpl": "imgclust.stages.hookspecs",
    "get_registry": "imgclust.stages.host",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import public names on first use, so that ``import imgclust`` stays fast."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'imgclust' has no attribute {name!r}")
    import importlib

    loaded = importlib.import_module(module)
    return loaded if module == f"imgclust.{name}" else getattr(loaded, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
