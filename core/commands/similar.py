"""``imgclust similar RUN IMAGE...``: the images of a finished run nearest to new images (encoded
through the run's saved pipeline) or to images of the run named by id, in its feature space."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from ..errors import DataError


@dataclass
class Query:
    """One image asked about and the run's images nearest to it."""

    name: str
    kind: str  # "id" (an image of the run) or "image" (a new image)
    rows: list[int]
    distances: list[float]


def similar_queries(
    run: Path,
    images: list[str],
    ids: list[str],
    count: int,
    *,
    trust: bool = False,
    log: Any = lambda message: None,
) -> tuple[Any, list[Query]]:
    """The run and, for each id then each new image, its ``count`` nearest images."""
    from ..finished import open_run, read_run_features
    from ..neighbours import neighbour_index

    finished = open_run(run, "search")
    rows = [finished.row_of(image_id) for image_id in ids]  # unknown ids fail before any work
    features = read_run_features(finished)
    vectors, names = _encode(run, images, trust, features.shape[1]) if images else (None, [])
    index = neighbour_index(finished.path, features, log)
    queries: list[Query] = []
    if rows:
        found, distances = index.nearest_to_rows(rows, count)
        queries += [
            Query(ids[i], "id", found[i].tolist(), distances[i].tolist()) for i in range(len(rows))
        ]
    if vectors is not None:
        found, distances = index.nearest_to_vectors(vectors, count)
        queries += [
            Query(names[i], "image", found[i].tolist(), distances[i].tolist())
            for i in range(len(names))
        ]
    return finished, queries


def _encode(run: Path, images: list[str], trust: bool, dim: int) -> tuple[Any, list[str]]:
    """New images read as ``predict`` reads them and encoded by the run's saved pipeline."""
    import numpy as np

    from ..persist import load_pipeline
    from .predict import read_inputs

    saved = load_pipeline(run, trust=trust)
    parts, names = [], []
    for batch in read_inputs(images, saved):
        parts.append(saved.transform(batch.images))
        names += batch.ids
    vectors = np.concatenate(parts).astype(np.float32)
    if vectors.shape[1] != dim:
        raise DataError(
            f"the run's pipeline makes {vectors.shape[1]} features per image but its "
            f"embeddings.npy holds {dim}: the run folder is inconsistent."
        )
    if not np.isfinite(vectors).all():
        raise DataError("the run's pipeline made NaN or infinite features for these images.")
    return vectors, names


def rows_of(finished: Any, queries: list[Query]) -> tuple[list[str], list[list[Any]]]:
    """The CSV header and one row per neighbour: query, rank, id, cluster, distance, label."""
    with_labels = finished.labels is not None
    header = ["query", "rank", "id", "cluster", "distance", *(["label"] if with_labels else [])]
    rows: list[list[Any]] = []
    for query in queries:
        for rank, (row, distance) in enumerate(zip(query.rows, query.distances, strict=True), 1):
            line = [query.name, rank, finished.ids[row], int(finished.clusters[row])]
            line.append(round(float(distance), 6))
            if with_labels:
                line.append(str(finished.labels[row]))
            rows.append(line)
    return header, rows


def similar_command(
    run: Path = typer.Argument(..., help="A finished run folder."),
    images: list[str] | None = typer.Argument(
        None, help="New images: image files, folders of images, .npy/.npz arrays."
    ),
    ids: list[str] | None = typer.Option(
        None, "--id", help="An image of the run by its id (see assignments.csv); repeatable."
    ),
    count: int = typer.Option(10, "-n", "--count", min=1, help="Neighbours per image."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write a CSV to this new file (default: a table on stdout)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Let --output replace an existing file (never an input)."
    ),
    trust: bool = typer.Option(
        False, "--trust", help="Allow pickled stages (they can run code): only for runs you trust."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """The run's images nearest to new images or to its own images (--id), with distances."""
    from ..console import stderr_log
    from ..finished import check_finished, run_sources
    from ..outputs import claim_output, csv_text, write_output
    from .predict import check_inputs

    images, ids = list(images or []), list(ids or [])
    check_finished(run, "search")
    check_inputs(images)
    if not images and not ids:
        raise DataError("give new images (files, folders, .npy/.npz) or --id ID of the run.")
    if output is not None:
        output = claim_output(
            output, force=force, inputs=[run, *images], protected=run_sources(run)
        )
    finished, queries = similar_queries(run, images, ids, count, trust=trust, log=stderr_log())
    header, rows = rows_of(finished, queries)
    if output is not None:
        write_output(output, csv_text(header, rows), force=force)
    blocks = _blocks(rows, queries)
    if as_json:
        record = {
            "run": str(run),
            "queries": [
                {
                    "query": query.name,
                    "kind": query.kind,
                    "neighbours": [dict(zip(header[1:], row[1:], strict=True)) for row in block],
                }
                for query, block in blocks
            ],
            "output": None if output is None else str(output),
        }
        typer.echo(json.dumps(record, indent=2))
        return
    if output is not None:
        typer.echo(f"wrote {len(rows)} neighbours of {len(queries)} images to {output}")
        return
    for query, block in blocks:
        _print_block(header, query, block)


def _blocks(rows: list[list[Any]], queries: list[Query]) -> list[tuple[Query, list[list[Any]]]]:
    """The rows of each query, in order (two queries may share a name)."""
    blocks, start = [], 0
    for query in queries:
        blocks.append((query, rows[start : start + len(query.rows)]))
        start += len(query.rows)
    return blocks


def _print_block(header: list[str], query: Query, block: list[list[Any]]) -> None:
    """The neighbours of one query as aligned columns: rank, distance, cluster, id (label)."""
    typer.echo(f"nearest to {_cell(query.name)}" + (" (of the run)" if query.kind == "id" else ""))
    if not block:
        typer.echo("  (the run has no other images)")
        return
    order = [1, 4, 3, 2, *([5] if len(header) > 5 else [])]
    table = [[header[i] for i in order]] + [[_cell(row[i]) for i in order] for row in block]
    widths = [max(len(line[i]) for line in table) for i in range(len(order))]
    for line in table:
        cells = [
            cell.rjust(width) if column < 3 else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        typer.echo("  " + "  ".join(cells).rstrip())


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    from ..finished import printable

    return printable(value) or "''"


def register(app: Any) -> None:
    """Add ``similar`` to the CLI."""
    app.command("similar")(similar_command)
