"""Import paths of the previous release, kept for one release: each still imports, as the module
that now holds its code, with a ``DeprecationWarning`` that names the new import."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

#: Old module -> (new module, the import a stage author should write now).
MOVED = {
    "imgclust.autoencoder": (
        "imgclust.kit.autoencoder",
        "from imgclust.kit import KerasAutoencoder",
    ),
    "imgclust.keras_support": ("imgclust.kit.keras", "from imgclust.kit import import_keras"),
    "imgclust.umap_support": ("imgclust.kit.umap", "from imgclust.kit import import_umap"),
    "imgclust.sklearn_adapter": (
        "imgclust.kit.sklearn",
        "from imgclust.kit import SklearnClusterer",
    ),
    "imgclust.arrays": ("imgclust.kit.arrays", "from imgclust.kit import as_matrix"),
    "imgclust.invariances": ("imgclust.kit.invariances", "from imgclust.kit import decide"),
    "imgclust.interfaces": ("imgclust.stages.interfaces", "from imgclust import ImageSet"),
    "imgclust.hookspecs": ("imgclust.stages.hookspecs", "from imgclust import hookimpl"),
    "imgclust.settings": ("imgclust.stages.settings", "from imgclust.kit import check_limit"),
    "imgclust.atomic": ("imgclust.io.atomic", "from imgclust.kit import atomic"),
    "imgclust.memory": ("imgclust.io.memory", "from imgclust.kit import inflation_cap"),
    "imgclust.pipeline": ("imgclust.engine.pipeline", "from imgclust import Pipeline"),
}


class _MovedLoader(importlib.abc.Loader):
    """Hands out the module that now holds the code, under the old name too."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new, advice = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}; import it as `{advice}` (the old path goes in the "
            "next release).",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """The module is already executed under its new name."""


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds the previous release's module paths (and nothing else)."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _MovedLoader())


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(finder, MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedFinder())
