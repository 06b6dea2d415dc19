"""TensorFlow's Python warnings (retracing and the like) stay off the terminal unless debugging."""

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
