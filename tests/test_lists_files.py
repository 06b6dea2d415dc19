"""A dataset of image files that lists them (``ListsFiles``) is read on Dask workers, whatever its
class is called; the bundled image folder lists exactly the files ``load`` decodes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import imgclust
from imgclust.engine.build import load_data
from imgclust.engine.chunks import load_for_chunks
from imgclust.engine.config import resolve_config
from imgclust.engine.sources import FilesSource, LazyImages
from imgclust.kit import FileListing, ImageSet
from imgclust.stages.host import get_host, get_registry
from imgclust.stages.interfaces import ListsFiles


def png_folder(folder: Path, n: int = 12) -> Path:
    """``n`` 8x8 grayscale PNGs in sub-folders a, b, c (the labels), one of them unreadable."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        (folder / "abc"[i % 3]).mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "abc"[i % 3] / f"{i:02d}.png")
    (folder / "a" / "99.png").write_bytes(b"not an image")
    return folder


def test_an_image_folder_lists_the_files_load_decodes(tmp_path):
    from plugins.image_folder import ImageFolderDataset

    dataset = ImageFolderDataset(str(png_folder(tmp_path / "pngs")), cache=False, workers=1)
    assert isinstance(dataset, ListsFiles)
    listing = dataset.list_files()
    with pytest.warns(UserWarning, match="99.png"):
        loaded = dataset.load()
    assert len(listing.paths) == len(listing.names) == 13  # listed, not yet found unreadable
    assert listing.size == (8, 8) and listing.mode == "grayscale"
    readable = [listing.names.index(name) for name in loaded.ids]
    np.testing.assert_array_equal(np.asarray(listing.labels)[readable], loaded.labels)
    assert list(listing.class_names) == list(loaded.class_names)
    images, statuses = FilesSource.of(listing).read(0, len(listing.paths))
    np.testing.assert_array_equal(images, loaded.images)
    assert [s != "" for s in statuses].count(True) == 1


class ListedPngs:
    """A stranger's dataset of PNG files: it can decode them itself or only list them."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def load(self, split: str = "all") -> ImageSet:
        raise AssertionError("a Dask run must not decode the files in the client")

    def list_files(self) -> FileListing:
        files = sorted(p for p in self.path.rglob("*.png") if p.name != "99.png")
        names = [str(p.relative_to(self.path)) for p in files]
        return FileListing(tuple(map(str, files)), (8, 8), "grayscale", names)


def test_a_dataset_that_lists_its_files_is_read_on_the_workers(tmp_path):
    @imgclust.hookimpl
    def register_datasets(register):
        register("listed-pngs", ListedPngs)

    get_host().register(SimpleNamespace(register_datasets=register_datasets), "test-listed")
    registry = get_registry()
    folder = png_folder(tmp_path / "pngs")
    config = resolve_config(
        registry, dataset="listed-pngs", encoders=["flatten"], clusterer="kmeans",
        sets=[f"dataset.path={folder}", "clusterer.n_clusters=3", "dask=local:2"],
    )  # fmt: skip
    splits = load_for_chunks(registry, config, lambda message: None, load_data)
    data = splits.data
    assert isinstance(data.images, LazyImages) and len(data) == 12
    assert data.info["read_on"] == "workers" and data.ids[0] == "a/00.png"
    assert data.images[3].shape == (8, 8, 1)  # decoded on use, from the listed file


@pytest.mark.parametrize(
    ("listing", "words"),
    [
        ("not a listing", "must return a FileListing, not str"),
        (FileListing(("a.png", "b.png"), (8, 8), "grayscale", ["a.png"]), "1 names for 2 paths"),
        (FileListing(("a.png",), (8, 8), "RGB", ["a.png"]), "mode 'RGB'"),
        (FileListing(("a.png",), (0, 8), "grayscale", ["a.png"]), "image size must be positive"),
        (FileListing(("a.png",), (8, 8), "rgb", ["a.png"], fit="zoom"), "fit 'zoom'"),
    ],
)
def test_a_listing_that_cannot_be_decoded_is_one_line_naming_the_dataset(tmp_path, listing, words):
    class BadListing(ListedPngs):
        def list_files(self):
            return listing

    @imgclust.hookimpl
    def register_datasets(register):
        register("bad-listing", BadListing)

    get_host().register(SimpleNamespace(register_datasets=register_datasets), "test-bad")
    registry = get_registry()
    config = resolve_config(
        registry, dataset="bad-listing", encoders=["flatten"], clusterer="kmeans",
        sets=[f"dataset.path={tmp_path}", "clusterer.n_clusters=3", "dask=local:2"],
    )  # fmt: skip
    with pytest.raises(imgclust.ImgclustError, match="^dataset 'bad-listing'") as caught:
        load_for_chunks(registry, config, lambda message: None, load_data)
    assert words in str(caught.value) and "\n" not in str(caught.value)
