"""A run's fitted pipeline on disk (``RUN/pipeline/``), and loading it back to assign new images.

``pipeline/manifest.json`` says what was fitted (stages, settings, plugins, input shape and
preprocessing); each stage saves itself into its own folder (``encoder-0-<name>/``,
``clusterer-<name>/``) through its ``save(dir)`` and is rebuilt by its factory and ``load(dir)``.
Loading never runs code from the folder: pickled state and Keras Lambda layers are refused
unless the caller passes ``trust=True``.
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, atomic
from .errors import DataError, ImgclustError, PluginError
from .interfaces import ImageSet, can_predict
from .pipeline import Pipeline, Stage

FORMAT = "imgclust-pipeline"
FORMAT_VERSION = 1
PIPELINE_DIR = "pipeline"
MANIFEST = "manifest.json"
STATE_PICKLE = "stage-state.pkl"
LIBRARIES = ("numpy", "scikit-learn", "keras", "tensorflow", "umap-learn", "hdbscan")
_SAFE_DIR = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
TRUST_HINT = "pass --trust (trust=True) only if you trust where this run folder came from"


# Saving ------------------------------------------------------------------------------------
def save_pipeline(
    pipeline: Pipeline,
    directory: Path,
    config: Mapping[str, Any],
    data: ImageSet,
    *,
    registry: Any = None,
) -> dict[str, Any]:
    """Write ``directory/pipeline/``: the manifest and every fitted stage; return the manifest.

    A stage that cannot be saved does not fail the run: the manifest records why the pipeline
    cannot predict. The folder is built under a temporary name and renamed when whole.
    """
    if registry is None:
        from .plugins_host import get_registry

        registry = get_registry()
    directory = Path(directory)
    target = directory / PIPELINE_DIR
    work = Path(tempfile.mkdtemp(prefix=f".{PIPELINE_DIR}.", dir=directory))
    try:
        encoders = [
            _save_stage(registry, "encoders", stage, work, f"encoder-{i}-{stage.name}")
            for i, stage in enumerate(pipeline.encoders)
        ]
        clusterer = _save_stage(
            registry, "clusterers", pipeline.clusterer, work, f"clusterer-{pipeline.clusterer.name}"
        )
        reasons = [s["reason"] for s in [*encoders, clusterer] if not s["saved"]]
        if clusterer["saved"] and not clusterer["can_predict"]:
            reasons.append(clusterer["reason"])
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "imgclust_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "python": sys.version.split()[0],
            "libraries": _library_versions(),
            "plugins": _plugin_versions(),
            "input": {"shape": [int(v) for v in data.shape], "dtype": str(data.images.dtype)},
            "preprocessing": _preprocessing(config, data),
            "seed": config.get("seed"),
            "encoders": encoders,
            "clusterer": clusterer,
            "n_clusters": _n_clusters(pipeline.labels_),
            "can_predict": not reasons,
            "reason": "; ".join(reasons) or None,
            "needs_trust": any(s["needs_trust"] for s in [*encoders, clusterer]),
        }
        atomic.write_json(work / MANIFEST, manifest)
        if target.exists():  # a resumed run rewrites what an earlier attempt left
            shutil.rmtree(target)
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


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
    entry = registry.entries.get(kind, {}).get(stage.name)
    if entry is not None:
        info["plugin"] = entry.plugin
        info["plugin_version"] = _plugin_version(entry.plugin)
    what = f"{kind[:-1]} {stage.name!r}"
    if kind == "clusterers":
        info["can_predict"] = can_predict(instance)
        if not info["can_predict"]:
            info["reason"] = f"{what} cannot assign new points"
            return info
    path = root / folder
    errors = []
    try:
        path.mkdir(parents=True)
        instance.save(path)
        info.update(format="native", saved=True, needs_trust=_needs_trust(path))
        return info
    except Exception as exc:  # the run must not fail because one stage cannot be kept
        errors.append(_one_line(exc))
        shutil.rmtree(path, ignore_errors=True)
    state, problem = _picklable_state(registry, kind, stage)
    if state is not None:
        path.mkdir(parents=True)
        atomic.write_bytes(path / STATE_PICKLE, state)
        info.update(format="pickle", saved=True, needs_trust=True)
        info["note"] = f"{what} has no file format of its own ({errors[0]}); its state is a pickle"
        return info
    info["reason"] = f"{what} could not be saved: {errors[0]}; {problem}"
    return info


def _picklable_state(registry: Any, kind: str, stage: Stage) -> tuple[bytes | None, str]:
    """The stage's attributes as a pickle, leaving out those its factory rebuilds anyway."""
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
        return None, f"it cannot be pickled ({_one_line(exc)})"
    kept = {}
    for key, value in state.items():
        try:
            pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            kept[key] = value
        except Exception as exc:
            if key not in fresh:
                return None, f"its attribute {key!r} cannot be pickled ({_one_line(exc)})"
    return pickle.dumps(kept, protocol=pickle.HIGHEST_PROTOCOL), ""


def _preprocessing(config: Mapping[str, Any], data: ImageSet) -> dict[str, Any]:
    """How training images were read and scaled, so that predict can do the same."""
    dtype = str(data.images.dtype)
    height, width, channels = (int(v) for v in data.shape)
    dataset = dict(config["dataset"])
    return {
        "dataset": _jsonable_settings(dataset),
        "split": config.get("split"),
        "fit_split": config.get("fit_split", config.get("split")),
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


def _n_clusters(labels: np.ndarray | None) -> int | None:
    if labels is None:
        return None
    return int(len(np.unique(labels[labels != -1])))


def _plugin_versions() -> dict[str, dict[str, Any]]:
    from .plugins_host import get_host

    return {
        name: {"distribution": info.distribution, "version": info.version, "bundled": info.bundled}
        for name, info in sorted(get_host().plugins.items())
        if not info.error
    }


def _plugin_version(plugin: str) -> str | None:
    from .plugins_host import get_host

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


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        raise DataError(f"cannot read {str(file)!r}: {_one_line(exc)}.") from None
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


def load_pipeline(
    run_dir: Path | str, trust: bool = False, *, registry: Any = None
) -> SavedPipeline:
    """Rebuild a run's fitted pipeline from its folder.

    Each stage is built by its installed plugin's factory with the saved settings, then loads
    its own files. Without ``trust``, pickled files and Keras Lambda layers are refused before
    any stage reads them.
    """
    if registry is None:
        from .plugins_host import get_registry

        registry = get_registry()
    root = pipeline_dir(run_dir)
    manifest = read_manifest(root)
    try:
        encoders_info = manifest["encoders"]
        clusterer_info = manifest["clusterer"]
        if not isinstance(encoders_info, list) or not all(
            isinstance(info, dict) for info in [*encoders_info, clusterer_info]
        ):
            raise TypeError("stages must be tables")
        shape = tuple(int(v) for v in manifest["input"]["shape"])
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError("the input shape must be three positive sizes")
    except (KeyError, TypeError, ValueError, OverflowError):
        raise DataError(f"{str(root / MANIFEST)!r} is incomplete or damaged.") from None
    if not trust:
        audit(root)
    encoders = [_load_stage(registry, "encoders", info, root, trust) for info in encoders_info]
    clusterer = _load_stage(registry, "clusterers", clusterer_info, root, trust)
    return SavedPipeline(Pipeline(encoders, clusterer), manifest, root, shape)


load = load_pipeline


def audit(root: Path) -> None:
    """Refuse, before anything is loaded, files that could run code: pickles and Keras Lambdas."""
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
    with open(file, "rb") as handle:
        head = handle.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _keras_has_code(file: Path) -> bool:
    """Whether a ``.keras`` archive's config holds a Lambda layer or a serialized function."""
    try:
        with zipfile.ZipFile(file) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, zipfile.BadZipFile, ValueError):
        return False  # not a readable .keras file: Keras itself will refuse it clearly

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
    from .settings import resolve

    name = str(info.get("name"))
    what = f"{kind[:-1]} {name!r}"
    try:
        entry = registry.get(kind, name)
    except PluginError:
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
            f"cannot rebuild {what} with its saved settings: {_one_line(exc)}"
        ) from None
    stage = Stage(name, instance, settings)
    if not info.get("saved"):
        stage.unsaved_reason = info.get("reason") or f"{what} was not saved"  # type: ignore[attr-defined]
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
            f"cannot load {what} from {PIPELINE_DIR}/{folder}: {_one_line(exc)}"
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


# The loaded pipeline -----------------------------------------------------------------------
class SavedPipeline:
    """A fitted pipeline loaded from a run folder: ``transform`` and ``predict`` new images.

    Images may be uint8 (0..255) or float32 ([0, 1]), shaped (N, H, W, C), (N, H, W) for one
    channel, or channel-first; they must match the size and channels the pipeline was fitted on.
    """

    def __init__(
        self, pipeline: Pipeline, manifest: dict[str, Any], root: Path, shape: tuple[int, ...]
    ) -> None:
        self.pipeline = pipeline
        self.manifest = manifest
        self.path = root
        self.input_shape = shape

    def __repr__(self) -> str:
        return f"<SavedPipeline {self.pipeline.name} for {_describe(self.input_shape)} images>"

    @property
    def can_predict(self) -> bool:
        return bool(self.manifest.get("can_predict"))

    def prepare(self, images: Any, source: str = "images") -> np.ndarray:
        """Images as (N, H, W, C) uint8 or float32 in [0, 1], checked against the fitted shape."""
        from imgclust.plugins.arrays import to_nhwc

        height, width, channels = self.input_shape
        array = images if isinstance(images, np.ndarray) else np.asarray(images)
        if array.ndim == 3 and channels == 1 and array.shape[1:] == (height, width):
            array = array[..., None]
        if array.ndim != 4:
            raise DataError(
                f"{source} must be (N, H, W, C) or (N, H, W); got shape {tuple(array.shape)}."
            )
        order = "last"
        if array.shape[1:] != (height, width, channels):
            if array.shape[1:] == (channels, height, width):
                order = "first"
            else:
                raise DataError(
                    f"{source} are {_describe(array.shape[1:])} but this pipeline was fitted on "
                    f"{_describe(self.input_shape)} images: resize or convert them (image files "
                    "are resized and converted automatically)."
                )
        if len(array) == 0:
            raise DataError(f"{source} hold no images.")
        return to_nhwc(array, order, source)

    def transform(self, images: Any) -> np.ndarray:
        """Features of new images through every fitted encoder."""
        for stage in self.pipeline.encoders:
            reason = getattr(stage, "unsaved_reason", None)
            if reason:
                raise ImgclustError(f"this run's encoders were not all saved: {reason}.")
        return self.pipeline.transform(self.prepare(images))

    def predict(self, images: Any) -> np.ndarray:
        """The cluster of each new image (-1 for noise)."""
        return self.assign(images)[0]

    def assign(self, images: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Clusters of new images, with a per-image distance or probability where there is one."""
        self.check_can_predict()
        features = self.transform(images)
        clusterer = self.pipeline.clusterer.instance
        labels = np.asarray(clusterer.predict(features), dtype=np.int64)
        scores: dict[str, np.ndarray] = {}
        scorer = getattr(clusterer, "score_samples", None)
        if callable(scorer):
            try:
                found = scorer(features)
            except Exception:
                found = None
            if isinstance(found, Mapping):
                scores = {str(k): np.asarray(v, dtype=np.float64) for k, v in found.items()}
            elif isinstance(found, np.ndarray) and found.shape == labels.shape:
                scores = {"score": found.astype(np.float64)}
        return labels, scores

    def check_can_predict(self) -> None:
        if self.can_predict:
            return
        stage = self.pipeline.clusterer
        if not self.manifest["clusterer"].get("can_predict", True):
            from .sklearn_adapter import predicting_clusterers

            able = ", ".join(predicting_clusterers()) or "none installed"
            raise ImgclustError(
                f"clusterer {stage.name!r} cannot assign new images; refit with one that can: "
                f"{able}."
            )
        raise ImgclustError(f"this run's pipeline cannot predict: {self.manifest.get('reason')}.")


def _describe(shape: tuple[int, ...]) -> str:
    """'28x28 with 1 channel'."""
    if len(shape) != 3:
        return "x".join(str(v) for v in shape)
    height, width, channels = shape
    return f"{height}x{width} with {channels} channel{'s' if channels != 1 else ''}"
