"""The hooks a plugin implements. Their docstrings are the reference for plugin authors.

Each ``register_*`` hook receives a ``register`` callback so that the core can validate names,
record which plugin provided what, and report collisions between plugins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("imgclust")
hookimpl = pluggy.HookimplMarker("imgclust")

Register = Callable[..., None]


@hookspec
def register_datasets(register: Register) -> None:
    """Register dataset factories: ``register("mnist", MnistDataset, summary="...")``.

    A factory is a class or function; its keyword parameters are the dataset's settings, read
    from its signature (names, defaults, type annotations, numpydoc ``Parameters``). Calling it
    returns an object with ``splits`` and ``load(split) -> ImageSet``.
    """


@hookspec
def register_encoders(register: Register) -> None:
    """Register encoder factories: ``register("pca", PCAEncoder, summary="...")``.

    The object a factory returns implements ``fit(images, validation=None)``,
    ``transform(images) -> (N, D) float32``, ``save(dir)`` and ``load(dir)``. A ``seed``
    parameter, when present, receives the run's seed unless the user sets it.
    """


@hookspec
def register_clusterers(register: Register) -> None:
    """Register clusterer factories: ``register("kmeans", factory, summary="...")``.

    The object a factory returns implements ``fit_predict(features) -> labels`` (-1 is noise),
    ``predict(features)`` where it can assign new points, ``save(dir)`` and ``load(dir)``.
    Wrap a scikit-learn estimator with :class:`imgclust.SklearnClusterer` rather than writing one.
    """


@hookspec
def register_recipes(register: Register) -> None:
    """Register named run configurations: ``register("article", {...}, summary="...")``.

    A recipe is a mapping shaped like a run's ``config.toml``: ``dataset``, ``encoder`` (a list
    of stages), ``clusterer``, and optionally ``seed``, ``split``, ``fit_split``,
    ``validation_split``. Each stage is a mapping with ``name`` and its settings.
    """


@hookspec
def register_commands(app: Any) -> None:
    """Add commands to the ``typer.Typer`` CLI application: ``@app.command()``."""
