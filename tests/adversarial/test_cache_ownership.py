"""The decode cache deletes only what it made, wherever its folder comes from.

The cache folder can be named by ``--set dataset.cache_dir``, by a ``--config`` file, or by the
config.toml of someone else's run given to ``imgclust report``: a user's files there must survive.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclust.io import imagecache
from imgclust.plugins.image_folder import ImageFolderDataset

HOURS_AGO = time.time() - 7 * 3600
USER_FILES = {
    ".draft.tmp": b"half a thesis",
    "abc-def.npy": b"the user's array",
    "notes.txt": b"do not lose",
    ".a-b.c.tmp": b"a temporary file of another program",
}


@pytest.fixture(autouse=True)
def _user_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def make_images(root: Path, shade: int = 0) -> Path:
    """Eight small grayscale PNGs in two sub-folders."""
    for index in range(8):
        sub = root / ("a" if index % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.new("L", (9, 7), (shade + 25 * index) % 256).save(sub / f"{index}.png")
    return root


def plant(directory: Path, files: dict[str, bytes], when: float = HOURS_AGO) -> None:
    """Write files as a user would, with an old modification time."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
        os.utime(directory / name, (when, when))


def assert_untouched(directory: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert (directory / name).read_bytes() == data, name


def load(images: Path, cache_dir: Path | None = None, **settings):
    """The folder's images, cached in ``cache_dir`` (by default inside the image folder)."""
    where = {} if cache_dir is None else {"cache_dir": str(cache_dir)}
    return ImageFolderDataset(path=str(images), workers=1, **where, **settings).load("all")


def test_prune_leaves_files_it_did_not_name_even_with_a_matching_prefix(tmp_path: Path):
    cache = tmp_path / "cache"
    plant(cache, {**USER_FILES, "abc-0123.json": b"{}"})
    imagecache.prune(cache, "abc", keep_key="0" * 32)
    assert_untouched(cache, {**USER_FILES, "abc-0123.json": b"{}"})
    imagecache.sweep(cache)
    assert_untouched(cache, {**USER_FILES, "abc-0123.json": b"{}"})


def test_a_marked_cache_removes_only_its_own_older_entries_and_abandoned_temporaries(
    tmp_path: Path,
):
    images = make_images(tmp_path / "images")
    cache = tmp_path / "cache"
    first = load(images, cache)
    prefix = Path(first.info["cache_path"]).name.split("-")[0]
    del first
    older = f"{prefix}-{'f' * 32}"
    stale_temp = f".{older}.npy.abcd_123.tmp"
    theirs = {
        **USER_FILES,
        f"{prefix}-notes.txt": b"a user's file that shares the prefix",
        f"{prefix}-def.npy": b"and another",
        f"{prefix}-{'F' * 32}.npy": b"upper-case hex is not imgclust's",
    }
    plant(cache, theirs)
    plant(cache, {f"{older}.npy": b"old", f"{older}.json": b"{}", stale_temp: b"left"})
    Image.new("L", (9, 7), 255).save(images / "a" / "1.png")
    again = load(images, cache)
    assert again.info["cache"] == "written"
    assert_untouched(cache, theirs)
    for gone in (f"{older}.npy", f"{older}.json", stale_temp):
        assert not (cache / gone).exists(), gone
    assert imagecache.is_marked(cache)


def test_links_named_like_entries_are_not_followed_or_removed(tmp_path: Path):
    images = make_images(tmp_path / "images")
    cache = tmp_path / "cache"
    first = load(images, cache)
    prefix = Path(first.info["cache_path"]).name.split("-")[0]
    precious = tmp_path / "precious.npy"
    precious.write_bytes(b"precious")
    link = cache / f"{prefix}-{'e' * 32}.npy"
    link.symlink_to(precious)
    Image.new("L", (9, 7), 255).save(images / "a" / "1.png")
    assert load(images, cache).info["cache"] == "written"
    assert precious.read_bytes() == b"precious" and link.is_symlink()


def test_an_unmarked_folder_with_other_files_is_used_but_never_cleaned(tmp_path: Path, capfd):
    images = make_images(tmp_path / "images")
    mine = tmp_path / "my-folder"
    lookalike = f"{'0' * 16}-{'1' * 32}"  # names like imgclust's, but not provably its
    planted = {
        **USER_FILES,
        f"{lookalike}.npy": b"x",
        f"{lookalike}.json": b"{}",
        f".{lookalike}.npy.abcdefgh.tmp": b"y",
    }
    plant(mine, planted)
    first = load(images, mine)
    assert first.info["cache"] == "written"
    assert "holds files imgclust did not make" in capfd.readouterr().err
    Image.new("L", (9, 7), 255).save(images / "a" / "1.png")
    second = load(images, mine)
    assert second.info["cache"] == "written"
    assert load(images, mine).info["cache"] == "hit"
    assert_untouched(mine, planted)
    assert not (mine / imagecache.TAG_NAME).exists() and not imagecache.is_marked(mine)
    assert Path(first.info["cache_path"]).exists()  # its own older entry is not removed either
    imagecache.prune(mine, Path(first.info["cache_path"]).name[:16], "0" * 32)
    assert Path(first.info["cache_path"]).exists()


def test_another_programs_cache_tag_does_not_make_the_folder_imgclusts(tmp_path: Path):
    images = make_images(tmp_path / "images")
    theirs = tmp_path / "their-cache"
    tag = f"{imagecache.TAG_SIGNATURE}\n# This file is a cache directory tag created by tool.\n"
    plant(theirs, {imagecache.TAG_NAME: tag.encode(), **USER_FILES})
    assert not imagecache.is_marked(theirs)
    load(images, theirs)
    Image.new("L", (9, 7), 255).save(images / "a" / "1.png")
    load(images, theirs)
    assert_untouched(theirs, {imagecache.TAG_NAME: tag.encode(), **USER_FILES})


def test_a_damaged_entry_in_an_unmarked_folder_is_not_replaced(tmp_path: Path):
    images = make_images(tmp_path / "images")
    mine = tmp_path / "my-folder"
    plant(mine, USER_FILES)
    entry = Path(load(images, mine).info["cache_path"])
    entry.write_bytes(b"the user's own file, by an unlucky name")
    data = load(images, mine)
    assert data.info["cache"] == "off" and len(data) == 8
    assert entry.read_bytes() == b"the user's own file, by an unlucky name"


def run_cli(cli, *args):
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    return result


@pytest.mark.parametrize("route", ["set", "config", "report"])
def test_a_users_folder_named_by_settings_config_or_a_foreign_run_keeps_its_files(
    route: str, cli, tmp_path: Path
):
    images = make_images(tmp_path / "images")
    runs = tmp_path / "runs"
    users = tmp_path / "users-folder"
    plant(users, USER_FILES)
    common = ["--encoder", "pca", "--clusterer", "kmeans", "--runs-dir", runs, "--no-plots"]
    sets = [
        *("--set", f"dataset.path={images}", "--set", "clusterer.n_clusters=2"),
        *("--set", "encoder.n_components=2", "--set", "dataset.workers=1"),
    ]
    if route == "set":
        base = ["run", "--dataset", "image-folder", *sets, *common]
        run_cli(cli, *base, "--set", f"dataset.cache_dir={users}")
        Image.new("L", (9, 7), 255).save(images / "a" / "1.png")
        run_cli(cli, *base, "--set", f"dataset.cache_dir={users}")
    else:
        own_cache = tmp_path / "their-cache"
        base = ["run", "--dataset", "image-folder", *sets, *common]
        run_cli(cli, *base, "--set", f"dataset.cache_dir={own_cache}")
        [run] = [p for p in runs.iterdir() if p.is_dir()]
        config = run / "config.toml"
        text = config.read_text()
        assert str(own_cache) in text
        config.write_text(text.replace(str(own_cache), str(users)))
        if route == "config":
            run_cli(cli, "run", "--config", config, "--runs-dir", runs, "--no-plots")
        else:
            run_cli(cli, "report", run)
    assert_untouched(users, USER_FILES)
    assert not imagecache.is_marked(users)
    leftovers = sorted(p.name for p in users.glob(".*.tmp"))
    assert leftovers == sorted(n for n in USER_FILES if n.endswith(".tmp"))


def test_an_entry_planted_in_a_strangers_image_folder_is_never_read(tmp_path: Path, monkeypatch):
    """A stranger ships the folder with its ``.imgclust-cache``: entries made under another
    user's key (here, with the pixels changed after) are not this user's, so the images are
    decoded from the files."""
    images = make_images(tmp_path / "images")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "stranger"))
    made = load(images)
    assert made.info["cache"] == "written"
    planted = np.load(made.info["cache_path"], mmap_mode="r+")
    planted[:] = 255 - planted  # the stranger's pixels in place of the files'
    planted.flush()
    del planted
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
    mine = load(images)
    assert mine.info["cache"] == "written"
    assert np.array_equal(mine.images, load(images, tmp_path / "fresh").images)


def test_a_cache_folder_linked_out_of_the_image_folder_is_not_written(tmp_path: Path):
    images = make_images(tmp_path / "images")
    victim = tmp_path / "victim"
    victim.mkdir()
    (images / imagecache.FOLDER_CACHE).symlink_to(victim)
    data = load(images)
    assert list(victim.iterdir()) == []
    assert not Path(data.info["cache_path"]).is_relative_to(victim)
