"""report.html and ``imgclust report``: a self-contained page with every plot, rebuilt from a
run folder without refitting; ``--no-plots`` runs draw nothing; failures never lose a run."""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from imgclust.stages.hookspecs import hookimpl

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL = [
    "--dataset", "digits", "--set", "dataset.limit=300",
    "--clusterer", "kmeans", "--set", "clusterer.n_init=1", "--set", "clusterer.n_clusters=10",
]  # fmt: skip
PCA = [*SMALL, "--encoder", "pca", "--set", "encoder.n_components=10"]


def invoke(*args: object) -> SimpleNamespace:
    """The CLI in-process (as the ``cli`` fixture, usable from a module-scoped fixture)."""
    from imgclust.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return SimpleNamespace(exit_code=code, stdout=out.getvalue(), stderr=err.getvalue())


def run_folder_of(result: SimpleNamespace) -> Path:
    assert result.exit_code == 0, result.stderr
    return Path(json.loads(result.stdout)["run"])


@pytest.fixture(autouse=True)
def _pca_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    """PCA maps: UMAP's first use compiles for tens of seconds (it has a slow test of its own)."""
    monkeypatch.setenv("IMGCLUST_PLOT_MAP", "pca")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small digits run with its plots and report."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGCLUST_PLOT_MAP", "pca")
        runs = tmp_path_factory.mktemp("runs")
        return run_folder_of(invoke("run", *PCA, "--runs-dir", runs, "--json"))


class Page(HTMLParser):
    """Every tag and attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(tag, name, value or "") for name, value in attrs]


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


def embedded_pngs(page: Page) -> list[bytes]:
    prefix = "data:image/png;base64,"
    return [base64.b64decode(v[len(prefix) :]) for t, n, v in page.attributes if n == "src"]


def test_a_run_draws_its_plots_and_its_report(run_folder: Path) -> None:
    plots = run_folder / "plots"
    for name in ("clusters.png", "map.png", "confusion.png"):
        assert (plots / name).read_bytes()[:8] == PNG_SIGNATURE
    assert not (plots / "reconstructions.png").exists()  # pca does not reconstruct
    assert not (plots / "training.png").exists()  # nor train
    timings = json.loads((run_folder / "metrics.json").read_text())["timings"]
    assert 0 < timings["plots"] <= timings["total"]
    assert (run_folder / "report.html").is_file()


def test_the_report_embeds_every_plot_and_refers_to_nothing_outside(run_folder: Path) -> None:
    text = (run_folder / "report.html").read_text(encoding="utf-8")
    page = parse(text)
    sources = [v for t, n, v in page.attributes if n == "src"]
    assert sources and all(v.startswith("data:image/png;base64,") for v in sources)
    assert not [a for a in page.attributes if a[1] in ("href", "action", "srcset", "poster")]
    assert not {"link", "iframe", "object", "embed", "base"} & set(page.tags)
    assert not [a for a in page.attributes if a[0] == "script" and a[1] == "src"]  # inline only
    lowered = text.lower()
    for needle in ("http:", "https:", "@import", "//cdn", "file:"):
        assert needle not in lowered, needle
    # the page makes its own data: and blob: URLs (thumbnails, downloads); it loads none
    assert "url(" not in lowered.replace("todataurl(", "").replace("createobjecturl(", "")
    embedded = embedded_pngs(page)
    on_disk = {p.name: p.read_bytes() for p in (run_folder / "plots").glob("*.png")}
    assert len(on_disk) == 3 and sorted(embedded) == sorted(on_disk.values())


def test_the_report_holds_the_config_scores_and_cluster_table(run_folder: Path) -> None:
    text = (run_folder / "report.html").read_text(encoding="utf-8")
    config = (run_folder / "config.toml").read_text()
    assert html.escape(config) in text
    metrics = json.loads((run_folder / "metrics.json").read_text())
    for key in ("acc", "nmi", "ari", "purity", "silhouette"):
        assert f"{metrics[key]:.4f}" in text, key
    summary = json.loads((run_folder / "summary.json").read_text())
    for entry in summary["clusters"]:
        held = ", ".join(f"{c['count']} x {c['label']}" for c in entry["classes"])
        row = f'<td>{entry["cluster"]}</td><td class="num">{entry["size"]}</td><td>{held}</td>'
        assert row in text
    assert run_folder.name in text


def test_no_plots_draws_nothing_and_report_draws_them_without_refitting(
    cli, runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = run_folder_of(cli("run", *PCA, "--runs-dir", runs_dir, "--no-plots", "--json"))
    assert not (folder / "plots").exists() and not (folder / "report.html").exists()
    assert "plots" not in json.loads((folder / "metrics.json").read_text())["timings"]
    before = {n: (folder / n).read_bytes() for n in ("assignments.csv", "embeddings.npy")}

    from imgclust.engine.pipeline import Pipeline

    def refit(*args, **kwargs):
        raise AssertionError("imgclust report must not refit")

    monkeypatch.setattr(Pipeline, "fit_encoders", refit)
    monkeypatch.setattr(Pipeline, "fit_clusterer", refit)
    result = cli("report", folder)
    assert result.exit_code == 0, result.stderr
    for name in ("clusters.png", "map.png", "confusion.png"):
        assert (folder / "plots" / name).read_bytes()[:8] == PNG_SIGNATURE
        assert f"plots/{name}" in result.stdout
    assert "skipped   reconstructions.png" in result.stdout
    assert str(folder / "report.html") in result.stdout
    assert len(embedded_pngs(parse((folder / "report.html").read_text()))) == 3
    assert before == {n: (folder / n).read_bytes() for n in before}

    drawn = (folder / "plots" / "map.png").stat().st_mtime_ns
    (folder / "report.html").unlink()
    assert cli("report", folder, "--html-only").exit_code == 0
    assert (folder / "report.html").is_file()
    assert (folder / "plots" / "map.png").stat().st_mtime_ns == drawn


class FakeAutoencoder:
    """An encoder with ``reconstruct`` and a training history, saved as JSON, as conv-ae is."""

    loads = 0

    def __init__(self, dim: float = 0.5, seed: int = 0) -> None:
        self.dim = dim

    def fit(self, images: np.ndarray, validation: np.ndarray | None = None) -> FakeAutoencoder:
        self.history_ = {"loss": [0.4, 0.3, 0.25], "val_loss": [0.42, 0.33, 0.3]}
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1).astype(np.float32) / 255

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        return (images.astype(np.float32) / 255 * self.dim).astype(np.float32)

    def save(self, directory: Path) -> None:
        (Path(directory) / "fake.json").write_text(json.dumps({"dim": self.dim}))

    def load(self, directory: Path) -> FakeAutoencoder:
        self.dim = json.loads((Path(directory) / "fake.json").read_text())["dim"]
        FakeAutoencoder.loads += 1
        return self


def register_fake_autoencoder() -> None:
    from imgclust.stages.host import get_host

    @hookimpl
    def register_encoders(register):
        register("fake-ae", FakeAutoencoder, summary="test autoencoder")

    get_host().register(SimpleNamespace(register_encoders=register_encoders), "fake-ae-plugin")


def test_reconstructions_and_training_are_redrawn_from_the_saved_pipeline(
    cli, runs_dir: Path
) -> None:
    register_fake_autoencoder()
    folder = run_folder_of(
        cli("run", *SMALL, "--encoder", "fake-ae", "--runs-dir", runs_dir, "--json")
    )
    plots = folder / "plots"
    for name in ("reconstructions.png", "training.png"):
        assert (plots / name).read_bytes()[:8] == PNG_SIGNATURE
        (plots / name).unlink()
    loads = FakeAutoencoder.loads
    result = cli("report", folder)
    assert result.exit_code == 0, result.stderr
    assert FakeAutoencoder.loads == loads + 1  # the fitted encoder came back from pipeline/
    for name in ("reconstructions.png", "training.png"):
        assert (plots / name).read_bytes()[:8] == PNG_SIGNATURE
    page = parse((folder / "report.html").read_text())
    assert len(embedded_pngs(page)) == 5

    shutil.rmtree(folder / "pipeline")  # without the fitted encoder the earlier picture stays
    result = cli("report", folder)
    assert result.exit_code == 0, result.stderr
    assert "reconstructions.png" in result.stdout and "earlier one is kept" in result.stdout
    assert (plots / "reconstructions.png").is_file()


def test_a_failing_plot_or_report_does_not_lose_the_run(
    cli, runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import imgclust.report.page
    import imgclust.report.plots.stage

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(imgclust.report.plots.stage, "plot_confusion", boom)
    monkeypatch.setattr(imgclust.report.page, "build_report", boom)
    result = cli("run", *PCA, "--runs-dir", runs_dir, "--json")
    folder = run_folder_of(result)
    assert "warning: plots/confusion.png not written: RuntimeError: boom" in result.stderr
    assert "warning: report.html not written: RuntimeError: boom" in result.stderr
    assert (folder / "metrics.json").is_file() and (folder / "plots" / "clusters.png").is_file()
    assert not (folder / "plots" / "confusion.png").exists()
    assert not (folder / "report.html").exists()
    monkeypatch.undo()
    monkeypatch.setenv("IMGCLUST_PLOT_MAP", "pca")
    assert cli("report", folder).exit_code == 0
    assert (folder / "plots" / "confusion.png").is_file() and (folder / "report.html").is_file()


def test_the_failures_are_one_line_warnings(cli, runs_dir: Path, monkeypatch) -> None:
    import imgclust.report.page
    import imgclust.report.plots.stage

    lines: list[str] = []
    monkeypatch.setattr(imgclust.report.page, "build_report", lambda run_dir: 1 / 0)
    assert imgclust.report.page.write_report_quietly(runs_dir, lines.append) is None
    assert lines == ["warning: report.html not written: ZeroDivisionError: division by zero"]
    lines.clear()
    not_a_run_result = SimpleNamespace()
    seconds = imgclust.report.plots.stage.plot_run(not_a_run_result, lines.append)
    assert seconds >= 0 and len(lines) == 1 and lines[0].startswith("warning: plots not written:")


def test_report_of_something_that_is_not_a_run(cli, tmp_path: Path) -> None:
    result = cli("report", tmp_path / "absent")
    assert result.exit_code != 0 and "does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = cli("report", tmp_path)
    assert result.exit_code != 0 and "assignments.csv" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
