"""The plotting stage: every plot of a run, each on its own, so one that fails or does not apply
leaves a one-line note and the others (and the run) carry on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgclust.console import Log
from imgclust.errors import DataError, one_line
from imgclust.report.plots.clusters import plot_clusters
from imgclust.report.plots.confusion import plot_confusion
from imgclust.report.plots.embedding_map import plot_map
from imgclust.report.plots.explorer import plot_explorer
from imgclust.report.plots.figure import SkipPlot
from imgclust.report.plots.inputs import from_result
from imgclust.report.plots.montages import plot_montages
from imgclust.report.plots.options import PlotOptions, options_from_env
from imgclust.report.plots.projection import SAVED, load_projection, projection_key, save_projection
from imgclust.report.plots.reconstructions import plot_reconstructions
from imgclust.report.plots.training import plot_training

PLOTS_DIR = "plots"


def _plot_functions() -> list[tuple[str, Callable[..., list[Path]]]]:

    return [
        ("reconstructions.png", plot_reconstructions),
        ("clusters.png", plot_clusters),
        ("clusters/", plot_montages),
        ("map.png", plot_map),
        ("explorer/", plot_explorer),
        ("confusion.png", plot_confusion),
        ("training.png", plot_training),
    ]


@dataclass
class PlotOutcome:
    """What the stage wrote, what it skipped and why, what failed, and how long it took."""

    written: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def make_plots(
    inputs: Any,
    run_dir: Path,
    options: PlotOptions | None = None,
    log: Log = lambda message: None,
    only: tuple[str, ...] | None = None,
) -> PlotOutcome:
    """Write the plots of ``inputs`` (:class:`~imgclust.report.plots.inputs.PlotInputs`) under
    ``run_dir/plots/``; failures become warnings in the outcome and the log, never exceptions.
    """
    started = time.perf_counter()
    options = options or PlotOptions()
    folder = Path(run_dir) / PLOTS_DIR
    outcome = PlotOutcome()
    reused = reuse_projection(inputs, folder, options, log)
    for name, function in _plot_functions():
        if only is not None and name not in only:
            continue
        clock = time.perf_counter()
        try:
            outcome.written += function(inputs, folder, options)
            log(f"plotted {name} in {time.perf_counter() - clock:.1f}s")
        except SkipPlot as reason:
            outcome.skipped[name] = str(reason)
        except Exception as exc:  # a plot must never cost the run
            outcome.failed[name] = one_line(exc, 200, with_type=True)
            log(f"warning: {PLOTS_DIR}/{name} not written: {one_line(exc, 200, with_type=True)}")
    if not reused:
        keep_projection(inputs, folder, options, log)
    outcome.seconds = time.perf_counter() - started
    return outcome


def reuse_projection(inputs: Any, folder: Path, options: PlotOptions, log: Log) -> bool:
    """Take the 2-D projection an earlier drawing saved in ``folder`` (same images, seed and map
    settings), so the map is not projected again; a damaged file is noted and ignored."""
    key = projection_key(options)
    if getattr(inputs, "features", None) is None or key in inputs.projections:
        return False
    try:
        saved = load_projection(folder / SAVED, key, inputs.seed, inputs.n)
    except DataError as exc:
        log(f"note: {str(exc).rstrip('.')}: the map is projected again.")
        return False
    if saved is None:
        return False
    inputs.projections[key] = saved
    log(f"map: {saved.method} projection reused from {PLOTS_DIR}/{SAVED}, not computed again")
    return True


def keep_projection(inputs: Any, folder: Path, options: PlotOptions, log: Log) -> None:
    """Save the projection the map was drawn from, for ``imgclust report`` to reuse."""
    found = inputs.projections.get(projection_key(options))
    if found is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        save_projection(folder / SAVED, found, projection_key(options), inputs.seed, inputs.n)
    except OSError as exc:
        log(f"warning: {PLOTS_DIR}/{SAVED} not written: {one_line(exc, 200, with_type=True)}")


def plot_run(result: Any, log: Log = lambda message: None) -> float:
    """Plot a run that has just finished (a ``RunResult``); return the seconds taken.

    Never raises: whatever goes wrong is logged as a one-line warning.
    """
    started = time.perf_counter()
    try:
        make_plots(from_result(result), result.path, options_from_env(), log)
    except Exception as exc:
        log(f"warning: plots not written: {one_line(exc, 200, with_type=True)}")
    return time.perf_counter() - started
