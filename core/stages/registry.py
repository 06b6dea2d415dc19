"""What the plugins registered: datasets, encoders, clusterers, recipes and refiners, by name."""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from imgclust.errors import PluginError
from imgclust.stages.kinds import REGISTERED, SINGULAR

KINDS = REGISTERED  # what plugins register, in the table of stage kinds
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

#: What a stage is registered as: a class or function whose keyword parameters are its settings.
StageFactory = Callable[..., Any]
#: What a recipe is registered as: a run configuration (dataset, encoder, clusterer, ...).
Recipe = Mapping[str, Any]


class Register(Protocol):
    """The ``register`` callback a ``register_<kind>`` hook is handed."""

    def __call__(self, name: str, target: StageFactory | Recipe, *, summary: str = "") -> None:
        """Register ``target`` under ``name``; a bad name or target is a :class:`PluginError`."""


@dataclass
class Entry:
    """One registered thing: its name, its factory (or recipe mapping) and where it came from."""

    kind: str
    name: str
    target: StageFactory | Recipe
    plugin: str
    summary: str = ""

    @property
    def factory(self) -> StageFactory:
        """The class or function that builds this stage (registration checked it is callable)."""
        if not callable(self.target):
            raise PluginError(f"{SINGULAR[self.kind]} {self.name!r} is not a class or function.")
        return self.target

    @property
    def recipe(self) -> Recipe:
        """The run configuration this recipe names."""
        if not isinstance(self.target, Mapping):
            raise PluginError(
                f"recipe {self.name!r} from plugin {self.plugin!r} is a "
                f"{type(self.target).__name__}, not a table of settings."
            )
        return self.target

    @property
    def doc(self) -> str:
        """The summary, or the first line of the factory's docstring."""
        if self.summary:
            return self.summary
        text = inspect.getdoc(self.target) if callable(self.target) else ""
        return (text or "").strip().splitlines()[0] if text else ""


@dataclass
class Registry:
    """Names to entries, per kind, with the collisions and failures met while registering.

    Every registration is reachable as ``PLUGIN:NAME``; a bare name two plugins register is
    disabled (and recorded in ``collisions``) while both qualified names keep working.
    """

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    qualified: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    collisions: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def register(self, kind: str, plugin: str) -> Register:
        """The ``register`` callback handed to one plugin's ``register_<kind>`` hook."""

        def register(name: str, target: StageFactory | Recipe, *, summary: str = "") -> None:
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
            entry = Entry(kind, name, target, plugin, summary)
            self.qualified[kind][qualified_name(plugin, name)] = entry
            owners = self.collisions.get((kind, name))
            existing = self.entries[kind].get(name)
            if owners is not None:
                if plugin not in owners:
                    owners.append(plugin)
            elif existing is not None and existing.plugin != plugin:
                self.collisions[(kind, name)] = [existing.plugin, plugin]
                del self.entries[kind][name]
            else:
                self.entries[kind][name] = entry

        return register

    def names(self, kind: str) -> list[str]:
        """Usable names of one kind, sorted: bare names, and ``PLUGIN:NAME`` for colliding ones."""
        colliding = [
            qualified
            for qualified, entry in self.qualified[kind].items()
            if (kind, entry.name) in self.collisions
        ]
        return sorted([*self.entries[kind], *colliding])

    def find(self, kind: str, name: str) -> Entry | None:
        """The entry a bare or ``PLUGIN:NAME`` name means; None when unknown or colliding."""
        if not isinstance(name, str):
            return None
        if ":" in name:
            return self.qualified.get(kind, {}).get(name)
        return self.entries.get(kind, {}).get(name)

    def names_of(self, kind: str, target: object) -> list[str]:
        """The names under which ``target`` is registered: bare if usable, else qualified."""
        bare = [e.name for e in self.entries.get(kind, {}).values() if e.target is target]
        if bare:
            return bare
        return [q for q, e in self.qualified.get(kind, {}).items() if e.target is target]

    def get(self, kind: str, name: str) -> Entry:
        """The entry for a name; an unknown or colliding name raises a one-line error."""
        singular = SINGULAR[kind]
        if isinstance(name, str) and (kind, name) in self.collisions:
            owners = self.collisions[(kind, name)]
            plugins = " and ".join(repr(p) for p in owners)
            choices = " or ".join(repr(qualified_name(p, name)) for p in owners)
            raise PluginError(
                f"{singular} {name!r} is registered by both plugins {plugins}: name one as "
                f"{choices}, uninstall one, or restrict IMGCLUST_LOAD_PLUGINS."
            )
        entry = self.find(kind, name)
        if entry is None:
            known = self.names(kind)
            if isinstance(name, str) and ":" in name:
                known = sorted(self.qualified[kind])
            raise PluginError(unknown_name_message(singular, name, known))
        return entry

    def with_target(self, kind: str, name: str, target: StageFactory | Recipe) -> Registry:
        """A copy in which ``name`` builds ``target`` (its entry otherwise kept): how the Python
        API hands a run objects that only exist in memory, leaving this registry as it was."""
        copy = Registry(
            {k: dict(v) for k, v in self.entries.items()},
            {k: dict(v) for k, v in self.qualified.items()},
            {key: list(owners) for key, owners in self.collisions.items()},
        )
        old = self.find(kind, name)
        plugin, summary = (old.plugin, old.summary) if old is not None else ("", "")
        copy.entries[kind][name] = Entry(kind, name, target, plugin, summary)
        return copy

    def prefer(self, kind: str, name: str, plugin: str) -> str:
        """``name`` as ``plugin`` means it: qualified when the bare name collides and ``plugin``
        registered it (a recipe naming its own plugin's stage), unchanged otherwise."""
        if (
            isinstance(name, str)
            and (kind, name) in self.collisions
            and qualified_name(plugin, name) in self.qualified.get(kind, {})
        ):
            return qualified_name(plugin, name)
        return name


def qualified_name(plugin: str, name: str) -> str:
    """``PLUGIN:NAME``, the name that stays usable when two plugins register one name."""
    return f"{plugin}:{name}"


def unknown_name_message(what: str, name: str, known: list[str]) -> str:
    """'unknown encoder 'pcaa'; did you mean 'pca'? Known: ...' in one line."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(known) if known else "none installed"
    return f"Unknown {what} {name!r}.{hint} Available: {listing}."
