"""``imgclust similar RUN IMAGE...``: the images of a finished run nearest to new images (encoded
through the run's saved pipeline) or to images of the run named by id, in its feature space."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from imgclust.after.finished import (
    check_finished,
    open_run,
    read_run_features,
    run_sources,
    verified_images,
)
from imgclust.after.neighbours import neighbour_index
from imgclust.cli.options import AS_JSON, TRUST_RUN
from imgclust.console import printable, stderr_log
from imgclust.engine.pipeline import load_pipeline
from imgclust.errors import DataError
from imgclust.io.inputs import check_inputs, read_inputs
from imgclust.io.outputs import claim_output, csv_lines, write_output_lines

TABLE_ROWS = 1000  # rows of the printed table aligned together


@dataclass
class Query:
    """One image asked about and the run's images nearest to it (arrays: a query may name every
    image of a large run)."""

    name: str
    kind: str  # "id" (an image of the run) or "image" (a new image)
    rows: Any  # (count,) int64 rows of the run
    distances: Any  # (count,) float32
    cluster: int | None = None  # the query's own cluster: its run's, or as predict assigns it
    label: str | None = None  # the query's own label, for an image of a run that knew labels


@dataclass
class Found:
    """The run, its queries and what was checked: the cap on neighbours, changed content."""

    finished: Any
    queries: list[Query]
    count: int  # neighbours per query after the cap
    content: str = ""  # what changed since the run, when allowed


def capped_count(count: int, n_images: int, by_id: bool) -> int:
    """Neighbours per query, at most the run's images (less the query itself for an id)."""
    return max(0, min(int(count), n_images - (1 if by_id else 0)))


def similar_queries(
    run: Path,
    images: list[str],
    ids: list[str],
    count: int,
    *,
    trust: bool = False,
    allow_changed: bool = False,
    log: Any = lambda message: None,
) -> Found:
    """The run and, for each id then each new image, its ``count`` nearest images (capped at
    the run's size); the run's images are checked against its recorded digests first."""

    finished = open_run(run, "search")
    rows = [finished.row_of(image_id) for image_id in ids]  # unknown ids fail before any work
    checked = verified_images(finished, "search", allow_changed)
    features = read_run_features(finished)
    encoded = _encode(run, images, trust, features.shape[1]) if images else None
    names = encoded.names if encoded is not None else []
    n = len(features)
    if count > n:
        log(f"note: -n {count} is more than the run's {n} images: at most {n} are listed")
    index = neighbour_index(finished.path, features, log)
    queries: list[Query] = []
    for i, row in enumerate(rows):
        found, distances = index.nearest_to_rows([row], capped_count(count, n, True))
        label = None if finished.labels is None else str(finished.labels[row])
        own = int(finished.clusters[row])
        queries.append(Query(ids[i], "id", found[0], distances[0], own, label))
    for i, name in enumerate(names):
        assert encoded is not None
        wanted = capped_count(count, n, False)
        found, distances = index.nearest_to_vectors(encoded.vectors[i : i + 1], wanted)
        assigned = None if encoded.clusters is None else int(encoded.clusters[i])
        queries.append(Query(name, "image", found[0], distances[0], assigned))
    return Found(finished, queries, min(count, n), checked.check.describe())


@dataclass
class Encoded:
    """New images as the run's saved pipeline sees them: their names, features and clusters
    (None when the pipeline cannot assign new images)."""

    names: list[str]
    vectors: Any  # (N, D) float32
    clusters: Any  # (N,) int64 or None


def _encode(run: Path, images: list[str], trust: bool, dim: int) -> Encoded:
    """New images read as ``predict`` reads them, encoded by the run's saved pipeline and, where
    it can predict, assigned to the run's clusters as ``predict`` assigns them (encoded once)."""
    import numpy as np

    saved = load_pipeline(run, trust=trust)
    parts, clusters, names = [], [], []
    for batch in read_inputs(images, saved):
        if saved.can_predict:
            labels, _, vectors = saved.assign_with_features(batch.images)
            clusters.append(labels)
        else:
            vectors = saved.transform(batch.images)
        parts.append(vectors)
        names += batch.ids
    vectors = np.concatenate(parts).astype(np.float32)
    if vectors.shape[1] != dim:
        raise DataError(
            f"the run's pipeline makes {vectors.shape[1]} features per image but its "
            f"embeddings.npy holds {dim}: the run folder is inconsistent."
        )
    if not np.isfinite(vectors).all():
        raise DataError("the run's pipeline made NaN or infinite features for these images.")
    return Encoded(names, vectors, np.concatenate(clusters) if clusters else None)


def header_of(finished: Any) -> list[str]:
    """The CSV header: query, rank, id, cluster, distance and label when the run knew labels."""
    with_labels = finished.labels is not None
    return ["query", "rank", "id", "cluster", "distance", *(["label"] if with_labels else [])]


def rows_of(finished: Any, query: Query) -> Iterator[list[Any]]:
    """One row per neighbour of ``query``, made as they are written (never all at once)."""
    with_labels = finished.labels is not None
    for rank, (row, distance) in enumerate(zip(query.rows, query.distances, strict=True), 1):
        line = [query.name, rank, finished.ids[row], int(finished.clusters[row])]
        line.append(round(float(distance), 6))
        if with_labels:
            line.append(str(finished.labels[row]))
        yield line


def all_rows(finished: Any, queries: list[Query]) -> Iterator[list[Any]]:
    """The rows of every query in order."""
    for query in queries:
        yield from rows_of(finished, query)


def json_lines(run: Path, found: Found, output: Path | None) -> Iterator[str]:
    """The ``--json`` object as text, a neighbour at a time (the same object ``json.loads``
    reads as if it had been made whole)."""
    header = header_of(found.finished)
    yield "{\n" + f'  "run": {json.dumps(str(run))},\n' + '  "queries": ['
    for number, query in enumerate(found.queries):
        yield ("," if number else "") + "\n    {\n"
        yield f'      "query": {json.dumps(query.name)},\n'
        yield f'      "kind": {json.dumps(query.kind)},\n'
        yield f'      "cluster": {json.dumps(query.cluster)},\n'
        yield f'      "label": {json.dumps(query.label)},\n' + '      "neighbours": ['
        for rank, row in enumerate(rows_of(found.finished, query)):
            item = json.dumps(dict(zip(header[1:], row[1:], strict=True)))
            yield ("," if rank else "") + "\n        " + item
        yield ("\n      ]" if len(query.rows) else "]") + "\n    }"
    yield ("\n  ]" if found.queries else "]") + ",\n"
    yield f'  "n": {found.count},\n'
    yield f'  "content": {json.dumps(found.content or "unchanged since the run")},\n'
    yield f'  "output": {json.dumps(None if output is None else str(output))}\n' + "}\n"


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
    trust: bool = TRUST_RUN,
    allow_changed: bool = typer.Option(
        False,
        "--allow-changed",
        help="Go on when the run's images changed since it ran (reported), rather than refuse.",
    ),
    as_json: bool = AS_JSON,
) -> None:
    """The run's images nearest to new images or to its own images (--id), with distances."""
    images, ids = list(images or []), list(ids or [])
    check_finished(run, "search")
    check_inputs(images)
    if not images and not ids:
        raise DataError("give new images (files, folders, .npy/.npz) or --id ID of the run.")
    if output is not None:
        output = claim_output(
            output, force=force, inputs=[run, *images], protected=run_sources(run)
        )
    found = similar_queries(
        run, images, ids, count, trust=trust, allow_changed=allow_changed, log=stderr_log()
    )
    finished, queries = found.finished, found.queries
    header = header_of(finished)
    if output is not None:
        write_output_lines(output, csv_lines(header, all_rows(finished, queries)), force=force)
    if as_json:
        for text in json_lines(run, found, output):
            typer.echo(text, nl=False)
        return
    if found.content:
        typer.echo(f"note: {found.content}")
    if output is not None:
        total = sum(len(q.rows) for q in queries)
        typer.echo(f"wrote {total} neighbours of {len(queries)} images to {output}")
        return
    for query in queries:
        _print_block(header, query, rows_of(finished, query))


def _print_block(header: list[str], query: Query, block: Iterable[list[Any]]) -> None:
    """The neighbours of one query as aligned columns: rank, distance, cluster, id (label);
    a long list is printed a part at a time, each part aligned on its own."""
    typer.echo(f"nearest to {_cell(query.name)} ({query_description(query)})")
    if not len(query.rows):
        typer.echo("  (the run has no other images)")
        return
    order = [1, 4, 3, 2, *([5] if len(header) > 5 else [])]
    titles: list[list[str]] = [[header[i] for i in order]]
    rows = iter(block)
    while part := list(itertools.islice(rows, TABLE_ROWS)):
        _print_table(titles + [[_cell(row[i]) for i in order] for row in part])
        titles = []


def query_description(query: Query) -> str:
    """What the table says of the query itself: 'of the run; cluster 3, label 7' for an image of
    the run, 'cluster 3 as predict assigns it' for a new image."""
    if query.kind == "id":
        label = "" if query.label is None else f", label {_cell(query.label)}"
        return f"of the run; cluster {query.cluster}{label}"
    if query.cluster is None:
        return "no cluster: the run's pipeline cannot assign new images"
    return f"cluster {query.cluster} as predict assigns it"


def _print_table(table: list[list[str]]) -> None:
    """Rows of cells as aligned columns (the first row may be the titles)."""
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        cells = [
            cell.rjust(width) if column < 3 else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        typer.echo("  " + "  ".join(cells).rstrip())


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"

    return printable(value) or "''"


def register(app: Any) -> None:
    """Add ``similar`` to the CLI."""
    app.command("similar")(similar_command)
