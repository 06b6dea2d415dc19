"""Settings read from signatures, converted from CLI strings, validated with one-line errors."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Literal

import pytest

from imgclust.errors import SettingsError
from imgclust.stages.settings import convert, resolve, settings_of


def factory(
    k: int = 10,
    rate: float = 0.5,
    verbose: bool = False,
    name: str = "x",
    size: tuple[int, int] | None = None,
    widths: tuple[int, ...] = (16, 2),
    kind: Literal["bce", "mse"] = "bce",
    limit: int | None = None,
):
    """A factory for tests.

    Parameters
    ----------
    k : int
        Number of clusters.
    rate : float
        A rate.
    """


def test_settings_come_from_the_signature_and_docstring():
    settings = settings_of(factory)
    assert list(settings) == ["k", "rate", "verbose", "name", "size", "widths", "kind", "limit"]
    assert settings["k"].default == 10 and settings["k"].help == "Number of clusters."
    assert settings["size"].type_name == "tuple[int, int] | None"


def test_settings_of_a_class_use_init():
    class Thing:
        def __init__(self, depth: int = 3) -> None:
            self.depth = depth

    assert settings_of(Thing)["depth"].annotation is int


@pytest.mark.parametrize(
    "value, annotation, expected",
    [
        ("12", int, 12),
        ("0.25", float, 0.25),
        ("3", float, 3.0),
        ("true", bool, True),
        ("no", bool, False),
        ("hello", str, "hello"),
        ("28x28", tuple[int, int] | None, (28, 28)),
        ("28,32", tuple[int, int] | None, (28, 32)),
        ("none", tuple[int, int] | None, None),
        ("32,64,128", tuple[int, ...], (32, 64, 128)),
        ([8, 4], tuple[int, ...], (8, 4)),
        ("mse", Literal["bce", "mse"], "mse"),
        ("7", int | None, 7),
        (5, float, 5.0),
    ],
)
def test_convert(value, annotation, expected):
    assert convert(value, annotation) == expected


@pytest.mark.parametrize(
    "value, annotation",
    [
        ("ten", int),
        ("1.5", int),
        ("maybe", bool),
        ("huber", Literal["bce", "mse"]),
        ("1,2,3", tuple[int, int]),
        (True, int),
    ],
)
def test_convert_rejects(value, annotation):
    with pytest.raises(ValueError):
        convert(value, annotation)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("30", 30),  # a count from the command line stays an int
        (30, 30),
        ("0.05", 0.05),  # a fraction
        (0.05, 0.05),
        ("1.0", 1.0),  # written as a decimal: a fraction (all of it), never the count 1
        (1.0, 1.0),
        ("none", None),
    ],
)
def test_count_or_fraction_keeps_what_was_written(value, expected):
    converted = convert(value, int | float | None)
    assert converted == expected and type(converted) is type(expected)


def test_a_count_or_fraction_setting_reaches_optics_as_an_int(cli, runs_dir):
    """scikit-learn's OPTICS refuses min_samples=30.0; an ``int | float`` setting passes 30."""
    from imgclust.kit.sklearn import SklearnClusterer, lazy_estimator
    from imgclust.stages.hookspecs import hookimpl
    from imgclust.stages.host import get_host

    def optics(min_samples: int | float = 5, min_cluster_size: int | float | None = None):
        """OPTICS: density clusters; counts or fractions of the points."""
        params = {"min_samples": min_samples, "min_cluster_size": min_cluster_size}
        return SklearnClusterer(lazy_estimator("sklearn.cluster", "OPTICS"), params, k_param=None)

    def register_clusterers(register):
        register("optics", optics)

    get_host().register(SimpleNamespace(register_clusterers=hookimpl(register_clusterers)), "op")
    sets = ["--set", "clusterer.min_samples=30", "--set", "clusterer.min_cluster_size=0.05"]
    args = ["run", "--dataset", "digits", "--encoder", "pca", "--clusterer", "optics", *sets]
    result = cli(*args, "--runs-dir", runs_dir, "--json", "--no-plots")
    assert result.exit_code == 0, result.stderr
    config = (next(runs_dir.iterdir()) / "config.toml").read_text()
    assert "min_samples = 30\n" in config and "min_cluster_size = 0.05\n" in config


def test_resolve_names_accepted_settings_for_unknown_ones():
    with pytest.raises(SettingsError, match=r"Unknown setting 'kk'.*Accepted: k, rate"):
        resolve("clusterer 'x'", factory, {"kk": 3})


def test_resolve_says_what_type_was_expected():
    with pytest.raises(SettingsError, match=r"clusterer 'x'\.k = 'many' is not a valid int"):
        resolve("clusterer 'x'", factory, {"k": "many"})


def test_required_settings_must_be_given():
    def needs_path(path: str, depth: int = 1):
        """Needs a path."""

    with pytest.raises(SettingsError, match="needs the setting"):
        resolve("dataset 'y'", needs_path, {})
    assert resolve("dataset 'y'", needs_path, {"path": "a", "depth": "2"}) == {
        "path": "a",
        "depth": 2,
    }


class TwoLineDoc:
    """A stage whose setting descriptions run over several lines.

    Parameters
    ----------
    weights : str | None
        Pretrained weights to start from: ``imagenet`` downloads them once into Keras's
        cache, a path reads a ``.weights.h5`` file, and none starts from random weights.
    depth : int
        Layers.
    """

    def __init__(self, weights: str | None = None, depth: int = 3) -> None:
        self.weights, self.depth = weights, depth


def test_a_description_over_several_lines_is_kept_whole():
    settings = settings_of(TwoLineDoc)
    assert settings["weights"].help == (
        "Pretrained weights to start from: ``imagenet`` downloads them once into Keras's "
        "cache, a path reads a ``.weights.h5`` file, and none starts from random weights."
    )
    assert settings["depth"].help == "Layers."


def test_list_shows_a_long_description_whole_and_wrapped(cli, monkeypatch):
    from types import SimpleNamespace

    from imgclust.stages.hookspecs import hookimpl
    from imgclust.stages.host import get_host

    monkeypatch.setenv("COLUMNS", "72")
    get_host().register(
        SimpleNamespace(
            register_encoders=hookimpl(lambda register: register("two-lines", TwoLineDoc))
        ),
        name="test-two-lines",
    )
    result = cli("list", "encoders")
    assert result.exit_code == 0, result.stderr
    block = result.stdout.split("two-lines", 1)[1].split("\n\n", 1)[0]
    shown = block[block.index("    weights:") :].splitlines()
    assert shown[0].startswith("    weights: str | None = None  Pretrained weights")
    assert all(len(line) <= 72 for line in shown), shown
    assert all(line.startswith("        ") for line in shown[1:-1])  # under the setting
    text = " ".join(line.strip() for line in shown)
    assert "and none starts from random weights. depth: int = 3  Layers." in text
    listed = cli("list", "encoders", "--json")
    [item] = [i for i in json.loads(listed.stdout) if i["name"] == "two-lines"]
    assert item["settings"][0]["help"].endswith("none starts from random weights.")


def test_list_shows_every_line_of_a_bundled_description(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    result = cli("list", "datasets")
    text = " ".join(result.stdout.split())
    assert "(sizes, modification and change times and inodes; no reading, trusts them)" in text
    assert "How each image reaches this size is ``fit``." in text
