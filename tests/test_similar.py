"""``imgclust similar``: nearest images of a run to new images or to its own, through a neighbour
index built once in RUN/index/ and checked whenever it is read back."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished digits (300) -> pca -> kmeans run, shared read-only."""
    from imgclust.engine.config import resolve_config
    from imgclust.engine.runner import execute
    from imgclust.stages.host import get_registry, reset_host

    reset_host()
    registry = get_registry()
    sets = ["dataset.limit=300", "encoder.n_components=8", "clusterer.n_clusters=5"]
    config = resolve_config(
        registry, dataset="digits", encoders=["pca"], clusterer="kmeans", sets=sets
    )
    path = execute(registry, config, tmp_path_factory.mktemp("runs"), plots=False).path
    reset_host()
    return path


@pytest.fixture
def own_run(run, tmp_path) -> Path:
    """A private copy of the run, free to change."""
    target = tmp_path / run.name
    shutil.copytree(run, target)
    return target


def digits(count: int = 300) -> np.ndarray:
    from imgclust.plugins.digits import DigitsDataset

    return DigitsDataset(limit=count).load("all").images


def brute_force(run: Path, query: np.ndarray, count: int) -> tuple[list[int], np.ndarray]:
    features = np.load(run / "embeddings.npy").astype(np.float64)
    distances = np.linalg.norm(features - query, axis=1)
    order = np.lexsort((np.arange(len(features)), distances))
    return order[:count].tolist(), distances[order[:count]]


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_neighbours_of_an_image_of_the_run_are_the_exact_nearest_others(cli, own_run, tmp_path):
    out = tmp_path / "near.csv"
    result = cli("similar", own_run, "--id", "digits-7", "-n", "6", "-o", out)
    assert result.exit_code == 0, result.stderr
    rows = rows_of(out.read_text())
    assert list(rows[0]) == ["query", "rank", "id", "cluster", "distance", "label"]
    features = np.load(own_run / "embeddings.npy")
    expected, distances = brute_force(own_run, features[7].astype(np.float64), 7)
    expected = [i for i in expected if i != 7][:6]
    assert [r["id"] for r in rows] == [f"digits-{i}" for i in expected]
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert np.allclose([float(r["distance"]) for r in rows], distances[1:], atol=1e-5)
    clusters = [int(r["cluster"]) for r in csv.DictReader(open(own_run / "assignments.csv"))]
    assert [int(r["cluster"]) for r in rows] == [clusters[i] for i in expected]


def test_new_images_are_encoded_by_the_saved_pipeline(cli, own_run, tmp_path):
    np.save(tmp_path / "q.npy", digits(3))
    result = cli("similar", own_run, tmp_path / "q.npy", "-n", "3", "--json")
    assert result.exit_code == 0, result.stderr
    queries = json.loads(result.stdout)["queries"]
    assert [q["query"] for q in queries] == [f"{tmp_path / 'q.npy'}:{i}" for i in range(3)]
    for i, query in enumerate(queries):
        assert query["kind"] == "image"
        assert query["neighbours"][0]["id"] == f"digits-{i}"
        assert query["neighbours"][0]["distance"] == 0.0
        assert len(query["neighbours"]) == 3


def test_an_image_file_of_another_size_is_resized_as_predict_reads_it(cli, own_run, tmp_path):
    Image.fromarray(np.kron(digits(1)[0][..., 0], np.ones((4, 4), np.uint8))).save(
        tmp_path / "big.png"
    )
    result = cli("similar", own_run, tmp_path / "big.png", "-n", "2")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"nearest to {tmp_path / 'big.png'} (cluster ")
    assert "rank  distance  cluster  id" in result.stdout


def test_the_table_shows_each_query_and_more_neighbours_than_the_graph_holds(cli, own_run):
    result = cli("similar", own_run, "--id", "digits-0", "--id", "digits-1", "-n", "40")
    assert result.exit_code == 0, result.stderr
    blocks = result.stdout.split("nearest to ")[1:]
    clusters = {r["id"]: r["cluster"] for r in csv.DictReader(open(own_run / "assignments.csv"))}
    assert [b.splitlines()[0] for b in blocks] == [
        f"digits-0 (of the run; cluster {clusters['digits-0']}, label 0)",
        f"digits-1 (of the run; cluster {clusters['digits-1']}, label 1)",
    ]
    assert all(len(b.strip().splitlines()) == 42 for b in blocks)
    ids = [line.split()[3] for line in blocks[0].strip().splitlines()[2:]]
    assert "digits-0" not in ids and len(set(ids)) == 40
    everything = cli("similar", own_run, "--id", "digits-0", "-n", "100000", "--json")
    assert len(json.loads(everything.stdout)["queries"][0]["neighbours"]) == 299


def test_the_query_s_own_cluster_and_label_are_shown_and_in_the_json(cli, own_run, tmp_path):
    """An image of the run: its cluster and label from the run; a new image: the cluster
    ``predict`` gives it (no label), in the table and in --json alike."""
    assignments = list(csv.DictReader(open(own_run / "assignments.csv")))
    np.save(tmp_path / "q.npy", digits(300)[[5, 17]])
    predicted = cli("predict", own_run, tmp_path / "q.npy", "--json")
    assert predicted.exit_code == 0, predicted.stderr
    clusters = [a["cluster"] for a in json.loads(predicted.stdout)["assignments"]]
    args = ["similar", own_run, tmp_path / "q.npy", "--id", "digits-12", "-n", "2"]
    table = cli(*args)
    assert table.exit_code == 0, table.stderr
    heads = [line for line in table.stdout.splitlines() if line.startswith("nearest to ")]
    own = assignments[12]
    assert heads == [
        f"nearest to digits-12 (of the run; cluster {own['cluster']}, label {own['label']})",
        f"nearest to {tmp_path / 'q.npy'}:0 (cluster {clusters[0]} as predict assigns it)",
        f"nearest to {tmp_path / 'q.npy'}:1 (cluster {clusters[1]} as predict assigns it)",
    ]
    queries = json.loads(cli(*args, "--json").stdout)["queries"]
    assert [(q["kind"], q["cluster"], q["label"]) for q in queries] == [
        ("id", int(own["cluster"]), own["label"]),
        ("image", int(clusters[0]), None),
        ("image", int(clusters[1]), None),
    ]
    # the run's own images, asked as new ones, land in the clusters the run gave them
    assert [int(c) for c in clusters] == [int(assignments[i]["cluster"]) for i in (5, 17)]


def test_a_new_image_of_a_run_that_cannot_predict_says_it_has_no_cluster(cli, tmp_path):
    from imgclust.engine.config import resolve_config
    from imgclust.engine.runner import execute
    from imgclust.stages.host import get_registry

    registry = get_registry()
    sets = ["dataset.limit=120", "encoder.n_components=6", "clusterer.n_clusters=4"]
    config = resolve_config(
        registry, dataset="digits", encoders=["pca"], clusterer="agglomerative", sets=sets
    )
    run = execute(registry, config, tmp_path / "runs", plots=False).path
    np.save(tmp_path / "q.npy", digits(1))
    result = cli("similar", run, tmp_path / "q.npy", "-n", "2")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(
        f"nearest to {tmp_path / 'q.npy'}:0 (no cluster: the run's pipeline cannot assign new"
    )
    query = json.loads(cli("similar", run, tmp_path / "q.npy", "--json").stdout)["queries"][0]
    assert query["cluster"] is None and query["label"] is None


# The index ---------------------------------------------------------------------------------
def test_the_index_is_built_once_and_reused(cli, own_run):
    from imgclust.after.neighbours import GRAPH_K

    assert not (own_run / "index").exists()
    first = cli("similar", own_run, "--id", "digits-3")
    assert first.exit_code == 0, first.stderr
    files = sorted(p.name for p in (own_run / "index").iterdir())
    assert files == ["distances.npy", "index.json", "neighbours.npy"]
    manifest = json.loads((own_run / "index" / "index.json").read_text())
    assert manifest["n"] == 300 and manifest["k"] == GRAPH_K and manifest["dim"] == 8
    stamp = (own_run / "index" / "neighbours.npy").stat().st_mtime_ns
    again = cli("similar", own_run, "--id", "digits-3")
    assert again.stdout == first.stdout
    assert (own_run / "index" / "neighbours.npy").stat().st_mtime_ns == stamp
    assert not [p for p in own_run.iterdir() if p.name.startswith(".index")]


@pytest.mark.parametrize(
    "damage",
    [
        "out of range",
        "self",
        "shuffled",
        "wrong shape",
        "pickled",
        "stale",
        "huge header",
    ],
)
def test_a_damaged_or_stale_index_is_built_again(cli, own_run, damage):
    index = own_run / "index"
    good = cli("similar", own_run, "--id", "digits-9", "-n", "5")
    neighbours = np.load(index / "neighbours.npy")
    if damage == "out of range":
        neighbours[0, 0] = 10**9
        np.save(index / "neighbours.npy", neighbours)
    elif damage == "self":
        neighbours[9, 0] = 9
        np.save(index / "neighbours.npy", neighbours)
    elif damage == "shuffled":
        np.save(index / "neighbours.npy", neighbours[::-1].copy())
    elif damage == "wrong shape":
        np.save(index / "neighbours.npy", neighbours[:, :3].copy())
    elif damage == "pickled":
        np.save(index / "neighbours.npy", np.array([{"a": 1}] * 3, dtype=object))
    elif damage == "stale":
        features = np.load(own_run / "embeddings.npy")
        np.save(own_run / "embeddings.npy", features[::-1].copy())
    elif damage == "huge header":
        header = "{'descr': '<i8', 'fortran_order': False, 'shape': (300000000000, 20), }"
        data = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()
        (index / "neighbours.npy").write_bytes(data)
    result = cli("similar", own_run, "--id", "digits-9", "-n", "5")
    assert result.exit_code == 0, result.stderr
    assert "rebuilding the neighbour index" in result.stderr
    if damage != "stale":
        assert result.stdout == good.stdout
    from imgclust.after.finished import open_run, read_run_features
    from imgclust.after.neighbours import features_digest, load_index

    features = read_run_features(open_run(own_run, "test"))
    loaded, reason = load_index(index, features, features_digest(own_run / "embeddings.npy"))
    assert loaded is not None, reason


def test_a_folder_named_index_that_imgclust_did_not_write_is_left_alone(cli, own_run):
    (own_run / "index").mkdir()
    (own_run / "index" / "notes.txt").write_text("mine")
    result = cli("similar", own_run, "--id", "digits-2", "-n", "3")
    assert result.exit_code == 0, result.stderr
    assert "not an imgclust neighbour index" in result.stderr
    assert [p.name for p in (own_run / "index").iterdir()] == ["notes.txt"]


def test_an_index_json_imgclust_cannot_read_is_not_taken_for_its_own(cli, own_run):
    good = cli("similar", own_run, "--id", "digits-9", "-n", "5")
    (own_run / "index" / "index.json").write_text("{nope")
    result = cli("similar", own_run, "--id", "digits-9", "-n", "5")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == good.stdout and "left alone" in result.stderr
    assert (own_run / "index" / "index.json").read_text() == "{nope"


def test_a_run_folder_that_cannot_take_the_index_is_still_searched(cli, own_run, monkeypatch):
    import errno

    from imgclust.after import neighbours

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(neighbours, "save_index", refuse)
    result = cli("similar", own_run, "--id", "digits-2", "-n", "3")
    assert result.exit_code == 0, result.stderr
    assert "not saved (Permission denied)" in result.stderr and not (own_run / "index").exists()
    assert result.stdout.count("digits-") == 4


def test_a_link_named_index_is_refused_and_not_followed(cli, own_run, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (own_run / "index").symlink_to(elsewhere, target_is_directory=True)
    result = cli("similar", own_run, "--id", "digits-2", "-n", "3")
    assert result.exit_code != 0 and "links to outside it" in result.stderr
    assert list(elsewhere.iterdir()) == [] and (own_run / "index").is_symlink()


# Bad input ---------------------------------------------------------------------------------
def one_line_error(result) -> str:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr
    return lines[0]


def test_an_unknown_id_is_one_line_with_the_nearest_ids(cli, run):
    message = one_line_error(cli("similar", run, "--id", "digit-12"))
    assert "no image 'digit-12'" in message and "digits-12" in message
    assert not (run / "index").exists()  # nothing was built for a query that cannot be answered


def test_an_array_of_the_wrong_size_is_one_line(cli, run, tmp_path):
    np.save(tmp_path / "small.npy", np.zeros((2, 5, 5), dtype=np.uint8))
    message = one_line_error(cli("similar", run, tmp_path / "small.npy"))
    assert "5x5" in message and "8x8" in message


def test_a_missing_unfinished_or_foreign_run_is_refused(cli, run, tmp_path):
    assert "does not exist" in one_line_error(cli("similar", tmp_path / "no", "--id", "x"))
    unfinished = tmp_path / f"{run.name}.incomplete"
    shutil.copytree(run, unfinished)
    assert "not finished" in one_line_error(cli("similar", unfinished, "--id", "digits-1"))
    (tmp_path / "plain").mkdir()
    message = one_line_error(cli("similar", tmp_path / "plain", "--id", "digits-1"))
    assert "not an imgclust run" in message


def test_nothing_to_search_for_and_outputs_that_exist_are_refused(cli, run, tmp_path):
    assert "--id" in one_line_error(cli("similar", run))
    (tmp_path / "out.csv").write_text("mine")
    message = one_line_error(cli("similar", run, "--id", "digits-1", "-o", tmp_path / "out.csv"))
    assert "already exists" in message and (tmp_path / "out.csv").read_text() == "mine"
    np.save(tmp_path / "q.npy", digits(2))
    message = one_line_error(cli("similar", run, tmp_path / "q.npy", "-o", tmp_path / "q.npy"))
    assert "input" in message
    assert "does not exist" in one_line_error(cli("similar", run, tmp_path / "none.png"))


def test_damaged_features_are_one_line(cli, own_run):
    np.save(own_run / "embeddings.npy", np.full((300, 8), np.nan, dtype=np.float32))
    assert "NaN" in one_line_error(cli("similar", own_run, "--id", "digits-1"))
    np.save(own_run / "embeddings.npy", np.zeros((5, 8), dtype=np.float32))
    assert "rows" in one_line_error(cli("similar", own_run, "--id", "digits-1"))
    np.save(own_run / "embeddings.npy", np.array([{"x": 1}] * 300, dtype=object))
    one_line_error(cli("similar", own_run, "--id", "digits-1"))
