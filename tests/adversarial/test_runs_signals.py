"""Real ``imgclust run`` processes stopped by Ctrl-C, SIGTERM and SIGKILL, and resumed twice at
once: a run folder is never lost, never left half-made, and never shared by two processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# a tiny conv-ae on digits whose epochs take seconds: one step per image
CONV_AE = [
    "--dataset",
    "digits",
    "--encoder",
    "conv-ae",
    "--clusterer",
    "kmeans",
    "--no-plots",
    "--set",
    "dataset.limit=1000",
    "--set",
    "encoder.batch_size=1",
    "--set",
    "encoder.filters=4,2",
]
WAIT = 120  # seconds any one step may take on a busy machine


@pytest.fixture(autouse=True)
def _needs_conv_ae(registry):
    if "conv-ae" not in registry.names("encoders"):
        pytest.skip("the conv-ae encoder is not installed")


class Imgclust:
    """``python -m imgclust ARGS`` in the background, its stderr collected line by line."""

    def __init__(self, *args: object, cwd: Path) -> None:
        env = {**os.environ, "MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "imgclust", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=env,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, fragment: str) -> None:
        """Wait until stderr holds a line with ``fragment`` (fails if the process ends first)."""
        deadline = time.monotonic() + WAIT
        while not any(fragment in line for line in self.lines):
            assert self.process.poll() is None, f"ended first: {self.stderr}"
            assert time.monotonic() < deadline, f"no {fragment!r} in: {self.stderr}"
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def finish(self) -> int:
        """Wait for the process to end; its exit code."""
        try:
            code = self.process.wait(timeout=WAIT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        self.reader.join(timeout=10)
        return code

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


def wait_for(path_glob: tuple[Path, str], process: Imgclust) -> Path:
    """The first path matching the glob, once there is one."""
    folder, pattern = path_glob
    deadline = time.monotonic() + WAIT
    while True:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
        assert process.process.poll() is None, f"ended first: {process.stderr}"
        assert time.monotonic() < deadline, f"no {pattern} under {folder}"
        time.sleep(0.02)


def folders(path: Path) -> list[Path]:
    return sorted(path.iterdir()) if path.exists() else []


def last_line(run: Imgclust) -> str:
    assert "Traceback" not in run.stderr, run.stderr
    return run.lines[-1]


def resumable_folder(runs_dir: Path, *sets: str) -> Path:
    """An interrupted conv-ae run's folder with no checkpoint yet: config.toml and nothing else."""
    from imgclust.engine.config import resolve_config, to_toml
    from imgclust.stages.host import get_registry

    settings = [CONV_AE[i + 1] for i, a in enumerate(CONV_AE) if a == "--set"]
    config = resolve_config(
        get_registry(),
        dataset="digits",
        encoders=["conv-ae"],
        clusterer="kmeans",
        sets=[*settings, *sets],
    )
    folder = runs_dir / "2026-01-02T03-04-05-digits-conv-ae-kmeans.incomplete"
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(to_toml(config))
    return folder


def test_sigterm_before_the_first_checkpoint_leaves_nothing(runs_dir, tmp_path):
    run = Imgclust(
        "run", *CONV_AE, "--set", "encoder.epochs=1", "--runs-dir", runs_dir, cwd=tmp_path
    )
    run.wait_for_line("fitting encoder conv-ae")
    [incomplete] = folders(runs_dir)
    assert not (incomplete / "checkpoints").exists()  # the first epoch takes seconds
    run.signal(signal.SIGTERM)
    assert run.finish() == 128 + signal.SIGTERM
    assert last_line(run) == "Stopped by SIGTERM."
    assert folders(runs_dir) == []


def test_ctrl_c_in_a_resume_keeps_the_folder_and_what_the_user_put_there(runs_dir, tmp_path):
    folder = resumable_folder(runs_dir, "encoder.epochs=1")
    (folder / "notes.txt").write_text("why I ran this")
    (folder / "mine").mkdir()
    (folder / "mine" / "data.csv").write_text("1,2\n")
    config = (folder / "config.toml").read_text()

    run = Imgclust("run", "--resume", folder, cwd=tmp_path)
    run.wait_for_line("fitting encoder conv-ae")
    run.signal(signal.SIGINT)
    assert run.finish() == 130, run.stderr
    assert last_line(run) == f"Interrupted. Resume with: imgclust run --resume {folder}"
    assert folders(runs_dir) == [folder]
    assert (folder / "notes.txt").read_text() == "why I ran this"
    assert (folder / "mine" / "data.csv").read_text() == "1,2\n"
    assert (folder / "config.toml").read_text() == config


def test_a_second_resume_of_a_folder_in_use_fails_in_one_line(runs_dir, tmp_path):
    folder = resumable_folder(runs_dir, "encoder.epochs=1")
    first = Imgclust("run", "--resume", folder, cwd=tmp_path)
    first.wait_for_line("fitting encoder conv-ae")
    second = Imgclust("run", "--resume", folder, cwd=tmp_path)
    assert second.finish() == 2
    assert first.process.poll() is None, "the first resume must still be working"
    assert len(second.lines) == 1, second.stderr
    assert "in use by another imgclust process" in second.lines[0]
    assert f"(pid {first.process.pid})" in second.lines[0]

    first.signal(signal.SIGINT)
    assert first.finish() == 130, first.stderr
    assert folders(runs_dir) == [folder]  # no NAME-2 and nothing finished half-way
    assert sorted(p.name for p in folder.iterdir()) == ["config.toml"]


@pytest.mark.slow
def test_a_killed_run_resumes_and_finishes_whole(runs_dir, tmp_path):
    args = [*CONV_AE, "--set", "dataset.limit=300", "--set", "encoder.epochs=2"]
    first = Imgclust("run", *args, "--runs-dir", runs_dir, cwd=tmp_path)
    state = wait_for((runs_dir, "*.incomplete/checkpoints/conv-ae/state.json"), first)
    first.signal(signal.SIGKILL)  # no clean-up at all: a stale lock, maybe half-written files
    first.finish()
    incomplete = state.parents[2]
    # as a kill during the pipeline save leaves it
    leftover = incomplete / ".pipeline.k1ll3d_0" / "encoder-0-conv-ae" / ".tmp-model.keras"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a model")

    resumed = Imgclust("run", "--resume", incomplete, cwd=tmp_path)
    assert resumed.finish() == 0, resumed.stderr
    [finished] = folders(runs_dir)
    assert finished.name == incomplete.name.removesuffix(".incomplete")
    for part in ("config.toml", "metrics.json", "assignments.csv", "pipeline/manifest.json"):
        assert (finished / part).is_file(), part
    left = [p.relative_to(finished).as_posix() for p in finished.rglob("*")]
    assert not [p for p in left if ".tmp" in p or p.startswith(".pipeline.")], left
    assert ".imgclust-lock" not in left
