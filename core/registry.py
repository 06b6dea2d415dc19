"""What the plugins registered: datasets, encoders, clusterers, recipes and refiners, by name."""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import PluginError

KINDS = ("datasets", "encoders", "clusterers", "recipes", "refiners")
SINGULAR = {
    "datasets": "dataset",
    "encoders": "encoder",
    "clusterers": "clusterer",
    "recipes": "recipe",
    "refiners": "refiner",
}
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass
class Entry:
    """One registered thing: its name, its factory (or recipe mapping) and where it came from."""

    kind: str
    name: str
    target: Any
    plugin: str
    summary: str = ""

    @property
    def doc(self) -> str:
        """The summary, or the first line of the factory's docstring."""
        if self.summary:
            return self.summary
        text = inspect.getdoc(self.target) if callable(self.target) else ""
        return (text or "").strip().splitlines()[0] if text else ""


@dataclass
class Registry:
    """Names to entries, per kind, with the collisions and failures met while registering."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    collisions: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def register(self, kind: str, plugin: str) -> Callable[..., None]:
        """The ``register`` callback handed to one plugin's ``register_<kind>`` hook."""

        def register(name: str, target: Any, *, summary: str = "") -> None:
            if not isinstance(name, str) or not NAME_PATTERN.match(name):
                raise PluginError(
                    f"plugin {plugin!r} registered {SINGULAR[kind]} {name!r}: names are lowercase "
                    "letters, digits, '-' and '_'."
                )
            if kind != "recipes" and not callable(target):
                raise PluginError(
                    f"plugin {plugin!r} registered {SINGULAR[kind]} {name!r} with a "
                    f"{type(target).__name__}, not a class or function."
                )
            existing = self.entries[kind].get(name)
            if existing is not None and existing.plugin != plugin:
                self.collisions.setdefault((kind, name), [existing.plugin]).append(plugin)
                return
            self.entries[kind][name] = Entry(kind, name, target, plugin, summary)

        return register

    def names(self, kind: str) -> list[str]:
        """Registered names of one kind, sorted."""
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> Entry:
        """The entry for a name; an unknown or colliding name raises a one-line error."""
        singular = SINGULAR[kind]
        if (kind, name) in self.collisions:
            plugins = " and ".join(repr(p) for p in self.collisions[(kind, name)])
            raise PluginError(
                f"{singular} {name!r} is registered by both plugins {plugins}: uninstall one "
                "or restrict IMGCLUST_LOAD_PLUGINS."
            )
        try:
            return self.entries[kind][name]
        except KeyError:
            raise PluginError(unknown_name_message(singular, name, self.names(kind))) from None


def unknown_name_message(what: str, name: str, known: list[str]) -> str:
    """'unknown encoder 'pcaa'; did you mean 'pca'? Known: ...' in one line."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(known) if known else "none installed"
    return f"Unknown {what} {name!r}.{hint} Available: {listing}."
