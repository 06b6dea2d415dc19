"""An image replaced by another of the same size with its modification time kept is never served
stale: what ``cp -p``, ``rsync -t`` and ``tar`` leave behind."""

from __future__ import annotations

import os
import shutil
import tarfile
import time
from pathlib import Path

import pytest
from PIL import Image

from imgclust.plugins.image_folder import ImageFolderDataset

SHADES = [10, 60, 110, 160]


@pytest.fixture(autouse=True)
def _user_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def make_bitmaps(root: Path) -> Path:
    """Four uncompressed 8x6 BMPs: any other shade gives a file of exactly the same size."""
    root.mkdir(parents=True)
    for index, shade in enumerate(SHADES):
        Image.new("L", (8, 6), shade).save(root / f"{index}.bmp")
    return root


def load(root: Path, check: str):
    settings = {} if check == "content" else {"cache_check": check}  # content is the default
    return ImageFolderDataset(path=str(root), workers=1, **settings).load("all")


def shade_of(data, name: str) -> int:
    return int(data.images[data.ids.index(name)].max())


def replace_in_place(target: Path, replacement: Path) -> None:
    """Overwrite the same file's bytes, then put its times back (tar, an editor, cp -p)."""
    before = target.stat()
    target.write_bytes(replacement.read_bytes())
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))


def copy_preserving(target: Path, replacement: Path) -> None:
    """cp -p: the replacement's bytes and its (equal) times."""
    before = target.stat()
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    shutil.copy2(replacement, target)


def rename_over(target: Path, replacement: Path) -> None:
    """rsync -t: a new file written beside, given the old times, renamed over the old one."""
    before = target.stat()
    beside = target.with_name(f".{target.name}.partial")
    shutil.copyfile(replacement, beside)
    os.utime(beside, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(beside, target)


def untar_over(target: Path, replacement: Path) -> None:
    """tar x of an archive whose member has the old name, size and time but other pixels."""
    before = target.stat()
    archive = target.parent.parent / "backup.tar"
    with tarfile.open(archive, "w") as tar:
        info = tar.gettarinfo(replacement, arcname=target.name)
        info.mtime = before.st_mtime
        with open(replacement, "rb") as file:
            tar.addfile(info, file)
    with tarfile.open(archive) as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(target.parent, **safe)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # tar keeps whole seconds


REPLACEMENTS = {
    "in place": replace_in_place,
    "cp -p": copy_preserving,
    "rsync -t": rename_over,
    "tar": untar_over,
}


@pytest.mark.parametrize("check", ["content", "stat"])
@pytest.mark.parametrize("how", list(REPLACEMENTS))
def test_a_replaced_image_with_its_old_size_and_time_gets_fresh_pixels(
    how: str, check: str, tmp_path: Path
):
    root = make_bitmaps(tmp_path / "images")
    first = load(root, check)
    assert first.info["cache"] == "written" and shade_of(first, "1.bmp") == 60
    del first
    replacement = tmp_path / "other.bmp"
    Image.new("L", (8, 6), 233).save(replacement)
    target = root / "1.bmp"
    size, mtime = target.stat().st_size, target.stat().st_mtime_ns
    assert replacement.stat().st_size == size
    time.sleep(0.05)  # past the file system's coarse clock tick, as any real replacement is
    REPLACEMENTS[how](target, replacement)
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (size, mtime)
    again = load(root, check)
    assert again.info["cache"] == "written"
    assert shade_of(again, "1.bmp") == 233
    assert [shade_of(again, f"{i}.bmp") for i in (0, 2, 3)] == [10, 110, 160]
    assert load(root, check).info["cache"] == "hit"


def test_the_same_bytes_copied_back_with_a_new_time_are_still_a_hit(tmp_path: Path):
    root = make_bitmaps(tmp_path / "images")
    load(root, "content")
    copy = tmp_path / "copy.bmp"
    shutil.copyfile(root / "2.bmp", copy)
    os.replace(copy, root / "2.bmp")  # new inode, new times, same bytes
    assert load(root, "content").info["cache"] == "hit"
