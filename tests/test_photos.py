"""Photos of mixed sizes: image-folder's ``fit`` (stretch, pad, crop) and the ``photos`` recipe
end to end with backbone weights read from a file (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imgclust.errors import SettingsError


def write_photo(path: Path, height: int, width: int, colour=(200, 30, 30)) -> None:
    """A photo with a white background and a coloured block filling its middle third."""
    from PIL import Image

    pixels = np.full((height, width, 3), 255, dtype=np.uint8)
    pixels[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def read(folder: Path, fit: str, size=(20, 20)) -> np.ndarray:
    from imgclust.plugins.image_folder import ImageFolderDataset

    dataset = ImageFolderDataset(
        path=str(folder), size=size, mode="rgb", cache=False, workers=1, fit=fit
    )
    return dataset.load("all").images


@pytest.fixture
def wide(tmp_path: Path) -> Path:
    """One 40x120 photo: three times as wide as tall."""
    write_photo(tmp_path / "wide" / "a.png", 40, 120)
    return tmp_path / "wide"


def test_stretch_fills_the_frame_and_loses_the_aspect_ratio(wide):
    (image,) = read(wide, "stretch")
    red_columns = (image[10, :, 1] < 100).sum()
    assert 5 <= red_columns <= 8  # a third of the width, squeezed into 20 columns


def test_pad_keeps_the_aspect_ratio_and_pads_with_the_edge_colour(wide):
    (image,) = read(wide, "pad", size=(60, 60))
    assert (image[:15] == 255).all() and (image[-15:] == 255).all()  # white bands above, below
    middle = image[30]
    assert 18 <= (middle[:, 1] < 100).sum() <= 22  # the block keeps its third of the width


def test_pad_black_pads_with_black(wide):
    (image,) = read(wide, "pad-black")
    assert (image[:5] == 0).all() and (image[-5:] == 0).all()


def test_crop_keeps_the_aspect_ratio_and_keeps_the_centre(wide):
    (image,) = read(wide, "crop")
    # The centre square of a 3:1 photo is the block's third exactly: mostly red.
    assert (image[:, :, 1] < 100).mean() > 0.25
    assert (image[:, :, 1] < 100)[:, 8:12].any()


def test_tall_and_grayscale_photos_fit_too(tmp_path):
    write_photo(tmp_path / "tall" / "b.png", 90, 30)
    for fit in ("stretch", "pad", "pad-black", "crop"):
        assert read(tmp_path / "tall", fit, size=(16, 24)).shape == (1, 16, 24, 3)


def test_an_unknown_fit_is_one_line(wide):
    with pytest.raises(SettingsError, match="fit must be one of stretch, pad, pad-black, crop"):
        read(wide, "squash")


def test_cache_entries_differ_by_fit(wide):
    from imgclust.plugins.image_folder import ImageFolderDataset

    padded = ImageFolderDataset(path=str(wide), size=(20, 20), mode="rgb", fit="pad")
    cropped = ImageFolderDataset(path=str(wide), size=(20, 20), mode="rgb", fit="crop")
    assert not np.array_equal(padded.load("all").images, cropped.load("all").images)
    assert not np.array_equal(padded.load("all").images, cropped.load("all").images)


@pytest.mark.slow
def test_the_photos_recipe_runs_end_to_end_and_predicts_with_weights_from_a_file(cli, tmp_path):
    """Mixed sizes and orientations, the recipe's own backbone, weights read from a file."""
    from imgclust.plugins.pretrained import PretrainedEncoder

    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    shapes = [(120, 80), (80, 120), (100, 100), (60, 150)]
    for index in range(12):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        height, width = shapes[index % len(shapes)]
        write_photo(folder / f"{index:02d}.jpg", height, width, colour)
    weights = tmp_path / "efficientnetv2-b0.weights.h5"
    backbone = PretrainedEncoder(backbone="efficientnetv2-b0", weights="none", seed=1)
    backbone.fit(np.zeros((1, 8, 8, 3), dtype=np.uint8)).model_.save_weights(weights)
    runs = tmp_path / "runs"
    result = cli(
        "run",
        "--recipe",
        "photos",
        "--set",
        f"dataset.path={folder}",
        "--set",
        f"encoder.pretrained.weights={weights}",
        "--set",
        "clusterer.n_clusters=3",
        "--no-plots",
        "--runs-dir",
        runs,
    )
    assert result.exit_code == 0, result.stderr
    (run,) = runs.iterdir()
    config = (run / "config.toml").read_text()
    assert 'fit = "pad"' in config and 'backbone = "efficientnetv2-b0"' in config
    out = tmp_path / "new.csv"
    predicted = cli("predict", run, folder, "-o", out)
    assert predicted.exit_code == 0, predicted.stderr
    fitted = (run / "assignments.csv").read_text().splitlines()[1:]
    again = out.read_text().splitlines()[1:]
    assert [r.split(",")[1] for r in again] == [r.split(",")[1] for r in fitted]
