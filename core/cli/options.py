"""Command-line options several commands declare alike, written once so that their flags and
help cannot drift apart."""

from __future__ import annotations

import typer

#: ``--trust``: load pickled stages of a run folder (they can run code).
TRUST_RUN = typer.Option(
    False, "--trust", help="Allow pickled stages (they can run code): only for runs you trust."
)
#: ``--json``: one JSON object on stdout instead of the table.
AS_JSON = typer.Option(False, "--json", help="Print one JSON object.")
