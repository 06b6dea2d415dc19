"""Write docs/hooks.md, the hook reference, from the code: ``python docs/hooks_reference.py``.

The page is the docstring of ``imgclust.stages.hookspecs``, then every hook specification in it,
then every public class of ``imgclust.stages.interfaces`` (the image container and each
``Protocol``, the optional capabilities included) with its members' signatures and docstrings.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from types import ModuleType
from typing import Any

TARGET = Path(__file__).with_name("hooks.md")
HEADER = (
    "<!-- Generated from core/hookspecs.py and core/interfaces.py by docs/hooks_reference.py;"
    " edit the docstrings there, then run: python docs/hooks_reference.py -->"
)


def render() -> str:
    """The hook reference as Markdown."""
    from imgclust.stages import hookspecs, interfaces

    parts = [HEADER, "# Hook reference", markdown(hookspecs.__doc__ or "").split("\n", 1)[1]]
    parts.append("## Hooks")
    parts += [render_hook(name, function) for name, function in hook_specs(hookspecs)]
    parts.append("## Interfaces")
    parts.append(markdown(_first_paragraphs(interfaces.__doc__ or "")))
    parts += [render_class(cls) for cls in interface_classes(interfaces)]
    return "\n\n".join(part.strip() for part in parts if part.strip()) + "\n"


def hook_specs(module: ModuleType) -> list[tuple[str, Any]]:
    """The hook specifications a module defines, in the order it defines them."""
    return [
        (name, value)
        for name, value in vars(module).items()
        if inspect.isfunction(value) and hasattr(value, "imgclust_spec")
    ]


def interface_classes(module: ModuleType) -> list[type]:
    """Public classes a module defines (dataclasses and Protocols), in the order it defines them."""
    return [
        value
        for name, value in vars(module).items()
        if inspect.isclass(value)
        and value.__module__ == module.__name__
        and not name.startswith("_")
        and (is_protocol(value) or dataclasses.is_dataclass(value))
    ]


def is_protocol(cls: type) -> bool:
    """Whether a class is a ``typing.Protocol`` (not a class that merely implements one)."""
    return bool(getattr(cls, "_is_protocol", False))


def render_hook(name: str, function: Any) -> str:
    """One hook: its call signature as a heading and its docstring."""
    arguments = ", ".join(inspect.signature(function).parameters)
    return f"### `{name}({arguments})`\n\n{markdown(inspect.getdoc(function) or '')}"


def render_class(cls: type) -> str:
    """One interface: what kind it is, its docstring and its members."""
    kind = "protocol" if is_protocol(cls) else "dataclass"
    if getattr(cls, "_is_runtime_protocol", False):
        kind = "runtime-checkable protocol: `isinstance(obj, " + cls.__name__ + ")`"
    lines = [f"### `{cls.__name__}`", "", f"*{kind}*", "", markdown(inspect.getdoc(cls) or "")]
    members = class_members(cls)
    if members:
        lines += ["", *members]
    return "\n".join(lines)


def class_members(cls: type) -> list[str]:
    """Bullet lines for a class's own attributes and public methods, in source order."""
    lines = []
    if dataclasses.is_dataclass(cls):
        for field in dataclasses.fields(cls):
            default = _field_default(field)
            lines.append(f"- `{field.name}: {field.type}{default}`")
    else:
        for name, annotation in vars(cls).get("__annotations__", {}).items():
            lines.append(f"- `{name}: {_annotation(annotation)}`")
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        function = value.fget if isinstance(value, property) else value
        if not inspect.isfunction(function):
            continue
        doc = inspect.getdoc(function)
        if isinstance(value, property):
            signature = f"{name}` (property)"
        else:
            signature = f"{name}{_signature(function)}`"
        first_line = f": {markdown(doc.splitlines()[0])}" if doc else ""
        lines.append(f"- `{signature}{first_line}")
    return lines


def _signature(function: Any) -> str:
    """``(images: np.ndarray, validation: np.ndarray | None = None) -> Encoder`` without self."""
    signature = inspect.signature(function)
    params = []
    for param in list(signature.parameters.values())[1:]:
        text = param.name
        if param.kind is param.VAR_POSITIONAL:
            text = "*" + text
        elif param.kind is param.VAR_KEYWORD:
            text = "**" + text
        if param.annotation is not param.empty:
            text += f": {_annotation(param.annotation)}"
        if param.default is not param.empty:
            text += f" = {param.default!r}"
        params.append(text)
    returns = signature.return_annotation
    tail = "" if returns is signature.empty else f" -> {_annotation(returns)}"
    return f"({', '.join(params)}){tail}"


def _annotation(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    return inspect.formatannotation(annotation)


def _field_default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return f" = {field.default!r}"
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f" = {field.default_factory()!r}"  # type: ignore[misc]
    return ""


def _first_paragraphs(text: str) -> str:
    """A module docstring without its title line."""
    cleaned = inspect.cleandoc(text)
    return cleaned.split("\n", 1)[1] if "\n" in cleaned else cleaned


def markdown(text: str) -> str:
    """Docstring text as Markdown: reST literals and roles outside code blocks become spans."""
    pieces = re.split(r"(^```.*?^```$)", inspect.cleandoc(text), flags=re.S | re.M)
    for index in range(0, len(pieces), 2):  # the odd pieces are fenced code blocks
        prose = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", pieces[index])
        pieces[index] = re.sub(r"``([^`]+)``", r"`\1`", prose)
    return "".join(pieces)


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET.name}")
