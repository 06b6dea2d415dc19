"""A run's fitted pipeline on disk (``RUN/pipeline/``), and loading it back to assign new images.

``pipeline/manifest.json`` says what was fitted (stages, settings, plugins, input shape and
preprocessing); each stage saves itself into its own folder (``encoder-0-<name>/``,
``clusterer-<name>/``, ``refiner-0-<name>/``) through its ``save(dir)`` and is rebuilt by its
factory and ``load(dir)``.
Loading never runs code from the folder: pickled state and Keras Lambda layers are refused
unless the caller passes ``trust=True`` (:mod:`imgclust.engine.untrusted` finds them); every
file read lies inside ``pipeline/``, and the manifest's types and input shape are checked
(:mod:`imgclust.engine.manifest`) before anything is built or allocated.
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclust import __version__
from imgclust.engine.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    PIPELINE_DIR,
    check_layout,
    check_refiners,
    pipeline_dir,
    read_manifest,
)
from imgclust.engine.stage import Stage
from imgclust.engine.untrusted import TRUST_HINT, audit, check_contained, needs_trust
from imgclust.errors import DataError, ImgclustError, PluginError, one_line
from imgclust.io import atomic
from imgclust.io.bounded import read_json
from imgclust.kit.sklearn import cannot_predict_message
from imgclust.results.metrics import n_clusters
from imgclust.stages.host import get_host, get_registry
from imgclust.stages.interfaces import ImageSet, can_predict, is_stateless
from imgclust.stages.settings import resolve

if TYPE_CHECKING:
    from imgclust.engine.pipeline import Pipeline

# imgclust's mark on a folder it saved a pipeline into: only such a folder is ever replaced.
MARK = ".imgclust-pipeline"
MARK_TEXT = "imgclust pipeline: imgclust replaces this folder only while it holds nothing else.\n"
MARK_MAX_BYTES = 4096
STATE_PICKLE = "stage-state.pkl"
LIBRARIES = ("numpy", "scikit-learn", "keras", "tensorflow", "umap-learn", "hdbscan")
_SAFE_DIR = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


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
                f"{info.get('note') or info['name']}: predicting with this pipeline needs "
                "--trust (trust=True); give the stage a working save/load, or declare it "
                "stateless = True (docs/plugins.md)"
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
        manifest = read_json(folder / MANIFEST)
        stages = [*manifest["encoders"], manifest["clusterer"], *manifest.get("refiners", [])]
        own = {MANIFEST, MARK} | {str(s["dir"]) for s in stages if s.get("dir") and s["saved"]}
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, DataError):
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
    if callable(getattr(instance, "save", None)):
        try:
            path.mkdir(parents=True)
            instance.save(path)
            info.update(format="native", saved=True, needs_trust=needs_trust(path))
            return info
        except Exception as exc:  # the run must not fail because one stage cannot be kept
            why = f"its save raised {one_line(exc, with_type=True)}"
            shutil.rmtree(path, ignore_errors=True)
    else:
        why = "it has no file format of its own (no save method)"
    state, problem = _picklable_state(registry, kind, stage)
    if state is not None:
        path.mkdir(parents=True)
        atomic.write_bytes(path / STATE_PICKLE, state)
        info.update(format="pickle", saved=True, needs_trust=True)
        info["note"] = f"{what}: {why}; its state is a pickle{problem}"
        return info
    info["reason"] = f"{what} could not be saved: {why}; {problem}"
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
    packages = _packages(manifest)
    encoders = [
        _load_stage(registry, "encoders", info, root, trust, packages) for info in encoders_info
    ]
    clusterer = _load_stage(registry, "clusterers", clusterer_info, root, trust, packages)
    refiners = [
        _load_stage(registry, "refiners", info, root, trust, packages) for info in refiners_info
    ]
    return SavedStages(encoders, clusterer, refiners, manifest, root, shape)


#: What a package (distribution) name read from a manifest may be before a message shows it.
PACKAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _packages(manifest: Mapping[str, Any]) -> dict[str, str]:
    """Each plugin's package (the name ``pip install`` takes) as the manifest records it; only
    plain package names are kept, as a message shows them and the manifest may be a stranger's."""
    recorded = manifest.get("plugins")
    if not isinstance(recorded, dict):
        return {}
    return {
        str(plugin): entry["distribution"]
        for plugin, entry in recorded.items()
        if isinstance(entry, dict)
        and isinstance(entry.get("distribution"), str)
        and PACKAGE_NAME.fullmatch(entry["distribution"])
    }


def _load_stage(
    registry: Any,
    kind: str,
    info: Mapping[str, Any],
    root: Path,
    trust: bool,
    packages: Mapping[str, str] | None = None,
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
        package = (packages or {}).get(str(info.get("plugin")))
        if package and package != plugin:
            where = f"the package {package}{version} (plugin {plugin!r})"
        else:
            where = f"{plugin}{version}"
        advice = f"pip install {package}" if package else "install that plugin"
        raise PluginError(
            f"this pipeline needs {what} from {where}, which is not installed: "
            f"{advice}, then load the run again."
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
            f"cannot load {what} from {PIPELINE_DIR}/{folder}: {one_line(exc, with_type=True)}"
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
