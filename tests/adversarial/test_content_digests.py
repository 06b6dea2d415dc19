"""Content, not names: a run records digests of what it clustered, and export, duplicates,
similar and evaluate refuse images that changed since (or pass ``--allow-changed``, reported).
Export copies only files whose bytes the run recorded, whatever a stranger's config.toml and
assignments.csv name. Chunk files carry their row range and digests; the index check draws
its rows afresh each time."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclust.io.content import CONTENT_FILE
from tests.test_duplicates import digits
from tests.test_export import finished_run


@pytest.fixture
def folder_run(tmp_path: Path) -> tuple[Path, Path]:
    """60 digits as PNG files and a finished run of them (this test's own copy of both)."""
    root = tmp_path / "images"
    root.mkdir()
    for i, image in enumerate(digits(60)):
        Image.fromarray(image[..., 0]).save(root / f"{i:02d}.png")
    sets = [f"dataset.path={root}", "dataset.workers=1", "dataset.cache=false"]
    return finished_run(tmp_path / "runs", "image-folder", sets), root


@pytest.fixture
def arrays_run(tmp_path: Path) -> tuple[Path, Path]:
    """300 digits in a .npy file with labels, and a finished run of them."""
    from imgclust.plugins.digits import DigitsDataset

    data = DigitsDataset(limit=300).load("all")
    images, labels = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(images, np.asarray(data.images))
    np.save(labels, np.asarray(data.labels))
    sets = [f"dataset.path={images}", f"dataset.labels_path={labels}"]
    return finished_run(tmp_path / "runs", "arrays", sets), images


def one_line(result) -> str:
    """The error a refused command printed: one line, no traceback (notes may come before)."""
    assert result.exit_code != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and result.stderr.rstrip().endswith(lines[0]), result.stderr
    return lines[0]


def blake2b_of(path: Path) -> str:
    return "blake2b:" + hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


# What a run records ------------------------------------------------------------------------
def test_an_image_folder_run_records_each_files_digest_in_id_order(folder_run):
    run, root = folder_run
    record = json.loads((run / CONTENT_FILE).read_text())
    with open(run / "assignments.csv", newline="") as handle:
        ids = [row["id"] for row in csv.DictReader(handle)]
    assert record["files"] == [blake2b_of(root / name) for name in ids]


def test_an_arrays_run_records_the_digest_of_each_chunk_of_rows(arrays_run):
    from imgclust.io.content import rows_digest

    run, images = arrays_run
    record = json.loads((run / CONTENT_FILE).read_text())
    array = np.load(images)
    step = record["rows_per_chunk"]
    expected = [rows_digest(array[s : s + step]) for s in range(0, len(array), step)]
    assert record["chunks"] == expected and record["n_images"] == 300


# Changed images are refused ----------------------------------------------------------------
def test_export_refuses_a_folder_whose_images_changed_and_writes_nothing(cli, folder_run, tmp_path):
    run, root = folder_run
    shutil.copy(root / "07.png", root / "03.png")  # another picture under an old name
    out = tmp_path / "out"
    line = one_line(cli("export", run, out))
    assert "changed since" in line and "'03.png'" in line and "--allow-changed" in line
    assert not out.exists()


def test_export_with_allow_changed_leaves_changed_files_out_and_says_so(cli, folder_run, tmp_path):
    run, root = folder_run
    shutil.copy(root / "07.png", root / "03.png")
    Image.fromarray(digits(61)[60][..., 0]).save(root / "new.png")  # not in the run at all
    out = tmp_path / "out"
    result = cli("export", run, out, "--allow-changed", "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["content"].startswith("1 of 60 images changed")
    exported = sorted(p.name for p in out.rglob("*.png"))
    assert "03.png" not in exported and "new.png" not in exported and len(exported) == 59
    for path in out.rglob("*.png"):
        assert path.read_bytes() == (root / path.name).read_bytes()


def test_export_never_copies_a_file_a_strangers_run_folder_names(cli, folder_run, tmp_path):
    """config.toml (image folder, extensions) and assignments.csv name a credentials file."""
    run, _ = folder_run
    secrets = tmp_path / "home"
    secrets.mkdir()
    (secrets / "credentials.txt").write_text("aws_secret_access_key = hunter2\n")
    config = (run / "config.toml").read_text()
    config = re.sub(r'path = ".*"', f'path = "{secrets.as_posix()}"', config)
    config = re.sub(r"extensions = \[.*?\]", 'extensions = [".txt"]', config, flags=re.S)
    (run / "config.toml").write_text(config)
    (run / "assignments.csv").write_text("id,cluster\ncredentials.txt,0\n")
    forged = {"format": "imgclust-content", "format_version": 1, "n_images": 1}
    (run / CONTENT_FILE).write_text(json.dumps({**forged, "files": ["blake2b:" + "0" * 32]}))
    for extra in ([], ["--link"], ["--allow-changed"]):
        out = tmp_path / f"out{len(extra)}{''.join(extra)}"
        result = cli("export", run, out, *extra)
        assert result.exit_code != 0 or extra == ["--allow-changed"], result.stdout
        copied = [p for p in out.rglob("*") if p.is_file() and p.name != "clusters.csv"]
        assert not copied, extra
        assert "hunter2" not in result.stdout + result.stderr
    (run / CONTENT_FILE).unlink()  # a run "from before digests": refused, never copied
    out = tmp_path / "out-legacy"
    line = one_line(cli("export", run, out, "--allow-changed"))
    assert "records no digests" in line and not out.exists()


def test_duplicates_refuses_images_replaced_by_copies_since_the_run(cli, folder_run):
    """50 different images overwritten with one picture are not reported as exact copies."""
    run, root = folder_run
    for i in range(10, 60):
        shutil.copy(root / "00.png", root / f"{i:02d}.png")
    line = one_line(cli("duplicates", run))
    assert "50 of 60 images" in line and "changed since" in line
    assert not (run / "duplicates.csv").exists()
    result = cli("duplicates", run, "--allow-changed", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["content"].startswith("50 of 60 images changed")


def test_similar_refuses_a_changed_image_folder(cli, folder_run):
    run, root = folder_run
    (root / "05.png").write_bytes((root / "06.png").read_bytes())
    line = one_line(cli("similar", run, "--id", "01.png"))
    assert "changed since" in line and "'05.png'" in line
    result = cli("similar", run, "--id", "01.png", "--allow-changed")
    assert result.exit_code == 0 and "1 of 60 images changed" in result.stdout


def test_commands_refuse_a_changed_array_in_one_line(cli, arrays_run, tmp_path):
    run, images = arrays_run
    array = np.load(images)
    array[123, 2, 3, 0] ^= 0xFF  # one pixel of one image
    np.save(images, array)
    for command in (
        ["export", run, tmp_path / "out"],
        ["duplicates", run, "-o", tmp_path / "d.csv"],
        ["similar", run, "--id", "0"],
        ["evaluate", run],
    ):
        line = one_line(cli(*command))
        assert "1 of 1 chunks" in line and "changed since" in line, command
    result = cli("evaluate", run, "--allow-changed", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["content"].startswith("1 of 1 chunks changed")


def test_evaluate_on_another_split_or_dataset_is_not_compared(cli, arrays_run):
    """Scoring other data than the run clustered is what evaluate is for: no refusal."""
    run, images = arrays_run
    array = np.load(images)
    np.save(images, array[::-1].copy())
    assert one_line(cli("evaluate", run))
    result = cli("evaluate", run, "--dataset", "digits", "--split", "all", "--json")
    assert result.exit_code == 0, result.stderr


def test_a_run_that_predates_digests_is_refused_with_a_hint(cli, folder_run, tmp_path):
    run, _ = folder_run
    (run / CONTENT_FILE).unlink()
    for command in (["duplicates", run], ["similar", run, "--id", "01.png"]):
        line = one_line(cli(*command))
        assert "predates" in line and "--allow-changed" in line, command
    result = cli("similar", run, "--id", "01.png", "--allow-changed")
    assert result.exit_code == 0 and "not verified" in result.stdout


def test_a_damaged_content_record_is_one_line(cli, folder_run):
    run, _ = folder_run
    for text in ("{", '{"format": "imgclust-content"}', "[]", "x" * 10_000_000):
        (run / CONTENT_FILE).write_text(text)
        line = one_line(cli("duplicates", run, "--force"))
        assert "content.json" in line and "damaged" in line


# Chunks and the index ----------------------------------------------------------------------
def chunked(run: Path, store: Path, rows: int = 100):
    """Every chunk of a digits run's images assigned with its saved pipeline, into ``store``."""
    from imgclust.engine.chunks import MemorySource, make_tasks, run_serially

    images = np.asarray(digits(300))
    store.mkdir()
    tasks = make_tasks(MemorySource(images), rows, run / "pipeline", store)
    done = {result.index: result for result in run_serially(tasks, lambda message: None)}
    return tasks, done


def test_chunk_files_swapped_during_a_run_are_refused(pristine_run, tmp_path):
    from imgclust.engine.chunks import collect
    from imgclust.errors import ImgclustError

    store = tmp_path / "chunks"
    tasks, done = chunked(pristine_run, store)
    assert len(collect(store, tasks, done, tmp_path / "ok.npy").labels) == 300
    first, second = store / "chunk-000000.features.npy", store / "chunk-000001.features.npy"
    first.rename(tmp_path / "swap")
    second.rename(first)
    (tmp_path / "swap").rename(second)
    with pytest.raises(ImgclustError, match="chunk 0's features are not what that chunk wrote"):
        collect(store, tasks, done, tmp_path / "swapped.npy")


def test_whole_chunks_swapped_with_their_records_are_refused(pristine_run, tmp_path):
    from imgclust.engine.chunks import collect
    from imgclust.errors import ImgclustError

    store = tmp_path / "chunks"
    tasks, done = chunked(pristine_run, store)
    for suffix in (".features.npy", ".clusters.npy", ".json"):
        first, second = store / f"chunk-000000{suffix}", store / f"chunk-000001{suffix}"
        first.rename(tmp_path / "swap")
        second.rename(first)
        (tmp_path / "swap").rename(second)
    with pytest.raises(ImgclustError, match="2 of 3 chunks were not written"):
        collect(store, tasks, done, tmp_path / "swapped.npy")


def test_a_forged_index_right_only_on_the_rows_a_fixed_seed_checks_is_refused(run_copy):
    """Rows the old check would sample hold their true neighbours; every other row names its
    farthest images, with their true distances, nearest first."""
    from imgclust.after.finished import open_run, read_run_features
    from imgclust.after.neighbours import features_digest, load_index, neighbour_index

    features = read_run_features(open_run(run_copy, "search"))
    index = neighbour_index(run_copy, features)
    n, k = index.neighbours.shape
    fixed = set(np.random.default_rng(0).choice(n, size=min(16, n), replace=False).tolist())
    neighbours, distances = index.neighbours.copy(), index.distances.copy()
    for row in range(n):
        if row in fixed:
            continue
        gaps = np.linalg.norm(features.astype(np.float64) - features[row], axis=1)
        far = np.argsort(gaps)[::-1][:k][::-1]
        neighbours[row], distances[row] = far, gaps[far]
    folder = run_copy / "index"
    np.save(folder / "neighbours.npy", neighbours)
    np.save(folder / "distances.npy", distances.astype(np.float32))
    digest = features_digest(run_copy / "embeddings.npy")
    for _ in range(5):  # rows are drawn afresh each time: never passes
        loaded, reason = load_index(folder, features, digest)
        assert loaded is None and reason == "its neighbours are not the nearest"


# Exact copies by digest, similar capped ----------------------------------------------------
def test_duplicates_groups_thousands_of_identical_images_by_digest(cli, tmp_path):
    """3,300 copies of one image used to make a threshold of 0 join over 10,000,000 pairs."""
    images = np.asarray(digits(100))
    many = np.concatenate([np.repeat(images[:1], 3300, axis=0), images[1:]])
    np.save(tmp_path / "x.npy", many)
    run = finished_run(tmp_path / "runs", "arrays", [f"dataset.path={tmp_path / 'x.npy'}"])
    result = cli("duplicates", run, "--threshold", "0", "--json")
    assert result.exit_code == 0, result.stderr
    groups = json.loads(result.stdout)["groups"]
    assert groups[0]["kind"] == "exact" and len(groups[0]["images"]) == 3300


def test_similar_count_is_capped_at_the_runs_size_and_said(cli, pristine_run, tmp_path):
    run = pristine_run
    result = cli("similar", run, "--id", "digits-0", "--id", "digits-1", "-n", "1000000", "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert [len(q["neighbours"]) for q in record["queries"]] == [299, 299]
    assert record["n"] == 300 and "at most 300 are listed" in result.stderr
    out = tmp_path / "near.csv"
    result = cli("similar", run, "--id", "digits-0", "-n", "1000000", "-o", out)
    assert result.exit_code == 0, result.stderr
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 299 and rows[0]["rank"] == "1" and rows[-1]["rank"] == "299"
