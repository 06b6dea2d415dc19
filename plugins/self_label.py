"""The ``self-label`` refiner: a small CNN, trained on each cluster's most confident members with
augmentation, relabels every image and assigns new ones.

Clusterers make systematic mistakes (two shapes merged at a border of the feature space); a
classifier that sees the pixels, trained only on members that lie deep inside their cluster,
learns each cluster's look and moves the border cases. Confidence is never read from true
labels: the first round ranks each cluster's members by their distance to the cluster's mean in
the clustered features (a mixture's posteriors in UMAP space are almost all 1 and cannot rank),
later rounds by the classifier's own probability; the same share of every cluster is kept, so
small clusters stay alive. Augmentation follows the image set's invariances
(``imgclust.kit.invariances``, handed over by the run or measured on the images): shifts, small
rotations and zooms where the set keeps them, and a random mirror, vertical flip or quarter turn
only where the set is measured to be symmetric under it (not digits); the network's features
and answers are then averaged over those symmetries, so that a turned image is described, and
assigned, as the image itself. Keras is imported only when the network is built, trained or
loaded.

With ``labels`` (a ``labels.csv`` the explorer page downloads after a person renamed, merged,
moved and dropped) the person's clusters are taken as they are: the network learns every
labelled image, no image is relabelled, dropped images become noise, and new images are assigned
as the person sorted the run's.

With ``recluster`` a round does not take the classifier's answers: it clusters the images again
in the classifier's hidden features (UMAP, then a Gaussian mixture), which have learnt what
shifts, turns and zooms leave unchanged and so place neighbours better than the pixels did; a
last classifier learns those clusters and assigns every image.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from imgclust.errors import DataError, ImgclustError, SettingsError
from imgclust.kit import (
    SELECT,
    NeighbourSelected,
    SklearnClusterer,
    apply_element,
    atomic,
    check_input_file,
    decide,
    hookimpl,
    human,
    import_keras,
    import_umap,
    lazy_estimator,
    read_csv_cell,
    read_json,
    symmetry_group,
)

MODEL_FILE = "classifier.keras"
META_FILE = "self_label.json"
PREDICT_BATCH = 1024
#: Fewest training steps in a round: small image sets train for more epochs, not fewer steps.
MIN_STEPS = 400


class SelfLabel:
    """Self-labelling: a small CNN trained with augmentation on each cluster's most confident
    members relabels every image; it also assigns new images.

    Parameters
    ----------
    keep : float
        Share of each cluster trained on: its members nearest the cluster's mean feature vector
        (first round), or those the classifier is surest of (later rounds).
    rounds : int
        Rounds of select, train, relabel; stops earlier when fewer than ``tolerance`` of the
        labels change.
    epochs : int
        Training epochs of the first round (later rounds continue the same network for half);
        small image sets get more, so that every round takes at least 400 steps.
    max_steps : int or None
        Most training steps in a round (None: no limit): large image sets then train for fewer
        epochs, or on a random part of the chosen images where one epoch is already more, so
        that a round's training time stops growing with the set.
    filters : tuple[int, ...]
        Filters of each convolution block (``convolutions`` 3x3 convolutions, then 2x2 pooling
        while the image is at least 4 pixels wide).
    convolutions : int
        Convolutions per block: 2 learns more per step, 1 trains about four times faster.
    dense : int
        Width of the hidden dense layer before the softmax.
    batch_size : int
        Images per training step.
    learning_rate : float
        Adam's step size.
    shift : float
        Largest random shift, as a share of the image's side.
    rotation : float
        Largest random rotation in degrees.
    zoom : float
        Largest random zoom in or out, as a share of the side.
    tolerance : float
        Stop when fewer than this share of labels change in a round.
    recluster : bool
        Each round, cluster the images again in the classifier's hidden features (UMAP to 10
        dimensions, then a full-covariance Gaussian mixture, ``starts`` starts kept as
        ``select`` says) instead of taking its most probable class; a last classifier then
        learns the clusters.
    neighbors : int
        UMAP's ``n_neighbors`` when reclustering.
    starts : int
        Gaussian mixture starts when reclustering.
    select : str
        Which of them is kept: ``likelihood``, or ``neighbours`` (the likeliest unless another's
        clusters agree clearly more with each point's nearest neighbours in the embedding, as
        the ``gmm`` clusterer's ``select``): a likelier fit can merge two kinds of image and
        split a third.
    seed : int
        Seed of weight initialisation, augmentation and shuffling.
    labels : str
        A ``labels.csv`` from the run's explorer (``id,cluster,name``; cluster ``dropped`` for
        a dropped image): learn these clusters instead of the clusterer's, one round on every
        labelled image (``keep``, ``rounds`` and ``recluster`` do not apply). Every image of the
        run must have one row.

    ``invariances`` (set by a run, not a setting) names the transformations the images are
    invariant to; None measures them on the images at fit. Only those are used to augment.
    ``image_ids`` (set by a run) names the images, for ``labels``.
    """

    def __init__(
        self,
        keep: float = 0.8,
        rounds: int = 2,
        epochs: int = 4,
        max_steps: int | None = None,
        filters: tuple[int, ...] = (32, 64),
        convolutions: int = 2,
        dense: int = 128,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        shift: float = 0.1,
        rotation: float = 10.0,
        zoom: float = 0.1,
        tolerance: float = 0.001,
        recluster: bool = False,
        neighbors: int = 10,
        starts: int = 3,
        select: Literal["likelihood", "neighbours"] = "likelihood",
        seed: int = 0,
        labels: str = "",
    ) -> None:
        self.keep = float(keep)
        self.rounds = int(rounds)
        self.epochs = int(epochs)
        self.max_steps = None if max_steps is None else int(max_steps)
        self.filters = tuple(int(f) for f in filters)
        self.convolutions = int(convolutions)
        self.dense = int(dense)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.shift = float(shift)
        self.rotation = float(rotation)
        self.zoom = float(zoom)
        self.tolerance = float(tolerance)
        self.recluster = bool(recluster)
        self.neighbors = int(neighbors)
        self.starts = int(starts)
        self.select = str(select)
        self.seed = int(seed)
        self.labels = str(labels or "")
        self._check_settings()
        self.invariances: list[str] | None = None
        self.image_ids: list[str] | None = None
        self.model_: Any = None
        self.augmentations_: list[str] = []
        self.classes_: np.ndarray | None = None
        self.input_shape_: tuple[int, ...] | None = None
        self.scale_: float = 1.0
        self.history_: dict[str, list[float]] = {"changed": [], "kept": []}
        self._hidden_model: tuple[Any, Any] | None = None  # (model_, its hidden-layer model)
        self._last_scored: tuple[Any, np.ndarray] | None = None

    def _check_settings(self) -> None:
        def bad(message: str) -> SettingsError:
            return SettingsError(f"refiner 'self-label': {message}")

        if not 0 < self.keep <= 1:
            raise bad(f"keep is a share of each cluster, above 0 and at most 1; got {self.keep}.")
        if min(self.rounds, self.epochs, self.batch_size, self.dense, self.convolutions) < 1:
            raise bad("rounds, epochs, batch_size, dense and convolutions must be at least 1.")
        if self.max_steps is not None and self.max_steps < MIN_STEPS:
            raise bad(f"max_steps must be at least {MIN_STEPS} (or None: no limit).")
        if not self.filters or any(f < 1 for f in self.filters):
            raise bad(f"filters must be positive widths, e.g. 32,64; got {self.filters}.")
        if not self.learning_rate > 0:
            raise bad("learning_rate must be positive.")
        if not (0 <= self.shift < 1 and 0 <= self.zoom < 1 and 0 <= self.rotation <= 180):
            raise bad("shift and zoom are shares below 1, rotation 0 to 180 degrees.")
        if not 0 <= self.tolerance < 1:
            raise bad("tolerance is a share of the labels, from 0 to below 1.")
        if self.neighbors < 2:
            raise bad(f"neighbors must be at least 2; got {self.neighbors}.")
        if self.starts < 1:
            raise bad(f"starts must be at least 1; got {self.starts}.")
        if self.select not in SELECT:
            raise bad(f"select is {' or '.join(SELECT)}; got {self.select!r}.")

    # Fitting -----------------------------------------------------------------------------------
    def fit_predict(
        self, images: np.ndarray, features: np.ndarray, labels: np.ndarray
    ) -> np.ndarray:
        """Train on the confident members of each cluster, relabel all, repeat; return labels."""
        self._last_scored = None
        images = _as_images(images)
        features = np.asarray(features, dtype=np.float32).reshape(len(images), -1)
        labels = np.asarray(labels, dtype=np.int64)
        classes = np.unique(labels[labels >= 0])
        if len(classes) < 2:
            raise DataError(
                "refiner 'self-label' needs at least 2 clusters to learn from; the clusterer "
                f"found {len(classes)}: ask it for more."
            )
        if self.labels:
            return self._fit_curated(images, labels)
        self._start(images, classes)
        current = labels
        confidence = -_distance_to_centre(features, labels)
        for round_ in range(self.rounds):
            chosen = _most_confident(current, confidence, self.keep)
            if self.recluster and round_ > 0:
                self.model_ = self._build(len(classes))  # a fresh start for the new clusters
            first = round_ == 0 or self.recluster
            loss = self._train(images, chosen, current, self.epochs if first else self.epochs // 2)
            if self.recluster:
                relabelled, embedding, hidden = self._recluster(images, current)
                confidence = -_distance_to_centre(embedding, relabelled)
            else:
                probabilities = self._probabilities(images)
                relabelled = classes[probabilities.argmax(axis=1)]
                confidence = probabilities.max(axis=1)
            changed = float(np.mean(relabelled != current))
            self.history_["changed"].append(changed)
            self.history_["kept"].append(int(len(chosen)))
            self.history_["loss"].append(loss)
            current = relabelled
            if changed < self.tolerance:
                break
        if self.recluster:  # the network's last layer learns the final clusters and assigns
            self._fit_head(hidden, current)
            current = classes[self._probabilities(images).argmax(axis=1)]
        return current

    def _start(self, images: np.ndarray, classes: np.ndarray) -> None:
        """Seed, the classes and input, the augmentations, and a fresh network."""
        keras = import_keras()
        keras.utils.set_random_seed(self.seed)
        self.classes_ = classes
        self.input_shape_ = tuple(int(v) for v in images.shape[1:])
        kept = self.invariances
        if kept is None:
            kept = list(decide(images, "auto", seed=self.seed).kept)
        self.augmentations_ = self._augmentations(kept)
        self.scale_ = 1 / 255 if images.dtype == np.uint8 else 1.0
        self.model_ = self._build(len(classes))
        self.history_ = {"changed": [], "kept": [], "loss": []}

    def _fit_curated(self, images: np.ndarray, clustered: np.ndarray) -> np.ndarray:
        """Learn the clusters a person curated (``labels``) and return them: every labelled
        image trains, dropped ones are noise (-1)."""
        curated = read_curated_labels(Path(self.labels), self.image_ids, len(images))
        classes = np.unique(curated[curated >= 0])
        if len(classes) < 2:
            raise DataError(
                f"refiner 'self-label': {self.labels!r} leaves {len(classes)} cluster; it needs "
                "at least 2 to learn from."
            )
        self._start(images, classes)
        chosen = np.flatnonzero(curated >= 0)
        loss = self._train(images, chosen, curated, self.epochs)
        self.history_["changed"].append(float(np.mean(curated != clustered)))
        self.history_["kept"].append(int(len(chosen)))
        self.history_["loss"].append(loss)
        return curated

    def _train(
        self, images: np.ndarray, chosen: np.ndarray, labels: np.ndarray, epochs: int
    ) -> float:
        """Fit the network on the chosen images for ``epochs`` (at least MIN_STEPS steps, at most
        ``max_steps``); return the training loss of the last epoch."""
        steps_per_epoch = math.ceil(len(chosen) / self.batch_size)
        epochs = max(1, epochs, math.ceil(MIN_STEPS / steps_per_epoch))
        if self.max_steps is not None and epochs * steps_per_epoch > self.max_steps:
            if steps_per_epoch > self.max_steps:  # one epoch is too many: a random part of it
                rng = np.random.default_rng([self.seed, len(self.history_["changed"]), 1])
                kept = self.max_steps * self.batch_size
                chosen = np.sort(rng.choice(chosen, kept, replace=False))
                steps_per_epoch = self.max_steps
            epochs = max(1, self.max_steps // steps_per_epoch)
        targets = np.searchsorted(self._fitted_classes(), labels[chosen])
        if "quarter-turn" not in self.augmentations_:
            fitted = self.model_.fit(
                images[chosen],
                targets,
                batch_size=self.batch_size,
                epochs=epochs,
                shuffle=True,
                verbose=0,
            )
            return float(fitted.history["loss"][-1])
        rng = np.random.default_rng([self.seed, len(self.history_["changed"])])
        for _ in range(epochs):  # each epoch sees every image turned anew
            turns = rng.integers(0, 4, len(chosen))
            turned = np.stack(
                [np.rot90(images[i], k, axes=(0, 1)) for i, k in zip(chosen, turns, strict=True)]
            )
            fitted = self.model_.fit(
                turned, targets, batch_size=self.batch_size, epochs=1, shuffle=True, verbose=0
            )
        return float(fitted.history["loss"][-1])

    def _recluster(
        self, images: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cluster the images again in the classifier's hidden features; the new clusters take
        the numbers of the old ones they overlap most. Returns the labels, the embedding and
        the hidden features."""
        features = self._hidden(images)
        try:
            embedding = _embed(features, self.neighbors, self.seed)
            found = self._mixture_labels(embedding)
        except ValueError as exc:
            reason = " ".join(str(exc).split())[:200]
            raise DataError(f"refiner 'self-label' could not recluster: {reason}") from None
        return _matched(found, labels, self._fitted_classes()), embedding, features

    def _mixture_labels(self, embedding: np.ndarray) -> np.ndarray:
        """A full-covariance Gaussian mixture's clusters of the embedding, of ``starts`` starts
        the one ``select`` keeps."""
        params = {
            "n_components": len(self._fitted_classes()),
            "covariance_type": "full",
            "n_init": self.starts,
            "reg_covar": 1e-4,
            "random_state": self.seed,
        }
        adapter = NeighbourSelected if self.select == "neighbours" else SklearnClusterer
        mixture = adapter(lazy_estimator("sklearn.mixture", "GaussianMixture"), params)
        return np.asarray(mixture.fit_predict(embedding), dtype=np.int64)

    def _fit_head(self, hidden: np.ndarray, labels: np.ndarray) -> None:
        """Retrain only the softmax layer, on the hidden features, to give ``labels``: the
        clusters were found in those features, so a linear layer on them reproduces them far
        more closely than a network trained afresh on the images would."""
        keras = import_keras()
        layer = self.model_.get_layer("classes")
        head = keras.Sequential(
            [
                keras.Input(shape=(hidden.shape[1],)),
                keras.layers.Dense(len(self._fitted_classes()), activation="softmax"),
            ]
        )
        head.layers[-1].set_weights(layer.get_weights())
        head.compile(
            optimizer=keras.optimizers.Adam(learning_rate=1e-2),
            loss="sparse_categorical_crossentropy",
        )
        batch = 256
        epochs = max(10, math.ceil(MIN_STEPS / math.ceil(len(hidden) / batch)))
        head.fit(
            hidden,
            np.searchsorted(self._fitted_classes(), labels),
            batch_size=batch,
            epochs=epochs,
            shuffle=True,
            verbose=0,
        )
        layer.set_weights(head.layers[-1].get_weights())

    def _build(self, n_classes: int) -> Any:
        """The compiled classifier: rescaling, augmentation, conv blocks, dense, softmax."""
        keras = import_keras()
        layers = keras.layers
        height, width, channels = self.input_shape_  # type: ignore[misc]
        inputs = keras.Input(shape=(height, width, channels), name="images")
        x = layers.Rescaling(self.scale_, name="rescale")(inputs)
        for layer in self._augmentation_layers():
            x = layer(x)
        side = min(height, width)
        for i, filters in enumerate(self.filters, 1):
            for j in range(1, self.convolutions + 1):
                x = layers.Conv2D(
                    filters, 3, padding="same", activation="relu", name=f"conv{i}_{j}"
                )(x)
            if side >= 4:
                x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
                side //= 2
        x = layers.Flatten()(x)
        x = layers.Dropout(0.3, seed=self.seed)(x)
        x = layers.Dense(self.dense, activation="relu", name="hidden")(x)
        x = layers.Dropout(0.3, seed=self.seed + 1)(x)
        outputs = layers.Dense(n_classes, activation="softmax", name="classes")(x)
        model = keras.Model(inputs, outputs, name="self_label")
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=self.learning_rate),
            loss="sparse_categorical_crossentropy",
        )
        return model

    def _augmentations(self, kept: list[str]) -> list[str]:
        """The transformations training applies: the kept ones this network can use."""
        height, width = self.input_shape_[:2]  # type: ignore[index]
        usable = {
            "shift": self.shift > 0,
            "rotation": self.rotation > 0,
            "scale": self.zoom > 0,
            "mirror": True,
            "vertical-flip": True,
            "quarter-turn": height == width,
        }
        return [name for name in usable if usable[name] and name in kept]

    def _augmentation_layers(self) -> list[Any]:
        """Keras layers for the chosen augmentations but quarter turns (:meth:`_train` turns
        the images itself); they act only while training and save as plain Keras layers."""
        layers = import_keras().layers
        chosen = self.augmentations_
        made: list[Any] = []
        flips = [f for f, name in (("horizontal", "mirror"), ("vertical", "vertical-flip"))
                 if name in chosen]  # fmt: skip
        if flips:
            made.append(layers.RandomFlip("_and_".join(flips)))
        if "shift" in chosen:
            made.append(layers.RandomTranslation(self.shift, self.shift, fill_mode="nearest"))
        if "rotation" in chosen:
            made.append(layers.RandomRotation(self.rotation / 360.0, fill_mode="nearest"))
        if "scale" in chosen:
            made.append(layers.RandomZoom(self.zoom, fill_mode="nearest"))
        return made

    # Assigning ---------------------------------------------------------------------------------
    def predict(self, images: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """The cluster of each image: the classifier's most probable one."""
        probabilities = self._scored(self._checked(images))
        return self._fitted_classes()[probabilities.argmax(axis=1)]

    def score_samples(self, images: np.ndarray, features: np.ndarray | None = None) -> dict:
        """The classifier's probability of each image's cluster, for ``imgclust predict``."""
        return {"probability": self._scored(self._checked(images)).max(axis=1)}

    def _scored(self, images: np.ndarray) -> np.ndarray:
        """The classifier's probabilities, computed once for the same images: a pipeline asks
        ``predict`` and then ``score_samples`` of every batch it assigns (the images' digest,
        not their identity, says they are the same)."""
        digest = hashlib.blake2b(np.ascontiguousarray(images).data, digest_size=16).digest()
        key = (images.shape, images.dtype.str, digest)
        if self._last_scored is None or self._last_scored[0] != key:
            self._last_scored = (key, self._probabilities(images))
        return self._last_scored[1]

    def _fitted_classes(self) -> np.ndarray:
        """The cluster ids the classifier predicts, set by fitting."""
        if self.classes_ is None:
            raise ImgclustError("refiner 'self-label' is not fitted: call fit_predict() first.")
        return self.classes_

    def _checked(self, images: np.ndarray) -> np.ndarray:
        if self.model_ is None or self.classes_ is None:
            raise ImgclustError("refiner 'self-label' is not fitted: call fit_predict() first.")
        images = _as_images(images)
        if tuple(images.shape[1:]) != self.input_shape_:
            raise DataError(
                f"refiner 'self-label' was trained on {self.input_shape_} images; got "
                f"{tuple(images.shape[1:])}."
            )
        return images

    def _scaled(self, images: np.ndarray) -> np.ndarray:
        """Images in the scale the network was trained for (uint8 for float or the reverse)."""
        given = 1 / 255 if images.dtype == np.uint8 else 1.0
        if given != self.scale_:
            images = images.astype(np.float32) * np.float32(given / self.scale_)
        return images

    def _probabilities(self, images: np.ndarray) -> np.ndarray:
        """The classifier's softmax on the symmetry-averaged hidden features (:meth:`_hidden`);
        without symmetries, exactly the network's own output."""
        weights, bias = self.model_.get_layer("classes").get_weights()
        logits = self._hidden(images).astype(np.float64) @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        exponents = np.exp(logits)
        return (exponents / exponents.sum(axis=1, keepdims=True)).astype(np.float32)

    def _hidden(self, images: np.ndarray) -> np.ndarray:
        """The hidden layer's features of each image, averaged over the grid symmetries the
        network was trained with (a mirror, flip or quarter turns, where the set keeps them).

        Training makes the network's answers invariant, not its features: they still say how
        an image was turned, and clustering them groups images by orientation before shape.
        Their mean over the symmetries is invariant by construction.
        """
        keras = import_keras()
        if self._hidden_model is None or self._hidden_model[0] is not self.model_:
            layer = self.model_.get_layer("hidden")
            self._hidden_model = (self.model_, keras.Model(self.model_.input, layer.output))
        model = self._hidden_model[1]
        height, width = self.input_shape_[:2]  # type: ignore[index]
        symmetries = symmetry_group(self.augmentations_, square=height == width)
        batches = []
        for start in range(0, len(images), PREDICT_BATCH):
            chunk = self._scaled(images[start : start + PREDICT_BATCH])
            views = [
                np.asarray(model.predict_on_batch(np.ascontiguousarray(apply_element(chunk, s))))
                for s in symmetries
            ]
            batches.append(np.mean(views, axis=0, dtype=np.float64).astype(np.float32))
        return np.concatenate(batches)

    # Saving ------------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """The classifier as a native ``.keras`` file and its classes and shape as JSON."""
        if self.model_ is None or self.classes_ is None:
            raise ImgclustError("refiner 'self-label' is not fitted: nothing to save.")
        directory = Path(directory)
        temporary = directory / f".tmp-{MODEL_FILE}"
        self.model_.save(temporary)
        os.replace(temporary, directory / MODEL_FILE)
        atomic.write_json(
            directory / META_FILE,
            {
                "classes": [int(c) for c in self.classes_],
                "input_shape": list(self.input_shape_ or ()),
                "scale": self.scale_,
                "history": self.history_,
                "augmentations": self.augmentations_,
            },
        )

    def load(self, directory: Path) -> SelfLabel:
        """Read the classifier in Keras safe mode (no code from the file runs)."""
        self._last_scored = None
        keras = import_keras()
        directory = Path(directory)
        try:
            meta = read_json(directory / META_FILE, f"refiner 'self-label': {META_FILE}")
            self.classes_ = np.asarray([int(c) for c in meta["classes"]], dtype=np.int64)
            self.input_shape_ = tuple(int(v) for v in meta["input_shape"])
            self.scale_ = float(meta["scale"])
            self.history_ = dict(meta.get("history") or {})
            self.augmentations_ = [str(a) for a in meta.get("augmentations") or []][:16]
            if len(self.input_shape_) != 3 or not math.isfinite(self.scale_):
                raise ValueError("the input shape or scale is damaged")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"refiner 'self-label': cannot read {META_FILE}: {exc}") from None
        try:
            self.model_ = keras.saving.load_model(
                directory / MODEL_FILE, safe_mode=True, compile=False
            )
        except (ValueError, TypeError, OSError) as exc:
            reason = " ".join(str(exc).split())[:200]
            raise DataError(f"refiner 'self-label': cannot load {MODEL_FILE}: {reason}") from None
        return self


# Curated labels --------------------------------------------------------------------------------
CURATED_BYTES_PER_IMAGE = 1024  # an id of a few hundred characters, escaped, and its cluster
CURATED_BASE_BYTES = 2**20
MAX_CLUSTER = 2**31 - 1
DROPPED = "dropped"


def read_curated_labels(path: Path, ids: list[str] | None, count: int) -> np.ndarray:
    """The cluster of every image from a ``labels.csv`` the explorer downloaded: -1 for a
    dropped (or noise) image. The file is untrusted: read up to a size that follows from the
    run, every id must be one of the run's, once, and every image must have a row."""
    where = f"refiner 'self-label': labels {str(path)!r}"
    if ids is None or len(ids) != count:
        raise ImgclustError(
            f"{where} are matched to images by id, and the run named none: set image_ids to "
            "one id per image (a run does)."
        )
    check_input_file(path, "labels file")
    limit = CURATED_BASE_BYTES + CURATED_BYTES_PER_IMAGE * count
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise DataError(
                f"{where} is larger than the {human(limit)} labels of {count} images can need: "
                "give the labels.csv the run's report.html downloads."
            )
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    except UnicodeDecodeError as exc:
        raise DataError(f"{where} is not UTF-8 text (byte {exc.start}).") from None
    except (OSError, csv.Error) as exc:
        raise DataError(f"{where} cannot be read: {' '.join(str(exc).split())[:120]}.") from None
    header = [cell.strip() for cell in rows[0]] if rows else []
    if "id" not in header or "cluster" not in header:
        raise DataError(f"{where} has no id and cluster columns: give the page's labels.csv.")
    column_id, column_cluster = header.index("id"), header.index("cluster")
    row_of = {image_id: row for row, image_id in enumerate(ids)}
    curated = np.full(count, -2, dtype=np.int64)
    for line, row in enumerate(rows[1:], start=2):
        if len(row) <= max(column_id, column_cluster):
            raise DataError(f"{where}: line {line} has too few cells.")
        text = row[column_id]
        found = row_of.get(text, row_of.get(read_csv_cell(text)))
        if found is None:
            raise DataError(
                f"{where}: line {line} names an image this run does not have: give the labels "
                "of this run's images."
            )
        if curated[found] != -2:
            raise DataError(f"{where}: line {line} names an image a second time.")
        curated[found] = _curated_cluster(row[column_cluster].strip(), where, line)
    missing = int((curated == -2).sum())
    if missing:
        first = ids[int(np.argmax(curated == -2))]
        raise DataError(
            f"{where} has no row for {missing} of the run's {count} images (first: "
            f"{first[:60]!r}): give the labels.csv the page downloads, which has every image."
        )
    return curated


def _curated_cluster(text: str, where: str, line: int) -> int:
    """A labels.csv cluster: a number from -1, or ``dropped`` (-1)."""
    if text == DROPPED:
        return -1
    if not (text.lstrip("-").isdigit() and len(text) <= 11) or not -1 <= int(text) <= MAX_CLUSTER:
        raise DataError(
            f"{where}: line {line} has a cluster that is neither a number from -1 nor {DROPPED!r}."
        )
    return int(text)


# Confidence ------------------------------------------------------------------------------------
def _distance_to_centre(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each point's distance to the mean of its cluster (noise: infinitely far)."""
    distance = np.full(len(labels), np.inf, dtype=np.float64)
    for cluster in np.unique(labels[labels >= 0]):
        members = labels == cluster
        centre = features[members].mean(axis=0)
        distance[members] = np.linalg.norm(features[members] - centre, axis=1)
    return distance


def _most_confident(labels: np.ndarray, confidence: np.ndarray, share: float) -> np.ndarray:
    """Indices of the ``share`` most confident members of every cluster (at least one each)."""
    chosen = []
    for cluster in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == cluster)
        count = max(1, int(math.ceil(share * len(members))))
        order = np.argsort(-confidence[members], kind="stable")
        chosen.append(members[order[:count]])
    return np.sort(np.concatenate(chosen))


# Reclustering ---------------------------------------------------------------------------------
def _embed(features: np.ndarray, neighbors: int, seed: int) -> np.ndarray:
    """UMAP of the classifier's features to (at most) 10 dimensions, min_dist 0, as N2D does."""

    n = len(features)
    model = import_umap().UMAP(
        n_components=max(1, min(10, n - 2)),
        n_neighbors=max(2, min(neighbors, n - 1)),
        min_dist=0.0,
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        return np.asarray(model.fit_transform(features), dtype=np.float64)


def _matched(found: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``found`` (0..k-1) renamed to the classes they share most images with (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    k = len(classes)
    overlap = np.zeros((k, k), dtype=np.int64)
    known = labels >= 0
    np.add.at(overlap, (found[known], np.searchsorted(classes, labels[known])), 1)
    rows, columns = linear_sum_assignment(-overlap)
    names = np.empty(k, dtype=np.int64)
    names[rows] = classes[columns]
    return names[found]


def _as_images(images: Any) -> np.ndarray:
    """(N, H, W, C) uint8 or float32 images; anything else is a one-line error."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or len(images) == 0:
        raise DataError(
            f"refiner 'self-label' needs images (N, H, W, C); got shape {tuple(images.shape)}."
        )
    if images.dtype not in (np.uint8, np.float32):
        images = images.astype(np.float32)
    return images


@hookimpl
def register_refiners(register):
    register("self-label", SelfLabel)
