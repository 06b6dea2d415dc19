"""Damaged run files and failing writes: ``report`` and ``export --csv`` say in one line which
file is wrong and what to do, never "unexpected ValueError/UnicodeDecodeError/OverflowError/
OSError". A write that fails (a full disk, a file-size limit) is one line too, and leaves no page.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

NOT_UTF8 = b"\xff\xfe\x00{"
DEEP = "[" * 100_000 + "]" * 100_000

# (file, content written in its place)
DAMAGE = {
    "metrics not UTF-8": ("metrics.json", NOT_UTF8),
    "metrics not JSON": ("metrics.json", b'{"acc": 0.5,'),
    "metrics a list": ("metrics.json", b"[1, 2]"),
    "metrics NaN score": ("metrics.json", b'{"acc": NaN}'),
    "metrics text score": ("metrics.json", b'{"nmi": "high"}'),
    "metrics huge score": ("metrics.json", b'{"ari": 1e999}'),
    "metrics timings list": ("metrics.json", b'{"timings": [1, 2]}'),
    "metrics timings text": ("metrics.json", b'{"timings": {"fit": "slow"}}'),
    "metrics training text": ("metrics.json", b'{"training": {"pca": {"loss": ["x"]}}}'),
    "metrics nested deep": ("metrics.json", DEEP.encode()),
    "summary not UTF-8": ("summary.json", NOT_UTF8),
    "summary not JSON": ("summary.json", b"{"),
    "summary text count": ("summary.json", b'{"n_images": "many"}'),
    "summary count past int64": ("summary.json", b'{"n_images": 99999999999999999999999}'),
    "summary bool seed": ("summary.json", b'{"seed": true}'),
    "summary shape text": ("summary.json", b'{"n_images": 3, "image_shape": "8x8"}'),
    "summary shape huge": ("summary.json", b'{"n_images": 3, "image_shape": [8, 8, 99999999]}'),
    "clusters.md not UTF-8": ("clusters.md", NOT_UTF8),
}


def one_line(result) -> str:
    assert result.exit_code != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "unexpected" not in lines[0] and "Traceback" not in result.stderr, lines[0]
    return lines[0]


@pytest.mark.parametrize("html_only", [True, False], ids=["html-only", "full"])
@pytest.mark.parametrize("case", list(DAMAGE))
def test_report_names_the_damaged_file(cli, run_copy: Path, case: str, html_only: bool) -> None:
    name, content = DAMAGE[case]
    (run_copy / name).write_bytes(content)
    result = cli("report", run_copy, *(["--html-only"] if html_only else []))
    line = one_line(result)
    assert name in line and ("run `imgclust run` again" in line or "restore" in line), line
    assert not (run_copy / "report.html").exists()


@pytest.mark.parametrize(
    "cluster", ["99999999999999999999", "-5", "9223372036854775808", "1" * 5000]
)
@pytest.mark.parametrize("command", ["export --csv", "report", "similar"])
def test_a_cluster_number_out_of_range_is_one_line(
    cli, run_copy: Path, tmp_path: Path, cluster: str, command: str
) -> None:
    path = run_copy / "assignments.csv"
    rows = path.read_text().splitlines()
    rows[1] = rows[1].split(",")[0] + f",{cluster}," + ",".join(rows[1].split(",")[2:])
    path.write_text("\n".join(rows) + "\n")
    args = {
        "export --csv": ("export", run_copy, tmp_path / "out", "--csv"),
        "report": ("report", run_copy),
        "similar": ("similar", run_copy, "--id", "digits-0"),
    }[command]
    line = one_line(cli(*args))
    assert "assignments.csv" in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["export --csv", "report"])
def test_assignments_that_are_not_utf8_are_one_line(
    cli, run_copy: Path, tmp_path: Path, command: str
) -> None:
    (run_copy / "assignments.csv").write_bytes(b"id,cluster\n\xff\xfe,1\n")
    args = ("export", run_copy, tmp_path / "out", "--csv") if command != "report" else (
        "report", run_copy)  # fmt: skip
    assert "UTF-8" in one_line(cli(*args))


def limited_writes(limit: int) -> None:
    """In the child: files may grow to ``limit`` bytes; a larger write fails (EFBIG)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def imgclust_with_small_files(*args: object, limit: int = 2048) -> subprocess.CompletedProcess:
    """``imgclust ARGS`` in a process whose writes fail past ``limit`` bytes, as on a full disk."""
    env = {**os.environ, "MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "imgclust", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        preexec_fn=lambda: limited_writes(limit),
    )


@pytest.mark.parametrize(
    "command",
    [
        ("report", "{run}", "--html-only"),
        ("export", "{run}", "{tmp}/out", "--csv"),
        pytest.param(
            ("similar", "{run}", "--id", "digits-0", "-n", "100", "-o", "{tmp}/near.csv"),
            marks=pytest.mark.slow,
            id="similar",
        ),
        pytest.param(
            ("duplicates", "{run}", "--threshold", "1000"), marks=pytest.mark.slow, id="duplicates"
        ),
    ],  # fmt: skip
    ids=["report", "export", "similar", "duplicates"],
)
def test_a_write_that_fails_is_one_line_and_leaves_nothing_half_written(
    run_copy: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    (run_copy / "report.html").unlink(missing_ok=True)
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [a.format(run=run_copy, tmp=tmp_path) for a in command]
    done = imgclust_with_small_files(*args, limit=1024)
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()  # notes may come first, the error is one line
    assert [line for line in lines if "Error" in line] == lines[-1:], done.stderr
    assert lines[-1].startswith("Error: ") and "Traceback" not in done.stderr
    assert "File too large" in lines[-1] and "write elsewhere" in lines[-1], lines[-1]
    assert "unexpected" not in lines[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no staging folder
    assert not (run_copy / "report.html").exists() and not (run_copy / "duplicates.csv").exists()
    assert not [p for p in run_copy.iterdir() if p.name.endswith(".tmp")]


def sparse(path: Path, size: int = 2**30) -> None:
    """A file of ``size`` bytes that takes no disk space: a PNG signature, then zeros."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.truncate(size)


def test_a_huge_plot_is_refused_before_it_is_read(cli, run_copy: Path) -> None:
    sparse(run_copy / "plots" / "huge.png")
    line = one_line(cli("report", run_copy, "--html-only"))
    assert "huge.png" in line and "larger than" in line, line
    assert not (run_copy / "report.html").exists()


@pytest.mark.parametrize("name", ["points.json", "thumbs-0.png"])
def test_huge_explorer_data_leaves_the_page_without_an_explorer(
    cli, run_copy: Path, name: str
) -> None:
    import json

    explorer = run_copy / "plots" / "explorer"
    explorer.mkdir(parents=True)
    thumbs = {"index": [0], "tile": 8, "columns": 64, "per_sheet": 4096, "sheets": ["thumbs-0.png"]}
    (explorer / "points.json").write_text(json.dumps({"n": 300, "map": None, "thumbs": thumbs}))
    sparse(explorer / name)
    result = cli("report", run_copy, "--html-only")
    assert result.exit_code == 0, result.stderr
    page = (run_copy / "report.html").read_text(encoding="utf-8")
    assert "No explorer:" in page and "larger than" in page


# JSON a stage or the pipeline keeps: deep or huge is one line, never a RecursionError ----------

JSON_FILES = ["pipeline/manifest.json", "summary.json", "pipeline/*/*.json"]


@pytest.mark.parametrize("name", JSON_FILES)
@pytest.mark.parametrize("content", ["deep", "huge"])
def test_a_deep_or_huge_json_file_is_one_line_for_every_reader(run_copy, cli, name, content):
    """predict, similar and the Python API read these files; each reads at most a bounded
    number of bytes and turns a nesting past Python's stack into one line."""
    import imgclust

    [path, *_] = sorted(run_copy.glob(name))  # a stage's own JSON: the first there is
    if content == "deep":
        path.write_text(DEEP)
    else:
        with open(path, "w") as handle:
            handle.write('{"pad": "')
            handle.truncate(40 * 2**20)  # a sparse 40 MiB: over every bound, nothing to hold
    new = run_copy / "embeddings.npy"
    for argv in (["predict", str(run_copy), str(new)], ["similar", str(run_copy), "0"]):
        result = cli(*argv)
        if result.exit_code == 0:  # a file this command does not need
            continue
        one_line(result)
    try:
        imgclust.load(run_copy)
    except imgclust.ImgclustError as exc:
        assert "\n" not in str(exc)


def test_the_json_reader_refuses_past_its_bound_before_reading_it_all(tmp_path):
    from imgclust.errors import DataError
    from imgclust.kit import read_json

    path = tmp_path / "state.json"
    with open(path, "w") as handle:
        handle.write('{"pad": "')
        handle.truncate(40 * 2**20)
    with pytest.raises(DataError, match="larger than 16 MiB"):
        read_json(path, "encoder 'x': state.json")
    path.write_text(DEEP)
    with pytest.raises(DataError, match="encoder 'x': state.json is nested too deep"):
        read_json(path, "encoder 'x': state.json")
    path.write_bytes(NOT_UTF8)
    with pytest.raises(DataError, match="not UTF-8"):
        read_json(path, "encoder 'x': state.json")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # no writer: opening it must not wait for one
    with pytest.raises(DataError, match="not a regular file"):
        read_json(fifo, "encoder 'x': fifo.json")
