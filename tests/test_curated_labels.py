"""Training the self-label CNN on the labels a person curated in the explorer, so that
``imgclust predict`` follows the person's corrections; and labels files that cannot be used."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from imgclust.errors import DataError, ImgclustError
from imgclust.plugins.self_label import read_curated_labels

DIGITS = ["--dataset", "digits", "--encoder", "flatten", "--clusterer", "kmeans", "--no-plots"]
SMALL = ["--set", "dataset.limit=500", "--set", "clusterer.n_clusters=10"]
CNN = ["refiner.self-label.filters=16,32", "refiner.self-label.dense=64"]


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def only_run(runs: Path) -> Path:
    [folder] = [p for p in runs.iterdir() if p.is_dir()]
    return folder


def corrected_labels(run: Path) -> tuple[list[str], list[int], dict[str, int]]:
    """labels.csv as the page writes it after a person moved every image whose digit is the
    most common digit of another cluster into that cluster: (ids, clusters, moved id -> to)."""
    rows = rows_of(run / "assignments.csv")
    by_cluster: dict[int, Counter] = {}
    for row in rows:
        by_cluster.setdefault(int(row["cluster"]), Counter())[row["label"]] += 1
    home = {}
    for cluster, counts in by_cluster.items():
        digit = counts.most_common(1)[0][0]
        home.setdefault(digit, cluster)  # the first cluster a digit leads
    clusters, moved = [], {}
    for row in rows:
        cluster = int(row["cluster"])
        target = home.get(row["label"], cluster)
        if target != cluster:
            moved[row["id"]] = target
        clusters.append(target)
    return [r["id"] for r in rows], clusters, moved


def write_labels(path: Path, ids: list[str], clusters: list[int | str]) -> Path:
    lines = ["id,cluster,name"] + [f"{i},{c}," for i, c in zip(ids, clusters, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_predict_follows_the_images_a_person_moved(cli, tmp_path):
    first = tmp_path / "first"
    result = cli("run", *DIGITS, *SMALL, "--runs-dir", first)
    assert result.exit_code == 0, result.stderr
    run = only_run(first)
    ids, clusters, moved = corrected_labels(run)
    assert len(moved) >= 20  # k-means on pixels leaves many digits in another digit's cluster
    labels = write_labels(tmp_path / "labels.csv", ids, clusters)
    second = tmp_path / "second"
    sets = [f"refiner.self-label.labels={labels}", *CNN]
    args = ["run", "--config", run / "config.toml", "--no-plots", "--runs-dir", second]
    result = cli(*args, *[x for s in sets for x in ("--set", s)])
    assert result.exit_code == 0, result.stderr
    curated_run = only_run(second)
    after = {r["id"]: int(r["cluster"]) for r in rows_of(curated_run / "assignments.csv")}
    # the new run's clusters are the person's (numbered largest first)
    pairs = {(c, after[i]) for i, c in zip(ids, clusters, strict=True)}
    assert len(pairs) == len({c for c, _ in pairs}) == len({a for _, a in pairs})

    from imgclust.plugins.digits import DigitsDataset

    data = DigitsDataset(limit=500).load("all")
    rows = [i for i, image_id in enumerate(data.ids) if str(image_id) in moved]
    np.save(tmp_path / "moved.npy", data.images[rows])
    before = rows_of_text(cli("predict", run, tmp_path / "moved.npy").stdout)
    now = rows_of_text(cli("predict", curated_run, tmp_path / "moved.npy").stdout)
    moved_ids = [str(data.ids[i]) for i in rows]
    old = {r["id"]: int(r["cluster"]) for r in rows_of(run / "assignments.csv")}
    assert all(int(r["cluster"]) == old[i] for r, i in zip(before, moved_ids, strict=True))
    followed = [int(r["cluster"]) == after[i] for r, i in zip(now, moved_ids, strict=True)]
    assert np.mean(followed) >= 0.8, np.mean(followed)
    # the refined run's confidence is its classifier's probability, as in the run
    assert all(abs(float(r["confidence"]) - float(r["probability"])) <= 5e-5 for r in now)


def rows_of_text(text: str) -> list[dict[str, str]]:
    import io

    return list(csv.DictReader(io.StringIO(text)))


def test_a_refiner_added_from_the_command_line_joins_the_runs_config(registry):
    from imgclust.engine.config import resolve_config

    config = resolve_config(
        registry, recipe="pixels-kmeans", sets=["refiner.self-label.labels=labels.csv"]
    )
    [refiner] = config["refiner"]
    assert refiner["name"] == "self-label" and refiner["labels"] == "labels.csv"


IDS = ["a", "b", "=c", "d"]


def test_curated_labels_are_read_by_id_with_drops_as_noise(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("id,cluster,name\nd,3,x\n'=c,dropped,\na,0,\nb,-1,\n", encoding="utf-8")
    assert read_curated_labels(path, IDS, 4).tolist() == [0, -1, -1, 3]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("id,name\na,x\n", "no id and cluster"),
        ("id,cluster\na,0\nb,0\n=c,1\n", "no row for 1"),
        ("id,cluster\na,0\nb,0\n=c,1\nd,1\nzz,1\n", "does not have"),
        ("id,cluster\na,0\na,0\n", "second time"),
        ("id,cluster\na,0\nb,x\n", "neither a number"),
        ("id,cluster\na,0\nb,-2\n", "neither a number"),
        ("id,cluster\na,0\nb," + "9" * 40 + "\n", "neither a number"),
        ("id,cluster\na\n", "too few cells"),
    ],
)
def test_unusable_labels_files_are_one_line(tmp_path, text, words):
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=words):
        read_curated_labels(path, IDS, 4)


def test_labels_files_are_bounded_and_need_ids(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes(b"id,cluster\n" + b"a,0\n" * 400_000)
    with pytest.raises(DataError, match="larger than"):
        read_curated_labels(path, IDS, 4)
    path.write_bytes(b"id,cluster\n\xff,0\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_curated_labels(path, IDS, 4)
    with pytest.raises(ImgclustError, match="by id"):
        read_curated_labels(path, None, 4)
    with pytest.raises(DataError, match="is a folder"):
        read_curated_labels(tmp_path, IDS, 4)
