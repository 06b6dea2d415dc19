"""config.toml round-trips any text: control characters, quotes, backslashes, unusual Unicode,
in values and in keys; text that is not valid Unicode is refused in one line."""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgclust.engine.config import to_toml
from imgclust.errors import SettingsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Any Unicode scalar value: every control character, quotes, backslashes, astral characters.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def config_with(path: str, key: str = "path", split: str = "all") -> dict:
    return {
        "seed": 0,
        "split": split,
        "dataset": {"name": "image-folder", key: path},
        "encoder": [{"name": "pca", "n_components": 8}],
        "clusterer": {"name": "kmeans", "n_clusters": 3},
    }


@FAST
@given(path=TEXT, split=TEXT)
def test_any_text_value_round_trips(path: str, split: str):
    written = to_toml(config_with(path, split=split))
    read = tomllib.loads(written)
    assert read["dataset"]["path"] == path and read["split"] == split


@FAST
@given(key=TEXT.filter(bool), value=TEXT)
def test_any_key_round_trips(key: str, value: str):
    config = config_with("x")
    config["clusterer"] = {"name": "kmeans", key: value} if key != "name" else config["clusterer"]
    read = tomllib.loads(to_toml(config))
    assert read["clusterer"].get(key, read["clusterer"]["name"]) == config["clusterer"][key]


@pytest.mark.parametrize("name", ["a\rb", "esc\x1b[31m", 'q"uote\\', "tab\tnew\nline", "\x7f\x00"])
def test_folder_names_from_the_report_round_trip(name: str):
    assert (
        tomllib.loads(to_toml(config_with(f"/data/{name}")))["dataset"]["path"] == f"/data/{name}"
    )


def test_undecodable_path_is_refused_in_one_line():
    path = os.fsdecode(b"/data/caf\xe9")  # a Latin-1 name on a UTF-8 system
    with pytest.raises(SettingsError, match="not valid Unicode") as caught:
        to_toml(config_with(path))
    assert "\n" not in str(caught.value)


def test_run_in_a_folder_with_a_carriage_return_reads_back(cli, tmp_path, runs_dir):
    import numpy as np

    folder = tmp_path / "odd\rname\x1b"
    folder.mkdir()
    np.save(folder / "x.npy", np.random.default_rng(0).integers(0, 256, (30, 4, 4), np.uint8))
    args = ("--encoder", "pca", "--clusterer", "kmeans", "--no-plots", "--runs-dir", runs_dir)
    result = cli(
        "run", "--dataset", "arrays", "--set", f"dataset.path={folder / 'x.npy'}",
        "--set", "clusterer.n_clusters=2", "--set", "encoder.n_components=2", *args,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    written = next(runs_dir.glob("*/config.toml"))
    again = cli("run", "--config", written, *args)
    assert again.exit_code == 0, again.stderr


# A stranger's config file costs a moment to read, whatever it holds -------------------------

HOSTILE_CONFIGS = {
    "a key of 30,000 dotted parts": "q" + ".q" * 30000 + " = 1\n",
    "quoted parts": '"q"' + '."q"' * 30000 + " = 1\n",
    "a table header": "[" + "a." * 5000 + "b]\n",
    "a key in an inline table": "x = {" + "q." * 30000 + "q = 1}\n",
    "arrays nested 5,000 deep": "x = " + "[" * 5000 + "]" * 5000 + "\n",
    "inline tables nested 3,000 deep": "x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n",
    "2 MiB of comment": "seed = 0\n" + "#" * (2 << 20) + "\n",
}


@pytest.mark.parametrize("text", HOSTILE_CONFIGS.values(), ids=HOSTILE_CONFIGS.keys())
def test_a_hostile_config_is_refused_in_one_line_at_once(text: str, tmp_path, cli):
    """Without bounds the parser spends time growing with the square of a key's parts (hours
    for 1 MB) and overflows Python's stack on deep nesting; both are refused before."""
    import time

    from imgclust.engine.config import read_toml
    from imgclust.errors import ImgclustError

    path = tmp_path / "config.toml"
    path.write_text(text)
    started = time.perf_counter()
    with pytest.raises(ImgclustError) as refused:
        read_toml(path)
    assert time.perf_counter() - started < 10  # a bound, not a timing: unbounded takes minutes
    assert "\n" not in str(refused.value) and "config" in str(refused.value)
    result = cli("run", "--config", str(path), "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_dots_in_values_and_numbers_are_not_key_parts():
    from imgclust.engine.config import longest_dotted

    assert longest_dotted('lr = 0.001\npath = "a.b.c.d.e.png"\n[encoder.pca]\n') == 2
    assert longest_dotted("a . b . c = 1") == 3
