"""Progress lines for the CLI: dimmed, on stderr (stdout is for results and ``--json``)."""

from __future__ import annotations

from collections.abc import Callable

Log = Callable[[str], None]  # where a run's progress lines go: log("fitting pca")


def stderr_log() -> Log:
    """A ``log(message)`` that prints one dimmed line on stderr, without reading markup in it."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, highlight=False, soft_wrap=True)

    def log(message: str) -> None:
        console.print(f"[dim]{escape(message)}[/dim]")

    return log


def note(message: str) -> None:
    """Print one progress line on stderr (for stages, which have no log of their own)."""
    stderr_log()(message)
