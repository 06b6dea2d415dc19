"""A run folder from a stranger whose files link outside it, or are not files at all: every
command that reads a finished run refuses it in one line before reading anything."""

from __future__ import annotations

import os

import numpy as np
import pytest

COMMANDS = [
    ("similar", "--id", "0"),
    ("duplicates", "-o", "{tmp}/d.csv"),
    ("export", "{tmp}/out"),
    ("report",),
]


def tamper(run, name: str, how: str, tmp_path) -> None:
    target = run / name
    target.unlink()
    if how == "link":
        outside = tmp_path / "outside.npy"
        np.save(outside, np.zeros((300, 8), dtype=np.float32))
        if name.endswith(".csv"):
            outside = tmp_path / "outside.csv"
            outside.write_text((run.parent / "kept.csv").read_text())
        os.symlink(outside, target)
    else:
        os.mkfifo(target)


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
@pytest.mark.parametrize("name, how", [("embeddings.npy", "link"), ("assignments.csv", "link"),
                                        ("embeddings.npy", "fifo")])  # fmt: skip
def test_a_run_that_reaches_outside_itself_is_refused(cli, run_copy, tmp_path, command, name, how):
    (run_copy.parent / "kept.csv").write_text((run_copy / "assignments.csv").read_text())
    tamper(run_copy, name, how, tmp_path)
    args = [a.format(tmp=tmp_path) for a in command[1:]]
    result = cli(command[0], run_copy, *args)
    assert result.exit_code != 0, result.stdout
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("Error:") and name in line, result.stderr
    assert "links to outside" in line or "not a regular file" in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "d.csv").exists()
