"""The ``imgclust`` command line: typer app, bundled commands, one-line errors."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from imgclust import __version__
from imgclust.cli.commands import register_all
from imgclust.cli.listing import describe_kind, print_items
from imgclust.console import printable, stderr_log
from imgclust.engine.config import resolve_config
from imgclust.engine.resume import interrupted_message, resume_config
from imgclust.engine.runner import execute
from imgclust.errors import ImgclustError
from imgclust.io.runfolder import os_error_line
from imgclust.kit.keras import framework_chatter_silenced
from imgclust.results.summary import summary_lines
from imgclust.stages.host import get_host, get_registry
from imgclust.stages.kinds import REGISTERED

app = typer.Typer(
    name="imgclust",
    help="Cluster unlabelled images with neural networks. Every stage is a plugin.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"imgclust {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Cluster unlabelled images with neural networks. Every stage is a plugin."""


# plugins / list --------------------------------------------------------------------------------
@app.command("plugins")
def plugins_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Installed plugins, their version, what each registers and adds; failures and clashes."""

    _add_plugin_commands()  # main() has done it already: then this costs nothing
    host = get_host()
    registry = host.registry
    rows: list[dict[str, Any]] = [
        {
            "name": info.name,
            "distribution": info.distribution,
            "version": info.version,
            "bundled": info.bundled,
            "registers": info.registered,
            "commands": info.commands,
            "error": info.error or None,
        }
        for info in sorted(host.plugins.values(), key=lambda i: (not i.bundled, i.name))
    ]
    collisions = [
        {"kind": kind[:-1], "name": name, "plugins": owners}
        for (kind, name), owners in registry.collisions.items()
    ] + host.command_clashes
    if as_json:
        typer.echo(json.dumps({"plugins": rows, "collisions": collisions}, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("plugin", "from", "registers", box=None, pad_edge=False)
    for row in rows:
        origin = "bundled" if row["bundled"] else f"{row['distribution']} {row['version']}".strip()
        parts = [f"{k}: {', '.join(v)}" for k, v in row["registers"].items()]
        if row["commands"]:
            parts.append(f"commands: {', '.join(row['commands'])}")
        what = "; ".join(parts)
        if row["error"]:
            what = f"[red]{row['error']}[/red]"
        table.add_row(row["name"], origin, what or "-")
    console = Console(highlight=False)
    console.print(table)
    for c in collisions:
        if c["kind"] == "command":
            console.print(
                f"[red]refused:[/red] command {escape(repr(c['name']))} of "
                f"{escape(c['plugins'][1])} (taken by {escape(c['plugins'][0])})"
            )
            continue
        qualified = " or ".join(f"{owner}:{c['name']}" for owner in c["plugins"])
        console.print(
            f"[red]collision:[/red] {escape(c['kind'])} {escape(repr(c['name']))} from "
            + escape(" and ".join(c["plugins"]))
            + f"; the bare name is disabled, use {escape(qualified)}"
        )


#: What ``imgclust list`` lists: every kind in the table of stage kinds, and recipes.
Kind = Enum("Kind", {name: name for name in REGISTERED}, type=str)  # type: ignore[misc]


@app.command("list")
def list_command(
    kind: Kind = typer.Argument(..., help="What to list."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Each dataset, encoder, clusterer, recipe or refiner, its summary and its settings."""

    items = describe_kind(kind.value)
    if as_json:
        typer.echo(json.dumps(items, indent=2, default=str))
        return

    print_items(kind.value, items)


# run ------------------------------------------------------------------------------------------
@app.command("run")
def run_command(
    recipe: str | None = typer.Option(
        None,
        "--recipe",
        "-r",
        help="A named configuration (see `imgclust list recipes`); default: article.",
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="A TOML config, e.g. a run folder's config.toml."
    ),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Dataset plugin."),
    encoder: list[str] | None = typer.Option(
        None, "--encoder", "-e", help="Encoder plugin; repeat to chain."
    ),
    clusterer: str | None = typer.Option(None, "--clusterer", "-k", help="Clusterer plugin."),
    refiner: list[str] | None = typer.Option(
        None,
        "--refiner",
        help="Refiner plugin, run after the clusterer; repeat to chain; replaces a recipe's.",
    ),
    sets: list[str] | None = typer.Option(
        None, "--set", "-s", help="stage.key=value, e.g. clusterer.n_clusters=10; repeatable."
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed for every random thing (default 0)."
    ),
    split: str | None = typer.Option(None, "--split", help="Which split to cluster."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run folders go."),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue an interrupted run (NAME.incomplete) from its checkpoints."
    ),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip plots and the HTML report."),
    keep_checkpoints: bool = typer.Option(
        False,
        "--keep-checkpoints",
        help="Keep the training checkpoints (checkpoints/) in the finished run folder.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    dask: str | None = typer.Option(
        None, "--dask", help="Encode and assign on Dask: a scheduler address, local or local:N."
    ),
    trust: bool = typer.Option(
        False,
        "--trust",
        help="Use the dask address the config file names (a scheduler can run code here): "
        "only for config files you trust.",
    ),
) -> None:
    """Fit a pipeline, cluster, score, and write a new run folder."""

    registry = get_registry()
    folder = None
    if resume is not None:
        given: dict[str, Any] = dict(recipe=recipe, config=config, dataset=dataset)
        given.update(encoder=encoder, clusterer=clusterer, refiner=refiner, set=sets)
        given.update(seed=seed, split=split)
        config, folder = resume_config(resume, given)
    resolved = resolve_config(
        registry,
        recipe=recipe,
        config_file=config,
        dataset=dataset,
        encoders=encoder,
        clusterer=clusterer,
        refiners=refiner,
        sets=[*(sets or ()), *([("dask", dask)] if dask is not None else [])],
        seed=seed,
        split=split,
        trust_config=trust,
    )

    result = execute(
        registry,
        resolved,
        runs_dir,
        log=stderr_log(),
        plots=not no_plots,
        folder=folder,
        keep_checkpoints=keep_checkpoints,
    )
    record = {**result.record, "run": str(result.path)}
    if as_json:
        typer.echo(json.dumps(record, indent=2, default=str))
        return
    for line in summary_lines(record):
        typer.echo(line)
    typer.echo(f"run folder {result.path}")


# entry point ----------------------------------------------------------------------------------
_commands_added = False


def _add_plugin_commands() -> None:
    global _commands_added

    if not _commands_added:
        _commands_added = True

        register_all(app)
    get_host().add_commands(app)  # once per host; a reloaded host's plugins replace the last's


def _format_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    """Warnings a user sees are one line without a source location."""
    text = str(message).strip()
    return f"warning: {printable(text.splitlines()[0]) if text else category.__name__}\n"


class Stopped(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP: every one stops a command the way Ctrl-C does, so that the
    same clean-up runs. (A subclass: CPython re-raises a bare KeyboardInterrupt as a SIGINT death
    at exit when a library's code ran it through ``PyRun_*``, losing the exit status.)"""

    received: int | None = None  # the signal that stopped this process's command, if any

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, frame: object) -> None:
    Stopped.received = Stopped.received or signum
    raise Stopped(signum)


#: What ``signal.signal`` takes and returns: a function, SIG_DFL or SIG_IGN, or None.
SignalHandler = Callable[[int, FrameType | None], Any] | int | None


def _catch_stop_signals() -> dict[int, SignalHandler]:
    """Turn SIGINT, SIGTERM and SIGHUP into :class:`Stopped`; the handlers they had before."""
    import signal

    previous: dict[int, SignalHandler] = {}
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            if signal.getsignal(signum) is signal.SIG_IGN:  # e.g. nohup: keep ignoring it
                continue
            previous[signum] = signal.signal(signum, _stop)
        except (ValueError, OSError):  # not the main thread, or no such signal here
            pass
    Stopped.received = None
    return previous


def _stopped(exc: BaseException) -> None:
    """Say that a command was stopped (and how to resume its run), then exit 128 + the signal.

    A library that turned the interruption into an error of its own (Keras's imports do) is
    still reported as interrupted: the signal handler noted the signal.
    """
    import signal

    signum = Stopped.received or signal.SIGINT
    what = (
        "Interrupted." if signum == signal.SIGINT else f"Stopped by {signal.Signals(signum).name}."
    )
    typer.echo(interrupted_message(exc, what), err=True)
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors become one line on stderr and a non-zero exit."""
    import signal
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.formatwarning = _format_warning
    previous = _catch_stop_signals()
    try:
        with framework_chatter_silenced():  # for every stage, bundled or not, and every command
            _add_plugin_commands()
            app(args=argv, prog_name="imgclust")
    except KeyboardInterrupt as exc:
        _stopped(exc)
    except SystemExit as exc:
        if exc.code == 130 or (exc.code and Stopped.received):  # typer: Ctrl-C -> exit 130
            _stopped(exc)
        raise
    except ImgclustError as exc:
        if Stopped.received:
            _stopped(exc)
        typer.echo(f"Error: {printable(exc)}", err=True)
        sys.exit(exc.exit_code)
    except MemoryError:
        typer.echo(
            "Error: out of memory: use fewer images (dataset limit) or smaller settings.", err=True
        )
        sys.exit(1)
    except OSError as exc:  # a full disk, no permission: the system's words and what to do
        if Stopped.received:
            _stopped(exc)
        if os.environ.get("IMGCLUST_DEBUG"):
            raise

        typer.echo(f"Error: {printable(os_error_line(exc))}", err=True)
        sys.exit(1)
    except Exception as exc:
        if Stopped.received:
            _stopped(exc)
        if os.environ.get("IMGCLUST_DEBUG"):
            raise
        typer.echo(
            f"Error: unexpected {type(exc).__name__}: {printable(exc)} "
            "(set IMGCLUST_DEBUG=1 for the traceback).",
            err=True,
        )
        sys.exit(1)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
