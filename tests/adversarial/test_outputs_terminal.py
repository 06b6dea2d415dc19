"""Text a stranger chose (a folder or file name, a label, a field of a run's manifest) reaches
the terminal only as printable characters: no escape sequence can set the window title, write
the clipboard or clear the screen, and no line break can forge a line of output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

ESCAPE = "\x1b]52;c;ZXZpbA==\x07\x1b[2J"
FORGED = "\nError: forged line"


def folder_with_hostile_names(root: Path) -> Path:
    """Two labelled sub-folders whose names carry escapes and a line break, and one image file
    whose name does, of another size than the rest."""
    rng = np.random.default_rng(0)
    for label in (f"cats{ESCAPE}{FORGED}", "dogs"):
        (root / label).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


def assert_clean(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text, repr(text)
    assert "forged line" not in text or "?Error: forged line" in text, repr(text)


def test_labels_in_the_run_summary_are_printable(tmp_path, cli):
    images = folder_with_hostile_names(tmp_path / "images")
    result = cli(
        "run", "--dataset", "image-folder", "--set", f"dataset.path={images}",
        "--encoder", "pca", "--clusterer", "kmeans", "--set", "clusterer.n_clusters=2",
        "--no-plots", "--runs-dir", str(tmp_path / "runs"),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "cats" in result.stdout
    assert_clean(result.stdout)
    assert_clean(result.stderr)


def test_file_names_in_errors_are_printable(tmp_path, cli):
    images = folder_with_hostile_names(tmp_path / "images")
    odd = np.zeros((5, 5), dtype=np.uint8)
    Image.fromarray(odd).save(images / "dogs" / f"odd{ESCAPE}{FORGED}.png")
    result = cli(
        "run", "--dataset", "image-folder", "--set", f"dataset.path={images}",
        "--encoder", "pca", "--clusterer", "kmeans", "--runs-dir", str(tmp_path / "runs"),
    )  # fmt: skip
    assert result.exit_code == 2
    assert "differ in size" in result.stderr
    assert_clean(result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: ") and sum("Error" in line for line in lines) == 1


def test_manifest_fields_in_errors_are_printable(run_copy, cli):
    path = run_copy / "pipeline" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["encoders"][0].update(name="pixie", plugin=f"p{ESCAPE}{FORGED}", plugin_version="1")
    path.write_text(json.dumps(manifest))
    result = cli("predict", str(run_copy), str(run_copy / "embeddings.npy"))
    assert result.exit_code == 2
    assert_clean(result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1
