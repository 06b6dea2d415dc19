"""The hooks a plugin implements. Their docstrings are the source of docs/hooks.md.

imgclust is a [pluggy](https://pluggy.readthedocs.io) host with the project name `imgclust`. A
plugin is a module (or any object) whose functions are marked `@imgclust.hookimpl` and named
after the hooks below, declared as an entry point in the `imgclust` group of its distribution:

```toml
[project.entry-points.imgclust]
median = "imgclust_median"
```

The bundled stages load the same way. `IMGCLUST_LOAD_PLUGINS` (a comma-separated list of
entry-point names) restricts which third-party plugins load; set it empty for none.

- An implementation names only the arguments it uses: pluggy passes those, so a hook can gain
  an argument in a later version without breaking the plugins written before it.
- A plugin that fails to import, or whose hook raises, is reported against that plugin (a
  warning, and its row in `imgclust plugins`) and everything else keeps working.
- A `@hookimpl` function whose name is not a hook's fails the plugin's loading: no typo is
  silently ignored.

## The `register` callback

Each `register_*` hook receives `register(name, target, *, summary="")`:

- `name`: what users type; lowercase letters, digits, `-` and `_`, starting with a letter or a
  digit.
- `target`: for datasets, encoders, clusterers and refiners a *factory*, a class or a
  function that the core calls with the stage's settings as keyword arguments; for recipes a
  mapping.
- `summary`: one line for `imgclust list`; by default the first line of the target's docstring.
- `measured` (recipes only): what the recipe scored, one mapping per image set, which
  `imgclust list recipes` shows (a recipe registered without says it was not measured).

A bad name, or a target that cannot be called, fails that plugin's registration with a warning
that names it. Every registered name is also reachable as `PLUGIN:NAME` (the plugin's entry-point
name, as `imgclust plugins` lists it: `sklearn-clusterers:kmeans`). When two plugins register the
same name, both are reported, the bare name becomes an error that names both qualified names,
and both `PLUGIN:NAME` forms keep working; the plugins' other names are unaffected, and a recipe
naming a stage its own plugin registers gets its own plugin's.

## Settings

A factory's keyword parameters are its settings: `imgclust list` shows them with their defaults
and the descriptions from a numpydoc `Parameters` section, and `--set stage.key=value` (or a
config file) sets them. Text from the command line is converted by the parameter's annotation:

| annotation | accepted text |
| --- | --- |
| `int`, `float`, `str` | `10`, `0.5`, `text` |
| `bool` | `true`/`false`, `yes`/`no`, `1`/`0`, `on`/`off` |
| `tuple[int, ...]`, `tuple[int, int]` | `32,64,128`, `28x28` |
| `int \\| float` (a count or a fraction) | `30` stays the int 30, `0.05` and `1.0` are floats |
| `X \\| None` | a value of `X`, or `none` |
| `Literal["a", "b"]` | one of the choices |

A setting that is "a count or a fraction" is typed `int | float`, so that a count reaches the
library as an int (scikit-learn's `OPTICS` refuses `min_samples=30.0`); `SklearnClusterer(...,
counts=("min_samples",))` turns a fraction below 1 into that share of the rows it fits, as the
bundled `hdbscan`'s `min_cluster_size` and `min_samples` do.
A parameter named `seed` receives the run's seed unless the user sets it. Unknown names and
badly typed values are one-line errors that list what is accepted. A factory that rejects its
settings raises `imgclust.errors.SettingsError` (or `TypeError`/`ValueError`) with one line.

## Errors

A stage reports bad input by raising `imgclust.ImgclustError` (or `DataError`, `SettingsError`
from `imgclust.errors`) with one line that says what was wrong and what to do; raised while the
stage fits, encodes or clusters, it reaches the user after the stage's name. Any other exception
from a stage is reported as `encoder 'hog' from acme-imgclust 0.2 failed: KeyError: 'missing'`,
and outputs are checked where they leave the stage (one feature row or one label per image,
numbers, no NaN); with `IMGCLUST_DEBUG=1` the original traceback is shown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from imgclust.stages.registry import Register

if TYPE_CHECKING:  # typer is imported by the command line, not by the contract
    import typer

hookspec = pluggy.HookspecMarker("imgclust")
hookimpl = pluggy.HookimplMarker("imgclust")


@hookspec
def register_datasets(register: Register) -> None:
    """Register dataset factories: sources of images.

    Arguments:

    - `register(name, factory, *, summary="")`: call it once per dataset.

    The factory's keyword parameters are the dataset's settings (a `path`, a `size`, a
    `limit`...). The object it returns has `splits`, the names `load` accepts (`"all"`, or
    `"train"`, `"test"` and `"all"`), and `load(split) -> imgclust.ImageSet`: images
    `(N, H, W, C)` in `uint8` (preferred: it is four times smaller) or `float32` in `[0, 1]`, a
    memory map for large sets, with `labels` where they are known and `ids` naming each image.
    Unreadable inputs are skipped and listed in `ImageSet.info["skipped"]`.

    Example:

    ```python
    import numpy as np

    from imgclust import ImageSet, hookimpl


    class Noise:
        \"\"\"Random grey images: a stand-in for a real source.\"\"\"

        splits = ("all",)

        def __init__(self, count: int = 100, size: int = 16, seed: int = 0) -> None:
            self.count, self.size, self.seed = count, size, seed

        def load(self, split: str = "all") -> ImageSet:
            rng = np.random.default_rng(self.seed)
            shape = (self.count, self.size, self.size, 1)
            return ImageSet(rng.integers(0, 256, shape, dtype=np.uint8))


    @hookimpl
    def register_datasets(register):
        register("noise", Noise, summary="random grey images")
    ```
    """


@hookspec
def register_encoders(register: Register) -> None:
    """Register encoder factories: stages that turn images into feature vectors.

    Arguments:

    - `register(name, factory, *, summary="")`: call it once per encoder.

    The object a factory returns implements the `Encoder` interface below:
    `fit(images, validation=None) -> self`, `transform(images) -> (N, D) float32` with one row
    per image and no NaN, `save(directory)` and `load(directory) -> self`. Encoders chain: the
    first sees images `(N, H, W, C)`, each next one the previous one's output. Keep images
    `uint8` until a batch needs floats, and encode in batches.

    Optional attributes the core uses when present:

    - `embedding_`: the training inputs' features after `fit`, used instead of transforming
      them again (UMAP's fitted embedding).
    - `history_`: a dict of per-epoch lists (`loss`, `val_loss`, ...); the last values go into
      `metrics.json` and the training plot.
    - `checkpoint_dir`: set by the run before `fit`; an encoder that trains saves a checkpoint
      there after every epoch and resumes from one when present (`imgclust run --resume`).
    - `reconstruct(images)`: the images restored from their codes, for the reconstructions plot.

    Example:

    ```python
    from imgclust import hookimpl
    from imgclust.kit import to_float


    class RowMeans:
        \"\"\"The mean brightness of each image row: H numbers per image.\"\"\"

        stateless = True  # nothing learned: a saved pipeline rebuilds it, no save/load needed

        def fit(self, images, validation=None):
            return self

        def transform(self, images):
            return to_float(images).mean(axis=(2, 3))  # uint8 0..255 and float 0..1 alike


    @hookimpl
    def register_encoders(register):
        register("row-means", RowMeans, summary="mean brightness per image row")
    ```
    """


@hookspec
def register_clusterers(register: Register) -> None:
    """Register clusterer factories: stages that group feature vectors.

    Arguments:

    - `register(name, factory, *, summary="")`: call it once per clusterer.

    The object a factory returns implements the `Clusterer` interface below:
    `fit_predict(features) -> labels`, one integer per row (`0, 1, ...`, and `-1` for noise),
    `save(directory)` and `load(directory) -> self`, and `predict(features)` where it can
    assign new points. Wrap a scikit-learn estimator with `imgclust.SklearnClusterer` rather
    than writing the class: it saves fitted arrays without pickle and predicts where it can.

    Optional attributes the core uses when present:

    - `can_predict`: whether `predict` can assign new points (default: whether it exists).
    - `n_clusters`: the number of clusters asked for, checked against the number of images.
    - `score_samples(features)`: a dict with a `distance` or `probability` per point, which
      `imgclust predict` writes beside each assignment.

    Example:

    ```python
    from imgclust import SklearnClusterer, hookimpl
    from imgclust.kit import lazy_estimator


    def birch(n_clusters: int = 10, threshold: float = 0.5) -> SklearnClusterer:
        \"\"\"BIRCH: a tree of sub-clusters, then k groups of its leaves.

        Parameters
        ----------
        n_clusters : int
            Number of clusters.
        threshold : float
            Largest radius of a sub-cluster.
        \"\"\"
        make = lazy_estimator("sklearn.cluster", "Birch")  # imports scikit-learn when used
        params = {"n_clusters": n_clusters, "threshold": threshold}
        return SklearnClusterer(make, params, name="birch")


    @hookimpl
    def register_clusterers(register):
        register("birch", birch)
    ```
    """


@hookspec
def register_refiners(register: Register) -> None:
    """Register refiner factories: stages that improve a clusterer's labels from the images.

    Arguments:

    - `register(name, factory, *, summary="")`: call it once per refiner.

    Refiners run after the clusterer, in the order a run's `[[refiner]]` tables list them. The
    object a factory returns implements the `Refiner` interface below:
    `fit_predict(images, features, labels) -> labels` receives the clustered images
    `(N, H, W, C)`, the features the clusterer saw and its labels (numbered `0, 1, ...` with
    the largest cluster first, `-1` for noise) and returns the refined labels in the same
    numbers (a refiner improves clusters, it does not rename them); `predict(images,
    features) -> labels` assigns new images by itself, without the clusterer, so a pipeline
    with a refiner predicts even after a clusterer that cannot; `save(directory)` and
    `load(directory) -> self` as for the other stages. Never look at the true labels: refiners
    see none.

    Example:

    ```python
    import numpy as np

    from imgclust import hookimpl
    from imgclust.kit import read_npy


    class NearestCentre:
        \"\"\"Move each point to the cluster whose mean feature vector is nearest.\"\"\"

        def fit_predict(self, images, features, labels):
            clusters = np.unique(labels[labels >= 0])
            self.centres_ = np.stack([features[labels == c].mean(axis=0) for c in clusters])
            self.clusters_ = clusters
            return self.predict(images, features)

        def predict(self, images, features):
            distances = ((features[:, None, :] - self.centres_[None]) ** 2).sum(axis=2)
            return self.clusters_[distances.argmin(axis=1)]

        def save(self, directory):
            np.save(directory / "centres.npy", self.centres_)
            np.save(directory / "clusters.npy", self.clusters_)

        def load(self, directory):
            self.centres_ = read_npy(directory / "centres.npy", "centres.npy")
            self.clusters_ = read_npy(directory / "clusters.npy", "clusters.npy")
            return self


    @hookimpl
    def register_refiners(register):
        register("nearest-centre", NearestCentre, summary="one k-means step from the labels")
    ```
    """


@hookspec
def register_recipes(register: Register) -> None:
    """Register recipes: named run configurations for `imgclust run --recipe NAME`.

    Arguments:

    - `register(name, recipe, *, summary="", measured=())`: call it once per recipe.
      `measured` holds a mapping per image set it was measured on: `dataset` (the set's name),
      `images` (how many each run clustered), `seeds`, `acc` and `nmi` (mean, lowest and
      highest over the seeds), `seconds` (mean wall time of a run on 2 CPU cores, or None) and
      `source` (where the figures were recorded).

    A recipe is a mapping shaped like a run's `config.toml`: `dataset` (a mapping with `name`
    and settings), `encoder` (a list of such mappings, applied in order), `clusterer`, and
    optionally `refiner` (a list of mappings, applied in order after the clusterer), `seed`,
    `split` (what is clustered), `fit_split` (what the encoders learn from) and
    `validation_split`. A config file and `--set` override any part of it. A recipe made
    for one dataset says so in its name and summary.

    Example:

    ```python
    from imgclust import hookimpl

    PCA_GMM = {
        "dataset": {"name": "digits"},
        "encoder": [{"name": "pca", "n_components": 20}],
        "clusterer": {"name": "gmm", "n_clusters": 10},
    }


    @hookimpl
    def register_recipes(register):
        register("digits-pca-gmm", PCA_GMM, summary="digits: 20 principal components, a GMM")
    ```
    """


@hookspec
def register_commands(app: typer.Typer) -> None:
    """Add commands to the `imgclust` command line.

    Arguments:

    - `app`: a `typer.Typer`; decorate functions with `@app.command()`, or add a group of
      commands with `app.add_typer(sub_app, name="...")`.

    The commands appear as `imgclust NAME` and in `imgclust plugins`. A command may not replace
    a built-in command or another plugin's: one whose name is taken is left out, with a one-line
    warning that names both. Import heavy libraries inside the command, not at module level,
    so that `imgclust --help` stays fast.

    Example:

    ```python
    import typer

    from imgclust import hookimpl


    @hookimpl
    def register_commands(app):
        @app.command()
        def hello(name: str = typer.Argument("world")) -> None:
            \"\"\"Say hello.\"\"\"
            typer.echo(f"hello {name}")
    ```
    """
