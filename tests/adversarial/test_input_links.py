"""An image folder from someone else cannot pull in the user's other files through links: a link
that leads out of the folder is skipped with a warning unless ``follow_links`` says otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclust.io.images import ImageSkippedWarning
from imgclust.plugins.image_folder import ImageFolderDataset


def folder_with_links(root: Path) -> Path:
    images = root / "images"
    (images / "a").mkdir(parents=True)
    private = root / "private"
    private.mkdir()
    for i in range(3):
        Image.new("L", (6, 6), 40 * i).save(images / "a" / f"{i}.png")
    Image.new("L", (6, 6), 250).save(private / "secret.png")
    (images / "a" / "secret.png").symlink_to(private / "secret.png")
    (images / "a" / "again.png").symlink_to(images / "a" / "0.png")  # inside: followed
    return images


def load(images: Path, **settings):
    return ImageFolderDataset(path=str(images), cache=False, workers=1, **settings).load("all")


def test_a_link_out_of_the_folder_is_skipped_with_a_warning(tmp_path: Path):
    images = folder_with_links(tmp_path)
    with pytest.warns(ImageSkippedWarning, match=r"skipped 1 link\(s\) that lead out of .*secret"):
        data = load(images)
    assert data.ids == ["a/0.png", "a/1.png", "a/2.png", "a/again.png"]
    assert not (np.asarray(data.images) == 250).any()


def test_follow_links_reads_them_when_the_user_says_so(tmp_path: Path):
    images = folder_with_links(tmp_path)
    data = load(images, follow_links=True)
    assert "a/secret.png" in data.ids


def test_a_folder_of_nothing_but_links_out_says_why_it_is_empty(tmp_path: Path):
    images = tmp_path / "links"
    images.mkdir()
    source = folder_with_links(tmp_path / "elsewhere")
    (images / "x.png").symlink_to(source / "a" / "1.png")
    from imgclust.errors import DataError

    with pytest.warns(ImageSkippedWarning), pytest.raises(DataError, match="1 links leading out"):
        load(images)
