"""imgclust: cluster unlabelled images with neural networks, one plugin per stage.

Importing this package is cheap: heavy libraries load only when a stage that needs them runs.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "ImageSet": "imgclust.interfaces",
    "Dataset": "imgclust.interfaces",
    "Encoder": "imgclust.interfaces",
    "Clusterer": "imgclust.interfaces",
    "SklearnClusterer": "imgclust.sklearn_adapter",
    "Pipeline": "imgclust.pipeline",
    "ImgclustError": "imgclust.errors",
    "hookimpl": "imgclust.hookspecs",
    "get_registry": "imgclust.plugins_host",
    "load": "imgclust.persist",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import public names on first use, so that ``import imgclust`` stays fast."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'imgclust' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
