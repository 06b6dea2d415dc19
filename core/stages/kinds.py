"""The table of stage kinds (dataset, encoder, clusterer, refiner): every place that needs to know
what kinds exist, what each is called and which methods it must have reads it from here."""

from __future__ import annotations

from dataclasses import dataclass

from imgclust.errors import SettingsError
from imgclust.stages.interfaces import Clusterer, Dataset, Encoder, Refiner


@dataclass(frozen=True)
class StageKind:
    """One kind of stage: its names in the registry, configs and the CLI, and its contract."""

    registry: str  #: the registry's and the hooks' plural: ``encoders`` (``register_encoders``)
    name: str  #: singular, as configs, ``--set`` targets and messages say it: ``encoder``
    chain: bool  #: several in order (encoders, refiners), or one (dataset, clusterer)
    protocol: type  #: the runtime-checkable protocol in ``imgclust.stages.interfaces``
    #: What a bare object needs to act as this stage in a pipeline (fitting and assigning).
    works_with: tuple[str, ...]
    #: What a registered stage must have: ``works_with`` plus saving and loading its state.
    required: tuple[str, ...]
    in_pipeline: bool = True  #: a dataset feeds a run but is not part of its fitted pipeline

    @property
    def option(self) -> str:
        """The command line's option: ``--encoder``."""
        return f"--{self.name}"

    @property
    def hook(self) -> str:
        """The plugin hook that registers this kind: ``register_encoders``."""
        return f"register_{self.registry}"


DATASET = StageKind("datasets", "dataset", False, Dataset, ("load",), ("load",), in_pipeline=False)
ENCODER = StageKind(
    "encoders", "encoder", True, Encoder, ("fit", "transform"), ("fit", "transform", "save", "load")
)
CLUSTERER = StageKind(
    "clusterers", "clusterer", False, Clusterer, ("fit_predict",), ("fit_predict", "save", "load")
)
REFINER = StageKind(
    "refiners",
    "refiner",
    True,
    Refiner,
    ("fit_predict", "predict"),
    ("fit_predict", "predict", "save", "load"),
)

#: The stage kinds, in the order a run meets them.
STAGE_KINDS: tuple[StageKind, ...] = (DATASET, ENCODER, CLUSTERER, REFINER)
#: The stages of a fitted pipeline, in order.
PIPELINE_KINDS: tuple[StageKind, ...] = tuple(k for k in STAGE_KINDS if k.in_pipeline)
#: What plugins register: the stage kinds and recipes (named configurations, not stages).
REGISTERED: tuple[str, ...] = (*(k.registry for k in STAGE_KINDS), "recipes")
#: Singular names of everything registered: ``{"encoders": "encoder", ..., "recipes": "recipe"}``.
SINGULAR: dict[str, str] = {**{k.registry: k.name for k in STAGE_KINDS}, "recipes": "recipe"}

_BY_NAME = {key: kind for kind in STAGE_KINDS for key in (kind.registry, kind.name)}


def stage_kind(name: str) -> StageKind:
    """The kind called ``name``, singular or plural (``encoder`` or ``encoders``)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(k.name for k in STAGE_KINDS)
        raise SettingsError(f"{name!r} is not a kind of stage; the kinds are {known}.") from None
