"""The image-folder dataset: finding, decoding, labelling and skipping files; errors; the CLI."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclust.errors import DataError, SettingsError
from imgclust.io import images as image_io
from imgclust.io.images import ImageSkippedWarning, load_image_files
from imgclust.plugins.image_folder import ImageFolderDataset


def save(path: Path, value: int | tuple = 100, size=(28, 28), mode="L", **kw) -> Path:
    """A flat image of ``value`` at ``size`` (H, W), saved in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size[1], size[0]), value).save(path, **kw)
    return path


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png at all" * 3)
    return path


def truncated(path: Path) -> Path:
    """The first half of a real PNG (noise, so that it does not compress to nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noisy = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """Two labelled sub-folders, nested, every format, a corrupt, a truncated and a text file."""
    root = tmp_path / "photos"
    save(root / "cats" / "a.png", 10)
    save(root / "cats" / "b.jpg", 60, quality=95)
    save(root / "cats" / "deep" / "c.bmp", 90)
    frames = [Image.new("L", (28, 28), 200), Image.new("L", (28, 28), 50)]
    (root / "dogs").mkdir(parents=True)
    frames[0].save(root / "dogs" / "d.gif", save_all=True, append_images=frames[1:])
    save(root / "dogs" / "e.tiff", 130)
    save(root / "dogs" / "f.webp", 170, lossless=True)
    save(root / "dogs" / "G.PNG", 220)
    (root / "dogs" / "notes.txt").write_text("not an image")
    corrupt(root / "dogs" / "broken.png")
    truncated(root / "cats" / "truncated.png")
    return root


EXPECTED = {
    "cats/a.png": 10,
    "cats/b.jpg": 60,
    "cats/deep/c.bmp": 90,
    "dogs/G.PNG": 220,
    "dogs/d.gif": 200,
    "dogs/e.tiff": 130,
    "dogs/f.webp": 170,
}


def load(root: Path, **settings) -> object:
    settings.setdefault("workers", 1)
    settings.setdefault("cache", False)
    return ImageFolderDataset(path=str(root), **settings).load("all")


def test_reads_every_format_recursively_in_sorted_order_with_labels(mixed: Path):
    with pytest.warns(ImageSkippedWarning, match="skipped 2 unreadable"):
        data = load(mixed)
    assert data.ids == sorted(EXPECTED)
    assert data.images.dtype == np.uint8
    assert data.images.shape == (7, 28, 28, 1)
    for index, name in enumerate(data.ids):
        tolerance = 3 if name.endswith(".jpg") else 0
        assert abs(int(data.images[index].mean()) - EXPECTED[name]) <= tolerance, name
    assert data.class_names == ["cats", "dogs"]
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert data.labels.dtype == np.int64
    data.validate()


def test_corrupt_and_truncated_files_are_skipped_and_listed(mixed: Path):
    with pytest.warns(ImageSkippedWarning) as caught:
        data = load(mixed)
    skipped = data.info["skipped"]
    assert [line.split(":")[0] for line in skipped] == ["cats/truncated.png", "dogs/broken.png"]
    assert "truncated" in skipped[0]
    assert "not a readable image" in skipped[1]
    assert str(mixed) not in " ".join(skipped)  # reasons name files relatively
    assert "cats/truncated.png" in str(caught[0].message)


def test_strict_makes_unreadable_files_an_error(mixed: Path):
    expected = r"2 unreadable image file\(s\).*cats/truncated.png.*strict"
    with pytest.raises(DataError, match=expected):
        load(mixed, strict=True)


def test_gif_gives_its_first_frame(mixed: Path):
    with pytest.warns(ImageSkippedWarning):
        data = load(mixed)
    assert (data.images[data.ids.index("dogs/d.gif")] == 200).all()


def test_rgb_mode_keeps_colour_and_grayscale_converts_it(tmp_path: Path):
    save(tmp_path / "red.png", (255, 0, 0), mode="RGB")
    save(tmp_path / "grey.png", 77)
    rgb = load(tmp_path, mode="rgb")
    assert rgb.images.shape == (2, 28, 28, 3)
    red = rgb.images[rgb.ids.index("red.png")]
    assert red[..., 0].min() == 255 and red[..., 1:].max() == 0
    assert (rgb.images[rgb.ids.index("grey.png")] == 77).all()
    grey = load(tmp_path, mode="grayscale")
    assert grey.images.shape == (2, 28, 28, 1)
    assert int(grey.images[grey.ids.index("red.png")].mean()) == 76  # ITU-R 601 luma of red


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path: Path):
    deep = np.full((28, 28), 32896, dtype=np.uint16)  # 128 * 257
    Image.fromarray(deep).save(tmp_path / "deep.png")
    data = load(tmp_path)
    assert int(data.images.max()) == 128


def test_exif_orientation_is_applied(tmp_path: Path):
    image = Image.new("L", (30, 10), 100)  # 30 wide, 10 high
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    image.save(tmp_path / "turned.jpg", exif=exif)
    assert load(tmp_path).images.shape == (1, 30, 10, 1)


def test_differing_sizes_are_an_error_naming_them_unless_a_size_is_given(tmp_path: Path):
    save(tmp_path / "a.png", size=(28, 28))
    save(tmp_path / "b.png", size=(32, 40))
    save(tmp_path / "c.png", size=(28, 28))
    with pytest.raises(DataError, match=r"a.png is 28x28 but b.png is 32x40.*dataset.size"):
        load(tmp_path)
    data = load(tmp_path, size=(16, 20))
    assert data.images.shape == (3, 16, 20, 1)
    assert (data.images == 100).all()


def test_size_setting_parses_both_spellings(registry):
    from imgclust.stages.settings import resolve

    factory = registry.get("datasets", "image-folder").target
    for text in ("28x28", "28,28"):
        assert resolve("dataset", factory, {"path": ".", "size": text})["size"] == (28, 28)


def test_labels_only_when_every_image_sits_in_a_sub_folder(tmp_path: Path):
    save(tmp_path / "one" / "a.png")
    save(tmp_path / "two" / "b.png")
    assert load(tmp_path).labels is not None
    assert load(tmp_path, labels="none").labels is None
    save(tmp_path / "loose.png")
    data = load(tmp_path)
    assert data.labels is None and data.class_names is None
    assert data.ids == ["loose.png", "one/a.png", "two/b.png"]


def test_recursive_extensions_and_limit(tmp_path: Path):
    save(tmp_path / "top.png")
    save(tmp_path / "top.jpg")
    save(tmp_path / "sub" / "inner.png")
    assert load(tmp_path, recursive=False).ids == ["top.jpg", "top.png"]
    assert load(tmp_path, extensions=("png",)).ids == ["sub/inner.png", "top.png"]
    assert load(tmp_path, limit=2).ids == ["sub/inner.png", "top.jpg"]


def test_hidden_files_and_folders_are_not_part_of_the_collection(tmp_path: Path):
    save(tmp_path / "a.png")
    corrupt(tmp_path / "._a.png")  # a macOS companion file
    save(tmp_path / ".thumbnails" / "a.png")
    data = load(tmp_path)
    assert data.ids == ["a.png"] and data.info["skipped"] == []


def test_decompression_bombs_are_refused_like_corrupt_files(tmp_path: Path):
    save(tmp_path / "small.png", size=(10, 10))
    save(tmp_path / "big.png", size=(30, 30))  # 900 pixels
    with pytest.warns(ImageSkippedWarning):
        data = load(tmp_path, max_pixels=600)  # over the limit: Pillow warns, which is refused
    assert data.ids == ["small.png"]
    assert "decompression bomb" in data.info["skipped"][0]
    with pytest.warns(ImageSkippedWarning):
        data = load(tmp_path, max_pixels=400)  # over twice the limit: Pillow's own error
    assert "decompression bomb" in data.info["skipped"][0]
    with pytest.raises(DataError, match="big.png"):
        load(tmp_path, max_pixels=600, strict=True)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda root: root.mkdir(), "no images in"),
        (lambda root: (root.mkdir(), (root / "a.txt").write_text("x")), "no images in"),
        (lambda root: None, "does not exist"),
        (lambda root: root.write_text("x"), "is a file, not a folder"),
        (lambda root: (corrupt(root / "a.png"), corrupt(root / "b.png")), "none of the 2"),
    ],
)
def test_clear_errors(tmp_path: Path, build, message):
    root = tmp_path / "input"
    build(root)
    with pytest.raises(DataError, match=message):
        load(root)


def test_bad_settings_are_refused():
    with pytest.raises(SettingsError, match="size"):
        ImageFolderDataset(path=".", size=(0, 28))
    with pytest.raises(SettingsError, match="grayscale or rgb"):
        ImageFolderDataset(path=".", mode="cmyk")
    with pytest.raises(SettingsError, match="workers"):
        ImageFolderDataset(path=".", workers=0)


def test_process_pool_decodes_the_same_as_serial(mixed: Path, monkeypatch, tmp_path: Path):
    for index in range(40):
        save(mixed / "dogs" / f"many-{index:02d}.png", index)
    with pytest.warns(ImageSkippedWarning):
        serial = load(mixed, workers=1)
    monkeypatch.setattr(image_io, "POOL_SECONDS", 0.0)
    monkeypatch.setattr(image_io, "_run_pool", _counting(image_io._run_pool))
    for cache in (False, True):  # rows returned to the parent, or written into the cache file
        with pytest.warns(ImageSkippedWarning):
            pooled = load(mixed, workers=2, cache=cache, cache_dir=str(tmp_path / "cache"))
        assert pooled.ids == serial.ids
        assert pooled.info["skipped"] == serial.info["skipped"]
        np.testing.assert_array_equal(np.asarray(pooled.images), serial.images)
    assert _counting.calls == 2


def _counting(function):
    _counting.calls = 0

    def wrapper(*args, **kwargs):
        _counting.calls += 1
        return function(*args, **kwargs)

    return wrapper


def test_load_image_files_reads_given_files_relative_to_root(mixed: Path, tmp_path: Path):
    files = [mixed / "dogs" / "e.tiff", mixed / "cats" / "a.png", mixed / "dogs" / "broken.png"]
    with pytest.warns(ImageSkippedWarning):
        data = load_image_files(files, mixed, (14, 14), "rgb")
    assert data.ids == ["dogs/e.tiff", "cats/a.png"]  # the order given
    assert data.images.shape == (2, 14, 14, 3) and data.images.dtype == np.uint8
    assert data.info["skipped"] == [
        "dogs/broken.png: not a readable image (unknown format or corrupt header)"
    ]
    plain = load_image_files(files[:2], None, None, "grayscale")
    assert plain.ids == [files[0].as_posix(), files[1].as_posix()]
    with pytest.raises(DataError, match="unreadable"):
        load_image_files(files, mixed, None, "grayscale", strict=True)
    with pytest.raises(DataError, match="does not exist"):
        load_image_files([tmp_path / "missing.png"], None, None, "grayscale")


# The command line ----------------------------------------------------------------------------
@pytest.fixture
def digits_folder(tmp_path: Path) -> Path:
    """30 small PNGs of three kinds in labelled sub-folders, plus a corrupt one."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path / "digits"
    for digit in (0, 1, 7):
        picks = np.flatnonzero(digits.target == digit)[:10]
        for number, index in enumerate(picks):
            pixels = np.round(digits.images[index] * 255 / 16).astype(np.uint8)
            big = Image.fromarray(pixels).resize((28, 28), Image.Resampling.NEAREST)
            (root / f"digit-{digit}").mkdir(parents=True, exist_ok=True)
            big.save(root / f"digit-{digit}" / f"{number:02d}.png")
    corrupt(root / "digit-7" / "zz-broken.png")
    return root


def test_cli_run_on_an_image_folder(cli, runs_dir: Path, digits_folder: Path):
    with pytest.warns(ImageSkippedWarning, match="zz-broken.png"):
        result = cli(
            "run",
            "--dataset",
            "image-folder",
            "--set",
            f"dataset.path={digits_folder}",
            "--encoder",
            "pca",
            "--clusterer",
            "kmeans",
            "--set",
            "clusterer.n_clusters=3",
            "--set",
            "dataset.workers=1",
            "--runs-dir",
            runs_dir,
            "--no-plots",
            "--json",
        )
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    folder = Path(record["run"])
    assert record["n_images"] == 30
    with open(folder / "assignments.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["id"] == "digit-0/00.png" and rows[0]["label"] == "digit-0"
    assert {row["id"].split("/")[0] for row in rows} == {"digit-0", "digit-1", "digit-7"}
    assert (folder / "skipped.txt").read_text().startswith("digit-7/zz-broken.png: ")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["skipped"] == 1
    assert metrics["acc"] > 0.8  # 0, 1 and 7 are easy to tell apart


def test_cli_reports_a_folder_without_images_in_one_line(cli, runs_dir: Path, tmp_path: Path):
    result = cli(
        "run",
        "--dataset",
        "image-folder",
        "--set",
        f"dataset.path={tmp_path}",
        "--encoder",
        "pca",
        "--clusterer",
        "kmeans",
        "--runs-dir",
        runs_dir,
    )
    assert result.exit_code != 0
    assert "no images in" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_run_with_the_articles_encoder(cli, runs_dir: Path, digits_folder: Path, registry):
    if "conv-ae" not in registry.names("encoders"):
        pytest.skip("the conv-ae encoder is not installed")
    with pytest.warns(ImageSkippedWarning):
        result = cli(
            "run",
            "--dataset",
            "image-folder",
            "--set",
            f"dataset.path={digits_folder}",
            "--encoder",
            "conv-ae",
            "--set",
            "encoder.epochs=1",
            "--clusterer",
            "kmeans",
            "--set",
            "clusterer.n_clusters=3",
            "--runs-dir",
            runs_dir,
            "--no-plots",
            "--json",
        )
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["n_images"] == 30
    assert record["feature_dim"] == 98  # the article's 7x7x2 code
    assert (Path(record["run"]) / "skipped.txt").exists()
