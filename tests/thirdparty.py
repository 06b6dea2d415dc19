"""Build third-party plugins as real installed distributions (a ``*.dist-info`` on sys.path)."""

from __future__ import annotations

import textwrap
from pathlib import Path


def make_distribution(
    root: Path, dist: str, module: str, source: str, version: str = "1.0"
) -> Path:
    """Write ``module.py`` and ``dist-version.dist-info`` declaring it in the ``imgclust`` group."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[imgclust]\n{dist} = {module}\n")
    return root


MEDIAN_CLUSTERER = '''
from imgclust import hookimpl


class SplitByMedian:
    """Two clusters: rows whose first feature is above or below its median."""

    def __init__(self, feature: int = 0) -> None:
        self.feature = feature

    def fit_predict(self, features):
        import numpy as np

        self.threshold_ = float(np.median(features[:, self.feature]))
        return self.predict(features)

    def predict(self, features):
        return (features[:, self.feature] > self.threshold_).astype("int64")

    def save(self, directory):
        pass

    def load(self, directory):
        return self


@hookimpl
def register_clusterers(register):
    register("median-split", SplitByMedian, summary="two clusters split at a feature's median")
'''
