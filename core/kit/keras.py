"""Importing Keras for the stages that train networks: on first use only, TensorFlow backend
unless the user chose another, and without TensorFlow's chatter on stderr (its native start-up
notices, and its Python warnings such as "triggered tf.function retracing"), also for stages
that import Keras, TensorFlow or JAX themselves (:func:`framework_chatter_silenced`).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

#: The deep-learning frameworks' Python loggers: their warnings (retracing, absl's notes on
#: saving) are about the frameworks' internals, not anything a user of imgclust can act on.
FRAMEWORK_LOGGERS = ("tensorflow", "absl", "keras", "jax")
#: Modules whose Python warnings are the frameworks' own (``warnings`` matches the module the
#: warning is attributed to): Keras's notes on how a layer was built, TensorFlow's deprecations,
#: numba's "cannot cache compiled function" as UMAP's nearest-neighbour search compiles.
FRAMEWORK_MODULES = (
    r"(keras|tf_keras|tensorflow|absl|jax|jaxlib|torch|numba|pynndescent|umap)(\.|$)"
)
#: Packages whose import writes native notices (oneDNN, CUDA drivers) to stderr, before any log
#: level applies: imported with file descriptor 2 silenced, by whichever stage imports them.
NOISY_IMPORTS = ("tensorflow", "keras")


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 to /dev/null for a while.

    TensorFlow's C++ runtime logs CUDA and oneDNN notices before its log level applies; Python
    exceptions are unaffected. ``IMGCLUST_DEBUG=1`` keeps everything.
    """
    if os.environ.get("IMGCLUST_DEBUG"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters)
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def import_keras() -> Any:
    """Import and return ``keras`` (TensorFlow backend unless ``KERAS_BACKEND`` says otherwise)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "keras" not in sys.modules:
        with native_stderr_silenced():
            import keras  # noqa: F401
    tensorflow_warnings_silenced()
    return sys.modules["keras"]


def tensorflow_warnings_silenced() -> None:
    """Keep TensorFlow's Python log to errors: its warnings (retracing, deprecations) are about
    TensorFlow's internals, not anything a user can act on. ``IMGCLUST_DEBUG=1`` keeps them."""
    if "tensorflow" in sys.modules and not os.environ.get("IMGCLUST_DEBUG"):
        logging.getLogger("tensorflow").setLevel(logging.ERROR)


@contextlib.contextmanager
def framework_chatter_silenced() -> Iterator[None]:
    """Keep the frameworks' notices off the terminal while a command or a run works, whichever
    stage imported Keras, TensorFlow or JAX and however: TensorFlow's native log level is set
    before it loads, the frameworks' Python loggers show errors only and Python warnings raised
    in their modules are ignored; the loggers' levels and the warning filters are restored
    afterwards. ``IMGCLUST_DEBUG=1`` keeps everything."""
    if os.environ.get("IMGCLUST_DEBUG"):
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    loggers = [logging.getLogger(name) for name in FRAMEWORK_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    finder = QuietImports()
    sys.meta_path.insert(0, finder)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=FRAMEWORK_MODULES)
            yield
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class QuietImports(importlib.abc.MetaPathFinder):
    """Finds :data:`NOISY_IMPORTS` as the other finders do, and has them executed with native
    stderr silenced (their native start-up notices ignore ``TF_CPP_MIN_LOG_LEVEL``)."""

    def find_spec(
        self, fullname: str, path: Any, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        """The usual spec of a noisy package, with a loader that silences its import."""
        if fullname not in NOISY_IMPORTS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = QuietLoader(spec.loader)
                return spec
        return None


class QuietLoader(importlib.abc.Loader):
    """Runs another loader with native stderr silenced; the module keeps the real loader."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        """What the real loader creates (None: the default module)."""
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        """Execute the module as its own loader does, its native notices silenced."""
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        with native_stderr_silenced():
            self.loader.exec_module(module)
