"""The plugin manager: loads the bundled and third-party plugins from the ``imgclust`` entry points.

``IMGCLUST_LOAD_PLUGINS`` (a comma-separated list of entry-point names) restricts which
third-party plugins load; the bundled ones always do. A plugin that fails to import or register
is recorded and reported, and everything else keeps working.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .registry import KINDS, Registry

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


class PluginHost:
    """Holds the pluggy manager, the registry built from it, and what each plugin did."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("imgclust")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self._registry: Registry | None = None

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
                self._fail(info, f"failed to load: {type(exc).__name__}: {exc}")
                if self.pm.has_plugin(ep.name):
                    self.pm.unregister(name=ep.name)

    def register(self, plugin: Any, name: str, version: str = "") -> None:
        """Register a plugin object directly (tests, and programs that embed imgclust)."""
        self.pm.register(plugin, name=name)
        self.plugins[name] = PluginInfo(name, version=version)
        self._registry = None

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
            caller = getattr(self.pm.hook, f"register_{kind}")
            for impl in caller.get_hookimpls():
                info = self.plugins.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name))
                before = set(registry.entries[kind])
                try:
                    impl.function(register=registry.register(kind, impl.plugin_name))
                except Exception as exc:  # one plugin's bug must not hide the others' stages
                    self._fail(info, f"failed to register {kind}: {type(exc).__name__}: {exc}")
                    continue
                added = sorted(set(registry.entries[kind]) - before)
                if added:
                    info.registered.setdefault(kind, []).extend(added)
        for (kind, name), owners in registry.collisions.items():
            message = f"{kind[:-1]} {name!r} is registered by both plugins " + " and ".join(
                repr(o) for o in owners
            )
            warnings.warn(f"imgclust: {message}", RuntimeWarning, stacklevel=2)
        return registry

    def add_commands(self, app: Any) -> None:
        """Let plugins add CLI commands; a failing one is reported, not fatal."""
        for impl in self.pm.hook.register_commands.get_hookimpls():
            try:
                impl.function(app=app)
            except Exception as exc:
                info = self.plugins.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name))
                self._fail(info, f"failed to add commands: {type(exc).__name__}: {exc}")


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


def get_registry() -> Registry:
    """The registry of the process-wide plugin host."""
    return get_host().registry
