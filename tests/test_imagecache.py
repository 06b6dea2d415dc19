"""The decoded-image cache: reuse while a folder is unchanged, invalidation, placement, safety."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclust.errors import DataError, SettingsError
from imgclust.io import imagecache
from imgclust.io.images import ImageSkippedWarning
from imgclust.plugins.image_folder import ImageFolderDataset


@pytest.fixture(autouse=True)
def _user_cache(tmp_path: Path, monkeypatch) -> Path:
    """The user cache dir lies in the test's temporary folder, never in the real home."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "imgclust"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for index in range(6):
        sub = root / ("even" if index % 2 == 0 else "odd")
        sub.mkdir(parents=True, exist_ok=True)
        Image.new("L", (12, 10), 20 * index).save(sub / f"{index}.png")
    return root


def load(root: Path, **settings):
    settings.setdefault("workers", 1)
    return ImageFolderDataset(path=str(root), **settings).load("all")


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.npy"))


def test_first_load_writes_a_memory_map_that_the_second_reuses(folder: Path):
    first = load(folder)
    assert first.info["cache"] == "written"
    cache = folder / imagecache.FOLDER_CACHE
    assert Path(first.info["cache_path"]).parent == cache
    assert isinstance(first.images, np.memmap) and first.images.dtype == np.uint8
    assert not first.images.flags.writeable
    written = Path(first.info["cache_path"]).stat().st_mtime_ns
    second = load(folder)
    assert second.info["cache"] == "hit"
    assert second.ids == first.ids  # the cache folder itself is never scanned as images
    np.testing.assert_array_equal(second.images, first.images)
    assert Path(second.info["cache_path"]).stat().st_mtime_ns == written
    assert second.labels.tolist() == first.labels.tolist()
    assert [int(v) for v in second.images[:, 0, 0, 0]] == [0, 40, 80, 20, 60, 100]
    assert (cache / ".gitignore").read_text().splitlines()[-1] == "*"


def test_changing_adding_or_removing_a_file_invalidates_it(folder: Path):
    load(folder)
    cache = folder / imagecache.FOLDER_CACHE
    assert len(entries(cache)) == 1
    target = folder / "odd" / "3.png"
    later = target.stat().st_mtime + 10
    os.utime(target, (later, later))
    assert load(folder).info["cache"] == "hit"  # the content is what counts, not the time
    Image.new("L", (12, 10), 77).save(target)
    again = load(folder)
    assert again.info["cache"] == "written"
    assert int(again.images[again.ids.index("odd/3.png")].max()) == 77
    assert len(entries(cache)) == 1  # the stale entry was replaced, not kept beside
    Image.new("L", (12, 10), 250).save(folder / "odd" / "7.png")
    grown = load(folder)
    assert grown.info["cache"] == "written" and len(grown) == 7
    assert int(grown.images[grown.ids.index("odd/7.png")].max()) == 250
    (folder / "even" / "0.png").unlink()
    shrunk = load(folder)
    assert shrunk.info["cache"] == "written" and "even/0.png" not in shrunk.ids
    assert load(folder).info["cache"] == "hit"


def test_the_stat_check_reads_no_file_and_notices_touching(folder: Path, monkeypatch):
    assert load(folder, cache_check="stat").info["cache"] == "written"

    def unread(path):
        raise AssertionError("the stat check must not read image files")

    monkeypatch.setattr(imagecache, "content_fingerprint", unread)
    assert load(folder, cache_check="stat").info["cache"] == "hit"
    target = folder / "odd" / "3.png"
    later = target.stat().st_mtime + 10
    os.utime(target, (later, later))
    assert load(folder, cache_check="stat").info["cache"] == "written"
    with pytest.raises(SettingsError, match="cache_check must be content or stat"):
        load(folder, cache_check="mtime")


def test_changed_decode_settings_get_their_own_entry(folder: Path):
    load(folder)
    resized = load(folder, size=(5, 6))
    assert resized.info["cache"] == "written" and resized.images.shape == (6, 5, 6, 1)
    coloured = load(folder, mode="rgb")
    assert coloured.info["cache"] == "written" and coloured.images.shape == (6, 10, 12, 3)
    assert len(entries(folder / imagecache.FOLDER_CACHE)) == 3
    assert load(folder).info["cache"] == "hit"
    assert load(folder, size=(5, 6)).info["cache"] == "hit"


def test_cache_dir_setting_and_fallbacks(folder: Path, tmp_path: Path, monkeypatch, _user_cache):
    elsewhere = tmp_path / "my-cache"
    data = load(folder, cache_dir=str(elsewhere))
    assert Path(data.info["cache_path"]).parent == elsewhere
    assert not (folder / imagecache.FOLDER_CACHE).exists()
    assert load(folder, cache_dir=str(elsewhere)).info["cache"] == "hit"

    opener = imagecache.open_cache
    monkeypatch.setattr(
        imagecache,
        "open_cache",
        lambda d, inside=False: None if imagecache.FOLDER_CACHE in str(d) else opener(d, inside),
    )
    data = load(folder)  # a read-only image folder: the user cache dir
    assert Path(data.info["cache_path"]).parent == _user_cache
    assert imagecache.is_marked(_user_cache)
    assert load(folder).info["cache"] == "hit"

    monkeypatch.setattr(imagecache, "open_cache", lambda d, inside=False: None)
    data = load(folder)  # nowhere to write: decoded into memory
    assert data.info["cache"] == "off" and not isinstance(data.images, np.memmap)
    assert load(folder, cache=False).info["cache"] == "off"


def test_skipped_files_are_remembered_and_strict_still_refuses_a_cached_folder(folder: Path):
    (folder / "odd" / "bad.png").write_bytes(b"not an image")
    with pytest.warns(ImageSkippedWarning):
        first = load(folder)
    with pytest.warns(ImageSkippedWarning, match="odd/bad.png"):
        second = load(folder)
    assert second.info["cache"] == "hit"
    assert (
        second.info["skipped"]
        == first.info["skipped"]
        == ["odd/bad.png: not a readable image (unknown format or corrupt header)"]
    )
    assert len(second) == 6
    with pytest.raises(DataError, match="odd/bad.png"):
        load(folder, strict=True)


def test_failed_decoding_leaves_no_entry_or_temporary_file(folder: Path):
    Image.new("L", (30, 30), 0).save(folder / "even" / "big.png")
    with pytest.raises(DataError, match="differ in size"):
        load(folder)
    cache = folder / imagecache.FOLDER_CACHE
    assert sorted(p.name for p in cache.iterdir()) == [".gitignore", "CACHEDIR.TAG"]
    (folder / "even" / "big.png").unlink()
    (folder / "even" / "bad.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="unreadable"):
        load(folder, strict=True)
    assert sorted(p.name for p in cache.iterdir()) == [".gitignore", "CACHEDIR.TAG"]


def test_an_incomplete_or_damaged_entry_is_rewritten(folder: Path):
    first = load(folder)
    path = Path(first.info["cache_path"])
    del first
    path.with_suffix(".json").unlink()  # the array was renamed into place, the record never came
    assert load(folder).info["cache"] == "written"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut short
    rewritten = load(folder)
    assert rewritten.info["cache"] == "written"
    assert [int(v) for v in rewritten.images[:, 0, 0, 0]] == [0, 40, 80, 20, 60, 100]


def test_entry_names_follow_paths_sizes_fingerprints_settings_and_scope():
    stamp = imagecache.FileStamp
    stamps = [stamp("a.png", 10, "x1"), stamp("b/c.png", 20, "x2")]
    settings = {"size": None, "mode": "grayscale"}
    prefix, key = imagecache.entry_names(stamps, settings)
    assert imagecache.entry_names(list(stamps), dict(settings)) == (prefix, key)
    assert imagecache.ENTRY_NAME.fullmatch(f"{prefix}-{key}.npy")
    changed = [
        [stamp("a.png", 10, "x1"), stamp("b/d.png", 20, "x2")],
        [stamp("a.png", 11, "x1"), stamp("b/c.png", 20, "x2")],
        [stamp("a.png", 10, "x1"), stamp("b/c.png", 20, "x3")],
        stamps[:1],
    ]
    for other in changed:
        other_prefix, other_key = imagecache.entry_names(other, settings)
        assert other_prefix == prefix and other_key != key
    for other_settings, scope in (({"size": (28, 28), "mode": "grayscale"}, ""), (settings, "/x")):
        other_prefix, other_key = imagecache.entry_names(stamps, other_settings, scope)
        assert other_prefix != prefix and other_key != key


def test_cache_location_prefers_the_folder_then_the_user_cache(tmp_path: Path, _user_cache):
    folder, scope = imagecache.cache_location(tmp_path)
    assert folder.path == tmp_path.resolve() / imagecache.FOLDER_CACHE and scope == ""
    assert folder.managed
    folder, scope = imagecache.cache_location(tmp_path, tmp_path / "given")
    assert folder.path == tmp_path / "given" and scope == str(tmp_path.resolve())
    assert imagecache.user_cache_dir() == _user_cache


def test_a_new_or_empty_folder_is_marked_and_one_with_other_files_is_not(tmp_path: Path):
    made = imagecache.open_cache(tmp_path / "new" / "cache")
    assert made.managed and imagecache.is_marked(made.path)
    text = (made.path / imagecache.TAG_NAME).read_text()
    assert text.startswith("Signature: 8a477f597d28d172789f06886806bc55")  # CACHEDIR.TAG spec
    (tmp_path / "empty").mkdir()
    assert imagecache.open_cache(tmp_path / "empty").managed
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "photo.jpg").write_bytes(b"x")
    used = imagecache.open_cache(tmp_path / "used")
    assert used is not None and not used.managed
    assert sorted(p.name for p in (tmp_path / "used").iterdir()) == ["photo.jpg"]
    assert imagecache.open_cache(tmp_path / "used" / "photo.jpg") is None  # a file, not a folder


def test_an_untagged_cache_holding_only_imgclusts_files_is_adopted(folder: Path):
    """A cache from before the tag existed: only entries and the .gitignore imgclust wrote."""
    first = load(folder)
    cache = folder / imagecache.FOLDER_CACHE
    (cache / imagecache.TAG_NAME).unlink()
    assert imagecache.open_cache(cache, inside=True).managed
    assert load(folder).info["cache_path"] == first.info["cache_path"]
    (cache / imagecache.TAG_NAME).unlink()
    (cache / ".gitignore").write_text("*.npy\n")  # someone else's
    assert not imagecache.open_cache(cache, inside=True).managed


def test_a_tag_must_be_imgclusts_own_plain_file(tmp_path: Path):
    target = tmp_path / "elsewhere.tag"
    target.write_text(imagecache.TAG_TEXT)
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / imagecache.TAG_NAME).symlink_to(target)
    assert not imagecache.is_marked(tmp_path / "linked")
    (tmp_path / "huge").mkdir()
    padded = imagecache.TAG_TEXT + "#" * imagecache.TAG_MAX_BYTES
    (tmp_path / "huge" / imagecache.TAG_NAME).write_text(padded)
    assert not imagecache.is_marked(tmp_path / "huge")


def test_content_stamps_digest_bytes_and_name_unreadable_files(folder: Path):
    from imgclust.io.images import scan_folder

    files = scan_folder(folder, True, (".png",))
    stamps = imagecache.stamp_files(files, "content")
    assert [s.name for s in stamps] == [f.name for f in files]
    assert len({s.fingerprint for s in stamps}) == len(stamps)  # six different images
    missing = files[0]._replace(path=str(folder / "gone.png"))
    assert imagecache.stamp_files([missing])[0].fingerprint == "unreadable:FileNotFoundError"
    assert imagecache.stamp_files(files[:1], "stat")[0].fingerprint.startswith("stat:")


def test_a_target_size_over_max_pixels_is_refused_before_decoding(folder: Path):
    with pytest.raises(SettingsError, match="100000x100000 is 10,000,000,000 pixels"):
        ImageFolderDataset(path=str(folder), size=(100000, 100000))
    with pytest.raises(SettingsError, match="more than the 200 allowed"):
        ImageFolderDataset(path=str(folder), size=(15, 14), max_pixels=200)
    assert not (folder / imagecache.FOLDER_CACHE).exists()
    assert load(folder, size=(20, 10), max_pixels=200).images.shape == (6, 20, 10, 1)
