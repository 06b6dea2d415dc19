"""One containment walk for every command that reads a run: a file linked out of the run folder,
a link that leads nowhere, a FIFO or another special file anywhere in it is refused alike in one
line, before anything is read; FIFOs given as input images are refused before any open.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

SECRET = "secret-token-of-the-user"

COMMANDS = {
    "report --html-only": ("report", "{run}", "--html-only"),
    "report": ("report", "{run}"),
    "export": ("export", "{run}", "{tmp}/out"),
    "export --csv": ("export", "{run}", "{tmp}/out", "--csv"),
    "similar": ("similar", "{run}", "--id", "0"),
    "duplicates": ("duplicates", "{run}", "-o", "{tmp}/d.csv"),
    "evaluate": ("evaluate", "{run}"),
    "predict": ("predict", "{run}", "{tmp}/new.npy"),
}


def linked_config(run: Path, outside: Path) -> str:
    (outside / "user.toml").write_text(f"# {SECRET}\n{(run / 'config.toml').read_text()}")
    (run / "config.toml").unlink()
    os.symlink(outside / "user.toml", run / "config.toml")
    return "config.toml"


def linked_plot(run: Path, outside: Path) -> str:
    (run / "plots").mkdir(exist_ok=True)
    (outside / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + SECRET.encode())
    os.symlink(outside / "photo.png", run / "plots" / "extra.png")
    return "plots/extra.png"


def fifo_plot(run: Path, outside: Path) -> str:
    (run / "plots").mkdir(exist_ok=True)
    os.mkfifo(run / "plots" / "extra.png")
    return "plots/extra.png"


def dangling_link(run: Path, outside: Path) -> str:
    os.symlink(run / "nowhere", run / "metrics.json.bak")
    return "metrics.json.bak"


def link_loop(run: Path, outside: Path) -> str:
    os.symlink(run / "loop-b", run / "loop-a")
    os.symlink(run / "loop-a", run / "loop-b")
    return "loop-"


def linked_folder(run: Path, outside: Path) -> str:
    (outside / "folder").mkdir()
    (outside / "folder" / "notes.txt").write_text(SECRET)
    os.symlink(outside / "folder", run / "plots-extra")
    return "plots-extra"


TAMPERING = {
    "linked config.toml": linked_config,
    "linked plot": linked_plot,
    "FIFO plot": fifo_plot,
    "dangling link": dangling_link,
    "link loop": link_loop,
    "linked folder": linked_folder,
}


@contextlib.contextmanager
def fifos_unblocked(folder: Path) -> Iterator[None]:
    """Should a command open a FIFO below ``folder``, give it end-of-file after a moment, so that
    a test of the old behaviour fails instead of hanging."""
    done = threading.Event()

    def release() -> None:
        while not done.wait(0.5):
            for root, _, names in os.walk(folder):
                for name in names:
                    path = os.path.join(root, name)
                    if not os.path.islink(path) and os.path.exists(path) and _is_fifo(path):
                        with contextlib.suppress(OSError):  # ENXIO: nobody reads it yet
                            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _is_fifo(path: str) -> bool:
    import stat

    return stat.S_ISFIFO(os.stat(path).st_mode)


def new_images(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    images = (load_digits().images[:5] * 15).astype(np.uint8)[..., None]
    np.save(tmp_path / "new.npy", images)


@pytest.mark.parametrize("how", list(TAMPERING))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_refuses_a_run_that_reaches_outside(
    cli, run_copy: Path, tmp_path: Path, command: str, how: str
) -> None:
    outside = tmp_path / "home"
    outside.mkdir()
    new_images(tmp_path)
    named = TAMPERING[how](run_copy, outside)
    args = [a.format(run=run_copy, tmp=tmp_path) for a in COMMANDS[command]]
    before = {p.name for p in run_copy.iterdir()}
    with fifos_unblocked(run_copy):
        result = cli(*args)
    assert result.exit_code != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and named in lines[0], result.stderr
    assert "refused" in lines[0] and "unexpected" not in lines[0]
    assert {p.name for p in run_copy.iterdir()} == before  # nothing written, not even the page
    assert not (tmp_path / "out").exists() and not (tmp_path / "d.csv").exists()


@pytest.mark.parametrize("command", ["similar", "predict"])
def test_an_input_that_is_a_fifo_is_refused_before_it_is_opened(
    cli, run_copy: Path, tmp_path: Path, command: str
) -> None:
    os.mkfifo(tmp_path / "x.npy")
    with fifos_unblocked(tmp_path):
        result = cli(command, run_copy, tmp_path / "x.npy")
    assert result.exit_code != 0
    line = result.stderr.strip()
    assert line.startswith("Error:") and "x.npy" in line and "not a regular file" in line, line


def test_an_array_dataset_that_is_a_fifo_is_refused_before_it_is_opened(cli, tmp_path: Path):
    os.mkfifo(tmp_path / "images.npy")
    with fifos_unblocked(tmp_path):
        result = cli("run", "--dataset", "arrays", "--set", f"dataset.path={tmp_path}/images.npy",
                     "--encoder", "flatten", "--clusterer", "kmeans", "--no-plots",
                     "--runs-dir", tmp_path / "runs")  # fmt: skip
    assert result.exit_code != 0
    line = result.stderr.strip().splitlines()[-1]
    assert "images.npy" in line and "not a regular file" in line, result.stderr
