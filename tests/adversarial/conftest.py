"""Fixtures for the attack and fault tests: a finished digits run to copy and tamper with."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def pristine_run(tmp_path_factory) -> Path:
    """A finished digits -> pca -> kmeans run (no plots); copy it before changing anything."""
    from imgclust.engine.config import resolve_config
    from imgclust.engine.runner import execute
    from imgclust.stages.host import get_registry, reset_host

    reset_host()
    registry = get_registry()
    config = resolve_config(
        registry,
        dataset="digits",
        encoders=["pca"],
        clusterer="kmeans",
        sets=["encoder.n_components=8", "clusterer.n_clusters=10", "dataset.limit=300"],
    )
    result = execute(registry, config, tmp_path_factory.mktemp("runs"), plots=False)
    reset_host()
    return result.path


@pytest.fixture
def run_copy(pristine_run: Path, tmp_path: Path) -> Path:
    """A private copy of the finished run, free to tamper with."""
    target = tmp_path / pristine_run.name
    shutil.copytree(pristine_run, target)
    return target
