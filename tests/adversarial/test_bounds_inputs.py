"""Hostile sizes, headers, seeds, limits and degenerate data: each is refused (or flagged) in one
line before memory is spent, never killed by the system or reported as "unexpected"."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from imgclust.errors import DataError, ImgclustError, SettingsError

RUN = ("run", "--encoder", "pca", "--clusterer", "kmeans", "--no-plots")


def one_line_error(result, *needles: str) -> str:
    """The CLI failed with one ``Error:`` line (no traceback, nothing "unexpected")."""
    assert result.exit_code != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    assert "unexpected" not in lines[0] and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def npy_bytes(header: dict, data: bytes = b"") -> bytes:
    """A .npy file with a hand-written header."""
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


def bomb(path: Path, inflated: int) -> Path:
    """An .npz whose one compressed member inflates to ``inflated`` bytes of zeros."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as handle:
            shape = (inflated // 64, 8, 8)
            np.lib.format.write_array_header_1_0(
                handle, {"descr": "|u1", "fortran_order": False, "shape": shape}
            )
            chunk = bytes(2**20)
            left = shape[0] * 64
            while left:
                handle.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))
    return path


# Memory bound ------------------------------------------------------------------------------
def test_huge_target_size_is_refused_before_decoding(cli, tmp_path, runs_dir):
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    result = cli(
        *RUN,
        "--dataset",
        "image-folder",
        "--set",
        f"dataset.path={tmp_path}",
        "--set",
        "dataset.size=100000x100000",
        "--runs-dir",
        runs_dir,
    )
    one_line_error(result, "100000x100000", "dataset.size")


def test_target_bytes_over_the_bound_are_refused(tmp_path, monkeypatch):
    from PIL import Image

    from imgclust.plugins.image_folder import ImageFolderDataset

    for i in range(3):
        Image.fromarray(np.full((4, 4), i, np.uint8)).save(tmp_path / f"{i}.png")
    monkeypatch.setenv("IMGCLUST_MAX_BYTES", "1M")
    dataset = ImageFolderDataset(str(tmp_path), size=(1000, 1000), cache=False, workers=1)
    with pytest.raises(DataError, match="IMGCLUST_MAX_BYTES"):
        dataset.load()


def test_npz_bomb_is_refused_without_inflating(cli, tmp_path, runs_dir, monkeypatch):
    path = bomb(tmp_path / "bomb.npz", 200 * 2**20)
    assert path.stat().st_size < 2 * 2**20
    result = cli(
        *RUN, "--dataset", "arrays", "--set", f"dataset.path={path}", "--runs-dir", runs_dir
    )
    one_line_error(result, "decompression bomb")


def test_npz_member_over_the_memory_bound_is_refused(tmp_path, monkeypatch):
    from imgclust.plugins.arrays import ArraysDataset

    x = np.random.default_rng(0).integers(0, 256, (64, 32, 32), dtype=np.uint8)
    np.savez_compressed(tmp_path / "x.npz", x=x)
    monkeypatch.setenv("IMGCLUST_MAX_BYTES", "10K")
    with pytest.raises(DataError, match="more than the 10 KiB allowed"):
        ArraysDataset(str(tmp_path / "x.npz")).load()
    monkeypatch.setenv("IMGCLUST_MAX_BYTES", "1G")
    assert len(ArraysDataset(str(tmp_path / "x.npz")).load()) == 64


@pytest.mark.parametrize("value", ["lots", "-5", "0", "1e999999"])
def test_bad_max_bytes_setting_is_one_line(tmp_path, monkeypatch, value):
    from imgclust.io.memory import max_bytes

    monkeypatch.setenv("IMGCLUST_MAX_BYTES", value)
    with pytest.raises(SettingsError, match="IMGCLUST_MAX_BYTES"):
        max_bytes()


def test_gzip_idx_bomb_is_refused(tmp_path, monkeypatch):
    import gzip

    from imgclust.plugins.mnist import read_idx

    header = bytes([0, 0, 8, 3]) + (60000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (tmp_path / "x.gz").write_bytes(gzip.compress(header + bytes(60000 * 28 * 28)))
    monkeypatch.setenv("IMGCLUST_MAX_BYTES", "1M")
    with pytest.raises(DataError, match="IMGCLUST_MAX_BYTES"):
        read_idx(tmp_path / "x.gz", 3)


# .npy headers --------------------------------------------------------------------------------
HEADERS = {
    "negative": ({"descr": "|u1", "fortran_order": False, "shape": (-5, 4, 4)}, "damaged"),
    "zero side": ({"descr": "|u1", "fortran_order": False, "shape": (3, 0, 4)}, "no pixels"),
    "object": ({"descr": "|O", "fortran_order": False, "shape": (3, 4, 4)}, "object array"),
    "absurd": (
        {"descr": "<f8", "fortran_order": False, "shape": (10**12, 10**12, 10**6)},
        "truncated",
    ),
}


@pytest.mark.parametrize("case", sorted(HEADERS))
def test_hostile_npy_headers_are_one_line(cli, tmp_path, runs_dir, case):
    header, needle = HEADERS[case]
    path = tmp_path / "x.npy"
    path.write_bytes(npy_bytes(header, bytes(48)))
    result = cli(
        *RUN, "--dataset", "arrays", "--set", f"dataset.path={path}", "--runs-dir", runs_dir
    )
    one_line_error(result, needle)


@pytest.mark.parametrize("case", sorted(HEADERS))
def test_hostile_npz_members_are_one_line(tmp_path, case):
    from imgclust.plugins.arrays import ArraysDataset

    header, needle = HEADERS[case]
    with zipfile.ZipFile(tmp_path / "x.npz", "w") as archive:
        archive.writestr("x.npy", npy_bytes(header, bytes(48)))
    with pytest.raises(DataError, match=needle):
        ArraysDataset(str(tmp_path / "x.npz")).load()


def test_npz_member_whose_header_overruns_its_data_is_not_mapped(tmp_path):
    from imgclust.io.arrays import npz_member_memmap
    from imgclust.plugins.arrays import ArraysDataset

    header = {"descr": "|u1", "fortran_order": False, "shape": (100, 8, 8)}
    with zipfile.ZipFile(tmp_path / "x.npz", "w") as archive:
        archive.writestr("x.npy", npy_bytes(header, bytes(64)))
        archive.writestr("y.npy", npy_bytes(header, bytes(6400)))
    assert npz_member_memmap(tmp_path / "x.npz", "x") is None
    with pytest.raises(DataError, match="truncated"):
        ArraysDataset(str(tmp_path / "x.npz")).load()


# Seeds -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", ["-1", str(2**32), str(2**64)])
def test_out_of_range_cli_seeds_are_one_line(cli, runs_dir, seed):
    result = cli(*RUN, "--dataset", "digits", "--seed", seed, "--runs-dir", runs_dir)
    one_line_error(result, "seed must be a whole number from 0 to 4294967295")


@pytest.mark.parametrize("text", ["1e400", "1.5", "true", '"abc"', "-3", "4294967296", "[1]"])
def test_bad_config_seeds_are_one_line(cli, tmp_path, runs_dir, text):
    (tmp_path / "c.toml").write_text(f"seed = {text}\n")
    result = cli(
        *RUN, "--dataset", "digits", "--config", tmp_path / "c.toml", "--runs-dir", runs_dir
    )
    one_line_error(result, "seed must be a whole number")


@pytest.mark.parametrize("assignment", ["clusterer.seed=-1", "encoder.seed=4294967296"])
def test_bad_stage_seeds_are_one_line(cli, runs_dir, assignment):
    result = cli(*RUN, "--dataset", "digits", "--set", assignment, "--runs-dir", runs_dir)
    one_line_error(result, "seed must be a whole number")


def test_edge_seeds_are_accepted(registry):
    from imgclust.engine.config import resolve_config

    for seed in (0, 2**32 - 1):
        config = resolve_config(
            registry, dataset="digits", encoders=["pca"], clusterer="kmeans", seed=seed
        )
        assert config["seed"] == seed and config["clusterer"]["seed"] == seed
    config = resolve_config(
        registry, dataset="digits", encoders=["pca"], clusterer="kmeans", sets=["seed=7"]
    )
    assert config["seed"] == 7


# Limits ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", ["digits", "arrays", "mnist", "image-folder"])
@pytest.mark.parametrize("limit", ["-5", "0"])
def test_non_positive_limits_are_refused_everywhere(cli, tmp_path, runs_dir, dataset, limit):
    np.save(tmp_path / "x.npy", np.zeros((4, 4, 4), np.uint8))
    path = {"arrays": tmp_path / "x.npy", "image-folder": tmp_path, "mnist": tmp_path}
    sets = [f"dataset.limit={limit}"]
    if dataset in path:
        sets.append(f"dataset.path={path[dataset]}")
    args = [a for s in sets for a in ("--set", s)]
    result = cli(*RUN, "--dataset", dataset, *args, "--runs-dir", runs_dir)
    one_line_error(result, "limit must be a whole number of at least 1")


def test_arrays_limit_keeps_the_first_images_and_their_labels(tmp_path):
    from imgclust.plugins.arrays import ArraysDataset

    x = np.arange(10 * 16, dtype=np.uint8).reshape(10, 4, 4)
    np.savez(tmp_path / "x.npz", x=x, y=np.arange(10))
    data = ArraysDataset(str(tmp_path / "x.npz"), limit=3).load()
    assert len(data) == 3 and data.labels.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(data.images[..., 0], x[:3])


# Degenerate data ---------------------------------------------------------------------------
def test_identical_images_are_flagged_and_not_scored(cli, tmp_path, runs_dir):
    from imgclust.results.metrics import DegenerateWarning

    image = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 1), dtype=np.uint8)
    np.save(tmp_path / "same.npy", image.repeat(1000, axis=0))
    with pytest.warns(DegenerateWarning) as caught:
        result = cli(
            *RUN,
            "--dataset",
            "arrays",
            "--set",
            f"dataset.path={tmp_path / 'same.npy'}",
            "--set",
            "clusterer.n_clusters=3",
            "--runs-dir",
            runs_dir,
        )
    assert result.exit_code == 0, result.stderr
    messages = [str(w.message) for w in caught if w.category is DegenerateWarning]
    assert len(messages) == 1 and "\n" not in messages[0]
    metrics = json.loads(next(runs_dir.glob("*/metrics.json")).read_text())
    assert "same point" in metrics["degenerate"]
    assert metrics["silhouette"] is None and metrics["calinski_harabasz"] is None


def test_noise_split_clusters_get_no_internal_scores():
    from imgclust.results.metrics import degeneracy, internal_scores

    rng = np.random.default_rng(0)
    features = np.ones((600, 5), np.float32) + rng.normal(0, 1e-9, (600, 5)).astype(np.float32)
    clusters = np.arange(600) % 3
    assert degeneracy(features, clusters) is not None
    assert set(internal_scores(features, clusters).values()) == {None}


def test_fewer_distinct_points_than_clusters_is_degenerate():
    from imgclust.results.metrics import degeneracy, internal_scores

    base = np.array([[0.0, 0.0], [5.0, 5.0]], np.float32)
    features = base.repeat(300, axis=0) + np.float32(1e-9) * np.arange(600)[:, None]
    clusters = np.arange(600) % 3
    reason = degeneracy(features, clusters)
    assert reason is not None and "only 2 distinct" in reason
    assert internal_scores(features, clusters)["silhouette"] is None


def test_sound_clusters_are_still_scored():
    from imgclust.results.metrics import degeneracy, internal_scores

    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(c, 0.1, (100, 3)) for c in (0, 3, 6)])
    clusters = np.repeat(np.arange(3), 100)
    assert degeneracy(features, clusters) is None
    assert internal_scores(features, clusters)["silhouette"] > 0.8


def test_sweep_on_identical_features_says_why():
    from imgclust.results.ksweep import sweep
    from imgclust.stages.host import get_registry

    factory = get_registry().get("clusterers", "kmeans").target
    with pytest.raises(DataError, match="same point"):
        sweep(np.ones((200, 4), np.float32), "kmeans", factory, [2, 3])


# Messages ----------------------------------------------------------------------------------
def test_required_setting_hint_is_a_valid_set(cli, runs_dir):
    result = cli(*RUN, "--dataset", "image-folder", "--runs-dir", runs_dir)
    line = one_line_error(result, "--set dataset.path=VALUE")
    assert "'image-folder'." not in line


def test_required_encoder_setting_hint_names_the_encoder():
    from imgclust.stages.settings import resolve

    def factory(needed: int, other: int = 1) -> None:
        """A stage with a required setting."""

    with pytest.raises(SettingsError, match=r"--set encoder\.mine\.needed=VALUE"):
        resolve("encoder 'mine'", factory, {}, set_prefix="encoder.mine")
    with pytest.raises(SettingsError, match=r"--set clusterer\.needed=VALUE"):
        resolve("clusterer 'mine'", factory, {})


@pytest.mark.parametrize(
    ("text", "needle"),
    [("15-2", "reversed"), ("2-15:0", "step"), ("2-99999999", "more than")],
)
def test_k_range_messages(cli, text, needle):
    result = cli("sweep-k", "--dataset", "digits", "--encoder", "pca", "--k", text)
    one_line_error(result, needle)


def test_errors_are_imgclust_errors():
    assert issubclass(DataError, ImgclustError) and issubclass(SettingsError, ImgclustError)


@pytest.mark.parametrize(
    "settings",
    [{"filters": (100_000_000,)}, {"filters": (8,) * 9}, {"code_size": 10**9}],
    ids=["a hundred million filters", "nine layers", "a code of a billion numbers"],
)
def test_a_config_cannot_ask_conv_ae_for_a_network_past_memory(settings):
    """Refused when built, before Keras allocates anything (it reached 11 GB before its own
    out-of-memory error)."""
    import imgclust
    from imgclust.errors import SettingsError

    with pytest.raises(SettingsError, match="encoder 'conv-ae': .* at most"):
        imgclust.get_encoder("conv-ae", **settings)
