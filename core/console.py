"""Progress lines for the CLI: dimmed, on stderr (stdout is for results and ``--json``); and the
one rule for text a stranger's file may have chosen before it reaches a terminal."""

from __future__ import annotations

from collections.abc import Callable

Log = Callable[[str], None]  # where a run's progress lines go: log("fitting pca")


def printable(text: object) -> str:
    """``text`` safe to print on a terminal: control and format characters (escape sequences,
    line breaks, bidirectional overrides) shown as '?', so that a file name, a label or a field
    of a stranger's run folder can neither drive the terminal nor forge another line."""
    return "".join(c if c.isprintable() else "?" for c in str(text))


def stderr_log() -> Log:
    """A ``log(message)`` that prints one dimmed line on stderr, without reading markup in it."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, highlight=False, soft_wrap=True)

    def log(message: str) -> None:
        console.print(f"[dim]{escape(printable(message))}[/dim]")

    return log


def note(message: str) -> None:
    """Print one progress line on stderr (for stages, which have no log of their own)."""
    stderr_log()(message)
