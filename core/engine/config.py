"""A run's configuration: a recipe, then a TOML file, then ``--set stage.key=value``.

The resolved configuration is a plain mapping shaped like ``config.toml``::

    seed = 0
    split = "test"            # the images that are clustered and reported
    fit_split = "train"       # the images the encoders learn from (default: split)
    validation_split = "test" # shown to encoders while they train (default: none)
    [dataset]
    name = "mnist"
    [[encoder]]
    name = "conv-ae"
    epochs = 3
    [clusterer]
    name = "kmeans"
    n_clusters = 10
    [[refiner]]               # optional: stages that refine the clusters, in order
    name = "self-label"
"""

from __future__ import annotations

import copy
import math
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from imgclust.errors import ImgclustError, SettingsError
from imgclust.io.bounded import read_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
from imgclust.engine.distributed import parse_address
from imgclust.kit.invariances import check_setting
from imgclust.stages.registry import Registry
from imgclust.stages.settings import check_seed, resolve_stage

DEFAULT_CHUNK_SIZE = 10_000
MAX_CHUNK_SIZE = 10_000_000
DEFAULT_RECIPE = "article"
TOP_LEVEL = (
    "seed", "split", "fit_split", "validation_split", "fit_sample", "chunk_size", "dask",
    "invariances", "recipe",
)  # fmt: skip
STAGES = ("dataset", "encoder", "clusterer")
CHAINS = ("encoder", "refiner")  # stages that may be listed: [[encoder]] and [[refiner]] tables
DEFAULT_SEED = 0


#: A config file larger than this is not one (a run's is a few KiB; an inline list of many
#: class names stays far below it).
CONFIG_BYTES = 1 << 20
#: The most dotted parts a key or table header may have: the TOML parser's time grows with the
#: square of their number (30,000 parts cost 20 s), and no setting is more than a few deep.
MAX_KEY_PARTS = 32
#: The tokens the parts check reads: a bare or quoted key part, a run of blanks, or one other
#: character (no nested repetition, so scanning is linear in the file's length).
KEY_TOKEN = re.compile(r"""[\w-]+|"[^"\n]*"|'[^'\n]*'|[ \t]+|.""", re.DOTALL)


def longest_dotted(text: str) -> int:
    """The most parts joined by dots anywhere in ``text``: of a key, a table header or a key in
    an inline table (a number such as 0.5 counts two; a string value's own dots are not seen)."""
    longest = parts = 0
    after_dot = False
    for match in KEY_TOKEN.finditer(text):
        token = match.group()
        if token[0] in " \t":
            continue
        if token == ".":
            after_dot = parts > 0 and not after_dot
            if not after_dot:
                parts = 0
        elif token[0] in "\"'" or token[0].isalnum() or token[0] in "_-":
            parts = parts + 1 if after_dot else 1
            after_dot = False
            longest = max(longest, parts)
        else:
            parts, after_dot = 0, False
    return longest


def read_toml(path: Path) -> dict[str, Any]:
    """Read a config file; a missing, malformed or oversized one is a one-line error. The file
    may be a stranger's: its size, its keys' depth and its nesting are bounded before and while
    it is parsed, so reading it never costs more than a moment."""
    path = Path(path)
    name = repr(str(path))
    if path.is_dir():
        raise ImgclustError(f"Config file {name} is a folder; give a .toml file.")
    try:
        text = read_text(path, f"Config file {name}", CONFIG_BYTES)
    except FileNotFoundError:
        raise ImgclustError(f"Config file {name} does not exist.") from None
    if longest_dotted(text) > MAX_KEY_PARTS:
        raise ImgclustError(
            f"Config file {name} has a key of more than {MAX_KEY_PARTS} dotted parts; no "
            "setting has so many: it is not an imgclust config."
        )
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ImgclustError(f"Config file {name} is not valid TOML: {exc}.") from None
    except RecursionError:
        raise ImgclustError(
            f"Config file {name} nests its values too deep: it is not an imgclust config."
        ) from None


def normalise(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Check a config's shape and make ``encoder`` a list of stage tables."""
    result = copy.deepcopy(dict(config))
    accepted = TOP_LEVEL + STAGES + ("refiner", "encoders", "refiners", "description")
    unknown = [k for k in result if k not in accepted]
    if unknown:
        raise SettingsError(
            f"{source}: unknown key(s) {', '.join(unknown)}. "
            f"Accepted: {', '.join(TOP_LEVEL + STAGES + ('refiner',))}."
        )
    for chain in CHAINS:
        if f"{chain}s" in result:
            result[chain] = result.pop(f"{chain}s")
        stages = result.get(chain)
        if isinstance(stages, (str, Mapping)):
            stages = [stages]
        if stages is not None and not isinstance(stages, (list, tuple)):
            raise SettingsError(f"{source}: {chain} must be a name, a table or a list of them.")
        if stages is not None:
            result[chain] = [_stage(e, source, chain) for e in stages]
    for stage in ("dataset", "clusterer"):
        if stage in result:
            result[stage] = _stage(result[stage], source, stage)
    return result


def _stage(value: Any, source: str, stage: str) -> dict[str, Any]:
    if isinstance(value, str):
        return {"name": value}
    if not isinstance(value, Mapping) or "name" not in value:
        raise SettingsError(f"{source}: each {stage} needs a table with a 'name'.")
    if not isinstance(value["name"], str):
        raise SettingsError(f"{source}: a {stage}'s name must be text, not {value['name']!r:.40}.")
    return dict(value)


class SplitsDroppedWarning(UserWarning):
    """A recipe's or config's splits were left out because the run reads another dataset."""


class ConfigDaskIgnoredWarning(UserWarning):
    """A config file named a Dask scheduler that the user did not confirm on the command line."""


def _sets_dask(assignments: Iterable[str | tuple[str, Any]]) -> bool:
    """Whether ``--set``/API assignments choose ``dask`` themselves (the user's own choice)."""
    for assignment in assignments:
        target = assignment[0] if isinstance(assignment, tuple) else assignment.partition("=")[0]
        if str(target).strip() == "dask":
            return True
    return False


def drop_file_dask(
    config: dict[str, Any], source: str, trusted: bool, chosen: bool, how: str | None = None
) -> None:
    """A config file is data: its ``dask`` address is joined only when the user trusts the file
    (``--trust``) or chose ``--dask`` on the command line; otherwise it is dropped with one line.

    A scheduler sends back what Dask unpickles, so a stranger's ``config.toml`` naming one would
    run the stranger's code here.
    """
    value = config.get("dask")
    if trusted or chosen or value in (None, "", "none"):
        return
    del config["dask"]
    import warnings

    how = how or f"pass --dask {str(value)!r:.80} (or --trust for a config file you trust)"
    warnings.warn(
        f"{source} names the Dask scheduler {str(value)!r:.80}, which was ignored: the run goes on "
        f"in this process; to use it, {how}.",
        ConfigDaskIgnoredWarning,
        stacklevel=3,
    )


SPLIT_KEYS = ("split", "fit_split", "validation_split")


def merge(
    base: dict[str, Any], override: Mapping[str, Any], dropped: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Overlay one config on another; a stage whose name changes drops the old settings.

    A new dataset also drops the old one's splits (it may not have them); they are recorded in
    ``dropped`` (with the old dataset's name under ``"from"``) for :func:`carry_splits`.
    """
    result = copy.deepcopy(base)
    for key, value in override.items():
        if key in ("dataset", "clusterer"):
            old = result.get(key)
            if old and old.get("name") == value.get("name"):
                result[key] = {**old, **value}
            else:
                result[key] = dict(value)
        elif key in CHAINS:
            result[key] = _merge_encoders(result.get(key) or [], value)
        else:
            result[key] = value
    if "dataset" in override and base.get("dataset", {}).get("name") != override["dataset"].get(
        "name"
    ):
        for key in SPLIT_KEYS:
            if key not in override and key in result:
                value = result.pop(key)
                if dropped is not None and value not in (None, "", "none"):
                    dropped[key] = value
                    dropped.setdefault("from", base.get("dataset", {}).get("name"))
    return result


def carry_splits(registry: Registry, config: dict[str, Any], dropped: dict[str, Any]) -> None:
    """Put back the splits another dataset's recipe or config named, when this run's dataset
    declares every one of them; otherwise leave them out and say so in one warning line.

    Splits the command line set afterwards are the user's and stay as they are.
    """
    pending = {k: v for k, v in dropped.items() if k in SPLIT_KEYS and k not in config}
    if not pending or not config.get("dataset"):
        return
    name = config["dataset"].get("name")
    try:
        target = registry.get("datasets", name).target
    except ImgclustError:
        return  # an unknown dataset is reported by validate, with its nearest names
    declared = getattr(target, "splits", None)  # a class's, or a factory function's attribute
    offered = [str(v) for v in declared] if isinstance(declared, (list, tuple)) else None
    if offered is not None and all(str(v) in offered for v in pending.values()):
        config.update(pending)
        return
    import warnings

    given = ", ".join(f"{k}={v}" for k, v in pending.items())
    has = f"has only {', '.join(offered)}" if offered else "does not declare its splits"
    warnings.warn(
        f"dropped {given} (set for dataset {dropped.get('from')!r}): dataset {name!r} {has}, "
        "so the run leaves them at their defaults; set them with --split or --set KEY=SPLIT.",
        SplitsDroppedWarning,
        stacklevel=3,
    )


def _merge_encoders(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names_match = [o.get("name") for o in old] == [n.get("name") for n in new]
    if names_match:
        return [{**o, **n} for o, n in zip(old, new, strict=True)]
    return [dict(n) for n in new]


def apply_sets(
    config: dict[str, Any], assignments: Iterable[str | tuple[str, Any]]
) -> dict[str, Any]:
    """Apply ``stage.key=value`` assignments (values stay strings; stages convert them).

    An assignment may also be a ``("stage.key", value)`` pair with a real Python value (the
    Python API's settings): it lands in the same place and is checked by the same code.
    """
    result = copy.deepcopy(config)
    for assignment in assignments:
        if isinstance(assignment, tuple):
            target, value = assignment
            sep, label = "=", f"setting {target!r}"
        else:
            target, sep, value = assignment.partition("=")
            label = f"--set {assignment!r}"
        if not sep or not target.strip():
            raise SettingsError(
                f"{label}: write it as stage.key=value, e.g. clusterer.n_clusters=10."
            )
        parts = target.strip().split(".")
        if len(parts) == 1:
            if parts[0] not in TOP_LEVEL:
                raise SettingsError(
                    f"{label}: {parts[0]!r} is not a run setting; use "
                    "dataset.KEY, encoder.KEY, clusterer.KEY or one of "
                    f"{', '.join(TOP_LEVEL[:-1])}."
                )
            result[parts[0]] = value
            continue
        stage, key = parts[0], parts[-1]
        if stage in ("dataset", "clusterer") and len(parts) == 2:
            if stage not in result:
                raise SettingsError(f"{label}: this run has no {stage}.")
            result[stage][key] = value
        elif stage in ("encoder", "encoders", "refiner", "refiners"):
            chain = stage.removesuffix("s")
            stages = result.get(chain) or []
            if chain == "refiner" and _adds_refiner(stages, parts[1:-1]):
                stages = result[chain] = [*stages, {"name": parts[1]}]  # refine with NAME too
            index = _encoder_index(stages, parts[1:-1], label, chain)
            stages[index][key] = value
        else:
            raise SettingsError(
                f"{label}: the stage must be dataset, encoder, encoder.NAME, "
                "encoder.INDEX, clusterer or refiner (refiner.NAME, refiner.INDEX)."
            )
    return result


def _adds_refiner(refiners: list[dict[str, Any]], selector: list[str]) -> bool:
    """Whether ``refiner.NAME.KEY`` names a refiner the run does not have yet (it is added
    after the others, so that a run's config can take one from the command line)."""
    if len(selector) != 1 or selector[0].isdigit():
        return False
    which = selector[0]
    return not any(which in (r.get("name"), _bare(r.get("name"))) for r in refiners)


def _encoder_index(
    encoders: list[dict[str, Any]], selector: list[str], label: str, chain: str = "encoder"
) -> int:
    if not encoders:
        raise SettingsError(f"{label}: this run has no {chain}.")
    if not selector:
        if len(encoders) > 1:
            raise SettingsError(
                f"{label}: this run chains {len(encoders)} {chain}s; say which, "
                f"e.g. {chain}.{encoders[-1]['name']}.KEY or {chain}.1.KEY."
            )
        return 0
    which = selector[0]
    if which.isdigit() and int(which) < len(encoders):
        return int(which)
    matches = [  # a qualified stage (PLUGIN:NAME) answers to its bare name too
        i for i, e in enumerate(encoders) if which in (e.get("name"), _bare(e.get("name")))
    ]
    if len(matches) != 1:
        names = ", ".join(e["name"] for e in encoders)
        raise SettingsError(f"{label}: no single {chain} {which!r} in this run ({names}).")
    return matches[0]


def _bare(name: Any) -> Any:
    """``NAME`` of a ``PLUGIN:NAME`` stage name; any other value unchanged."""
    return name.rpartition(":")[2] if isinstance(name, str) else name


def resolve_config(
    registry: Registry,
    *,
    recipe: str | None = None,
    config_file: Path | None = None,
    dataset: str | None = None,
    encoders: list[str] | None = None,
    clusterer: str | None = None,
    refiners: list[str] | None = None,
    sets: Iterable[str | tuple[str, Any]] = (),
    seed: int | None = None,
    split: str | None = None,
    trust_config: bool = False,
) -> dict[str, Any]:
    """Resolve recipe, then config file, then command line into a full, validated config.

    ``sets`` are ``--set`` strings or ``("stage.key", value)`` pairs (see :func:`apply_sets`).
    The config file's ``dask`` address is used only with ``trust_config`` (see
    :func:`drop_file_dask`); a ``dask`` in ``sets`` is the user's and replaces it.
    """
    sets = list(sets)
    config: dict[str, Any] = {}
    use_default = (
        recipe is None and config_file is None and not (dataset and encoders and clusterer)
    )
    recipe_name = recipe or (DEFAULT_RECIPE if use_default else None)
    if recipe_name:
        entry = registry.get("recipes", recipe_name)
        recipe_config = normalise(entry.recipe, f"recipe {recipe_name!r}")
        config = merge(config, own_stages(registry, recipe_config, entry.plugin))
        config["recipe"] = recipe_name
    dropped: dict[str, Any] = {}  # splits of a recipe's or config's dataset, for another one
    if config_file is not None:
        from_file = normalise(read_toml(config_file), str(config_file))
        drop_file_dask(from_file, str(config_file), trust_config is True, _sets_dask(sets))
        config = merge(config, from_file, dropped)
    command_line: dict[str, Any] = {}
    if dataset:
        command_line["dataset"] = {"name": dataset}
    if encoders:
        command_line["encoder"] = [{"name": e} for e in encoders]
    if clusterer:
        command_line["clusterer"] = {"name": clusterer}
    if refiners:
        command_line["refiner"] = [{"name": r} for r in refiners]
    config = merge(config, command_line, dropped)
    config = apply_sets(config, sets)
    if seed is not None:
        config["seed"] = seed
    if split is not None:
        config["split"] = split
    carry_splits(registry, config, dropped)
    return validate(registry, config)


def own_stages(registry: Registry, config: dict[str, Any], plugin: str) -> dict[str, Any]:
    """A recipe's config with each stage name two plugins register qualified as its own
    plugin's (``PLUGIN:NAME``), so that a collision elsewhere leaves the recipe working."""
    for key, kind in (("dataset", "datasets"), ("clusterer", "clusterers")):
        if isinstance(config.get(key), dict) and "name" in config[key]:
            config[key]["name"] = registry.prefer(kind, config[key]["name"], plugin)
    for key, kind in (("encoder", "encoders"), ("refiner", "refiners")):
        for stage in config.get(key) or []:
            if isinstance(stage, dict) and "name" in stage:
                stage["name"] = registry.prefer(kind, stage["name"], plugin)
    return config


def validate(registry: Registry, config: Mapping[str, Any]) -> dict[str, Any]:
    """Check every stage against its factory; fill defaults so the config repeats the run."""
    config = normalise(config, "configuration")
    for stage in STAGES:
        if not config.get(stage):
            raise SettingsError(
                f"The run has no {stage}: pass --{stage} NAME, a --recipe or a --config file."
            )
    seed = check_seed(config.get("seed", DEFAULT_SEED))
    resolved: dict[str, Any] = {"seed": seed}
    for key in ("recipe", "split", "fit_split", "validation_split"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise SettingsError(f"{key} must be text, not {config[key]!r:.40}.")
    if config.get("recipe"):
        resolved["recipe"] = config["recipe"]
    for key in ("split", "fit_split", "validation_split"):
        if config.get(key) not in (None, "", "none"):
            resolved[key] = str(config[key])
    resolved.setdefault("split", "all")
    resolved.update(scale_settings(config))  # fit_sample, chunk_size, dask

    resolved["invariances"] = check_setting(config.get("invariances", "auto"))
    resolved["dataset"] = resolve_stage(registry, "datasets", config["dataset"], seed)
    resolved["encoder"] = [resolve_stage(registry, "encoders", e, seed) for e in config["encoder"]]
    resolved["clusterer"] = resolve_stage(registry, "clusterers", config["clusterer"], seed)
    if config.get("refiner"):
        resolved["refiner"] = [
            resolve_stage(registry, "refiners", r, seed) for r in config["refiner"]
        ]
    to_toml(resolved)  # a value config.toml cannot hold is refused now, not after the work
    return resolved


# Scale settings ---------------------------------------------------------------------------
def scale_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The checked ``fit_sample``, ``chunk_size`` and ``dask`` of a config (absent: left out)."""
    resolved: dict[str, Any] = {}
    for key in ("fit_sample", "chunk_size"):
        value = config.get(key)
        if value in (None, "", "none"):
            continue
        resolved[key] = _positive_int(key, value)
    dask = config.get("dask")
    if dask not in (None, "", "none"):
        resolved["dask"] = parse_address(dask)
    return resolved


def _positive_int(key: str, value: Any) -> int:
    text = str(value).strip().replace("_", "")
    if isinstance(value, bool) or not re.fullmatch(r"\d+", text):
        raise SettingsError(f"{key} must be a whole number of images, not {str(value)!r:.40}.")
    number = int(text)
    if not 1 <= number <= MAX_CHUNK_SIZE * 100:
        raise SettingsError(f"{key} must be at least 1 (got {number}).")
    if key == "chunk_size" and number > MAX_CHUNK_SIZE:
        raise SettingsError(f"chunk_size must be at most {MAX_CHUNK_SIZE:,} images.")
    return number


# Writing -----------------------------------------------------------------------------------
def to_toml(config: Mapping[str, Any]) -> str:
    """Write a resolved config as TOML (None is written as the string "none")."""
    lines = []
    for key in TOP_LEVEL:
        if key in config:
            lines.append(f"{key} = {_toml_value(config[key])}")
    lines += ["", "[dataset]", *_toml_table(config["dataset"])]
    for encoder in config["encoder"]:
        lines += ["", "[[encoder]]", *_toml_table(encoder)]
    lines += ["", "[clusterer]", *_toml_table(config["clusterer"])]
    for refiner in config.get("refiner") or []:
        lines += ["", "[[refiner]]", *_toml_table(refiner)]
    return "\n".join(lines) + "\n"


def _toml_table(table: Mapping[str, Any]) -> list[str]:
    return [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SHORT_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
_SHORT_ESCAPES.update({'"': '\\"', "\\": "\\\\"})


def _toml_key(key: str) -> str:
    """A bare key when TOML allows one, else a quoted, escaped key."""
    key = str(key)
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    """A TOML basic string that reads back as ``text``: quotes, backslashes and every control
    character escaped. Text that is not valid Unicode (a path's undecodable bytes) is refused."""
    out = []
    for char in text:
        code = ord(char)
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            raise SettingsError(
                f"{text!r} is not valid Unicode (a file name with bytes of another encoding?) "
                "and cannot be written to config.toml: rename it with UTF-8 characters."
            )
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(float(value)) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Path):
        return _toml_value(str(value))
    raise SettingsError(f"cannot write {value!r} to a config file")
