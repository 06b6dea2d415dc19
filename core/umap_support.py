"""Importing umap-learn for the stages and plots that use it: on first use only, and without the
TensorFlow import its package would add.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any


def import_umap() -> Any:
    """Import umap-learn without its optional ParametricUMAP, which would import TensorFlow.

    ``umap/__init__`` imports ``umap.parametric_umap`` (and so TensorFlow, seconds of start-up)
    only to offer that class; while imgclust imports umap the submodule is hidden, then the
    hiding is undone so that an explicit ``import umap.parametric_umap`` still works.
    """
    if "umap" in sys.modules or "tensorflow" in sys.modules:
        import umap

        return umap
    hidden = "umap.parametric_umap"
    sys.modules[hidden] = None  # type: ignore[assignment]  # makes that import fail quietly
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImportWarning)
            import umap
    finally:
        if sys.modules.get(hidden, 0) is None:
            del sys.modules[hidden]
    return umap
