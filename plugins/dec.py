"""The ``dec`` refiner: DEC, IDEC and DCEC, a clustering layer that fine-tunes an autoencoder.

An autoencoder (``conv-ae`` built as DCEC's network, or ``dense-ae``, as DEC and IDEC) is
pretrained on the images; a clustering layer holds one centre per given cluster (k-means on the
pretrained code, started at the cluster's mean code, as DEC starts from k-means on its code) and
gives Student's t soft assignments q. Every ``update_interval`` steps the sharpened target p (q
squared over the cluster's soft size, normalised) is recomputed, and the encoder, decoder and
centres are trained to minimise the reconstruction loss plus ``gamma`` times KL(p || q) (IDEC's
and DCEC's weighting, gamma 0.1, so that the code does not distort; ``reconstruction = false``
is plain DEC). Training stops when fewer than ``tolerance`` of the labels change between updates.

A guard keeps the best state it passed through, the given clusters included: every state's labels
are scored by how much a point's cluster tells about its neighbours' clusters (the mutual
information of the labels across the 10-nearest-neighbour pairs of the features the clusterer
saw, a fixed space that fine-tuning cannot bend). It is highest for many clusters whose
boundaries fall where the data is sparse; merging clusters or cutting through dense regions lowers
it. If no fine-tuned state beats the given clusters, they are kept, and new images go to the
nearest of their mean features; otherwise new images are assigned through the fine-tuned encoder
and the centres. ``stop_reason_`` says when and why it stopped.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np

import imgclust
from imgclust.errors import DataError, ImgclustError, SettingsError
from imgclust.kit import (
    atomic,
    hookimpl,
    import_keras,
    neighbour_information,
    neighbour_pairs,
    read_json,
    read_npy,
)

#: Each ``autoencoder`` setting: the encoder stage that builds it and its settings there.
AUTOENCODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "dcec": (
        "conv-ae",
        {
            "filters": (32, 64, 128),
            "kernel_size": (5, 5, 3),
            "downsample": "stride",
            "output": "linear",
            "loss": "mse",
            "optimizer": "adam",
        },
    ),
    "conv-ae": (
        "conv-ae",
        {"filters": (32, 64, 128), "output": "linear", "loss": "mse", "optimizer": "adam"},
    ),
    "article": ("conv-ae", {}),
    "dense-ae": ("dense-ae", {}),
}
META_FILE = "dec.json"
CENTRES_FILE = "centres.npy"
START_FILE = "start_centres.npy"
AUTOENCODER_DIR = "autoencoder"
#: Fewest pretraining steps: small image sets train for more epochs, not fewer steps.
MIN_PRETRAIN_STEPS = 1000


class DEC:
    """DEC/IDEC/DCEC: fine-tune an autoencoder's code with a clustering layer (reconstruction
    loss plus gamma times KL to a sharpened target); assigns new images by the nearest centre.

    Parameters
    ----------
    autoencoder : str
        The autoencoder: dcec (DCEC's published network: convolutions 32-64-128 of stride 2,
        kernels 5-5-3, a dense code, a linear output), conv-ae (the same widths with
        max-pooling), article (the article's conv-ae, 16-2 filters, its 7x7x2 grid code;
        code_size is not used) or dense-ae (DEC and IDEC: d-500-500-2000-code).
    code_size : int
        Numbers in the code the clustering layer sees (DEC and DCEC use 10).
    pretrain_epochs : int
        Epochs of reconstruction training before the clustering layer is added (small image
        sets get more, so that pretraining takes at least 1,000 steps).
    gamma : float
        Weight of the clustering loss beside the reconstruction loss's 1 (IDEC and DCEC: 0.1).
    reconstruction : bool
        Keep the reconstruction loss while fine-tuning (IDEC, DCEC); false is plain DEC.
    start : str
        kmeans: centres from k-means on the pretrained code, started at the given clusters'
        mean codes (DEC starts from k-means on its own code); labels: those mean codes as they are.
    optimizer : str
        Fine-tuning optimizer: adam (DCEC) or sgd with momentum 0.9 (DEC).
    learning_rate : float | None
        Fine-tuning step size; None: 0.001 for adam, 0.01 for sgd, as published.
    update_interval : int
        Training steps between updates of the target distribution (DEC-keras: 140).
    max_steps : int
        Most fine-tuning steps.
    tolerance : float
        Stop when fewer than this share of labels change between two target updates.
    keep_best : bool
        Keep the best state seen at the target updates by the neighbour criterion, the given
        clusters included, so that fine-tuning never ends below its start by that criterion.
    batch_size : int
        Images per step.
    seed : int
        Seed of the autoencoder's initialisation, of k-means and of the batches.
    """

    def __init__(
        self,
        autoencoder: Literal["dcec", "conv-ae", "article", "dense-ae"] = "dcec",
        code_size: int = 10,
        pretrain_epochs: int = 20,
        gamma: float = 0.1,
        reconstruction: bool = True,
        start: Literal["kmeans", "labels"] = "kmeans",
        optimizer: Literal["adam", "sgd"] = "adam",
        learning_rate: float | None = None,
        update_interval: int = 140,
        max_steps: int = 4000,
        tolerance: float = 0.001,
        keep_best: bool = True,
        batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        self.autoencoder = autoencoder
        self.code_size = int(code_size)
        self.pretrain_epochs = int(pretrain_epochs)
        self.gamma = float(gamma)
        self.reconstruction = bool(reconstruction)
        self.start = start
        self.optimizer = optimizer
        self.learning_rate = None if learning_rate is None else float(learning_rate)
        self.update_interval = int(update_interval)
        self.max_steps = int(max_steps)
        self.tolerance = float(tolerance)
        self.keep_best = bool(keep_best)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self._check_settings()
        self.ae_: Any = None
        self.centres_: np.ndarray | None = None
        self.classes_: np.ndarray | None = None
        self.history_: dict[str, list[float]] = {"changed": []}
        self.stop_reason_ = ""
        self.start_centres_: np.ndarray | None = None  # the given clusters' mean features
        self.kept_start_ = False

    def _check_settings(self) -> None:
        def bad(message: str) -> SettingsError:
            return SettingsError(f"refiner 'dec': {message}")

        if self.autoencoder not in AUTOENCODERS:
            raise bad(
                f"autoencoder must be one of {', '.join(AUTOENCODERS)}; got {self.autoencoder!r}."
            )
        if self.start not in ("kmeans", "labels"):
            raise bad(f"start must be kmeans or labels; got {self.start!r}.")
        if self.optimizer not in ("adam", "sgd"):
            raise bad(f"optimizer must be adam or sgd; got {self.optimizer!r}.")
        if min(self.code_size, self.pretrain_epochs, self.update_interval, self.batch_size) < 1:
            raise bad("code_size, pretrain_epochs, update_interval and batch_size must be >= 1.")
        if not self.gamma > 0:
            raise bad(
                "gamma, the clustering loss's weight, must be positive (plain DEC: "
                "reconstruction = false)."
            )
        if self.max_steps < 0 or not 0 <= self.tolerance < 1:
            raise bad("max_steps must be >= 0 and tolerance a share below 1.")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise bad("learning_rate must be positive (or none for the optimizer's own).")

    def _make_autoencoder(self) -> Any:
        """The autoencoder stage, built by its plugin with DEC's or DCEC's shape."""
        stage, shape = AUTOENCODERS[self.autoencoder]
        settings = {
            "epochs": self.pretrain_epochs,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }
        if self.autoencoder != "article":
            settings["code_size"] = self.code_size
        return imgclust.get_encoder(stage, **settings, **shape).instance

    # Fitting -----------------------------------------------------------------------------------
    def fit_predict(
        self, images: np.ndarray, features: np.ndarray, labels: np.ndarray
    ) -> np.ndarray:
        """Pretrain the autoencoder, start the centres from the labels, fine-tune; return labels."""
        images = _as_images(images)
        labels = np.asarray(labels, dtype=np.int64)
        classes = np.unique(labels[labels >= 0])
        if len(classes) < 2:
            raise DataError(
                "refiner 'dec' needs at least 2 clusters to start from; the clusterer found "
                f"{len(classes)}: ask it for more."
            )
        features = _as_features(features, len(images))
        keras = import_keras()
        self.classes_ = classes
        self.start_centres_ = np.stack([features[labels == c].mean(axis=0) for c in classes])
        self.kept_start_ = False
        neighbours = neighbour_pairs(features, self.seed)
        start_score = neighbour_information(self._nearest_start(features), neighbours)
        self.ae_ = self._make_autoencoder()
        steps_per_epoch = math.ceil(len(images) / self.batch_size)
        self.ae_.epochs = max(self.pretrain_epochs, math.ceil(MIN_PRETRAIN_STEPS / steps_per_epoch))
        self.ae_.fit(images)
        codes = self.ae_.transform(images)
        self.centres_ = self._starting_centres(codes, labels, classes)
        self.history_ = {"changed": [], "start_criterion": [start_score], "loss": []}
        self.history_["pretrain_loss"] = [float(v) for v in self.ae_.history_.get("loss", [])]
        best_score = self._fine_tune(keras, images, neighbours, start_score)
        if self.keep_best and best_score <= start_score:
            self.kept_start_ = True
            self.stop_reason_ += (
                f"; kept start: the criterion did not improve (start {start_score:.4f}, best "
                f"fine-tuned {best_score:.4f})"
            )
        return self.predict(images, features)

    def _nearest_start(self, features: np.ndarray) -> np.ndarray:
        """The given cluster whose mean feature vector is nearest each row of ``features``."""
        assert self.start_centres_ is not None and self.classes_ is not None
        centres = self.start_centres_.astype(np.float64)
        nearest = np.empty(len(features), dtype=np.int64)
        for start in range(0, len(features), 4096):  # bounded distance matrices
            chunk = np.asarray(features[start : start + 4096], dtype=np.float64)
            squared = (chunk**2).sum(1)[:, None] - 2 * chunk @ centres.T + (centres**2).sum(1)
            nearest[start : start + len(chunk)] = squared.argmin(axis=1)
        return self.classes_[nearest]

    def _starting_centres(
        self, codes: np.ndarray, labels: np.ndarray, classes: np.ndarray
    ) -> np.ndarray:
        """Each given cluster's mean code, then (start = kmeans) k-means on the code from them."""
        means = np.stack([codes[labels == c].mean(axis=0) for c in classes]).astype(np.float64)
        if self.start == "labels":
            return means.astype(np.float32)
        from sklearn.cluster import KMeans

        kmeans = KMeans(len(classes), init=means, n_init=1, random_state=self.seed)
        return kmeans.fit(codes.astype(np.float64)).cluster_centers_.astype(np.float32)

    def _fine_tune(
        self, keras: Any, images: np.ndarray, neighbours: np.ndarray, start_score: float
    ) -> float:
        """Minimise the reconstruction loss plus gamma times KL(p || q) over the encoder, the
        decoder and the centres, updating p every ``update_interval`` steps; keep the state whose
        labels score best by the neighbour criterion and return that score."""
        ops = keras.ops
        ae = self.ae_
        x = images.reshape(len(images), -1) if self.autoencoder == "dense-ae" else images
        encoder = ae.encoder_model()
        initial = np.asarray(self.centres_, dtype=np.float32)

        class Clustering(keras.layers.Layer):
            """Student's t soft assignment of each code to trainable centres."""

            def build(self, input_shape: Any) -> None:
                self.centres = self.add_weight(shape=initial.shape, name="centres")
                self.centres.assign(initial)

            def call(self, z: Any) -> Any:
                squared = ops.sum(ops.square(ops.expand_dims(z, 1) - self.centres), axis=2)
                q = 1.0 / (1.0 + squared)
                return q / ops.sum(q, axis=1, keepdims=True)

        clustering = Clustering(name="clustering")
        code = encoder.output
        if len(code.shape) > 2:  # a grid code (the article's 7x7x2), flattened as transform() does
            code = keras.layers.Flatten(name="flat_code")(code)
        q_out = clustering(code)
        outputs = [q_out, ae.fitted().output] if self.reconstruction else [q_out]
        model = keras.Model(ae.fitted().input, outputs)
        objectives: list[Any] = ["kl_divergence"]
        if self.reconstruction:
            kind = getattr(ae, "loss", "mse")
            objectives.append(ae.pixel_loss(kind if kind in ("bce", "mse") else "mse", ae.scale_))
        if self.optimizer == "sgd":
            optimizer = keras.optimizers.SGD(learning_rate=self.learning_rate or 0.01, momentum=0.9)
        else:
            optimizer = keras.optimizers.Adam(learning_rate=self.learning_rate or 1e-3)
        model.compile(
            optimizer=optimizer,
            loss=objectives,
            loss_weights=[self.gamma, 1.0][: len(objectives)],
        )
        rng = np.random.default_rng(self.seed)
        previous = None
        losses: list[float] = []  # the training loss of each step since the targets changed
        best: tuple[float, int, list[np.ndarray]] | None = None
        assert self.classes_ is not None
        order = rng.permutation(len(x))
        position = 0
        step = 0
        self.stop_reason_ = f"reached max_steps ({self.max_steps})"
        for step in range(self.max_steps + 1):
            if step % self.update_interval == 0 or step == self.max_steps:
                q = self._soft_assignments(images, centres=np.asarray(clustering.centres))
                target = _target_distribution(q)
                current = q.argmax(axis=1)
                score = neighbour_information(self.classes_[current], neighbours)
                self.history_.setdefault("step", []).append(step)
                self.history_.setdefault("criterion", []).append(score)
                if best is None or score > best[0]:
                    best = (score, step, [np.array(w) for w in model.get_weights()])
                if previous is not None:
                    changed = float(np.mean(current != previous))
                    self.history_["changed"].append(changed)
                    self.history_["loss"].append(float(np.mean(losses)) if losses else 0.0)
                    losses = []
                    if changed < self.tolerance:
                        self.stop_reason_ = (
                            f"labels changed {changed:.4f} < tolerance {self.tolerance} at step "
                            f"{step}"
                        )
                        break
                previous = current
                if step == self.max_steps:
                    break
            if position + self.batch_size > len(x):
                order, position = rng.permutation(len(x)), 0
            batch = order[position : position + self.batch_size]
            position += self.batch_size
            wanted = [target[batch], x[batch]] if self.reconstruction else [target[batch]]
            logs = model.train_on_batch(x[batch], wanted, return_dict=True)
            losses.append(float(logs["loss"]))
        assert best is not None
        if self.keep_best and best[1] != step and best[0] > start_score:
            model.set_weights(best[2])
            self.stop_reason_ += f"; kept step {best[1]}: the criterion was best there"
        self.centres_ = np.asarray(clustering.centres, dtype=np.float32)
        return best[0]

    # Assigning ---------------------------------------------------------------------------------
    def _soft_assignments(
        self, images: np.ndarray, centres: np.ndarray | None = None
    ) -> np.ndarray:
        """q: each image's Student's t assignment to the centres, from the encoder's code."""
        codes = self.ae_.transform(images).astype(np.float64)
        centres = self.centres_ if centres is None else centres
        squared = ((codes[:, None, :] - np.asarray(centres, dtype=np.float64)[None]) ** 2).sum(2)
        q = 1.0 / (1.0 + squared)
        return q / q.sum(axis=1, keepdims=True)

    def predict(self, images: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """The cluster whose centre is nearest each image's code (or, where the guard kept the
        given clusters, whose mean feature vector is nearest the image's features)."""
        if self.ae_ is None or self.centres_ is None or self.classes_ is None:
            raise ImgclustError("refiner 'dec' is not fitted: call fit_predict() first.")
        images = _as_images(images)
        if self.kept_start_:
            if features is None:
                raise DataError(
                    "refiner 'dec' kept the clusterer's clusters and assigns by their mean "
                    "features: pass the features too."
                )
            return self._nearest_start(_as_features(features, len(images)))
        return self.classes_[self._soft_assignments(images).argmax(axis=1)]

    def score_samples(self, images: np.ndarray, features: np.ndarray | None = None) -> dict:
        """The soft assignment to each image's cluster, for ``imgclust predict`` (none where the
        guard kept the given clusters: they came with no probabilities)."""
        if self.kept_start_:
            return {}
        return {"probability": self._soft_assignments(_as_images(images)).max(axis=1)}

    # Saving ------------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """The fine-tuned autoencoder through its own save, the centres as .npy, JSON facts."""
        if self.ae_ is None or self.centres_ is None or self.classes_ is None:
            raise ImgclustError("refiner 'dec' is not fitted: nothing to save.")
        directory = Path(directory)
        (directory / AUTOENCODER_DIR).mkdir()
        self.ae_.save(directory / AUTOENCODER_DIR)
        atomic.write_npy(directory / CENTRES_FILE, self.centres_.astype(np.float32))
        if self.start_centres_ is not None:
            atomic.write_npy(directory / START_FILE, self.start_centres_.astype(np.float32))
        atomic.write_json(
            directory / META_FILE,
            {
                "classes": [int(c) for c in self.classes_],
                "history": self.history_,
                "stop_reason": self.stop_reason_,
                "kept_start": self.kept_start_,
            },
        )

    def load(self, directory: Path) -> DEC:
        """Rebuild the autoencoder and load it (Keras safe mode), then the centres."""
        directory = Path(directory)
        try:
            meta = read_json(directory / META_FILE, f"refiner 'dec': {META_FILE}")
            self.classes_ = np.asarray([int(c) for c in meta["classes"]], dtype=np.int64)
            self.history_ = dict(meta.get("history") or {})
            self.stop_reason_ = str(meta.get("stop_reason") or "")[:500]
            self.kept_start_ = meta.get("kept_start") is True
            self.centres_ = read_npy(directory / CENTRES_FILE, f"refiner 'dec': {CENTRES_FILE}")
            start = directory / START_FILE
            self.start_centres_ = (
                read_npy(start, f"refiner 'dec': {START_FILE}") if start.exists() else None
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"refiner 'dec': cannot read its saved state: {exc}") from None
        if self.centres_.ndim != 2 or len(self.centres_) != len(self.classes_):
            raise DataError("refiner 'dec': the saved centres do not match its clusters.")
        if not math.isfinite(float(np.sum(self.centres_))):
            raise DataError("refiner 'dec': the saved centres hold NaN or infinite values.")
        if self.kept_start_ and (
            self.start_centres_ is None
            or self.start_centres_.ndim != 2
            or len(self.start_centres_) != len(self.classes_)
            or not math.isfinite(float(np.sum(self.start_centres_)))
        ):
            raise DataError("refiner 'dec': the saved start centres do not match its clusters.")
        self.ae_ = self._make_autoencoder().load(directory / AUTOENCODER_DIR)
        return self


def _target_distribution(q: np.ndarray) -> np.ndarray:
    """DEC's sharpened target: q squared over each cluster's soft frequency, normalised."""
    weight = q**2 / q.sum(axis=0)
    return (weight / weight.sum(axis=1, keepdims=True)).astype(np.float32)


def _as_features(features: Any, n: int) -> np.ndarray:
    """(n, D) finite features, one row per image; anything else is a one-line error."""
    features = np.asarray(features)
    if features.ndim != 2 or len(features) != n or not np.issubdtype(features.dtype, np.number):
        raise DataError(
            f"refiner 'dec' needs one row of numeric features per image ({n}); got shape "
            f"{features.shape}."
        )
    if not np.isfinite(features).all():
        raise DataError("refiner 'dec': the features hold NaN or infinite values.")
    return features


def _as_images(images: Any) -> np.ndarray:
    """(N, H, W, C) uint8 or float32 images; anything else is a one-line error."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or len(images) == 0:
        raise DataError(f"refiner 'dec' needs images (N, H, W, C); got shape {images.shape}.")
    if images.dtype not in (np.uint8, np.float32):
        images = images.astype(np.float32)
    return images


@hookimpl
def register_refiners(register):
    register("dec", DEC)
