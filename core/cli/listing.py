"""What ``imgclust list`` shows: each registered stage, its summary and its settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from imgclust.stages.host import get_registry
from imgclust.stages.registry import Measurement
from imgclust.stages.settings import settings_of


def describe_kind(kind: str) -> list[dict[str, Any]]:
    """Each registered name of one kind with its plugin, summary and settings."""
    registry = get_registry()
    items = []
    for name in registry.names(kind):
        entry = registry.get(kind, name)
        item: dict[str, Any] = {"name": name, "plugin": entry.plugin, "summary": entry.doc}
        if kind == "recipes":
            item["runs"] = recipe_outline(entry.recipe)
            item["config"] = entry.target
            item["measured"] = [asdict(m) for m in entry.measured]
        else:
            item["settings"] = [
                {
                    "name": s.name,
                    "type": s.type_name,
                    "default": None if s.required else s.default,
                    "required": s.required,
                    "help": s.help,
                }
                for s in settings_of(entry.factory).values()
            ]
        items.append(item)
    return items


def recipe_outline(recipe: Mapping[str, Any]) -> str:
    """'mnist(test; fit on train) -> conv-ae -> kmeans(n_clusters=10)', then any refiners."""

    def stage(table: Any) -> str:
        if isinstance(table, str):
            return table
        extra = ", ".join(f"{k}={v}" for k, v in table.items() if k != "name")
        return f"{table['name']}({extra})" if extra else table["name"]

    encoders = recipe.get("encoder") or recipe.get("encoders") or []
    if isinstance(encoders, (str, dict)):
        encoders = [encoders]
    split = recipe.get("split", "all")
    data = stage(recipe.get("dataset", "?"))
    data += (
        f" [{split}" + (f"; fit on {recipe['fit_split']}" if recipe.get("fit_split") else "") + "]"
    )
    refiners = recipe.get("refiner") or []
    if isinstance(refiners, (str, dict)):
        refiners = [refiners]
    clusterer = stage(recipe.get("clusterer", "?"))
    return " -> ".join([data, *(stage(e) for e in encoders), clusterer, *map(stage, refiners)])


def print_items(kind: str, items: list[dict[str, Any]]) -> None:
    """Print items readably with rich."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False)
    if not items:
        console.print(f"No {kind} installed.")
    for item in items:
        console.print(
            f"[bold]{item['name']}[/bold]  [dim]({item['plugin']})[/dim]  {item['summary']}"
        )
        if kind == "recipes":
            console.print(f"    {escape(item['runs'])}")
            for line in measured_lines(item["measured"]):
                console.print(f"    [dim]{escape(line)}[/dim]")
            continue
        for s in item["settings"]:
            default = "required" if s["required"] else f"= {s['default']!r}"
            head = f"    {s['name']}: {s['type']} {default}"
            first, *rest = setting_lines(head, s["help"], console.width)
            console.print(f"{escape(head)}[dim]{escape(first[len(head) :])}[/dim]")
            for line in rest:
                console.print(f"[dim]{escape(line)}[/dim]")
        console.print()


def measured_lines(measured: list[dict[str, Any]]) -> list[str]:
    """A head line, then 'digits, 1,797 images, 5 seeds: ACC ...' per image set; or one line
    saying the recipe was not measured."""
    if not measured:
        return ["measured: not yet (no figures registered with this recipe)"]
    head = "measured (mean, lowest-highest over the seeds; wall time of a run on 2 CPU cores):"
    return [head, *("  " + Measurement(**m).describe() for m in measured)]


def setting_lines(head: str, help_text: str, width: int) -> list[str]:
    """A setting's head and its whole description, wrapped to ``width`` with the description's
    later lines indented under the setting; the first line always starts with ``head``."""
    import textwrap

    if not help_text:
        return [head]
    indent = " " * 8
    words = textwrap.wrap(
        help_text,
        width=max(20, width - 1),
        initial_indent=" " * (len(head) + 2),
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    if not words:
        return [head]
    first = words[0]
    if len(head) + 2 + len(first.lstrip()) > max(20, width - 1):  # a head too long to share
        return [
            head,
            *textwrap.wrap(
                help_text,
                max(20, width - 1),
                initial_indent=indent,
                subsequent_indent=indent,
                break_long_words=False,
            ),
        ]
    return [head + "  " + first.lstrip(), *words[1:]]
