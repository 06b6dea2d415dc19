"""``imgclust report RUN``: redraw a run's plots and rebuild its report.html without refitting."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from imgclust.after.finished import check_finished
from imgclust.after.rundata import load_run_inputs
from imgclust.console import stderr_log
from imgclust.io.runfiles import check_run_files
from imgclust.report.page import write_report
from imgclust.report.plots import make_plots, options_from_env
from imgclust.stages.host import get_registry


class MapMethod(str, Enum):
    auto = "auto"
    umap = "umap"
    pca = "pca"


def register(app: Any) -> None:
    """Add the ``report`` command to the CLI."""

    @app.command("report")
    def report_command(
        run: Path = typer.Argument(..., help="A run folder written by `imgclust run`."),
        map_method: MapMethod | None = typer.Option(
            None,
            "--map",
            help="How map.png reaches 2-D: auto (UMAP when it needs no compiling, else PCA), "
            "umap or pca. The run's saved projection is reused when the settings match.",
        ),
        map_sample: int | None = typer.Option(
            None,
            "--map-sample",
            min=1,
            help="Points drawn on the map (a fixed-seed sample beyond this).",
        ),
        html_only: bool = typer.Option(
            False, "--html-only", help="Only rebuild report.html from the plots already there."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
    ) -> None:
        """Redraw the plots of a run folder and rebuild its self-contained report.html."""

        log = stderr_log()

        check_finished(run, "report")  # --html-only too: the page embeds the run's files
        check_run_files(run)  # damaged files are refused before any plot is drawn
        outcome = None
        if not html_only:
            options = options_from_env().with_map(
                map_method.value if map_method else None, map_sample
            )
            inputs = load_run_inputs(run, get_registry(), log)
            outcome = make_plots(inputs, run, options, log)
        report = write_report(run)
        record = {
            "report": str(report),
            "plots": [str(p) for p in outcome.written] if outcome else [],
            "skipped": outcome.skipped if outcome else {},
            "failed": outcome.failed if outcome else {},
            "seconds": round(outcome.seconds, 3) if outcome else 0.0,
        }
        if as_json:
            typer.echo(json.dumps(record, indent=2))
            return
        if outcome is not None:
            shown = [p for p in outcome.written if p.parent.name == "plots"]
            montages = sum(p.parent.name == "clusters" for p in outcome.written)
            for path in shown:
                typer.echo(f"plot      {path.relative_to(run)}")
            if montages:
                typer.echo(f"plots     {montages} cluster montages in plots/clusters/")
            for name, reason in outcome.skipped.items():
                if name not in ("clusters/", "explorer/"):
                    kept = " (the earlier one is kept)" if (run / "plots" / name).is_file() else ""
                    typer.echo(f"skipped   {name}: {reason}{kept}")
            typer.echo(f"time      {outcome.seconds:.1f}s")
        typer.echo(f"report    {report}")
