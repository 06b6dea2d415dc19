"""Write docs/cli.md, the command reference, from the CLI: ``python docs/cli_reference.py``."""

from __future__ import annotations

import os
from pathlib import Path

TARGET = Path(__file__).with_name("cli.md")


def render() -> str:
    """The reference of the bundled commands as Markdown."""
    os.environ.setdefault("IMGCLUST_LOAD_PLUGINS", "")  # bundled commands only
    import typer
    import typer.main
    from typer.cli import get_docs_for_click

    from imgclust.cli.app import _add_plugin_commands, app

    _add_plugin_commands()
    command = typer.main.get_command(app)
    context = typer.Context(command)
    docs = get_docs_for_click(
        obj=command, ctx=context, name="imgclust", title="imgclust command reference"
    )
    return docs.strip() + "\n"


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET.name}")
