"""An export killed midway (SIGKILL) leaves its staging folder ``.OUT.XXXXXXXX.tmp`` beside OUT;
the next export into the same parent folder removes it, and only it: a staging folder whose
export still runs, or a folder imgclust did not mark, is left alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# a process that makes and marks a staging folder as export does, then is killed where it stands
KILLED_MIDWAY = """
import os, signal, sys, tempfile
from pathlib import Path
from imgclust.cli.commands.export import mark_staging
staging = Path(tempfile.mkdtemp(prefix=".{name}.", suffix=".tmp", dir=sys.argv[1]))
mark_staging(staging)
(staging / "cluster-00").mkdir()
(staging / "cluster-00" / "0.png").write_bytes(b"half")
print(staging, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_export(parent: Path, name: str = "out") -> Path:
    """The staging folder a SIGKILLed process left in ``parent``."""
    script = textwrap.dedent(KILLED_MIDWAY).replace("{name}", name)
    done = subprocess.run([sys.executable, "-c", script, str(parent)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    staging = Path(done.stdout.strip())
    assert staging.is_dir()
    return staging


def test_the_next_export_removes_what_a_killed_export_left(cli, run_copy, tmp_path):
    parent = tmp_path / "exports"
    parent.mkdir()
    left = [killed_export(parent), killed_export(parent, "other")]
    mine = parent / ".mine.abcdefgh.tmp"  # named alike but not imgclust's: no marker
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    result = cli("export", run_copy, parent / "out", "--csv")
    assert result.exit_code == 0, result.stderr
    assert not any(path.exists() for path in left)
    assert (mine / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in parent.iterdir()) == [".mine.abcdefgh.tmp", "out"]
    assert sorted(p.name for p in (parent / "out").iterdir()) == ["clusters.csv"]


def test_a_running_exports_staging_folder_is_left_alone(cli, run_copy, tmp_path):
    from imgclust.cli.commands.export import mark_staging, remove_abandoned_staging

    staging = tmp_path / ".busy.abcdefgh.tmp"
    staging.mkdir()
    marker = mark_staging(staging)  # held by this (running) process
    try:
        assert remove_abandoned_staging(tmp_path) == []
        result = cli("export", run_copy, tmp_path / "out", "--csv")
        assert result.exit_code == 0, result.stderr
        assert staging.is_dir()
    finally:
        os.close(marker)
    assert remove_abandoned_staging(tmp_path) == [staging]


@pytest.mark.slow
def test_a_real_export_killed_midway_is_cleaned_up_by_the_next(cli, tmp_path):
    """``imgclust export`` of 1,797 images as PNGs, SIGKILLed once its staging folder exists."""
    from tests.test_export import finished_run

    run = finished_run(tmp_path / "runs", "digits", [])
    parent = tmp_path / "exports"
    parent.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "imgclust", "export", str(run),
                                str(parent / "out")], stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 120
    staging: list[Path] = []
    while not staging and time.monotonic() < deadline and process.poll() is None:
        staging = [p for p in parent.glob(".out.*.tmp") if any(p.glob("cluster-*/*.png"))]
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert staging and staging[0].is_dir() and not (parent / "out").exists()
    result = cli("export", run, parent / "again", "--csv")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in parent.iterdir()) == ["again"]
