"""The Python API: ``imgclust.run``, ``get_dataset``/``get_encoder``/``get_clusterer``, ``load``.

Settings are real Python values, checked by the same code that checks ``--set`` on the command
line, so a wrong name or value fails the same way, as an :class:`~imgclust.errors.ImgclustError`
of one line::

    run = imgclust.run(dataset={"name": "digits", "limit": 500}, encoders=["pca"],
                       clusterer="kmeans", settings={"clusterer": {"n_clusters": 10}})
    run.metrics["acc"], run.path, run.labels
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.console import Log
from imgclust.engine.config import resolve_config
from imgclust.engine.pipeline import load_pipeline
from imgclust.engine.runner import execute
from imgclust.engine.stage import Stage, make_stage
from imgclust.errors import ImgclustError, SettingsError
from imgclust.estimators import Pipeline, as_estimator
from imgclust.io.arrays import IN_MEMORY, InMemoryImages, in_memory_images
from imgclust.kit.keras import framework_chatter_silenced
from imgclust.report.notebook import run_html
from imgclust.results.metrics import n_clusters
from imgclust.stages.host import get_registry
from imgclust.stages.interfaces import ImageSet
from imgclust.stages.kinds import (
    CLUSTERER,
    DATASET,
    ENCODER,
    REFINER,
    STAGE_KINDS,
    StageKind,
)

StageSpec = str | Mapping[str, Any]
#: Keys of ``settings`` that name a stage: each kind, singular, and the chains' plurals.
STAGE_KEYS = tuple(
    key for kind in STAGE_KINDS for key in (kind.name, *((kind.registry,) if kind.chain else ()))
)


@dataclass(repr=False)
class Run:
    """A finished run: its folder, scores, clusters, labels, features and fitted pipeline."""

    path: Path  # the run folder, as `imgclust run` writes it
    config: dict[str, Any]  # the fully resolved configuration (config.toml)
    metrics: dict[str, Any]  # what metrics.json holds: scores, timings, n_images, n_clusters
    clusters: list[dict[str, Any]]  # what each cluster holds, largest first (clusters.md)
    labels: np.ndarray  # (N,) cluster of each image, -1 for noise
    features: np.ndarray  # (N, D) float32: what the clusterer saw (embeddings.npy)
    pipeline: Pipeline  # the fitted pipeline: predict new images with it
    data: ImageSet  # the clustered images, their ids and labels
    summary: dict[str, Any] = field(default_factory=dict)  # summary.json
    confidence: np.ndarray | None = None  # (N,) in [0, 1]: how sure each image's cluster is
    outlier: np.ndarray | None = None  # (N,) distance to its centre over the cluster's median

    def __repr__(self) -> str:
        score = f", ACC {self.metrics['acc']:.4f}" if "acc" in self.metrics else ""
        return (
            f"<Run {self.path.name}: {self.summary.get('pipeline', self.pipeline.name)}, "
            f"{len(self.labels)} images, {self.metrics.get('n_clusters')} clusters{score}>"
        )

    def _repr_html_(self) -> str:
        """Jupyter's view: summary, scores, the clusters' montages and a link to report.html."""

        return run_html(self)


def run(
    recipe: str | None = None,
    *,
    images: Any = None,
    labels: Any = None,
    ids: Any = None,
    dataset: StageSpec | None = None,
    encoders: StageSpec | Sequence[StageSpec] | None = None,
    clusterer: StageSpec | None = None,
    refiners: StageSpec | Sequence[StageSpec] | None = None,
    settings: Mapping[str, Any] | None = None,
    seed: int | None = None,
    split: str | None = None,
    config: str | Path | None = None,
    runs_dir: str | Path = "runs",
    plots: bool = True,
    log: Log | None = None,
    keep_checkpoints: bool = False,
    dask: str | None = None,
    trust_config: bool = False,
) -> Run:
    """Run a clustering end to end, as ``imgclust run`` does, and return the finished :class:`Run`.

    ``recipe``, then the TOML file ``config``, then ``dataset``/``encoders``/``clusterer`` and
    ``settings`` resolve into one configuration, exactly like the command line's ``--recipe``,
    ``--config``, ``--dataset``... and ``--set``; ``refiners`` (``--refiner``) replace a
    recipe's. A stage is a name or a ``{"name": ..., key: value}`` mapping. ``settings`` maps a
    stage (``"dataset"``, ``"encoder"``, ``"encoder.NAME"``, ``"encoder.INDEX"``,
    ``"clusterer"``, ``"refiner"``, ``"refiner.NAME"``) to ``{key: value}``, or a ``--set``
    target (``"clusterer.n_clusters"``, ``"seed"``, ``"split"``) to a value.
    ``plots`` (true by default, as on the command line) draws ``plots/`` and writes
    ``report.html``; ``plots=False`` is ``--no-plots``. ``keep_checkpoints`` keeps the training
    checkpoints in the finished run folder. ``dask`` runs on that Dask scheduler (``local``,
    ``local:N`` or an address); the ``dask`` address a config file names is used only with
    ``trust_config=True`` (a scheduler can run code in this process), else it is ignored with a
    warning.

    ``images`` clusters arrays in memory instead of a dataset: (N, H, W), (N, H, W, C) or
    (N, C, H, W), uint8 or numbers in [0, 1]; ``labels`` (N,) scores the run, ``ids`` (N,)
    names the images in ``assignments.csv`` (default: their index). The run folder is like any
    other; its dataset is ``in-memory``, which only this call can read.
    """

    registry = get_registry()
    names: dict[str, Any] = {}
    values: list[tuple[str, Any]] = []
    if images is not None:
        if dataset is not None:
            raise SettingsError("give images or a dataset, not both.")
        registry = _with_images(registry, images, labels, ids)
        names["dataset"] = IN_MEMORY
    elif labels is not None or ids is not None:
        raise SettingsError("labels and ids describe images=...: pass the images too.")
    if dataset is not None:
        names["dataset"] = _stage_spec("dataset", dataset, "dataset", values)
    if encoders is not None:
        names["encoders"] = _chain_specs(ENCODER, encoders, values)
    if refiners is not None:
        names["refiners"] = _chain_specs(REFINER, refiners, values)
    if clusterer is not None:
        names["clusterer"] = _stage_spec("clusterer", clusterer, "clusterer", values)
    values += _flatten_settings(settings)
    if dask is not None:
        values.append(("dask", _optional_text("dask", dask)))
    resolved = resolve_config(
        registry,
        recipe=_optional_text("recipe", recipe),
        config_file=None if config is None else Path(config),
        sets=values,
        seed=_check_seed(seed),
        split=_optional_text("split", split),
        trust_config=trust_config is True,
        **names,
    )
    if images is not None and resolved.get("dask"):
        raise SettingsError(
            "images in memory cannot reach Dask workers: save them with numpy.save and use "
            "dataset 'arrays' (path=...) with dask."
        )
    runs = Path(runs_dir)
    if runs.exists() and not runs.is_dir():
        raise ImgclustError(f"runs_dir {str(runs)!r} is a file: give a folder for run folders.")
    with framework_chatter_silenced():  # as on the command line, whatever a stage imports
        result = execute(
            registry,
            resolved,
            runs,
            log=log or (lambda message: None),
            plots=bool(plots),
            keep_checkpoints=keep_checkpoints,
        )
    labels = result.labels
    scores = result.extras.get("scores")
    metrics = {
        **result.record["metrics"],
        "n_images": len(labels),
        "n_clusters": n_clusters(labels),
    }
    return Run(
        path=result.path,
        config=resolved,
        metrics=metrics,
        clusters=result.record["clusters"],
        labels=labels,
        features=result.features,
        pipeline=as_estimator(result.pipeline),
        data=result.data,
        summary=result.record,
        confidence=None if scores is None else scores.confidence,
        outlier=None if scores is None else scores.outlier,
    )


def get_dataset(name: str, /, **settings: Any) -> Stage:
    """A dataset built by its plugin; ``.load(split)`` returns an ImageSet."""
    return as_estimator(make_stage(DATASET.registry, name, settings), DATASET.registry)


def get_encoder(name: str, /, **settings: Any) -> Stage:
    """An unfitted encoder built by its plugin, for :class:`imgclust.Pipeline`."""
    return as_estimator(make_stage(ENCODER.registry, name, settings), ENCODER.registry)


def get_clusterer(name: str, /, **settings: Any) -> Stage:
    """An unfitted clusterer built by its plugin, for :class:`imgclust.Pipeline`."""
    return as_estimator(make_stage(CLUSTERER.registry, name, settings), CLUSTERER.registry)


def get_refiner(name: str, /, **settings: Any) -> Stage:
    """An unfitted refiner built by its plugin, for ``Pipeline(..., refiners=[...])``."""
    return as_estimator(make_stage(REFINER.registry, name, settings), REFINER.registry)


def load(path: str | Path, trust: bool = False) -> Pipeline:
    """A fitted pipeline from a run folder or a folder ``Pipeline.save`` wrote.

    Loading never runs code from the folder: pickled stages and Keras Lambda layers are refused
    unless ``trust=True``, which is only for folders whose origin you trust.
    """
    import os

    if not isinstance(path, (str, os.PathLike)):
        raise SettingsError(f"load takes a folder's path, not {type(path).__name__}.")
    return as_estimator(load_pipeline(path, trust=trust is True))


def _with_images(registry: Any, images: Any, labels: Any, ids: Any) -> Any:
    """The registry with dataset ``in-memory`` holding these checked arrays, for one run."""
    data = in_memory_images(images, labels, ids)

    def holding() -> InMemoryImages:
        dataset = InMemoryImages()
        dataset.data = data
        return dataset

    holding.__doc__ = InMemoryImages.__doc__
    holding.splits = InMemoryImages.splits  # type: ignore[attr-defined]  # as the class says
    return registry.with_target("datasets", IN_MEMORY, holding)


# Turning Python values into --set assignments -------------------------------------------------
def _stage_spec(kind: str, spec: Any, target: str, values: list[tuple[str, Any]]) -> str:
    """The stage's name; its other keys become ``(target.key, value)`` assignments."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        name = spec.get("name")
        if not isinstance(name, str):
            raise SettingsError(f"{kind} {dict(spec)!r} needs a 'name', e.g. {{'name': ...}}.")
        values.extend((f"{target}.{_key(kind, k)}", v) for k, v in spec.items() if k != "name")
        return name
    raise SettingsError(
        f"{kind} must be a name or a {{'name': ..., setting: value}} mapping, "
        f"not {type(spec).__name__}."
    )


def _chain_specs(kind: StageKind, stages: Any, values: list[tuple[str, Any]]) -> list[str]:
    """The names of a chain of stages (encoders, refiners); their settings go to ``values``."""
    if isinstance(stages, (str, Mapping)):
        stages = [stages]
    if not isinstance(stages, Iterable):
        raise SettingsError(
            f"{kind.registry} must be a name or a list of them, not {type(stages).__name__}."
        )
    names = [_stage_spec(kind.name, s, f"{kind.name}.{i}", values) for i, s in enumerate(stages)]
    if not names and kind is ENCODER:
        raise SettingsError("encoders is empty: name at least one encoder, e.g. ['pca'].")
    return names


def _flatten_settings(settings: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """``{"clusterer": {"n_clusters": 10}, "seed": 1}`` as ``--set`` targets with values."""
    if settings is None:
        return []
    if not isinstance(settings, Mapping):
        raise SettingsError(
            "settings must be a mapping such as {'clusterer': {'n_clusters': 10}}, "
            f"not {type(settings).__name__}."
        )
    found: list[tuple[str, Any]] = []
    for key, value in settings.items():
        key = _key("settings", key)
        stage = key.split(".")[0]
        if isinstance(value, Mapping) and stage in STAGE_KEYS and key.count(".") <= 1:
            found.extend((f"{key}.{_key(key, k)}", v) for k, v in value.items())
        elif key == "seed":
            found.append((key, _check_seed(value)))
        elif key in ("split", "fit_split", "validation_split"):
            found.append((key, _optional_text(key, value)))
        else:
            found.append((key, value))
    return found


def _key(where: str, key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise SettingsError(f"{where}: setting names are text, not {key!r}.")
    return key


def _optional_text(what: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise SettingsError(f"{what} must be a name (text), not {type(value).__name__}.")


def _check_seed(seed: Any) -> int | None:
    """A seed is a whole number; NumPy integers count, booleans and fractions do not."""
    if seed is None:
        return None
    if type(seed).__module__ == "numpy" and getattr(seed, "ndim", None) == 0:
        seed = seed.item()
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SettingsError(f"seed must be an integer, not {seed!r}.")
    return seed
