"""docs/notebook.ipynb, the example notebook, runs from top to bottom and shows the run's view."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "notebook.ipynb"


@pytest.mark.slow
def test_the_example_notebook_runs_and_shows_the_run_and_its_pipeline(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    notebook = nbformat.read(tmp_path / NOTEBOOK.name, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    html = [
        output["data"]["text/html"]
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "text/html" in output.get("data", {})
    ]
    assert len(html) == 2
    assert "ACC" in html[0] and "data:image/png;base64," in html[0] and "report.html" in html[0]
    assert "encoder <b>pca</b>" in html[1] and "clusterer <b>kmeans</b>" in html[1]
    scores = notebook.cells[-1].outputs[0]["data"]["text/plain"]
    assert "'acc'" in scores and "'nmi'" in scores
    assert len(list((tmp_path / "runs").iterdir())) == 1
