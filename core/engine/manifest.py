"""The saved pipeline's manifest (``pipeline/manifest.json``): where it lies, its format, and
the checks of every value in it (types, input shape, pixel bounds) before anything is built or
allocated from it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imgclust import __version__
from imgclust.errors import DataError, SettingsError, one_line
from imgclust.io.bounded import read_json

FORMAT = "imgclust-pipeline"
FORMAT_VERSION = 1
PIPELINE_DIR = "pipeline"
MANIFEST = "manifest.json"
# Pixels per image a manifest may declare (Pillow's decompression-bomb limit); predict allocates
# about pixels x channels x 4 bytes per image, so a forged shape is refused before that.
MAX_INPUT_PIXELS = 1024 * 1024 * 1024 // 4 // 3
MAX_PIXELS_ENV = "IMGCLUST_MAX_INPUT_PIXELS"
MAX_CHANNELS = 4


def pipeline_dir(path: Path | str) -> Path:
    """The ``pipeline/`` folder of a run folder (or that folder itself)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"run folder {str(path)!r} does not exist.")
    if (path / MANIFEST).is_file():
        return path
    if (path / PIPELINE_DIR / MANIFEST).is_file():
        return path / PIPELINE_DIR
    if not path.is_dir():
        raise DataError(f"{str(path)!r} is not a run folder: give the folder `imgclust run` wrote.")
    raise DataError(
        f"{str(path)!r} holds no fitted pipeline ({PIPELINE_DIR}/{MANIFEST}): give a run folder "
        "written by a finished `imgclust run`."
    )


def read_manifest(path: Path | str) -> dict[str, Any]:
    """A run's pipeline manifest, checked for a format this version can read."""
    file = pipeline_dir(path) / MANIFEST
    try:
        manifest = read_json(file, repr(str(file)))
    except OSError as exc:
        raise DataError(f"cannot read {str(file)!r}: {one_line(exc)}.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{str(file)!r} is not an imgclust pipeline manifest.")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DataError(
            f"{str(file)!r} has an unknown pipeline format version {version!r}; this imgclust "
            f"({__version__}) reads format {FORMAT_VERSION}."
        )
    if version > FORMAT_VERSION:
        raise DataError(
            f"{str(file)!r} was written by a newer imgclust (pipeline format {version}; "
            f"{__version__} reads up to {FORMAT_VERSION}): upgrade imgclust to load it."
        )
    return manifest


def max_input_pixels() -> int:
    """The most pixels per image a manifest may declare: ``IMGCLUST_MAX_INPUT_PIXELS`` or
    :data:`MAX_INPUT_PIXELS`.
    """
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        return MAX_INPUT_PIXELS
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise SettingsError(
            f"{MAX_PIXELS_ENV} must be a positive whole number of pixels; got {value!r}."
        )
    return limit


def check_input_shape(value: Any, where: str) -> tuple[int, int, int]:
    """The manifest's [height, width, channels], bounded before anything is allocated for it."""
    fine = (
        isinstance(value, list)
        and len(value) == 3
        and all(type(v) is int and v >= 1 for v in value)
        and value[2] <= MAX_CHANNELS
    )
    if not fine:
        raise DataError(
            f"{where}: the input shape {_short(value)} is not [height, width, channels] of "
            f"positive whole numbers with 1 to {MAX_CHANNELS} channels: the manifest is damaged "
            "or was altered."
        )
    height, width, channels = value
    limit = max_input_pixels()
    if height * width > limit:
        raise DataError(
            f"{where}: the input shape {height}x{width}x{channels} has {height * width:,} pixels "
            f"per image, over the limit of {limit:,} ({MAX_PIXELS_ENV} raises it): the manifest "
            "may be damaged or altered."
        )
    return height, width, channels


def check_layout(
    manifest: Mapping[str, Any], file: Path
) -> tuple[list[dict[str, Any]], dict[str, Any], tuple[int, int, int]]:
    """The manifest's stages and input shape, every value of the type this version writes."""
    where = f"{PIPELINE_DIR}/{MANIFEST}"

    def expect(value: Any, kinds: tuple[type, ...], what: str) -> Any:
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise DataError(
                f"{where}: {what} is {_short(value)}, not {names}: the manifest is damaged or "
                "was altered."
            )
        return value

    text, optional_text = (str,), (str, type(None))
    encoders = expect(manifest.get("encoders"), (list,), "'encoders'")
    clusterer = expect(manifest.get("clusterer"), (dict,), "'clusterer'")
    stages = [(f"'encoders'[{i}]", e) for i, e in enumerate(encoders)]
    for what, info in [*stages, ("'clusterer'", clusterer)]:
        expect(info, (dict,), what)
        expect(info.get("name"), text, f"{what}.name")
        expect(info.get("settings", {}), (dict,), f"{what}.settings")
        for key in ("plugin", "plugin_version", "dir", "format", "reason", "note", "class"):
            expect(info.get(key), optional_text, f"{what}.{key}")
        for key in ("saved", "needs_trust", "can_predict"):
            expect(info.get(key, False), (bool,), f"{what}.{key}")
    expect(manifest.get("input"), (dict,), "'input'")
    shape = check_input_shape(manifest["input"].get("shape"), where)
    preprocessing = expect(manifest.get("preprocessing"), (dict,), "'preprocessing'")
    dataset = expect(preprocessing.get("dataset"), (dict, type(None)), "'preprocessing'.dataset")
    if dataset is not None:  # pipelines saved from Python name no dataset
        expect(dataset.get("name"), text, "'preprocessing'.dataset.name")
    for key in ("split", "fit_split"):
        expect(preprocessing.get(key), optional_text, f"'preprocessing'.{key}")
    expect(manifest.get("can_predict"), (bool,), "'can_predict'")
    expect(manifest.get("needs_trust", False), (bool,), "'needs_trust'")
    expect(manifest.get("reason"), optional_text, "'reason'")
    return list(encoders), dict(clusterer), shape


def check_refiners(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The manifest's refiners (none when absent), each a table shaped as the other stages'."""
    where = f"{PIPELINE_DIR}/{MANIFEST}"
    refiners = manifest.get("refiners", [])
    fine = isinstance(refiners, list) and all(
        isinstance(info, dict)
        and isinstance(info.get("name"), str)
        and isinstance(info.get("settings", {}), dict)
        and all(isinstance(info.get(k), (str, type(None))) for k in ("dir", "format", "reason"))
        and all(type(info.get(k, False)) is bool for k in ("saved", "needs_trust"))
        for info in refiners
    )
    if not fine:
        raise DataError(
            f"{where}: 'refiners' is {_short(refiners)}, not a list of stage tables: the "
            "manifest is damaged or was altered."
        )
    return [dict(info) for info in refiners]


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str)) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
