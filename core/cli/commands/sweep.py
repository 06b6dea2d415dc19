"""``imgclust sweep-k``: choose the number of clusters with internal scores (no labels needed).

It takes a run's configuration (recipe, config file, stages, ``--set``) like ``imgclust run``,
fits the encoders, then clusters a fixed-seed sample of the features for each k in a range and
writes ``k-sweep.csv``, ``k-sweep.json`` and ``k-sweep.png``. ``--from RUN`` sweeps a finished
run's ``embeddings.npy`` instead (no refitting); ``--run`` goes on to a full run with the
recommended k and keeps the sweep's files in that run folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import typer

from imgclust.console import stderr_log
from imgclust.engine.build import build_pipeline, load_data, seed_everything
from imgclust.engine.config import drop_file_dask, read_toml, resolve_config, validate
from imgclust.engine.runner import execute
from imgclust.errors import DataError
from imgclust.io.bounded import read_npy
from imgclust.io.runfolder import create_incomplete, discard, finalise, run_name
from imgclust.results.ksweep import (
    CRITERIA,
    check_k_range,
    check_sweepable,
    parse_range,
    sweep,
    write,
)
from imgclust.results.summary import summary_lines
from imgclust.stages.host import get_registry


def register(app: typer.Typer) -> None:
    """Add ``sweep-k`` to the CLI."""
    app.command("sweep-k")(sweep_k_command)


def sweep_k_command(
    recipe: str | None = typer.Option(None, "--recipe", "-r", help="A named configuration."),
    config: Path | None = typer.Option(None, "--config", "-c", help="A TOML config."),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Dataset plugin."),
    encoder: list[str] | None = typer.Option(
        None, "--encoder", "-e", help="Encoder plugin; repeat to chain."
    ),
    clusterer: str | None = typer.Option(
        None, "--clusterer", "-k", help="Clusterer to sweep (one with n_clusters)."
    ),
    sets: list[str] | None = typer.Option(None, "--set", "-s", help="stage.key=value; repeatable."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the sample and the clusterers."),
    split: str | None = typer.Option(None, "--split", help="Which split to cluster."),
    from_run: Path | None = typer.Option(
        None, "--from", help="Sweep this run folder's embeddings.npy instead of fitting encoders."
    ),
    k_range: str = typer.Option("2-15", "--k", help="k values: 2-15, 2-20:2 or 4,8,10."),
    sample: int = typer.Option(10_000, "--sample", help="Cluster a fixed-seed sample this large."),
    criterion: str = typer.Option(
        "silhouette", "--criterion", help="silhouette, davies_bouldin, calinski_harabasz or bic."
    ),
    then_run: bool = typer.Option(False, "--run", help="Then run with the recommended k."),
    no_plots: bool = typer.Option(False, "--no-plots", help="With --run: skip the run's plots."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where folders go."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Sweep k on a sample, score each k without labels, recommend one (and run it with --run)."""

    log = stderr_log()

    registry = get_registry()
    ks = parse_range(k_range)
    if from_run is not None:
        features, resolved = _run_features(from_run, read_toml, validate, registry)
        if clusterer or sets or seed is not None:
            resolved = resolve_config(
                registry,
                config_file=Path(from_run) / "config.toml",
                clusterer=clusterer,
                sets=sets or (),
                seed=seed,
            )
    else:
        resolved = resolve_config(
            registry,
            recipe=recipe,
            config_file=config,
            dataset=dataset,
            encoders=encoder,
            clusterer=clusterer,
            sets=sets or (),
            seed=seed,
            split=split,
        )
    stage = dict(resolved["clusterer"])
    name = stage.pop("name")
    entry = registry.get("clusterers", name)
    check_sweepable(name, entry.factory, criterion, stage)
    if from_run is None:
        features = _fit_features(
            registry, resolved, log, lambda n: check_k_range(ks, min(n, sample))
        )
    log(f"sweeping k over {ks[0]}..{ks[-1]} with {name} on {min(sample, len(features))} images")
    result = sweep(
        features,
        name,
        entry.factory,
        ks,
        settings=stage,
        sample_size=sample,
        seed=int(resolved["seed"]),
        criterion=criterion,
        log=log,
    )
    k = result.recommended
    final: dict[str, Any] = {"recommended": k, **result.to_dict()}
    if then_run:
        chosen = {**resolved, "clusterer": {**resolved["clusterer"], "n_clusters": k}}
        chosen = validate(registry, chosen)
        log(f"running with n_clusters={k}")
        run = execute(
            registry,
            chosen,
            runs_dir,
            log=log,
            plots=not no_plots,
            after_fit=lambda r: write(result, r.path),
        )
        final["folder"] = str(run.path)
        final["run"] = {**run.record, "run": str(run.path)}
    else:
        folder = _sweep_folder(runs_dir, resolved)
        try:
            write(result, folder)
        except BaseException:
            discard(folder)
            raise
        final["folder"] = str(finalise(folder))
    if as_json:
        typer.echo(json.dumps(final, indent=2, default=str))
        return
    _print_table(result)
    typer.echo(
        f"recommended k = {k} (by {criterion}; best per score: "
        + ", ".join(f"{c} {v}" for c, v in result.best.items())
        + ")"
    )
    if then_run:
        for line in summary_lines(final["run"]):
            typer.echo(line)
        typer.echo(f"run folder {final['folder']}")
    else:
        typer.echo(f"sweep folder {final['folder']}")
        typer.echo(f"run it: imgclust run ... --set clusterer.n_clusters={k}")


def _fit_features(
    registry: Any, config: dict[str, Any], log: Any, check_size: Any = None
) -> np.ndarray:
    """Fit the config's encoders as a run does and return the features of the clustered split
    (``check_size(n)`` sees the number of images before any encoder is fitted)."""

    seed_everything(int(config["seed"]))
    pipeline = build_pipeline(registry, config)
    splits = load_data(registry, config, log)
    data, fit = splits.data, splits.fit
    if check_size is not None:
        check_size(len(data))
    validation = splits.validation
    features = pipeline.fit_encoders(
        fit.images, None if validation is None else validation.images, log=log
    )
    if fit is not data:
        features = pipeline.transform(data.images)
    return features


def _run_features(
    run: Path, read_toml: Any, validate: Any, registry: Any
) -> tuple[np.ndarray, dict]:
    """A finished run's clustered features and its configuration."""
    run = Path(run)
    path = run / "embeddings.npy"
    if not path.is_file():
        raise DataError(f"{str(run)!r} has no embeddings.npy: give a finished run folder.")
    features = read_npy(path, f"embeddings.npy of {run.name!r}")

    config = read_toml(run / "config.toml")
    how = "run with `imgclust run --dask ADDRESS --set clusterer.n_clusters=K ...`"
    drop_file_dask(config, str(run / "config.toml"), trusted=False, chosen=False, how=how)
    return features, validate(registry, config)


def _sweep_folder(runs_dir: Path, config: dict[str, Any]) -> Path:
    """A new, still incomplete ``RUNS/<time>-k-sweep-<stages>`` folder (never an existing one)."""
    return create_incomplete(Path(runs_dir), run_name(config, kind="k-sweep"))


def _print_table(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = [c for c in CRITERIA if any(r.get(c) is not None for r in result.rows)]
    table = Table("k", *shown, "found", "seconds", box=None, pad_edge=False)
    for row in result.rows:
        cells = []
        for c in shown:
            value = row.get(c)
            text = "-" if value is None else f"{value:.4g}"
            cells.append(f"[bold]{text}[/bold]" if result.best.get(c) == row["k"] else text)
        mark = " *" if row["k"] == result.recommended else ""
        table.add_row(f"{row['k']}{mark}", *cells, str(row["found"]), f"{row['seconds']:.2f}")
    Console(highlight=False).print(table)
