"""``imgclust predict`` gives each new image a confidence and an outlier score, computed against
the run's clusters exactly as the run computed its own (``assignments.csv``)."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np

from tests.test_predict import digit_images, fitted_run  # noqa: F401  (a fixture)


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_the_runs_own_images_get_the_scores_assignments_csv_has(cli, fitted_run, tmp_path):  # noqa: F811
    np.save(tmp_path / "digits.npy", digit_images()[0])
    result = cli("predict", fitted_run, tmp_path / "digits.npy")
    assert result.exit_code == 0, result.stderr
    predicted = read_csv(result.stdout)
    with open(fitted_run / "assignments.csv", newline="") as handle:
        recorded = list(csv.DictReader(handle))
    assert len(predicted) == len(recorded)
    for new, old in zip(predicted, recorded, strict=True):
        assert new["cluster"] == old["cluster"]
        assert float(new["confidence"]) == float(old["confidence"])
        assert float(new["outlier"]) == float(old["outlier"])


def test_a_bare_pipeline_or_a_run_without_embeddings_predicts_without_scores(
    cli,
    fitted_run,  # noqa: F811
    tmp_path,
):
    np.save(tmp_path / "x.npy", digit_images()[0][:10])
    result = cli("predict", fitted_run / "pipeline", tmp_path / "x.npy")
    assert result.exit_code == 0, result.stderr
    assert list(read_csv(result.stdout)[0]) == ["id", "cluster", "distance"]
    assert "note: no confidence or outlier scores: a pipeline folder" in result.stderr
    damaged = Path(shutil.copytree(fitted_run, tmp_path / "run"))
    (damaged / "embeddings.npy").write_bytes(b"\x93NUMPY not really")
    result = cli("predict", damaged, tmp_path / "x.npy")
    assert result.exit_code == 0, result.stderr
    assert "confidence" not in read_csv(result.stdout)[0]
    [note] = result.stderr.strip().splitlines()
    assert note.startswith("note: no confidence or outlier scores: ")
