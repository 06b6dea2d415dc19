"""The plugin manager: loads the bundled and third-party plugins from the ``imgclust`` entry points.

``IMGCLUST_LOAD_PLUGINS`` (a comma-separated list of entry-point names) restricts which
third-party plugins load; the bundled ones always do. A plugin that fails to import or register
is recorded and reported, and everything else keeps working.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy

from imgclust.stages import hookspecs
from imgclust.stages.registry import KINDS, Registry, qualified_name

if TYPE_CHECKING:  # imported where commands are added, to keep this module light
    import typer

ENTRY_POINT_GROUP = "imgclust"
BUNDLED_DISTRIBUTION = "imgclust"


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin: where it came from and what it registered."""

    name: str
    distribution: str = ""
    version: str = ""
    bundled: bool = False
    error: str = ""
    registered: dict[str, list[str]] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)


class PluginHost:
    """Holds the pluggy manager, the registry built from it, and what each plugin did."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("imgclust")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self._registry: Registry | None = None
        self.command_clashes: list[dict[str, Any]] = []
        self._generation = 0  # counts direct registrations, which call for commands anew

    # Loading -----------------------------------------------------------------------------
    def load_entry_points(self, allowed: set[str] | None = None) -> None:
        """Import and register every ``imgclust`` entry point (third-party ones if ``allowed``)."""
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else ""
            bundled = dist.lower() == BUNDLED_DISTRIBUTION
            if not bundled and allowed is not None and ep.name not in allowed:
                continue
            if ep.name in self.plugins:
                continue
            info = PluginInfo(
                ep.name, dist, ep.dist.version if ep.dist is not None else "", bundled
            )
            self.plugins[ep.name] = info
            try:
                module = ep.load()
                self.pm.register(module, name=ep.name)
                self.pm.check_pending()
            except Exception as exc:  # a broken plugin must not break the others
                self._fail(info, f"failed to load: {_describe(exc)}")
                if self.pm.has_plugin(ep.name):
                    self.pm.unregister(name=ep.name)
                continue
            self._warn_unmarked(info, module)

    def _warn_unmarked(self, info: PluginInfo, plugin: object) -> None:
        """Say so when a plugin defines a hook's function without ``@hookimpl``: pluggy skips it
        silently, and the plugin would load and register nothing."""
        for hook in sorted(vars(self.pm.hook)):
            function = getattr(plugin, hook, None)
            if callable(function) and self.pm.parse_hookimpl_opts(plugin, hook) is None:
                self._fail(
                    info,
                    f"defines {hook} without @hookimpl, so it is never called: decorate it with "
                    "@imgclust.hookimpl (from imgclust import hookimpl)",
                )

    def register(self, plugin: object, name: str, version: str = "") -> None:
        """Register a plugin object directly (tests, and programs that embed imgclust)."""
        self.pm.register(plugin, name=name)
        self.plugins[name] = PluginInfo(name, version=version)
        self._registry = None
        self._generation += 1

    def _fail(self, info: PluginInfo, message: str) -> None:
        info.error = message
        warnings.warn(f"imgclust plugin {info.name!r} {message}", RuntimeWarning, stacklevel=3)

    # Registry ----------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        """The registry, built on first use by calling every plugin's register hooks."""
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def _build_registry(self) -> Registry:
        registry = Registry()
        for kind in KINDS:

            def arguments(plugin: str, kind: str = kind) -> dict[str, Any]:
                return {"register": registry.register(kind, plugin)}

            def snapshot(kind: str = kind) -> set[str]:
                return set(registry.qualified[kind])

            for plugin, exc, added in self.call_each(f"register_{kind}", arguments, snapshot):
                info = self.plugins.setdefault(plugin, PluginInfo(plugin))
                if exc is not None:  # one plugin's bug must not hide the others' stages
                    self._fail(info, f"failed to register {kind}: {_describe(exc)}")
                elif added:  # bare names: a colliding one is listed under both owners
                    names = sorted(registry.qualified[kind][q].name for q in added)
                    info.registered.setdefault(kind, []).extend(names)
        for (kind, name), owners in registry.collisions.items():
            message = (
                f"{kind[:-1]} {name!r} is registered by both plugins "
                + " and ".join(repr(o) for o in owners)
                + "; the bare name is disabled, use "
                + " or ".join(repr(qualified_name(o, name)) for o in owners)
            )
            warnings.warn(f"imgclust: {message}", RuntimeWarning, stacklevel=2)
        return registry

    def call_each(
        self,
        hook: str,
        arguments: Callable[[str], dict[str, Any]],
        snapshot: Callable[[], set[Any]],
    ) -> Iterator[tuple[str, Exception | None, set[Any]]]:
        """Call one hook through pluggy, one plugin at a time, so that a failure stays its own.

        pluggy hands each implementation only the arguments it names, so a hook spec may grow
        an argument without breaking older plugins. Yields (plugin, error or None, what the
        call added to ``snapshot()``).
        """
        implementations = getattr(self.pm.hook, hook).get_hookimpls()
        for impl in implementations:
            before = snapshot()
            try:
                self._call_one(hook, impl, implementations, arguments(impl.plugin_name))
            except Exception as exc:
                yield impl.plugin_name, exc, set()
                continue
            yield impl.plugin_name, None, snapshot() - before

    def _call_one(
        self, hook: str, impl: Any, implementations: list[Any], arguments: dict[str, Any]
    ) -> None:
        """Call one plugin's implementation of a hook the way pluggy calls all of them."""
        if all(_hashable(other.plugin) for other in implementations):
            others = [other.plugin for other in implementations if other is not impl]
            self.pm.subset_hook_caller(hook, remove_plugins=others)(**arguments)
        else:  # subset_hook_caller keeps a set of plugins; call pluggy's executor with one impl
            getattr(self.pm.hook, hook)._hookexec(hook, [impl], arguments, False)

    # Commands ----------------------------------------------------------------------------
    def add_commands(self, app: typer.Typer) -> None:
        """Add the plugins' CLI commands to ``app``; none may replace a built-in or another's.

        Each plugin registers into a Typer of its own; its commands are then moved to ``app``
        unless a name is taken, which is refused with a one-line warning naming both owners.
        Commands added by an earlier host (tests reload plugins) are taken off first.
        """
        import typer

        if _PLUGIN_COMMANDS.get(id(app), (None, 0))[:2] == (self, self._generation):
            return
        _remove_plugin_commands(app)
        self.command_clashes = []
        for info in self.plugins.values():
            info.commands = []
        owners = {name: BUILT_IN for name in command_names(app)}
        added: list[Any] = []
        staging: dict[str, Any] = {}

        def arguments(plugin: str) -> dict[str, Any]:
            staging[plugin] = typer.Typer()
            return {"app": staging[plugin]}

        for plugin, exc, _ in self.call_each("register_commands", arguments, set):
            info = self.plugins.setdefault(plugin, PluginInfo(plugin))
            if exc is not None:
                self._fail(info, f"failed to add commands: {_describe(exc)}")
                continue
            try:
                added.extend(self._adopt_commands(app, staging.pop(plugin), info, owners))
            except Exception as error:  # a malformed command must not break the CLI
                self._fail(info, f"failed to add commands: {_describe(error)}")
        _PLUGIN_COMMANDS[id(app)] = (self, self._generation, added)

    def _adopt_commands(
        self, app: typer.Typer, own: typer.Typer, info: PluginInfo, owners: dict[str, str]
    ) -> list[Any]:
        """Move one plugin's commands onto ``app``, refusing any whose name is taken."""
        adopted: list[object] = []
        items: list[tuple[str, object]] = [
            ("registered_commands", c) for c in own.registered_commands
        ]
        items += [("registered_groups", g) for g in own.registered_groups]
        for kind, item in items:
            names = _item_names(kind, item)
            taken = [name for name in names if name in owners]
            if taken:
                self._refuse(info, taken[0], owners[taken[0]])
                continue
            getattr(app, kind).append(item)
            adopted.append(item)
            owners.update(dict.fromkeys(names, info.name))
            info.commands.extend(names)
        return adopted

    def _refuse(self, info: PluginInfo, name: str, owner: str) -> None:
        """Warn that a plugin's command would replace one that exists, and record it."""
        holder = "the built-in one" if owner == BUILT_IN else f"the one from plugin {owner!r}"
        clash = {"kind": "command", "name": name, "plugins": [owner, info.name]}
        self.command_clashes.append(clash)
        warnings.warn(
            f"imgclust: command {name!r} of plugin {info.name!r} would replace {holder}; "
            "ignored (the plugin should rename it).",
            RuntimeWarning,
            stacklevel=3,
        )


BUILT_IN = "built-in"
# Per Typer app (by id): the host that added plugin commands to it, and what they were, so that
# a host adds them once and a new host (tests reload plugins) replaces them.
_PLUGIN_COMMANDS: dict[int, tuple[PluginHost, int, list[Any]]] = {}


def _remove_plugin_commands(app: typer.Typer) -> None:
    """Take off ``app`` the commands an earlier host's plugins added to it."""
    previous = {id(item) for item in _PLUGIN_COMMANDS.pop(id(app), (None, 0, []))[2]}
    if previous:
        app.registered_commands[:] = [c for c in app.registered_commands if id(c) not in previous]
        app.registered_groups[:] = [g for g in app.registered_groups if id(g) not in previous]


def _item_names(kind: str, item: Any) -> list[str]:
    """The command names one registered command or sub-app puts on the command line."""
    import typer
    import typer.main

    if kind == "registered_commands":
        if item.name:
            return [item.name]
        return [typer.main.get_command_name(item.callback.__name__)] if item.callback else []
    holder = typer.Typer()
    holder.registered_groups.append(item)
    return sorted(typer.main.get_group(holder).commands)


def command_names(app: typer.Typer) -> list[str]:
    """Every command name on a Typer app, built-in and added."""
    names: list[str] = []
    for kind in ("registered_commands", "registered_groups"):
        for item in getattr(app, kind):
            names.extend(_item_names(kind, item))
    return names


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _describe(exc: BaseException, limit: int = 400) -> str:
    """``KeyError: 'x'`` on one line: every line of the message, joined, so that pluggy's reason
    (on its third line: which arguments the hookspec lacks) is not cut off."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {'; '.join(lines)}" if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def allowed_from_environment() -> set[str] | None:
    """The third-party plugins ``IMGCLUST_LOAD_PLUGINS`` allows, or None for all of them."""
    value = os.environ.get("IMGCLUST_LOAD_PLUGINS")
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


_host: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide plugin host, loaded from entry points on first use."""
    global _host
    if _host is None:
        host = PluginHost()
        host.load_entry_points(allowed_from_environment())
        _host = host
    return _host


def reset_host() -> None:
    """Forget the loaded plugins so the next :func:`get_host` loads them again (tests)."""
    global _host
    _host = None


def stage_origin(kind: str, name: str, instance: Any = None) -> str:
    """Where a registered stage comes from, for messages: ``acme-imgclust 0.2`` or ``plugin 'x'``.

    Empty when the name is not registered, or when ``instance`` is not of the registered class
    (a stage built by hand under a registered name).
    """
    if _host is None:
        return ""
    try:
        entry = _host.registry.find(kind, name)
    except Exception:  # messages about a failure must not fail themselves
        return ""
    if entry is None:
        return ""
    target = entry.target
    if instance is not None and isinstance(target, type) and not isinstance(instance, target):
        return ""
    info = _host.plugins.get(entry.plugin)
    if info is not None and info.distribution:
        return f"{info.distribution} {info.version}".strip()
    return f"plugin {entry.plugin!r}"


def get_registry() -> Registry:
    """The registry of the process-wide plugin host."""
    return get_host().registry
