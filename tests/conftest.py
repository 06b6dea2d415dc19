"""Shared fixtures: bundled plugins only, a CLI runner, temporary run folders, real MNIST if set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C works in the tests however they were started: a shell that starts a job in the
    background without job control (``cmd &`` in a script, as CI may) starts it with SIGINT
    ignored, which the CLI then keeps ignoring, as it should for a user's ``nohup``; the tests
    that send Ctrl-C to a run, in process or to a child, need it delivered."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

os.environ["IMGCLUST_LOAD_PLUGINS"] = ""  # bundled plugins only, whatever else is installed
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("IMGCLUST_PLOT_MAP", "pca")  # UMAP maps cost ~20 s of compiling per run


@pytest.fixture(autouse=True)
def _fresh_plugin_host():
    """Each test sees plugins loaded afresh, so registering test plugins cannot leak."""
    from imgclust.stages.host import reset_host

    reset_host()
    yield
    reset_host()


@pytest.fixture
def registry():
    from imgclust.stages.host import get_registry

    return get_registry()


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def cli():
    """Call the CLI in-process: ``result = cli("run", "--dataset", "digits", ...)``.

    Returns an object with ``exit_code``, ``stdout`` and ``stderr`` as the real console script
    produces them (one-line errors included).
    """
    from imgclust.cli.app import main

    class Result:
        def __init__(self, code: int, stdout: str, stderr: str) -> None:
            self.exit_code, self.stdout, self.stderr = code, stdout, stderr

    def invoke(*args: str) -> Result:
        import contextlib
        import io

        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(a) for a in args])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return Result(code, out.getvalue(), err.getvalue())

    return invoke


@pytest.fixture
def mnist_path() -> Path:
    """Real MNIST from IMGCLUST_MNIST; tests that need it are skipped where it is not set."""
    value = os.environ.get("IMGCLUST_MNIST")
    if not value or not Path(value).exists():
        pytest.skip("IMGCLUST_MNIST is not set to a copy of MNIST")
    return Path(value)


@pytest.fixture(scope="session")
def digits_pca() -> dict:
    """Digits' images, PCA 30 features, k-means labels (ACC about 0.79) and the true classes."""
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    import imgclust

    data = imgclust.get_dataset("digits").load("all")
    flat = data.images.reshape(len(data.images), -1).astype(np.float32) / 255
    features = PCA(30, random_state=0).fit_transform(flat).astype(np.float32)
    kmeans = KMeans(10, n_init=10, random_state=0).fit_predict(features)
    return {
        "images": data.images,
        "features": features,
        "kmeans": kmeans.astype(np.int64),
        "truth": np.asarray(data.labels, dtype=np.int64),
    }
