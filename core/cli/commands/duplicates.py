"""``imgclust duplicates RUN``: groups of exact and near-duplicate images in a finished run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from imgclust.after.duplicates import check_threshold, duplicates_csv, search
from imgclust.after.finished import check_finished, run_sources
from imgclust.console import printable, stderr_log
from imgclust.io.outputs import claim_output, write_output

DEFAULT_OUTPUT = "duplicates.csv"


def duplicates_command(
    run: Path = typer.Argument(..., help="A finished run folder."),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        "-t",
        help="Near duplicates: feature distance at most this (default: 0.1 x the median "
        "nearest-neighbour distance).",
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the CSV here (default: RUN/duplicates.csv)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing CSV (never an input)."),
    allow_changed: bool = typer.Option(
        False,
        "--allow-changed",
        help="Go on when the run's images changed since it ran (reported), rather than refuse.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with the groups."),
) -> None:
    """Find exact copies (same content hash) and near copies (close features) in a run."""

    check_finished(run, "search")
    check_threshold(threshold)
    target = output if output is not None else run / DEFAULT_OUTPUT
    # the default file is this command's own, in the run by design; anything else stays out
    protected = run_sources(run)
    if output is None:  # unless the run itself lies among its images
        protected = [p for p in protected[1:] if not run.resolve().is_relative_to(p.resolve())]
    option = "--output" if output is not None else "the CSV"
    target = claim_output(target, force=force, inputs=protected, protected=protected, option=option)
    found = search(run, threshold, log=stderr_log(), allow_changed=allow_changed)
    write_output(target, duplicates_csv(found.groups), force=force, option=option)
    if as_json:
        typer.echo(json.dumps(_record(run, found, target), indent=2))
        return
    exact = sum(1 for g in found.groups if g.kind == "exact")
    how = "derived" if found.derived else "given"
    typer.echo(
        f"{len(found.groups)} groups ({exact} exact, {len(found.groups) - exact} near) holding "
        f"{found.images_in_groups} of {found.n_images} images; threshold {found.threshold:.6g} "
        f"({how}){'' if found.exact_checked else '; exact copies not checked'}"
    )
    for number, group in enumerate(found.groups[:10], start=1):
        shown = ", ".join(printable(i) for i in group.ids[:4])
        shown += " ..." if len(group.ids) > 4 else ""
        typer.echo(f"  {number}. {group.kind}: {shown}")
    if len(found.groups) > 10:
        typer.echo(f"  ... and {len(found.groups) - 10} more")
    if found.content:
        typer.echo(f"note: {found.content}")
    typer.echo(f"wrote {target}")


def _record(run: Path, found: Any, target: Path) -> dict[str, Any]:
    return {
        "run": str(run),
        "threshold": found.threshold,
        "threshold_derived": found.derived,
        "exact_checked": found.exact_checked,
        "content": found.content or "unchanged since the run",
        "n_images": found.n_images,
        "output": str(target),
        "groups": [group.to_dict() for group in found.groups],
    }


def register(app: Any) -> None:
    """Add ``duplicates`` to the CLI."""
    app.command("duplicates")(duplicates_command)
