"""Importing Keras for the stages that train networks: on first use only, TensorFlow backend
unless the user chose another, and without TensorFlow's chatter on stderr (its native start-up
notices, and its Python warnings such as "triggered tf.function retracing").
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any


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
