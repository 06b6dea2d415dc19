"""TensorFlow's and Keras's notices (retracing, native start-up lines, Keras warnings) stay off the
terminal unless debugging, for the bundled stages and for stages that import Keras themselves."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# what the self-label recipes did: predict with fresh models of one shape, enough to retrace
RETRACING = """
import numpy as np
from imgclust.kit.keras import import_keras
keras = import_keras()
for size in range(4, 11):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.predict(np.zeros((size, 3), "float32"), verbose=0)
"""


@pytest.mark.slow
@pytest.mark.parametrize("debug", [False, True])
def test_tensorflow_retracing_warnings_stay_off_stderr(debug):
    env = {k: v for k, v in os.environ.items() if k != "IMGCLUST_DEBUG"}
    env["KERAS_BACKEND"] = "tensorflow"
    if debug:
        env["IMGCLUST_DEBUG"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", RETRACING], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert ("retracing" in done.stderr) is debug, done.stderr


# A third-party stage that imports Keras itself (not through imgclust.kit.import_keras), builds a
# layer the way Keras warns about and predicts with fresh models of one shape, enough to retrace;
# registered in the process, then the command line (or imgclust.run) clusters a few digits with it.
DIRECT_KERAS_STAGE = """
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import imgclust
from imgclust.cli.app import main
from imgclust.stages.hookspecs import hookimpl
from imgclust.stages.host import get_host


class KerasMeans:
    def fit(self, images, validation=None):
        return self

    def transform(self, images):
        import keras

        rows = np.asarray(images, "float32").mean(axis=(2, 3))
        for size in range(4, 11):
            model = keras.Sequential([keras.Input((rows.shape[1],)), keras.layers.Dense(2)])
            model.predict(rows[:size], verbose=0)
        keras.layers.Dense(2, input_shape=(3,))
        return rows

    def save(self, directory):
        Path(directory).mkdir(parents=True, exist_ok=True)

    def load(self, directory):
        return self


def register_encoders(register):
    register("keras-means", KerasMeans)


get_host().register(SimpleNamespace(register_encoders=hookimpl(register_encoders)), "direct")
runs, how = sys.argv[1], sys.argv[2]
if how == "cli":
    main(["run", "--dataset", "digits", "--encoder", "keras-means", "--clusterer", "kmeans",
          "--set", "dataset.limit=120", "--runs-dir", runs, "--no-plots"])
else:
    imgclust.run(dataset={"name": "digits", "limit": 120}, encoders=["keras-means"],
                 clusterer="kmeans", runs_dir=runs, plots=False)
"""
#: What TensorFlow and Keras print when nothing keeps them quiet: native start-up notices, the
#: retracing warning (TensorFlow's logger) and a Keras warning (Python's warnings).
CHATTER = ("absl::InitializeLog", "oneDNN", "retracing", "input_shape")
#: Of those, what every TensorFlow build prints: the oneDNN notice depends on the build and the
#: processor (TensorFlow 2.21 on this CPU does not print it).
ALWAYS_HEARD = ("absl::InitializeLog", "retracing", "input_shape")


@pytest.mark.slow
@pytest.mark.parametrize("how, debug", [("cli", False), ("api", False), ("cli", True)])
def test_a_stage_that_imports_keras_itself_stays_quiet_too(how, debug, tmp_path):
    """Whichever stage imports Keras and however, a run's stderr holds imgclust's own lines."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("IMGCLUST_DEBUG", "TF_CPP_MIN_LOG_LEVEL")
    }
    env["KERAS_BACKEND"] = "tensorflow"
    if debug:
        env["IMGCLUST_DEBUG"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", DIRECT_KERAS_STAGE, str(tmp_path / "runs"), how],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "runs").iterdir())) == 1
    heard = [words for words in CHATTER if words in done.stderr]
    if debug:  # IMGCLUST_DEBUG lets the frameworks speak
        assert set(ALWAYS_HEARD) <= set(heard), done.stderr
    else:
        assert heard == [], done.stderr


def test_framework_loggers_and_warnings_are_quiet_only_during_a_run(tmp_path, monkeypatch):
    """During imgclust.run a stage's framework warnings and log records are dropped; the
    caller's logger levels and warning filters are as they were before and after."""
    import logging
    import warnings
    from types import SimpleNamespace

    import numpy as np

    import imgclust
    from imgclust.stages.hookspecs import hookimpl
    from imgclust.stages.host import get_host

    monkeypatch.delenv("IMGCLUST_DEBUG", raising=False)
    seen: dict[str, object] = {}

    class Chatty:
        """Raises a warning as Keras does (from its own module) and logs as TensorFlow does."""

        def fit(self, images, validation=None):
            return self

        def transform(self, images):
            with warnings.catch_warnings(record=True) as caught:
                warnings.warn_explicit("retracing", UserWarning, "layer.py", 1, module="keras.src")
                warnings.warn_explicit(  # numba, as UMAP's neighbour search compiles
                    "Cannot cache", UserWarning, "pynndescent_.py", 1, module="pynndescent.x"
                )
                warnings.warn_explicit("mine", UserWarning, "mine.py", 1, module="my_plugin")
            seen["warnings"] = [str(w.message) for w in caught]
            seen["level"] = logging.getLogger("tensorflow").getEffectiveLevel()
            return np.asarray(images, np.float32).reshape(len(images), -1)

        def save(self, directory):
            pass

        def load(self, directory):
            return self

    def register_encoders(register):
        register("chatty", Chatty)

    get_host().register(SimpleNamespace(register_encoders=hookimpl(register_encoders)), "chat")
    logging.getLogger("tensorflow").setLevel(logging.INFO)
    try:
        imgclust.run(
            dataset={"name": "digits", "limit": 60},
            encoders=["chatty"],
            clusterer="kmeans",
            settings={"clusterer": {"n_clusters": 3}},
            runs_dir=tmp_path,
            plots=False,
        )
        assert seen["warnings"] == ["mine"]  # a plugin's own warning still reaches its author
        assert seen["level"] == logging.ERROR
        assert logging.getLogger("tensorflow").level == logging.INFO
    finally:
        logging.getLogger("tensorflow").setLevel(logging.NOTSET)
