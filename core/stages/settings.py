"""A stage's settings, read from its factory's signature, listed, validated and converted.

A factory's keyword parameters are its settings: names, defaults and annotations come from the
signature, descriptions from a numpydoc ``Parameters`` section of its docstring.
"""

from __future__ import annotations

import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from imgclust.errors import SettingsError
from imgclust.stages.kinds import stage_kind
from imgclust.stages.registry import Registry

NO_DEFAULT = inspect.Parameter.empty
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}
SEED_LIMIT = 2**32  # seeds NumPy and scikit-learn accept: 0 <= seed < 2**32


@dataclass
class Setting:
    """One setting of a stage: its name, type, default and description."""

    name: str
    annotation: Any
    default: Any
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is NO_DEFAULT

    @property
    def type_name(self) -> str:
        return describe_type(self.annotation)


def settings_of(factory: Callable[..., Any]) -> dict[str, Setting]:
    """The settings of a factory (a class or function), in signature order."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    signature = inspect.signature(factory)
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    descriptions = parameter_descriptions(inspect.getdoc(factory) or "")
    result: dict[str, Setting] = {}
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        annotation = hints.get(parameter.name, parameter.annotation)
        if annotation is NO_DEFAULT:
            annotation = (
                type(parameter.default) if parameter.default not in (NO_DEFAULT, None) else Any
            )
        result[parameter.name] = Setting(
            parameter.name, annotation, parameter.default, descriptions.get(parameter.name, "")
        )
    return result


def parameter_descriptions(doc: str) -> dict[str, str]:
    """The whole description of each parameter in a numpydoc ``Parameters`` section, its lines
    joined with single spaces (``imgclust list`` wraps it again to the terminal's width)."""
    match = re.search(
        r"^Parameters\s*\n-+\s*\n(.*?)(?:\n\s*\n[A-Z][a-z]+\s*\n-+|\Z)", doc, re.S | re.M
    )
    if not match:
        return {}
    found: dict[str, str] = {}
    current = None
    for line in match.group(1).splitlines():
        head = re.match(r"^(\w+)\s*(?::.*)?$", line)
        if head and not line.startswith(" "):
            current = head.group(1)
            found[current] = ""
        elif current and line.strip():
            found[current] = f"{found[current]} {line.strip()}".strip()
    return found


def describe_type(annotation: Any) -> str:
    """A short readable name for an annotation: 'int', 'float | None', 'tuple[int, ...]'."""
    if annotation is Any or annotation is NO_DEFAULT:
        return "any"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    text = str(annotation).replace("typing.", "")
    return re.sub(r"<class '(\w+)'>", r"\1", text)


def resolve(
    what: str,
    factory: Callable[..., Any],
    values: Mapping[str, Any],
    set_prefix: str | None = None,
) -> dict[str, Any]:
    """Check ``values`` against the factory's settings and convert strings; return them typed.

    Unknown names, missing required settings and badly typed values raise one clear line.
    ``set_prefix`` is how ``--set`` names the stage (``dataset``, ``encoder.pca``); by default
    the first word of ``what``. A setting named ``seed`` must be a valid seed.
    """
    known = settings_of(factory)
    result: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            accepted = ", ".join(known) or "none"
            raise SettingsError(f"Unknown setting {key!r} for {what}. Accepted: {accepted}.")
        try:
            result[key] = convert(value, known[key].annotation)
        except (TypeError, ValueError) as exc:
            raise SettingsError(
                f"Setting {what}.{key} = {value!r} is not a valid {known[key].type_name}: {exc}"
            ) from None
        if key == "seed" and result[key] is not None:
            result[key] = check_seed(result[key], f"{what} seed")
    missing = [s.name for s in known.values() if s.required and s.name not in result]
    if missing:
        prefix = set_prefix or what.split(" ", 1)[0]
        raise SettingsError(
            f"{what} needs the setting(s) {', '.join(missing)}: "
            f"pass --set {prefix}.{missing[0]}=VALUE."
        )
    return result


def check_seed(value: Any, what: str = "seed") -> int:
    """A seed as an int in 0 <= seed < 2**32 (what NumPy and scikit-learn accept), or one line."""
    seed = None
    if isinstance(value, int) and not isinstance(value, bool):
        seed = value
    elif isinstance(value, float) and value.is_integer():
        seed = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        seed = int(value)
    if seed is None or not 0 <= seed < SEED_LIMIT:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise SettingsError(
            f"{what} must be a whole number from 0 to {SEED_LIMIT - 1}, not {shown}."
        )
    return seed


def check_limit(limit: Any, what: str) -> int | None:
    """A dataset's ``limit`` (keep the first N images): None, or a whole number of at least 1."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise SettingsError(
            f"{what}: limit must be a whole number of at least 1 (or none for all); got {limit!r}."
        )
    return limit


def convert(value: Any, annotation: Any) -> Any:
    """Convert a CLI string or TOML value to ``annotation``; raise ValueError when it cannot."""
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        value = value.item()  # a NumPy scalar from Python code is checked as the plain value
    if annotation is Any or annotation is NO_DEFAULT:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        ordered = sorted((a for a in args if a is not type(None)), key=_union_order)
        if int in ordered and float in ordered and isinstance(value, float):
            ordered.remove(int)  # "a count or a fraction": 1.0 stays a fraction, 30 a count
        for option in ordered:
            try:
                return convert(value, option)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors) or "not None")
    if origin is Literal:
        for option in args:
            if value == option or (isinstance(value, str) and str(option) == value):
                return option
        raise ValueError(f"choose one of {', '.join(repr(a) for a in args)}")
    if origin in (tuple, list) or annotation in (tuple, list):
        items = _split_sequence(value)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(items) != len(args):
                raise ValueError(f"expected {len(args)} values")
            converted = [convert(v, a) for v, a in zip(items, args, strict=True)]
        else:
            inner = args[0] if args else Any
            converted = [convert(v, inner) for v in items]
        return tuple(converted) if (origin or annotation) is tuple else list(converted)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ValueError("expected true or false")
    if annotation is int:
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
        raise ValueError("expected an integer")
    if annotation is float:
        if isinstance(value, bool):
            raise ValueError("expected a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
        raise ValueError("expected a number")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ValueError("expected text")
    if isinstance(annotation, type) and isinstance(value, annotation):
        return value
    if isinstance(annotation, type) and isinstance(value, str):
        return annotation(value)
    return value


def _union_order(option: Any) -> int:
    """Try strict types before lenient ones, so '3' becomes 3 and not '3'."""
    order = {bool: 0, int: 1, float: 2}
    if typing.get_origin(option) is Literal:
        return -1
    return order.get(option, 5 if option is str else 3)


def _split_sequence(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip().strip("()[]")
        separator = "x" if re.fullmatch(r"\d+(x\d+)+", text) else ","
        return [part.strip() for part in text.split(separator) if part.strip()]
    raise ValueError("expected a list of values")


def resolve_stage(
    registry: Registry, kind: str, stage: Mapping[str, Any], seed: int
) -> dict[str, Any]:
    """A stage's settings checked against its factory's signature, defaults filled in (and the
    run's seed where the stage takes one): what a run folder's config records."""
    name = stage["name"]
    entry = registry.get(kind, name)
    given = {k: v for k, v in stage.items() if k != "name"}
    what = f"{kind[:-1]} {name!r}"
    of_kind = stage_kind(kind)
    prefix = f"{of_kind.name}.{name}" if of_kind.chain else of_kind.name
    values = resolve(what, entry.factory, given, set_prefix=prefix)
    settings = settings_of(entry.factory)
    if "seed" in settings and "seed" not in values:
        values["seed"] = seed
    full = {
        key: values.get(key, setting.default)
        for key, setting in settings.items()
        if key in values or _writable(setting.default)
    }
    return {"name": name, **full}


def _writable(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (tuple, list)):
        return all(_writable(v) and v is not None for v in value)
    return False


def stage_settings(stage: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved stage's settings without its name."""
    return {k: v for k, v in stage.items() if k != "name"}
