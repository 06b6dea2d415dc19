"""Importing umap-learn for the stages and plots that use it: on first use only, without the
TensorFlow import its package would add, and with its compiled code cached across runs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imgclust.io.imagecache import user_cache_dir


def import_umap() -> Any:
    """Import umap-learn with its compiled code cached, and without its optional ParametricUMAP
    where that would import TensorFlow.

    ``umap/__init__`` imports ``umap.parametric_umap`` (and so TensorFlow, seconds of start-up)
    only to offer that class; unless TensorFlow is loaded already, the submodule is hidden while
    imgclust imports umap, then the hiding is undone so that an explicit ``import
    umap.parametric_umap`` still works. The cache applies either way: a run whose autoencoder
    loaded TensorFlow loads UMAP's machine code instead of compiling it again.
    """
    # pynndescent's functions that hold global arrays compile anew in each process, as designed:
    # numba's "Cannot cache" warning about them is kept off the terminal, even where umap was
    # imported before imgclust.
    warnings.filterwarnings("ignore", message=r"Cannot cache compiled function")
    if "umap" in sys.modules:
        import umap

        return umap
    hidden = "umap.parametric_umap"
    hide = "tensorflow" not in sys.modules
    if hide:
        sys.modules[hidden] = None  # type: ignore[assignment]  # makes that import fail quietly
    try:
        with numba_caching(), warnings.catch_warnings():
            warnings.simplefilter("ignore", ImportWarning)
            import umap
    finally:
        if hide and sys.modules.get(hidden, 0) is None:
            del sys.modules[hidden]
    return umap


def numba_cache_dir() -> Path:
    """Where numba keeps the machine code it compiled for UMAP: the user's imgclust cache."""

    return user_cache_dir() / "numba"


@contextlib.contextmanager
def numba_caching() -> Iterator[None]:
    """While umap-learn is imported, its numba functions are compiled with ``cache=True`` into
    :func:`numba_cache_dir`, so later processes load them instead of compiling for seconds.

    umap-learn declares almost none of its functions cacheable; numba compiles them lazily, so
    setting the default while the modules are imported (when the decorators run) is enough.
    ``NUMBA_CACHE_DIR``, when set, is respected; a cache that cannot be written only costs time.
    """
    if "umap" in sys.modules:
        yield
        return
    if not os.environ.get("NUMBA_CACHE_DIR"):
        folder = numba_cache_dir()
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(folder)
    import numba

    if not getattr(numba.config, "CACHE_DIR", ""):
        # numba.config defines its names at import from the environment, unseen by mypy
        numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]  # type: ignore[attr-defined]
    originals = numba.njit, numba.jit
    numba.njit, numba.jit = cache_by_default(numba.njit), cache_by_default(numba.jit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "cannot cache function ...": compiled as before
            yield
    finally:
        numba.njit, numba.jit = originals


def cache_by_default(decorator: Any) -> Any:
    """A numba decorator whose ``cache`` setting defaults to True."""

    @functools.wraps(decorator)
    def cached(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cache", True)
        return decorator(*args, **kwargs)

    return cached
