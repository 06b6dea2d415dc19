"""Bundled CLI commands beyond ``run``, ``plugins`` and ``list``: one module each, with a
``register(app)`` function, registered when the CLI starts (heavy libraries load only when a
command runs).
"""

from __future__ import annotations

import importlib
from typing import Any

MODULES: tuple[str, ...] = ("predict", "sweep", "report", "export", "similar", "duplicates")


def register_all(app: Any) -> None:
    """Add every bundled command module's commands to the typer app."""
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}").register(app)
