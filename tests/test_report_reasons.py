"""Why ``reconstructions.png`` is skipped, in words that fit the case: a pipeline without an
autoencoder says so, rather than blaming a missing fitted encoder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from imgclust.report.plots.figure import SkipPlot
from imgclust.report.plots.inputs import NO_AUTOENCODER
from imgclust.report.plots.reconstructions import reconstructor
from imgclust.stages.hookspecs import hookimpl

SMALL = [
    "--dataset", "digits", "--set", "dataset.limit=200", "--clusterer", "kmeans",
    "--set", "clusterer.n_init=1", "--no-plots", "--json",
]  # fmt: skip
REASON = "skipped   reconstructions.png: "


@pytest.fixture(autouse=True)
def _pca_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGCLUST_PLOT_MAP", "pca")


class Rebuilds:
    """A tiny encoder that reconstructs, saved as JSON."""

    def fit(self, images, validation=None):
        return self

    def transform(self, images):
        return images.reshape(len(images), -1)[:, :4].astype(np.float32)

    def reconstruct(self, images):
        return images.astype(np.float32) / 255

    def save(self, directory):
        (Path(directory) / "rebuilds.json").write_text("{}")

    def load(self, directory):
        return self


def skip_line(stdout: str) -> str:
    [line] = [line for line in stdout.splitlines() if line.startswith(REASON)]
    return line[len(REASON) :]


def test_a_pipeline_of_pca_then_pca_says_it_has_no_autoencoder(cli, runs_dir):
    result = cli(
        "run", *SMALL, "--encoder", "pca", "--encoder", "pca", "--set",
        "encoder.0.n_components=20", "--set", "encoder.1.n_components=5", "--runs-dir", runs_dir,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = cli("report", json.loads(result.stdout)["run"])
    assert report.exit_code == 0, report.stderr
    assert skip_line(report.stdout) == NO_AUTOENCODER
    assert NO_AUTOENCODER == "no autoencoder in this pipeline (reconstructions need one)"


def test_an_autoencoder_whose_fitted_pipeline_is_gone_says_that(cli, runs_dir):
    from imgclust.stages.host import get_host

    get_host().register(
        SimpleNamespace(
            register_encoders=hookimpl(lambda register: register("rebuilds", Rebuilds))
        ),
        "test-rebuilds",
    )
    result = cli("run", *SMALL, "--encoder", "rebuilds", "--runs-dir", runs_dir)
    assert result.exit_code == 0, result.stderr
    folder = Path(json.loads(result.stdout)["run"])
    assert "reconstructions.png" in cli("report", folder).stdout.split(REASON)[0]  # drawn
    shutil.rmtree(folder / "pipeline")
    report = cli("report", folder)
    assert report.exit_code == 0, report.stderr
    assert skip_line(report.stdout) == (
        "the run folder keeps no fitted autoencoder (pipeline/) (the earlier one is kept)"
    )


def test_fitted_encoders_that_do_not_reconstruct_are_no_autoencoder():
    pca = ("pca", SimpleNamespace(transform=lambda x: x))
    with pytest.raises(SkipPlot, match=r"^no autoencoder in this pipeline"):
        reconstructor([pca, pca], missing="not used when encoders are given")
    with pytest.raises(SkipPlot, match="^why it is empty$"):
        reconstructor([], missing="why it is empty")
