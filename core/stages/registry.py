"""What the plugins registered: datasets, encoders, clusterers, recipes and refiners, by name."""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
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

    def __call__(
        self,
        name: str,
        target: StageFactory | Recipe,
        *,
        summary: str = "",
        measured: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Register ``target`` under ``name``; a bad name, target or measurement is a
        :class:`PluginError`."""


@dataclass(frozen=True)
class Measurement:
    """What a recipe scored on one image set over seeds, and how long a run of it took: what
    ``imgclust list recipes`` shows so that people choose knowing the trade-offs."""

    dataset: str  # the image set, e.g. "digits", "mnist", "mnist-mirrored"
    images: int  # how many of its images each run clustered
    seeds: tuple[int, ...]
    acc: tuple[float, float, float]  # mean, lowest and highest over the seeds
    nmi: tuple[float, float, float]
    seconds: float | None  # mean wall time of a run on 2 CPU cores; None: not timed on 2 cores
    source: str = ""  # where the figures were recorded

    def describe(self) -> str:
        """'digits, 1,797 images, 5 seeds: ACC 0.8860 (0.8820-0.8876), NMI ..., 22 s': mean,
        lowest and highest over the seeds; the time of a run on 2 cores."""

        def spread(values: tuple[float, float, float]) -> str:
            mean, low, high = values
            return f"{mean:.4f}" if low == high else f"{mean:.4f} ({low:.4f}-{high:.4f})"

        seeds = f"{len(self.seeds)} seed" + ("s" if len(self.seeds) != 1 else "")
        time = "not timed on 2 cores" if self.seconds is None else f"{self.seconds:,.0f} s"
        return (
            f"{self.dataset}, {self.images:,} images, {seeds}: ACC {spread(self.acc)}, "
            f"NMI {spread(self.nmi)}, {time}"
        )


def measurement_of(plugin: str, name: str, value: Any) -> Measurement:
    """A plugin's measurement mapping as a :class:`Measurement`; anything else is one line."""
    where = f"plugin {plugin!r} registered recipe {name!r} with a measurement"
    try:
        if not isinstance(value, Mapping):
            raise TypeError("not a mapping")
        unknown = set(value) - set(Measurement.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}")
        seeds = tuple(int(s) for s in value["seeds"])
        figures = [tuple(float(v) for v in value[key]) for key in ("acc", "nmi")]
        seconds = value.get("seconds")
        measured = Measurement(
            dataset=str(value["dataset"]),
            images=int(value["images"]),
            seeds=seeds,
            acc=(figures[0][0], figures[0][1], figures[0][2]),
            nmi=(figures[1][0], figures[1][1], figures[1][2]),
            seconds=None if seconds is None else float(seconds),
            source=str(value.get("source", "")),
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        reason = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise PluginError(
            f"{where} imgclust cannot read ({reason}): give dataset, images, seeds, acc and nmi "
            "(mean, lowest, highest), seconds (or None) and source."
        ) from None
    numbers = [*measured.acc, *measured.nmi, *([measured.seconds] if measured.seconds else [])]
    if not seeds or measured.images < 1 or not all(math.isfinite(v) for v in numbers):
        raise PluginError(f"{where} without seeds, images or finite figures.")
    return measured


@dataclass
class Entry:
    """One registered thing: its name, its factory (or recipe mapping) and where it came from."""

    kind: str
    name: str
    target: StageFactory | Recipe
    plugin: str
    summary: str = ""
    measured: tuple[Measurement, ...] = ()  # a recipe's measured figures, one per image set

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

        def register(
            name: str,
            target: StageFactory | Recipe,
            *,
            summary: str = "",
            measured: Sequence[Mapping[str, Any]] = (),
        ) -> None:
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
            if measured and kind != "recipes":
                raise PluginError(
                    f"plugin {plugin!r} registered {SINGULAR[kind]} {name!r} with measured "
                    "figures: only recipes carry them."
                )
            if measured is None:
                measured = ()
            if isinstance(measured, (str, Mapping)) or not isinstance(measured, Sequence):
                measured = [measured]  # one measurement given bare: checked as one
            figures = tuple(measurement_of(plugin, name, m) for m in measured)
            entry = Entry(kind, name, target, plugin, summary, figures)
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
