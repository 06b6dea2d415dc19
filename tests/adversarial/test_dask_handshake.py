"""``--dask ADDRESS`` at a server that is not a Dask scheduler fails in one line naming the
address: an HTTP server (a dashboard) no longer hangs the command forever, and a server that
replies garbage no longer has its bytes read as a length to allocate ("out of memory")."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.adversarial.listeners import http_server, raw_server

pytest.importorskip("distributed", reason='needs the dask extra: pip install "imgclust[dask]"')


@pytest.fixture
def quick_deadline(monkeypatch):
    """Two seconds for the TCP connect and the handshake, so that a silent server fails fast."""
    from imgclust.engine import distributed

    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT_S", 2)


def run_at(cli, address: str, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (40, 6, 6), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    return cli(
        "run", "--dataset", "arrays", "--encoder", "pca", "--clusterer", "kmeans",
        "--set", f"dataset.path={tmp_path / 'x.npy'}", "--set", "clusterer.n_clusters=2",
        "--runs-dir", tmp_path / "runs", "--no-plots", "--dask", address,
    )  # fmt: skip


def test_an_http_server_is_refused_in_one_line_within_the_deadline(cli, tmp_path, quick_deadline):
    with http_server(lifetime=20) as dashboard:
        started = time.monotonic()
        result = run_at(cli, dashboard.address, tmp_path)
        took = time.monotonic() - started
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"Error: {dashboard.address!r} did not answer as a Dask scheduler within 2 s (an HTTP "
        "server such as the dashboard?): give the scheduler's address (usually "
        "tcp://HOST:8786) and check it is running."
    ]
    assert took < 15
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "reply",
    [
        b"\xff" * 64,  # a length of 2**64 - 1: Dask tried to allocate it
        b"HTTP/1.1 400 Bad Request\r\n\r\n",
        (100).to_bytes(8, "little") + b"\x00" * 8,  # a plausible length, then the door shuts
        (24).to_bytes(8, "little") + (10**9).to_bytes(8, "little") + b"\x00" * 16,
    ],
    ids=["huge-length", "text", "short", "frame-count"],
)
def test_a_server_that_replies_garbage_is_not_a_dask_scheduler(
    cli, tmp_path, reply, quick_deadline
):
    with raw_server(reply=reply, lifetime=20) as server:
        result = run_at(cli, server.address, tmp_path)
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"Error: {server.address!r} ")
    assert "out of memory" not in result.stderr


def test_a_real_scheduler_passes_the_probe(tmp_path):
    """The probe reads what a scheduler really sends first, so a real one is accepted."""
    from imgclust.engine.distributed import probe_scheduler

    dask = shutil.which("dask", path=str(Path(sys.executable).parent))
    if dask is None:
        pytest.skip("no dask console script next to this Python")
    scheduler = subprocess.Popen(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        address = None
        ends = time.monotonic() + 60
        while address is None and time.monotonic() < ends:
            line = scheduler.stdout.readline()
            if "Scheduler at:" in line:
                address = line.split("Scheduler at:")[1].strip()
        assert address, "the scheduler did not start"
        probe_scheduler(address, timeout=10)
    finally:
        scheduler.terminate()
        scheduler.wait(30)
