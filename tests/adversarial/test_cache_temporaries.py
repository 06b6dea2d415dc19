"""The cache's temporary files: sizes checked before anything is made, imgclust's names only,
and nothing left behind by a failure, Ctrl-C, SIGTERM, or (on the next use) a killed writer."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclust.errors import DataError
from imgclust.io import imagecache
from imgclust.io import images as image_io
from imgclust.plugins.image_folder import ImageFolderDataset

GIB = 1 << 30


@pytest.fixture(autouse=True)
def _user_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def make_images(root: Path, count: int = 6) -> Path:
    root.mkdir(parents=True)
    for index in range(count):
        Image.new("L", (9, 7), 30 * index).save(root / f"{index}.png")
    return root


def files_below(root: Path, *patterns: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for pattern in patterns for p in root.rglob(pattern))


def load(root: Path, **settings):
    settings.setdefault("workers", 1)
    return ImageFolderDataset(path=str(root), **settings).load("all")


def child_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"), OPENBLAS_NUM_THREADS="1")
    env.update(OMP_NUM_THREADS="1", MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="3")
    return env


def bounded() -> None:
    """In the child: at most 8 GiB of address space and 256 MiB per written file, so that a
    regression fails this test instead of the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (8 * GIB, 8 * GIB))
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 20, 256 << 20))


def test_a_huge_target_size_is_refused_in_one_line_leaving_no_file(tmp_path: Path):
    images = make_images(tmp_path / "images", count=21)
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "imgclust", "run", "--dataset", "image-folder"]
    command += ["--set", f"dataset.path={images}", "--set", "dataset.size=100000x100000"]
    command += ["--encoder", "pca", "--clusterer", "kmeans", "--runs-dir", str(runs)]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=child_env(tmp_path),
        preexec_fn=bounded,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "100000x100000" in lines[0] and "max_pixels" in lines[0]
    assert files_below(tmp_path, "*.npy", "*.tmp") == []
    assert not (images / imagecache.FOLDER_CACHE).exists()
    assert not runs.exists() or list(runs.iterdir()) == []


def test_an_entry_over_the_stated_bound_is_refused_before_any_file_is_made(tmp_path: Path):
    images = make_images(tmp_path / "images")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"exceed the cache limit of 1e-05 GiB.*cache_max_gib"):
        load(images, cache_dir=str(cache), size=(64, 64), cache_max_gib=1e-5)
    assert files_below(cache, "*.npy", "*.tmp", "*.json") == []
    assert len(load(images, cache_dir=str(cache), size=(64, 64))) == 6


def test_an_entry_larger_than_the_free_disk_is_refused_in_one_line(
    tmp_path: Path, cli, monkeypatch
):
    images = make_images(tmp_path / "images")
    cache = tmp_path / "cache"
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(imagecache.shutil, "disk_usage", lambda p: usage(2 * GIB, GIB, GIB))
    result = cli(
        *("run", "--dataset", "image-folder", "--set", f"dataset.path={images}"),
        *("--set", f"dataset.cache_dir={cache}", "--set", "dataset.workers=1"),
        *("--encoder", "pca", "--clusterer", "kmeans", "--runs-dir", tmp_path / "runs"),
    )
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("Error: ") and "free space" in line and "dataset.cache_dir" in line
    assert "Traceback" not in result.stderr
    assert files_below(cache, "*.npy", "*.tmp") == []


def test_ctrl_c_while_decoding_leaves_no_temporary_file(tmp_path: Path, monkeypatch):
    images = make_images(tmp_path / "images")
    calls = []
    real = image_io.decode_image

    def interrupted(path, size, mode, *rest):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(path, size, mode, *rest)

    monkeypatch.setattr(image_io, "decode_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load(images, size=(5, 5))
    assert files_below(tmp_path, "*.npy", "*.tmp") == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_failure_while_committing_leaves_no_temporary_file(tmp_path: Path, monkeypatch):
    images = make_images(tmp_path / "images", count=5)
    (images / "bad.png").write_bytes(b"not an image")  # so that rows are copied to a 2nd file

    def no_space(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(imagecache.atomic, "write_json", no_space)
    with pytest.raises(DataError, match="could not write the cache entry .*No space left"):
        load(images)
    assert files_below(tmp_path, "*.tmp", "*.npy") == []


SLOW_LOAD = """
import os, sys, time
from imgclust.io import images as image_io
from imgclust.plugins import image_folder

real = image_io.decode_image
image_io.POOL_SECONDS = 0.0  # a pool even for a few files, when workers > 1

def slow(path, size, mode, *rest):
    print("decoding", os.getpid(), flush=True)
    time.sleep(60)
    return real(path, size, mode, *rest)

image_io.decode_image = slow
workers = int(sys.argv[2])
image_folder.ImageFolderDataset(path=sys.argv[1], workers=workers, size=(5, 5)).load("all")
"""


def gone(pid: int) -> bool:
    """Whether a process has ended (a zombie awaiting its reaper counts as ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] in ("Z", "X")


def children_of(pid: int) -> set[int]:
    found = set()
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        found.update(int(n) for n in listing.read_text().split())
    return found


def eventually(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, /proc and prctl")
@pytest.mark.parametrize(
    "workers, signum", [(1, signal.SIGTERM), (2, signal.SIGTERM), (2, signal.SIGKILL)]
)
def test_a_stopped_load_leaves_no_temporary_file_and_no_decoding_worker(
    workers: int, signum: int, tmp_path: Path
):
    images = make_images(tmp_path / "images", count=8 * workers)
    cache = images / imagecache.FOLDER_CACHE
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_LOAD, str(images), str(workers)],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(tmp_path),
    )
    try:
        decoder = int(child.stdout.readline().split()[1])
        assert (decoder == child.pid) == (workers == 1)
        decoders = {decoder, *children_of(child.pid)}
        assert len(decoders) == workers
        assert len(files_below(cache, ".*.tmp")) == 1
        child.send_signal(signum)
        assert child.wait(timeout=30) == -signum
    finally:
        child.kill()
        child.wait()
    assert eventually(lambda: all(gone(pid) for pid in decoders))  # no orphan holds the file
    if signum == signal.SIGKILL:  # nothing could clean up: the next use of the cache does
        [left] = cache.glob(".*.tmp")
        old = time.time() - 2 * imagecache.ABANDONED_SECONDS
        os.utime(left, (old, old))
        imagecache.open_cache(cache, inside=True)
    assert files_below(tmp_path, "*.npy", "*.tmp") == []


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from imgclust.io import imagecache

folder = imagecache.open_cache(Path(sys.argv[1]))
entry = imagecache.PendingEntry(folder, "0" * 16, "1" * 32, (3, 4, 4, 1))
print(entry.temp_path.name, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writers_temporary_file_is_removed_on_next_use_a_live_one_is_not(
    tmp_path: Path,
):
    cache = tmp_path / "cache"
    done = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(cache)],
        capture_output=True,
        text=True,
        env=child_env(tmp_path),
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL
    left = cache / done.stdout.strip()
    assert left.exists() and imagecache.is_imgclust_name(left.name)
    live = imagecache.PendingEntry(imagecache.open_cache(cache), "2" * 16, "3" * 32, (2, 3, 3, 1))
    imagecache.sweep(cache)
    assert left.exists()  # too young to tell from a writer that has just begun
    old = time.time() - 2 * imagecache.ABANDONED_SECONDS
    for path in (left, live.temp_path):
        os.utime(path, (old, old))
    imagecache.open_cache(cache)
    assert not left.exists()
    assert live.temp_path.exists()  # its writer is alive and holds it
    live.array[:] = 7
    written = live.commit({"ids": ["a", "b"]})
    assert np.asarray(written.images).tolist() == np.full((2, 3, 3, 1), 7).tolist()


def test_temporary_files_carry_imgclusts_names_and_only_those_are_its(tmp_path: Path):
    cache = imagecache.open_cache(tmp_path / "cache")
    entry = imagecache.PendingEntry(cache, "a" * 16, "b" * 32, (2, 2, 2, 1))
    assert imagecache.is_imgclust_name(entry.temp_path.name)
    entry.commit({"ids": ["x", "y"]})
    assert sorted(p.name for p in cache.path.iterdir()) == [
        imagecache.TAG_NAME,
        f"{'a' * 16}-{'b' * 32}.json",
        f"{'a' * 16}-{'b' * 32}.npy",
    ]
    for name in (".draft.tmp", "abc-def.npy", "notes.txt", imagecache.TAG_NAME, ".x.npy.tmp"):
        assert not imagecache.is_imgclust_name(name), name
    for name in (f".{'a' * 16}-{'b' * 32}.json.k2j4_x9q.tmp", ".imgclust-probe.abcdefgh.tmp"):
        assert imagecache.is_imgclust_name(name), name
