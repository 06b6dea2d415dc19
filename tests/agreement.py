"""Whether two run folders hold the same result: the same clusters exactly, and the same features
and per-image scores to float precision (another process's BLAS may block a chunk's product
differently, which moves the last bits)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

EXACT = ("id", "cluster", "label")


def assert_runs_agree(a: Path, b: Path) -> None:
    """The same images in the same clusters; confidences, outlier scores and features close."""
    rows_a, rows_b = (list(csv.DictReader((run / "assignments.csv").open())) for run in (a, b))
    assert rows_a and list(rows_a[0]) == list(rows_b[0])
    exact = [key for key in EXACT if key in rows_a[0]]
    assert [[r[k] for k in exact] for r in rows_a] == [[r[k] for k in exact] for r in rows_b]
    for key in ("confidence", "outlier"):
        if key in rows_a[0]:
            np.testing.assert_allclose(
                [float(r[key]) for r in rows_a], [float(r[key]) for r in rows_b], atol=2e-4
            )
    np.testing.assert_allclose(
        np.load(a / "embeddings.npy"), np.load(b / "embeddings.npy"), rtol=1e-5, atol=1e-6
    )
