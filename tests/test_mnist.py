"""The mnist dataset: IDX and .npz readers on small files written here, lookup order, bad files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from imgclust.errors import DataError
from imgclust.plugins import mnist
from imgclust.plugins.mnist import MnistDataset

SIZES = {"train": 30, "test": 12}
STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
REAL_CACHE_FILES = mnist.keras_cache_files
URL_FAILURE = (
    "URL fetch failure on https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz: "
    "None -- [Errno -3] Temporary failure in name resolution"
)


def fake_digits(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        split: (
            rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, size=n).astype(np.uint8),
        )
        for split, n in SIZES.items()
    }


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def write_idx_folder(folder: Path, digits, gz: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in digits.items():
        for stem, array in zip(STEMS[split], (images, labels), strict=True):
            data = idx_bytes(array)
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / stem).write_bytes(data)
    return folder


def write_npz(path: Path, digits, drop: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "x_train": digits["train"][0],
        "y_train": digits["train"][1],
        "x_test": digits["test"][0],
        "y_test": digits["test"][1],
    }
    arrays.pop(drop, None)
    np.savez(path, **arrays)
    return path


@pytest.fixture(autouse=True)
def _no_outside_copies(request, monkeypatch, tmp_path):
    """No env var, an empty Keras cache and a download that fails unless a test allows it."""
    if request.node.get_closest_marker("mnist"):
        return  # tests of real MNIST read it through IMGCLUST_MNIST
    monkeypatch.delenv("IMGCLUST_MNIST", raising=False)
    monkeypatch.setattr(mnist, "keras_cache_files", lambda: [tmp_path / "no-cache" / "mnist.npz"])

    def offline():
        raise Exception(URL_FAILURE)

    monkeypatch.setattr(mnist, "keras_load_data", offline)


def check_matches(dataset: MnistDataset, digits) -> None:
    for split in ("train", "test"):
        data = dataset.load(split)
        images, labels = digits[split]
        assert data.images.shape == (SIZES[split], 28, 28, 1) and data.images.dtype == np.uint8
        assert data.labels.dtype == np.int64
        np.testing.assert_array_equal(data.images[..., 0], images)
        np.testing.assert_array_equal(data.labels, labels)
        assert data.ids[:2] == [f"{split}-0", f"{split}-1"]
        assert list(data.class_names) == [str(d) for d in range(10)]
    both = dataset.load("all")
    assert len(both) == SIZES["train"] + SIZES["test"]
    assert both.ids[SIZES["train"]] == "test-0" and both.ids[-1] == f"test-{SIZES['test'] - 1}"
    np.testing.assert_array_equal(both.images[SIZES["train"] :, ..., 0], digits["test"][0])
    both.validate()


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_idx_folder(tmp_path, gz):
    digits = fake_digits()
    folder = write_idx_folder(tmp_path / "mnist", digits, gz=gz)
    check_matches(MnistDataset(path=str(folder)), digits)


def test_idx_files_with_dotted_names(tmp_path):
    digits = fake_digits()
    folder = write_idx_folder(tmp_path / "mnist", digits, gz=True)
    for file in folder.iterdir():
        file.rename(folder / file.name.replace("-idx", ".idx"))
    check_matches(MnistDataset(path=str(folder)), digits)


def test_npz_file_and_folder_holding_one(tmp_path):
    digits = fake_digits()
    path = write_npz(tmp_path / "data" / "mnist.npz", digits)
    check_matches(MnistDataset(path=str(path)), digits)
    check_matches(MnistDataset(path=str(path.parent)), digits)


def test_order_path_then_env_then_keras_cache(tmp_path, monkeypatch):
    by_path, by_env, cached = fake_digits(1), fake_digits(2), fake_digits(3)
    path = write_npz(tmp_path / "a" / "mnist.npz", by_path)
    env_folder = write_idx_folder(tmp_path / "b", by_env, gz=True)
    cache = write_npz(tmp_path / "keras" / "datasets" / "mnist.npz", cached)
    monkeypatch.setattr(mnist, "keras_cache_files", lambda: [tmp_path / "none.npz", cache])
    check_matches(MnistDataset(), cached)
    monkeypatch.setenv("IMGCLUST_MNIST", str(env_folder))
    check_matches(MnistDataset(), by_env)
    check_matches(MnistDataset(path=str(path)), by_path)


def test_keras_cache_follows_keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert REAL_CACHE_FILES()[0] == tmp_path / "kh" / "datasets" / "mnist.npz"
    monkeypatch.delenv("KERAS_HOME")
    assert REAL_CACHE_FILES()[0] == Path.home() / ".keras" / "datasets" / "mnist.npz"


def test_download_is_the_last_resort(monkeypatch):
    digits = fake_digits()
    calls = []

    def download():
        calls.append(1)
        return tuple(digits[s] for s in ("train", "test"))

    monkeypatch.setattr(mnist, "keras_load_data", download)
    dataset = MnistDataset()
    check_matches(dataset, digits)
    assert calls == [1] and dataset.source == "keras download"  # read once, then kept


def test_offline_without_a_copy_says_how_to_point_at_one():
    with pytest.raises(DataError) as caught:
        MnistDataset().load("test")
    message = str(caught.value)
    assert "\n" not in message
    assert "dataset.path" in message and "IMGCLUST_MNIST" in message
    assert "URL fetch failure" in message


def test_offline_error_from_the_command_line(cli, runs_dir):
    result = cli("run", "--dataset", "mnist", "--encoder", "flatten", "--runs-dir", runs_dir)
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: MNIST is not available") and "IMGCLUST_MNIST" in lines[-1]
    assert not any("Traceback" in line for line in lines)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_missing_paths(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="dataset.path.*does not exist"):
        MnistDataset(path=str(tmp_path / "nowhere")).load("train")
    monkeypatch.setenv("IMGCLUST_MNIST", str(tmp_path / "gone"))
    with pytest.raises(DataError, match="IMGCLUST_MNIST"):
        MnistDataset().load("train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="lacks train-images-idx3-ubyte"):
        MnistDataset(path=str(tmp_path / "empty")).load("train")


def corrupt(folder: Path, name: str, change) -> None:
    path = folder / name
    path.write_bytes(change(path.read_bytes()))


BAD_IDX = {
    "labels where images belong": (
        "train-images-idx3-ubyte",
        lambda b: idx_bytes(np.zeros(30, np.uint8)),
        "unsigned-byte IDX file with 3",
    ),
    "not IDX at all": ("t10k-labels-idx1-ubyte", lambda b: b"PK\x03\x04hello", "magic"),
    "truncated images": ("train-images-idx3-ubyte", lambda b: b[:-100], "truncated"),
    "truncated header": ("t10k-images-idx3-ubyte", lambda b: b[:9], "truncated"),
    "extra bytes": ("t10k-images-idx3-ubyte", lambda b: b + b"\0", "longer than its header"),
    "fewer labels than images": (
        "train-labels-idx1-ubyte",
        lambda b: idx_bytes(np.zeros(29, np.uint8)),
        "30 images but 29 labels",
    ),
    "label outside 0-9": (
        "t10k-labels-idx1-ubyte",
        lambda b: idx_bytes(np.full(12, 10, np.uint8)),
        "digits 0-9",
    ),
}


@pytest.mark.parametrize("case", list(BAD_IDX))
def test_bad_idx_files(tmp_path, case):
    name, change, message = BAD_IDX[case]
    folder = write_idx_folder(tmp_path / "mnist", fake_digits(), gz=False)
    corrupt(folder, name, change)
    with pytest.raises(DataError, match=message):
        MnistDataset(path=str(folder)).load("all")


def test_truncated_gzip(tmp_path):
    folder = write_idx_folder(tmp_path / "mnist", fake_digits(), gz=True)
    corrupt(folder, "train-images-idx3-ubyte.gz", lambda b: b[: len(b) // 2])
    with pytest.raises(DataError, match="cannot read MNIST file"):
        MnistDataset(path=str(folder)).load("train")


def test_bad_npz_files(tmp_path):
    digits = fake_digits()
    missing = write_npz(tmp_path / "missing.npz", digits, drop="y_test")
    with pytest.raises(DataError, match="lacks y_test"):
        MnistDataset(path=str(missing)).load("test")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(write_npz(tmp_path / "ok.npz", digits).read_bytes()[:500])
    with pytest.raises(DataError, match="cannot read MNIST file"):
        MnistDataset(path=str(broken)).load("test")
    labels = dict(digits)
    labels["test"] = (digits["test"][0], np.full(12, -1))
    with pytest.raises(DataError, match="digits 0-9"):
        MnistDataset(path=str(write_npz(tmp_path / "labels.npz", labels))).load("test")


def test_limit_and_unknown_split(tmp_path):
    path = write_npz(tmp_path / "mnist.npz", fake_digits())
    assert len(MnistDataset(path=str(path), limit=5).load("all")) == 5
    with pytest.raises(DataError, match="no split"):
        MnistDataset(path=str(path)).load("validation")


def test_registered(registry):
    assert registry.get("datasets", "mnist").target is MnistDataset


@pytest.mark.mnist
def test_real_mnist_in_both_formats(mnist_path: Path, tmp_path):
    folder = mnist_path if mnist_path.is_dir() else mnist_path.parent
    idx = tmp_path / "idx"
    idx.mkdir()
    for split in STEMS.values():
        for stem in split:
            (idx / f"{stem}.gz").symlink_to(folder / f"{stem}.gz")
    from_idx, from_npz = MnistDataset(path=str(idx)), MnistDataset(path=str(folder / "mnist.npz"))
    sizes = {"train": 60_000, "test": 10_000, "all": 70_000}
    for split, n in sizes.items():
        a, b = from_idx.load(split), from_npz.load(split)
        assert a.images.shape == (n, 28, 28, 1) and len(a.labels) == n
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
    test = from_npz.load("test")
    assert np.bincount(test.labels).tolist()[:2] == [980, 1135]
    assert test.ids[-1] == "test-9999"
    assert from_npz.source.endswith("mnist.npz")
