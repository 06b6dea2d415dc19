"""The arrays dataset (memory maps, keys, layouts, dtypes) and batch-wise encoding of big arrays."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from imgclust.errors import DataError, SettingsError
from imgclust.io.arrays import npz_member_memmap, to_nhwc
from imgclust.kit.arrays import as_matrix, batch_rows, map_batches, sample_index, sample_matrix
from imgclust.plugins.arrays import ArraysDataset
from imgclust.plugins.basic_encoders import FlattenEncoder, PCAEncoder


def images(n: int = 20, shape=(6, 5, 1), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def load(path: Path, **settings):
    return ArraysDataset(path=str(path), **settings).load("all")


# Memory maps ---------------------------------------------------------------------------------
def test_npy_is_memory_mapped(tmp_path: Path):
    x = images()
    np.save(tmp_path / "x.npy", x)
    data = load(tmp_path / "x.npy")
    assert isinstance(data.images, np.memmap)
    np.testing.assert_array_equal(data.images, x)
    assert data.info["memory_mapped"] is True and data.labels is None


def test_uncompressed_npz_members_are_memory_mapped_at_their_offset(tmp_path: Path):
    x, y = images(), np.arange(20) % 4
    np.savez(tmp_path / "data.npz", x=x, y=y)
    data = load(tmp_path / "data.npz")
    assert isinstance(data.images, np.memmap)
    np.testing.assert_array_equal(data.images, x)
    assert data.labels.tolist() == y.tolist()
    assert data.info["memory_mapped"] is True and data.info["images_key"] == "x"


def test_fortran_order_and_several_members(tmp_path: Path):
    x = np.asfortranarray(images(seed=1))
    np.savez(tmp_path / "data.npz", first=np.zeros(3), x=x, z=np.ones((2, 2)))
    mapped = npz_member_memmap(tmp_path / "data.npz", "x")
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(mapped, x)


def test_compressed_npz_is_read_into_memory_and_says_so(tmp_path: Path, capsys):
    x = images()
    np.savez_compressed(tmp_path / "data.npz", x=x)
    data = load(tmp_path / "data.npz")
    assert not isinstance(data.images, np.memmap)
    np.testing.assert_array_equal(data.images, x)
    assert data.info["memory_mapped"] is False
    assert "compressed" in capsys.readouterr().err


def test_key_names_are_settings(tmp_path: Path):
    x, y = images(), np.arange(20)
    np.savez(tmp_path / "data.npz", pictures=x, classes=y, other=y)
    data = load(tmp_path / "data.npz", images_key="pictures", labels_key="classes")
    np.testing.assert_array_equal(data.images, x)
    assert data.labels.tolist() == y.tolist()
    with pytest.raises(DataError, match="has no array named x.*pictures.*images_key"):
        load(tmp_path / "data.npz")
    with pytest.raises(DataError, match="no array 'nope'"):
        load(tmp_path / "data.npz", images_key="pictures", labels_key="nope")


def test_labels_from_a_file(tmp_path: Path):
    np.save(tmp_path / "x.npy", images())
    np.save(tmp_path / "y.npy", np.arange(20) % 3)
    data = load(tmp_path / "x.npy", labels_path=str(tmp_path / "y.npy"))
    assert data.labels.tolist() == (np.arange(20) % 3).tolist()
    np.save(tmp_path / "short.npy", np.arange(19))
    with pytest.raises(DataError, match="20 images but 19 labels"):
        load(tmp_path / "x.npy", labels_path=str(tmp_path / "short.npy"))


# Layouts -------------------------------------------------------------------------------------
def test_channel_first_is_detected_reported_and_moved(tmp_path: Path, capsys):
    x = images(shape=(3, 8, 7))
    np.save(tmp_path / "x.npy", x)
    data = load(tmp_path / "x.npy")
    assert data.images.shape == (20, 8, 7, 3)
    np.testing.assert_array_equal(data.images, np.moveaxis(x, 1, -1))
    assert data.info["channels"] == "first" and data.info["channels_assumed"] is True
    assert "channel-first" in capsys.readouterr().err


def test_channel_last_and_explicit_layouts(tmp_path: Path, capsys):
    x = images(shape=(3, 3, 3))  # ambiguous: auto reads it channel-last
    np.save(tmp_path / "x.npy", x)
    auto = load(tmp_path / "x.npy")
    assert auto.info["channels"] == "last"
    assert "channel-last" in capsys.readouterr().err
    first = load(tmp_path / "x.npy", channels="first")
    np.testing.assert_array_equal(first.images, np.moveaxis(x, 1, -1))
    assert first.info["channels_assumed"] is False
    assert capsys.readouterr().err == ""
    np.save(tmp_path / "gray.npy", images(shape=(6, 5)))
    gray = load(tmp_path / "gray.npy")
    np.save(tmp_path / "last.npy", images(shape=(8, 7, 1)))
    assert load(tmp_path / "last.npy").info["channels"] == "last"
    assert capsys.readouterr().err == ""  # only channel-last is possible: no note
    assert gray.images.shape == (20, 6, 5, 1) and gray.info["channels"].startswith("none")


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((4, 784), np.uint8), "flat vectors"),
        (np.zeros((2, 2, 2, 2, 2), np.uint8), r"must be \(N, H, W\)"),
        (np.zeros((0, 4, 4), np.uint8), "holds no images"),
        (np.zeros((3, 4, 4), np.complex64), "complex64 are not supported"),
        (np.full((3, 4, 4), 300, np.int16), "0..255"),
        (np.full((3, 4, 4), -2.0, np.float32), r"\[0, 1\]"),
        (np.full((3, 4, 4), np.nan, np.float32), "NaN"),
        (np.array([["a", "b"], ["c", "d"]])[None], "<U1 are not supported"),
    ],
)
def test_wrong_dimensions_and_dtypes_are_clear_errors(array, message):
    with pytest.raises(DataError, match=message):
        to_nhwc(array, "auto", "x.npy")


def test_other_dtypes_are_converted_chunk_by_chunk():
    ints = np.arange(48, dtype=np.int64).reshape(3, 4, 4)
    out = to_nhwc(ints, "auto", "x")
    assert out.dtype == np.uint8 and out[..., 0].tolist() == ints.tolist()
    assert to_nhwc(np.ones((2, 3, 3), bool), "auto", "x").max() == 255
    halves = to_nhwc(np.full((2, 3, 3), 0.5, np.float64), "auto", "x")
    assert halves.dtype == np.float32 and float(halves.max()) == 0.5
    with pytest.raises(DataError, match=r"x: float images in 51\.\.51, not in \[0, 1\]"):
        to_nhwc(np.full((2, 3, 3), 51.0, np.float32), "auto", "x")  # never divided by 255


def test_file_errors(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        load(tmp_path / "missing.npy")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(SettingsError, match=".npy or .npz"):
        load(tmp_path / "x.csv")
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read"):
        load(tmp_path / "bad.npy")
    with pytest.raises(SettingsError, match="channels"):
        ArraysDataset(path="x.npy", channels="middle")


# Batches -------------------------------------------------------------------------------------
def test_batches_are_float32_and_bounded_in_bytes():
    x = images(n=50, shape=(4, 4, 1))
    matrix = as_matrix(x)
    assert matrix.dtype == np.float32 and matrix.shape == (50, 16)
    np.testing.assert_allclose(matrix, x.reshape(50, -1) / 255.0, rtol=1e-6)
    doubled = map_batches(x, lambda chunk: chunk[:, :2] * 2, 2, batch=7)
    np.testing.assert_allclose(doubled, matrix[:, :2] * 2, rtol=1e-6)
    big = np.zeros((10, 512, 512, 3), np.uint8)
    assert batch_rows(big) * 512 * 512 * 3 * 4 <= 64 * 2**20
    assert batch_rows(x) == 4096
    index = sample_index(1000, 100, seed=3)
    assert len(index) == 100 and (np.diff(index) > 0).all()
    assert sample_index(1000, 100, seed=3).tolist() == index.tolist()
    assert sample_matrix(x, 10, seed=3).shape == (10, 16)
    assert sample_matrix(big, 10, max_bytes=2 * 512 * 512 * 3 * 4).shape == (2, 512 * 512 * 3)


def test_pca_encodes_a_memory_map_batch_by_batch(tmp_path: Path):
    n = 20_000
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    mapped = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.uint8, (n, 28, 28, 1))
    for start in range(0, n, 5000):
        mapped[start : start + 5000] = base[rng.integers(0, 8, 5000)]
    mapped.flush()
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
    encoder = PCAEncoder(n_components=8, max_fit=2000).fit(x)
    tracemalloc.start()
    features = encoder.transform(x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert features.dtype == np.float32 and features.shape == (n, 8)
    as_floats = n * 28 * 28 * 4  # 62.7 MB: what encoding all images at once would hold
    assert peak < as_floats / 2, f"peak {peak / 2**20:.1f} MiB"
    reference = encoder.pca_.transform(x[:500].reshape(500, -1).astype(np.float32) / 255)
    np.testing.assert_allclose(features[:500], reference, atol=1e-4)


def test_flatten_and_pca_save_and_load(tmp_path: Path):
    x = images(n=40, shape=(5, 5, 1))
    flat = FlattenEncoder().fit(x)
    assert flat.transform(x).shape == (40, 25)
    pca = PCAEncoder(n_components=3).fit(x)
    pca.save(tmp_path / "pca")
    again = PCAEncoder(n_components=3).load(tmp_path / "pca")
    np.testing.assert_allclose(again.transform(x), pca.transform(x), atol=1e-5)
