"""The ``dec`` refiner: DEC, IDEC and DCEC, a clustering layer that fine-tunes an autoencoder.

An autoencoder stage (``conv-ae``, as DCEC, or ``dense-ae``, as DEC and IDEC) is pretrained on
the images; a clustering layer holds one centre per incoming cluster (the mean code of its
members, where DEC starts from k-means) and gives Student's t soft assignments q. Every
``update_interval`` steps the sharpened target p (q squared over the cluster's soft size,
normalised) is recomputed, and the encoder and centres are trained to minimise KL(p || q), with
the reconstruction loss kept at weight ``gamma`` (IDEC, DCEC; 0 is plain DEC) so that the code
does not distort. Training stops when fewer than ``tolerance`` of the labels change between
updates. New images are assigned through the fine-tuned encoder and the centres.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np

from imgclust import atomic
from imgclust.errors import DataError, ImgclustError, SettingsError
from imgclust.hookspecs import hookimpl
from imgclust.keras_support import import_keras

META_FILE = "dec.json"
CENTRES_FILE = "centres.npy"
AUTOENCODER_DIR = "autoencoder"
#: Fewest pretraining steps: small image sets train for more epochs, not fewer steps.
MIN_PRETRAIN_STEPS = 1000


class DEC:
    """DEC/IDEC/DCEC: fine-tune an autoencoder's code with a clustering layer (KL to a sharpened
    target, reconstruction kept at weight gamma); assigns new images by the nearest centre.

    Parameters
    ----------
    autoencoder : str
        The autoencoder stage: conv-ae (DCEC: convolutions 32-64-128, a dense code) or dense-ae
        (DEC and IDEC: d-500-500-2000-code).
    code_size : int
        Numbers in the code the clustering layer sees (DEC and DCEC use 10).
    pretrain_epochs : int
        Epochs of reconstruction training before the clustering layer is added (small image
        sets get more, so that pretraining takes at least 1,000 steps).
    gamma : float
        Weight of the reconstruction loss while fine-tuning (IDEC and DCEC: 0.1; 0 is DEC).
    update_interval : int
        Training steps between updates of the target distribution (DEC-keras: 140).
    max_steps : int
        Most fine-tuning steps.
    tolerance : float
        Stop when fewer than this share of labels change between two target updates.
    batch_size : int
        Images per step.
    learning_rate : float
        Adam's step size, for pretraining and fine-tuning.
    seed : int
        Seed of the autoencoder's initialisation and of the batches.
    """

    def __init__(
        self,
        autoencoder: Literal["conv-ae", "dense-ae"] = "conv-ae",
        code_size: int = 10,
        pretrain_epochs: int = 20,
        gamma: float = 0.1,
        update_interval: int = 140,
        max_steps: int = 4000,
        tolerance: float = 0.001,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        seed: int = 0,
    ) -> None:
        self.autoencoder = autoencoder
        self.code_size = int(code_size)
        self.pretrain_epochs = int(pretrain_epochs)
        self.gamma = float(gamma)
        self.update_interval = int(update_interval)
        self.max_steps = int(max_steps)
        self.tolerance = float(tolerance)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.seed = int(seed)
        self._check_settings()
        self.ae_: Any = None
        self.centres_: np.ndarray | None = None
        self.classes_: np.ndarray | None = None
        self.history_: dict[str, list[float]] = {"changed": []}

    def _check_settings(self) -> None:
        def bad(message: str) -> SettingsError:
            return SettingsError(f"refiner 'dec': {message}")

        if self.autoencoder not in ("conv-ae", "dense-ae"):
            raise bad(f"autoencoder must be conv-ae or dense-ae; got {self.autoencoder!r}.")
        if min(self.code_size, self.pretrain_epochs, self.update_interval, self.batch_size) < 1:
            raise bad("code_size, pretrain_epochs, update_interval and batch_size must be >= 1.")
        if self.max_steps < 0 or not self.gamma >= 0 or not 0 <= self.tolerance < 1:
            raise bad("max_steps and gamma must be >= 0 and tolerance a share below 1.")
        if not self.learning_rate > 0:
            raise bad("learning_rate must be positive.")

    def _make_autoencoder(self) -> Any:
        """The autoencoder stage, built by its plugin with DEC's or DCEC's shape."""
        from imgclust.pipeline import make_stage

        common = {"code_size": self.code_size, "epochs": self.pretrain_epochs, "seed": self.seed}
        common["batch_size"] = self.batch_size
        if self.autoencoder == "conv-ae":
            settings = {"filters": (32, 64, 128), "loss": "mse", "optimizer": "adam"}
            settings["learning_rate"] = self.learning_rate
        else:
            settings = {"learning_rate": self.learning_rate}
        return make_stage("encoders", self.autoencoder, {**common, **settings}).instance

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
        keras = import_keras()
        self.ae_ = self._make_autoencoder()
        steps_per_epoch = math.ceil(len(images) / self.batch_size)
        self.ae_.epochs = max(self.pretrain_epochs, math.ceil(MIN_PRETRAIN_STEPS / steps_per_epoch))
        self.ae_.fit(images)
        codes = self.ae_.transform(images)
        self.classes_ = classes
        self.centres_ = np.stack([codes[labels == c].mean(axis=0) for c in classes])
        if self.max_steps:
            self._fine_tune(keras, images)
        return self.predict(images)

    def _fine_tune(self, keras: Any, images: np.ndarray) -> None:
        """Minimise KL(p || q) (plus gamma times the reconstruction loss) over the encoder and
        the centres, updating p every ``update_interval`` steps."""
        ops = keras.ops
        ae = self.ae_
        x = images if self.autoencoder == "conv-ae" else images.reshape(len(images), -1)
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
        q_out = clustering(encoder.output)
        outputs = [q_out, ae.fitted().output] if self.gamma > 0 else [q_out]
        model = keras.Model(ae.fitted().input, outputs)
        losses = ["kl_divergence"]
        if self.gamma > 0:
            kind = getattr(ae, "loss", "mse")
            losses.append(ae.pixel_loss(kind if kind in ("bce", "mse") else "mse", ae.scale_))
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=self.learning_rate),
            loss=losses,
            loss_weights=[1.0, self.gamma][: len(losses)],
        )
        rng = np.random.default_rng(self.seed)
        previous = None
        order = rng.permutation(len(x))
        position = 0
        for step in range(self.max_steps):
            if step % self.update_interval == 0:
                q = self._soft_assignments(images, centres=np.asarray(clustering.centres))
                target = _target_distribution(q)
                current = q.argmax(axis=1)
                if previous is not None:
                    changed = float(np.mean(current != previous))
                    self.history_["changed"].append(changed)
                    if changed < self.tolerance:
                        break
                previous = current
            if position + self.batch_size > len(x):
                order, position = rng.permutation(len(x)), 0
            batch = order[position : position + self.batch_size]
            position += self.batch_size
            wanted = [target[batch], x[batch]] if self.gamma > 0 else [target[batch]]
            model.train_on_batch(x[batch], wanted)
        self.centres_ = np.asarray(clustering.centres, dtype=np.float32)

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
        """The cluster whose centre is nearest each image's code."""
        if self.ae_ is None or self.centres_ is None or self.classes_ is None:
            raise ImgclustError("refiner 'dec' is not fitted: call fit_predict() first.")
        return self.classes_[self._soft_assignments(_as_images(images)).argmax(axis=1)]

    def score_samples(self, images: np.ndarray, features: np.ndarray | None = None) -> dict:
        """The soft assignment to each image's cluster, for ``imgclust predict``."""
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
        atomic.write_json(
            directory / META_FILE,
            {"classes": [int(c) for c in self.classes_], "history": self.history_},
        )

    def load(self, directory: Path) -> DEC:
        """Rebuild the autoencoder and load it (Keras safe mode), then the centres."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / META_FILE).read_text())
            self.classes_ = np.asarray([int(c) for c in meta["classes"]], dtype=np.int64)
            self.history_ = dict(meta.get("history") or {})
            self.centres_ = np.load(directory / CENTRES_FILE, allow_pickle=False)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"refiner 'dec': cannot read its saved state: {exc}") from None
        if self.centres_.ndim != 2 or len(self.centres_) != len(self.classes_):
            raise DataError("refiner 'dec': the saved centres do not match its clusters.")
        if not math.isfinite(float(np.sum(self.centres_))):
            raise DataError("refiner 'dec': the saved centres hold NaN or infinite values.")
        self.ae_ = self._make_autoencoder().load(directory / AUTOENCODER_DIR)
        return self


def _target_distribution(q: np.ndarray) -> np.ndarray:
    """DEC's sharpened target: q squared over each cluster's soft frequency, normalised."""
    weight = q**2 / q.sum(axis=0)
    return (weight / weight.sum(axis=1, keepdims=True)).astype(np.float32)


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
