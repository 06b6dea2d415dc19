"""A run's fitted pipeline on disk (``RUN/pipeline/``), and loading it back to assign new images.

``pipeline/manifest.json`` says what was fitted (stages, settings, plugins, input shape and
preprocessing); each stage saves itself into its own folder (``encoder-0-<name>/``,
``clusterer-<name>/``, ``refiner-0-<name>/``) through its ``save(dir)`` and is rebuilt by its
factory and ``load(dir)``.
Loading never runs code from the folder: pickled state and Keras Lambda layers are refused
unless the caller passes ``trust=True``; every file read lies inside ``pipeline/``, and the
manifest's types and input shape are checked before anything is built or allocated.
"""

from __future__ import annotations

import bz2
import inspect
import json
import lzma
import os
import pickle
import pickletools
import re
import shutil
import stat
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclust import __version__
from imgclust.engine.stage import Stage
from imgclust.errors import DataError, ImgclustError, PluginError, SettingsError, one_line
from imgclust.io import atomic
from imgclust.io.bounded import read_member
from imgclust.io.runfolder import check_self_contained
from imgclust.kit.sklearn import cannot_predict_message
from imgclust.results.metrics import n_clusters
from imgclust.stages.host import get_host, get_registry
from imgclust.stages.interfaces import ImageSet, can_predict, is_stateless
from imgclust.stages.settings import resolve

if TYPE_CHECKING:
    from imgclust.engine.pipeline import Pipeline

FORMAT = "imgclust-pipeline"
FORMAT_VERSION = 1
PIPELINE_DIR = "pipeline"
MANIFEST = "manifest.json"
# imgclust's mark on a folder it saved a pipeline into: only such a folder is ever replaced.
MARK = ".imgclust-pipeline"
MARK_TEXT = "imgclust pipeline: imgclust replaces this folder only while it holds nothing else.\n"
MARK_MAX_BYTES = 4096
STATE_PICKLE = "stage-state.pkl"
LIBRARIES = ("numpy", "scikit-learn", "keras", "tensorflow", "umap-learn", "hdbscan")
_SAFE_DIR = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pkz")
TRUST_HINT = "pass --trust (trust=True) only if you trust where this run folder came from"
# Pixels per image a manifest may declare (Pillow's decompression-bomb limit); predict allocates
# about pixels x channels x 4 bytes per image, so a forged shape is refused before that.
MAX_INPUT_PIXELS = 1024 * 1024 * 1024 // 4 // 3
MAX_PIXELS_ENV = "IMGCLUST_MAX_INPUT_PIXELS"
MAX_CHANNELS = 4
KERAS_CONFIG_BYTES = 8 * 2**20  # a .keras config.json inflated past this is refused
# Pickle opcodes that import or call something: a stream that reaches one can run code.
_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}


# Saving ------------------------------------------------------------------------------------
def save_pipeline(
    pipeline: Pipeline,
    directory: Path | str,
    config: Mapping[str, Any] | None = None,
    data: ImageSet | None = None,
    *,
    registry: Any = None,
    subfolder: str | None = PIPELINE_DIR,
) -> dict[str, Any]:
    """Write a fitted pipeline's folder: the manifest and every fitted stage; return the manifest.

    The folder is ``directory/pipeline/`` (a run's), or ``directory`` itself when ``subfolder``
    is None (``Pipeline.save``). ``config`` and ``data`` describe the run when there is one; the
    input shape and dtype otherwise come from what the pipeline was fitted on.
    A stage that cannot be saved does not fail the run: the manifest records why the pipeline
    cannot predict. The folder is built under a temporary name and renamed when whole.
    """
    if registry is None:
        registry = get_registry()
    directory = Path(directory)
    target = directory / subfolder if subfolder else directory
    shape, dtype = _input_of(pipeline, data)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        # mkdtemp makes folders private; give it the usual mode
        os.chmod(work, 0o777 & ~atomic.current_umask())
        encoders = [
            _save_stage(registry, "encoders", stage, work, f"encoder-{i}-{stage.name}")
            for i, stage in enumerate(pipeline.encoders)
        ]
        clusterer = _save_stage(
            registry, "clusterers", pipeline.clusterer, work, f"clusterer-{pipeline.clusterer.name}"
        )
        refiners = [
            _save_stage(registry, "refiners", stage, work, f"refiner-{i}-{stage.name}")
            for i, stage in enumerate(pipeline.refiners)
        ]
        for info, order in zip(refiners, pipeline.refiner_orders, strict=True):
            info["cluster_order"] = None if order is None else [int(v) for v in order]
        if refiners:  # the last refiner assigns new images; the clusterer is not needed
            reasons = [s["reason"] for s in [*encoders, *refiners] if not s["saved"]]
            if not refiners[-1]["can_predict"]:
                reasons.append(
                    f"refiner {pipeline.refiners[-1].name!r} cannot assign images it was not "
                    "fitted on"
                )
        else:
            reasons = [s["reason"] for s in [*encoders, clusterer] if not s["saved"]]
            if clusterer["saved"] and not clusterer["can_predict"]:
                reasons.append(clusterer["reason"])
        order = pipeline.cluster_order
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "imgclust_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "python": sys.version.split()[0],
            "libraries": _library_versions(),
            "plugins": _plugin_versions(),
            "input": {"shape": list(shape), "dtype": dtype},
            "preprocessing": _preprocessing(config, shape, dtype),
            "seed": None if config is None else config.get("seed"),
            "encoders": encoders,
            "clusterer": clusterer,
            "n_clusters": None if pipeline.labels_ is None else n_clusters(pipeline.labels_),
            "cluster_order": None if order is None else [int(v) for v in order],
            "can_predict": not reasons,
            "reason": "; ".join(reasons) or None,
            "needs_trust": any(s["needs_trust"] for s in [*encoders, clusterer, *refiners]),
        }
        if refiners:
            manifest["refiners"] = refiners
        if manifest["n_clusters"] is None and pipeline.manifest is not None:
            manifest["n_clusters"] = pipeline.manifest.get("n_clusters")
        atomic.write_json(work / MANIFEST, manifest)
        atomic.write_text(work / MARK, MARK_TEXT)
        if os.path.lexists(target):  # a resumed run rewrites what an earlier attempt left
            if target.is_symlink() or not target.is_dir():
                raise ImgclustError(
                    f"{str(target)!r} is a link or a file, not the pipeline folder imgclust "
                    "writes: move it away and try again."
                )
            shutil.rmtree(target)
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _warn_unsaved([*encoders, clusterer, *refiners], clusterer)
    return manifest


class StageNotSavedWarning(UserWarning):
    """A stage has no file format of its own: the pipeline cannot predict, or only with trust."""


def _warn_unsaved(stages: list[dict[str, Any]], clusterer: dict[str, Any]) -> None:
    """Say now, not when predict is tried, that a stage without a file format of its own limits
    what the saved pipeline can do (a clusterer that simply cannot predict is not warned about)."""
    import warnings

    for info in stages:
        if info is clusterer and not info.get("can_predict", True):
            continue
        if not info["saved"]:
            message = (
                f"the saved pipeline cannot predict: {info['reason']} (give the stage save/load, "
                "or declare it stateless = True; see docs/plugins.md)"
            )
        elif info["format"] == "pickle":
            message = (
                f"{info['name']!r} has no file format of its own, so its state was pickled: "
                "predicting with this pipeline needs --trust (trust=True); give the stage "
                "save/load, or declare it stateless = True (docs/plugins.md)"
            )
        else:
            continue
        warnings.warn(message, StageNotSavedWarning, stacklevel=3)


def is_marked(folder: Path) -> bool:
    """Whether ``folder`` carries imgclust's pipeline mark (a small plain file, not a link)."""
    mark = Path(folder) / MARK
    try:
        info = mark.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > MARK_MAX_BYTES:
            return False
        return mark.read_text(encoding="utf-8") == MARK_TEXT
    except (OSError, UnicodeDecodeError):
        return False


def foreign_entry(folder: Path) -> str | None:
    """The first entry of a marked pipeline folder that its manifest does not account for, or
    None when it holds nothing but the pipeline imgclust wrote (manifest, mark, stage folders)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        stages = [*manifest["encoders"], manifest["clusterer"], *manifest.get("refiners", [])]
        own = {MANIFEST, MARK} | {str(s["dir"]) for s in stages if s.get("dir") and s["saved"]}
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return MANIFEST
    for entry in entries:
        plain_file = entry.is_file(follow_symlinks=False) and entry.name in (MANIFEST, MARK)
        stage_folder = entry.is_dir(follow_symlinks=False) and entry.name in own - {MANIFEST, MARK}
        if not (plain_file or stage_folder):
            return entry.name
    return None


def _input_of(pipeline: Pipeline, data: ImageSet | None) -> tuple[list[int], str]:
    """(H, W, C) and dtype of the images the pipeline was fitted on."""
    if data is not None:
        return [int(v) for v in data.shape], str(data.images.dtype)
    if pipeline.input_shape is None or len(pipeline.input_shape) != 3:
        raise ImgclustError("this pipeline has not been fitted on images: call fit(images) first.")
    return [int(v) for v in pipeline.input_shape], str(pipeline.input_dtype or "float32")


def _save_stage(registry: Any, kind: str, stage: Stage, root: Path, folder: str) -> dict[str, Any]:
    """Save one stage into ``root/folder``; describe it (and any failure) for the manifest."""
    instance = stage.instance
    cls = type(instance)
    info: dict[str, Any] = {
        "name": stage.name,
        "settings": _jsonable_settings(stage.settings),
        "plugin": None,
        "plugin_version": None,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "dir": folder,
        "format": None,
        "saved": False,
        "needs_trust": False,
        "reason": None,
    }
    entry = registry.find(kind, stage.name)
    if entry is not None:
        info["plugin"] = entry.plugin
        info["plugin_version"] = _plugin_version(entry.plugin)
    what = f"{kind[:-1]} {stage.name!r}"
    if kind in ("clusterers", "refiners"):
        info["can_predict"] = can_predict(instance)
    if kind == "clusterers" and not info["can_predict"]:
        info["reason"] = cannot_predict_message(stage.name)
        return info
    if is_stateless(instance):
        info.update(dir=None, format="stateless", saved=True)
        return info
    path = root / folder
    errors = []
    try:
        path.mkdir(parents=True)
        instance.save(path)
        info.update(format="native", saved=True, needs_trust=_needs_trust(path))
        return info
    except Exception as exc:  # the run must not fail because one stage cannot be kept
        errors.append(one_line(exc))
        shutil.rmtree(path, ignore_errors=True)
    state, problem = _picklable_state(registry, kind, stage)
    if state is not None:
        path.mkdir(parents=True)
        atomic.write_bytes(path / STATE_PICKLE, state)
        info.update(format="pickle", saved=True, needs_trust=True)
        info["note"] = (
            f"{what} has no file format of its own ({errors[0]}); its state is a pickle{problem}"
        )
        return info
    info["reason"] = f"{what} could not be saved: {errors[0]}; {problem}"
    return info


def _picklable_state(registry: Any, kind: str, stage: Stage) -> tuple[bytes | None, str]:
    """The stage's attributes as a pickle, leaving out only those its factory rebuilds anyway.

    Returns the pickle and what was left out, or None and why it cannot be pickled. A fitted
    attribute (named ``..._``, or one the factory leaves None) is never left out.
    """
    state = dict(getattr(stage.instance, "__dict__", {}))
    if not state:
        return None, "it has no state to pickle"
    try:
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), ""
    except Exception:
        pass
    try:
        fresh = vars(registry.get(kind, stage.name).target(**stage.settings))
    except Exception as exc:
        return None, f"it cannot be pickled ({one_line(exc)})"
    kept, left_out = {}, []
    for key, value in state.items():
        try:
            pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            kept[key] = value
        except Exception as exc:
            rebuilt = (
                key in fresh and not key.endswith("_") and (fresh[key] is None) == (value is None)
            )
            if not rebuilt:
                return None, f"its fitted attribute {key!r} cannot be pickled ({one_line(exc)})"
            left_out.append(key)
    note = f" (rebuilt by its factory, not pickled: {', '.join(left_out)})" if left_out else ""
    return pickle.dumps(kept, protocol=pickle.HIGHEST_PROTOCOL), note


def _preprocessing(
    config: Mapping[str, Any] | None, shape: list[int], dtype: str
) -> dict[str, Any]:
    """How training images were read and scaled, so that predict can do the same."""
    height, width, channels = shape
    found: dict[str, Any] = {}
    if config is not None:
        found = {
            "dataset": _jsonable_settings(dict(config["dataset"])),
            "split": config.get("split"),
            "fit_split": config.get("fit_split", config.get("split")),
        }
    return {
        **found,
        "size": [height, width],
        "channels": channels,
        "mode": {1: "grayscale", 3: "rgb"}.get(channels),
        "scaling": "uint8 0..255, divided by 255 to [0, 1] by the encoders"
        if dtype == "uint8"
        else "float32 in [0, 1], as loaded",
    }


def _jsonable_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(settings), default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return repr(value)


def _plugin_versions() -> dict[str, dict[str, Any]]:
    return {
        name: {"distribution": info.distribution, "version": info.version, "bundled": info.bundled}
        for name, info in sorted(get_host().plugins.items())
        if not info.error
    }


def _plugin_version(plugin: str) -> str | None:
    info = get_host().plugins.get(plugin)
    return (info.version or None) if info is not None else None


def _library_versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


# Loading -----------------------------------------------------------------------------------
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
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
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


@dataclass(frozen=True)
class SavedStages:
    """A saved pipeline's fitted stages with its manifest, folder and input shape."""

    encoders: list[Stage]
    clusterer: Stage
    refiners: list[Stage]
    manifest: dict[str, Any]
    root: Path
    shape: tuple[int, ...]


def read_stages(run_dir: Path | str, trust: bool = False, *, registry: Any = None) -> SavedStages:
    """Rebuild a saved pipeline's fitted stages from its folder (``imgclust.load`` wraps them).

    Each stage is built by its installed plugin's factory with the saved settings, then loads
    its own files. Whatever ``trust`` says, every file must lie inside ``pipeline/`` and the
    manifest must be well formed; without ``trust``, pickled files and Keras Lambda layers are
    refused before any stage reads them.
    """
    if registry is None:
        registry = get_registry()
    root = pipeline_dir(run_dir)
    check_contained(root, Path(run_dir))
    manifest = read_manifest(root)
    encoders_info, clusterer_info, shape = check_layout(manifest, root / MANIFEST)
    refiners_info = check_refiners(manifest)
    if not trust:
        audit(root)
    encoders = [_load_stage(registry, "encoders", info, root, trust) for info in encoders_info]
    clusterer = _load_stage(registry, "clusterers", clusterer_info, root, trust)
    refiners = [_load_stage(registry, "refiners", info, root, trust) for info in refiners_info]
    return SavedStages(encoders, clusterer, refiners, manifest, root, shape)


def check_contained(root: Path, given: Path) -> None:
    """Refuse a pipeline folder that reaches outside itself: a symlink to elsewhere, or an entry
    that is not a regular file or folder (a FIFO would block a reader forever).
    """
    base = root.resolve()
    if given.resolve() != base and not base.is_relative_to(given.resolve()):
        raise DataError(
            f"{PIPELINE_DIR}/ of {str(given)!r} points outside the run folder: copy the real "
            "folder instead of linking to it."
        )

    # the whole run folder when one was given (the walk every command that reads a run makes)
    check_self_contained(Path(given) if given.is_dir() and base != given.resolve() else root)


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


def audit(root: Path) -> None:
    """Refuse, before anything is loaded, files that could run code: pickles (plain or in a
    compressed stream) and Keras Lambdas.
    """
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root.parent).as_posix()
        if file.suffix.lower() in _PICKLE_SUFFIXES or _looks_pickled(file):
            raise ImgclustError(
                f"{rel} holds pickled Python objects, which can run code when loaded; {TRUST_HINT}."
            )
        if file.suffix.lower() == ".keras" and _keras_has_code(file):
            raise ImgclustError(
                f"{rel} holds a Keras Lambda layer or serialized Python function, which can run "
                f"code when loaded; {TRUST_HINT}."
            )


def _needs_trust(folder: Path) -> bool:
    """Whether loading a saved stage's files needs ``trust`` (what :func:`audit` refuses)."""
    try:
        audit(folder)
    except ImgclustError:
        return True
    return False


def _looks_pickled(file: Path) -> bool:
    """Whether a file starts as a pickle, or is a zlib, gzip, bz2 or lzma stream of one (what
    joblib writes), so that no library that unpickles such files is ever handed one unseen.
    """
    with open(file, "rb") as handle:
        head = handle.read(1 << 16)
    if _pickle_head(head, protocol_0=False):
        return True
    inner = _decompressed_head(head)
    return inner is not None and _pickle_head(inner, protocol_0=True)


def _pickle_head(data: bytes, protocol_0: bool) -> bool:
    """A pickle's protocol 2+ header, or (for decompressed data) opcodes that import or call."""
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return True
    if not protocol_0:
        return False
    try:
        for opcode, _, _ in pickletools.genops(data):
            if opcode.name in _CODE_OPCODES:
                return True
            if opcode.name == "STOP":
                return False
    except Exception:  # not (or no longer) a pickle stream
        return False
    return False


def _decompressed_head(head: bytes, size: int = 4096) -> bytes | None:
    """The first bytes of a zlib, gzip, bz2, xz or lzma stream, or None if it is none of these."""
    try:
        if len(head) >= 2 and head[0] == 0x78 and (head[0] << 8 | head[1]) % 31 == 0:
            return zlib.decompressobj().decompress(head, size)
        if head[:2] == b"\x1f\x8b":
            return zlib.decompressobj(wbits=31).decompress(head, size)
        if head[:3] == b"BZh":
            return bz2.BZ2Decompressor().decompress(head, max_length=size)
        if head[:6] == b"\xfd7zXZ\x00":
            return lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(head, max_length=size)
        if head[:1] == b"\x5d":
            return lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(head, max_length=size)
    except (zlib.error, OSError, EOFError, ValueError, lzma.LZMAError):
        return None
    return None


def _keras_has_code(file: Path) -> bool:
    """Whether a ``.keras`` archive's config holds a Lambda layer or a serialized function.

    config.json is read once, bounded (:data:`KERAS_CONFIG_BYTES` inflated, no bomb): one that
    is larger is refused here, before Keras would read it whole."""
    try:
        with zipfile.ZipFile(file) as archive:
            if "config.json" not in archive.namelist():
                return False  # not a .keras file: Keras itself will refuse it clearly
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    data = read_member(file, "config.json", f"{file.name}'s config.json", KERAS_CONFIG_BYTES)
    try:
        config = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False  # not a readable .keras config: Keras itself will refuse it clearly

    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            if node.get("class_name") in ("Lambda", "__lambda__", "__function__"):
                return True
            if node.get("function_type") == "lambda":
                return True
            return any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return False

    return walk(config)


def _load_stage(
    registry: Any, kind: str, info: Mapping[str, Any], root: Path, trust: bool
) -> Stage:
    """Build a stage with its factory and saved settings, then let it load its files."""

    name = str(info.get("name"))
    what = f"{kind[:-1]} {name!r}"
    try:  # a name two plugins register means the one the manifest says made it
        entry = registry.get(kind, registry.prefer(kind, name, str(info.get("plugin") or "")))
    except PluginError as exc:
        if (kind, name) in getattr(registry, "collisions", {}):
            raise PluginError(f"cannot load this pipeline's {what}: {exc}") from None
        plugin = info.get("plugin") or "its plugin"
        version = f" {info['plugin_version']}" if info.get("plugin_version") else ""
        raise PluginError(
            f"this pipeline needs {what} from {plugin}{version}, which is not installed: "
            "install that plugin to load the run."
        ) from None
    settings = dict(info.get("settings") or {})
    try:
        instance = entry.target(**resolve(what, entry.target, settings))
    except ImgclustError as exc:
        raise ImgclustError(f"cannot rebuild {what} with its saved settings: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ImgclustError(
            f"cannot rebuild {what} with its saved settings: {one_line(exc)}"
        ) from None
    stage = Stage(name, instance, settings)
    if not info.get("saved"):
        stage.unsaved_reason = info.get("reason") or f"{what} was not saved"
        return stage
    if info.get("format") == "stateless":
        if not is_stateless(instance):
            raise DataError(
                f"the manifest says {what} holds no fitted state, but its plugin does not declare "
                "it stateless: the pipeline was altered or saved with another version of it."
            )
        return stage
    folder = str(info.get("dir") or "")
    if not _SAFE_DIR.match(folder):
        raise DataError(f"the manifest names an unsafe folder {folder!r} for {what}.")
    path = root / folder
    if not path.is_dir():
        raise DataError(f"{what} is missing from the run folder ({PIPELINE_DIR}/{folder}).")
    try:
        if info.get("format") == "pickle":
            stage.instance = _load_pickled_state(instance, path, what, trust)
        else:
            load_method = instance.load
            accepts_trust = "trust" in inspect.signature(load_method).parameters
            loaded = load_method(path, trust=trust) if accepts_trust else load_method(path)
            stage.instance = loaded if loaded is not None else instance
    except ImgclustError:
        raise
    except Exception as exc:
        raise ImgclustError(
            f"cannot load {what} from {PIPELINE_DIR}/{folder}: {one_line(exc)}"
        ) from None
    return stage


def _load_pickled_state(instance: Any, path: Path, what: str, trust: bool) -> Any:
    if not trust:
        raise ImgclustError(
            f"{what} was saved as a pickle, which can run code when loaded; {TRUST_HINT}."
        )
    state = pickle.loads((path / STATE_PICKLE).read_bytes())  # opted in by trust=True
    instance.__dict__.update(state)
    return instance
