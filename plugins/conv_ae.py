"""The ``conv-ae`` encoder: a Keras 3 convolutional autoencoder, by default the article's network.

Defaults rebuild the article layer for layer (Conv 16 / pool / Conv 2 / pool = the 7x7x2 code, then
the mirror image up to a sigmoid Conv 1: 937 parameters at 28x28x1), trained with binary
cross-entropy and Adadelta at learning rate 1.0 for 3 epochs of batch 32. Keras and its backend are
imported only when an encoder is built, fitted or loaded; the code uses ``keras.ops`` only.

Images stay uint8 while training: the network starts with a rescaling layer and the loss rescales
its target, so no float copy of the training set is made. When ``checkpoint_dir`` is set, every
epoch is saved there and an interrupted fit resumes from the last one.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from imgclust import atomic
from imgclust.errors import DataError, ImgclustError, SettingsError
from imgclust.hookspecs import hookimpl

MODEL_FILE = "model.keras"
META_FILE = "conv_ae.json"
STATE_FILE = "state.json"
CODE_LAYER = "code"
FORMAT = 1
#: Keras class name and default learning rate of each optimizer setting. Adadelta's 1.0 is Keras
#: 2's default, which the article used; Keras 3's 0.001 barely trains in 3 epochs.
OPTIMIZERS = {
    "adadelta": ("Adadelta", 1.0),
    "adam": ("Adam", 1e-3),
    "adamw": ("AdamW", 1e-3),
    "nadam": ("Nadam", 1e-3),
    "rmsprop": ("RMSprop", 1e-3),
    "sgd": ("SGD", 1e-2),
}
#: Largest first-layer activation (bytes) one encoding batch may produce.
BATCH_BYTES = 128 * 2**20


def _keras() -> Any:
    """Import Keras, TensorFlow backend unless the user chose another."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


@functools.cache
def _keras_classes() -> Any:
    """The loss and callback classes, defined once Keras is imported (not at module import)."""
    keras = _keras()
    ops = keras.ops

    @keras.saving.register_keras_serializable(package="imgclust", name="PixelLoss")
    class PixelLoss(keras.losses.Loss):
        """BCE or MSE between the reconstruction and the input rescaled like the network's."""

        def __init__(self, kind: str = "bce", scale: float = 1.0, **kwargs: Any) -> None:
            kwargs.setdefault("name", f"pixel_{kind}")
            super().__init__(**kwargs)
            self.kind = kind
            self.scale = float(scale)

        def call(self, y_true: Any, y_pred: Any) -> Any:
            y_true = ops.cast(y_true, y_pred.dtype) * self.scale
            if self.kind == "mse":
                return ops.mean(ops.square(y_true - y_pred), axis=-1)
            return keras.losses.binary_crossentropy(y_true, y_pred)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "kind": self.kind, "scale": self.scale}

    class EpochEnd(keras.callbacks.Callback):
        """After each epoch: record the history, report on stderr, checkpoint, stop early.
        On a terminal it also shows the step count within the epoch, twice a second at most."""

        def __init__(self, owner: ConvAutoencoder, monitor: str) -> None:
            super().__init__()
            self.owner = owner
            self.monitor = monitor
            self.live = sys.stderr.isatty()
            self.epoch = 0
            self.started = self.shown = time.perf_counter()

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch = epoch + 1
            self.started = self.shown = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if not self.live:
                return
            now = time.perf_counter()
            if now - self.shown >= 0.5:
                self.shown = now
                steps = (self.params or {}).get("steps") or "?"
                sys.stderr.write(
                    f"\rconv-ae epoch {self.epoch}/{self.owner.epochs}: step {batch + 1}/{steps}"
                    f" ({now - self.started:.0f} s)"
                )
                sys.stderr.flush()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs or {}
            owner = self.owner
            seconds = time.perf_counter() - self.started
            if self.live:
                sys.stderr.write("\r\033[K")
            for key in ("loss", "val_loss"):
                if key in logs:
                    owner.history_[key].append(float(logs[key]))
            owner.epoch_seconds_.append(seconds)
            stop = owner._should_stop(self.monitor)
            owner._report(epoch + 1, seconds, stopped=stop)
            if owner.checkpoint_dir is not None:
                owner._write_checkpoint(self.model, epoch + 1, stopped=stop)
            if stop:
                self.model.stop_training = True

    return type("KerasClasses", (), {"PixelLoss": PixelLoss, "EpochEnd": EpochEnd})


class ConvAutoencoder:
    """Convolutional autoencoder; the code after the last pooling (or dense layer) is the feature.

    Each entry of ``filters`` adds a ``Conv2D`` (ReLU, ``padding="same"``) and a 2x2 max-pooling;
    the decoder mirrors them with up-sampling and ends in a sigmoid ``Conv2D`` with the input's
    channel count. Images whose sides are not multiples of ``2 ** len(filters)`` are zero-padded
    inside the network and the reconstruction is cropped back, so any size and channel count works.

    Parameters
    ----------
    filters : tuple[int, ...]
        Filters of each encoder convolution; (16, 2) is the article's 7x7x2 code on MNIST.
    kernel_size : int
        Side of every convolution kernel.
    code_size : int | None
        Size of a dense bottleneck after the convolutions (as DCEC); None keeps the grid code.
    loss : str
        Reconstruction loss: bce (binary cross-entropy, the article's) or mse.
    optimizer : str
        adadelta (the article's), adam, adamw, nadam, rmsprop or sgd.
    learning_rate : float | None
        Step size; None: 1.0 for adadelta (Keras 2's default, as published), else Keras's.
    epochs : int
        Training epochs (the article trains 3).
    batch_size : int
        Images per training step (the article's 32).
    patience : int
        Stop after this many epochs without a better val_loss (loss without validation); 0: never.
    seed : int
        Seed of weight initialisation and shuffling (keras.utils.set_random_seed).
    """

    def __init__(
        self,
        filters: tuple[int, ...] = (16, 2),
        kernel_size: int = 3,
        code_size: int | None = None,
        loss: Literal["bce", "mse"] = "bce",
        optimizer: Literal["adadelta", "adam", "adamw", "nadam", "rmsprop", "sgd"] = "adadelta",
        learning_rate: float | None = None,
        epochs: int = 3,
        batch_size: int = 32,
        patience: int = 0,
        seed: int = 0,
    ) -> None:
        self.filters = tuple(int(f) for f in filters)
        self.kernel_size = int(kernel_size)
        self.code_size = None if code_size is None else int(code_size)
        self.loss = loss
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.patience = int(patience)
        self.seed = int(seed)
        self._check_settings()
        #: Set by the run before ``fit``: where each epoch is checkpointed and resumed from.
        self.checkpoint_dir: Path | None = None
        self.history_: dict[str, list[float]] = {"loss": [], "val_loss": []}
        self.epoch_seconds_: list[float] = []
        self.model_: Any = None
        self._encoder: Any = None

    # Settings ----------------------------------------------------------------------------------
    def _check_settings(self) -> None:
        def bad(message: str) -> SettingsError:
            return SettingsError(f"encoder 'conv-ae': {message}")

        if not self.filters or any(f < 1 for f in self.filters):
            raise bad(f"filters must be positive widths, e.g. 16,2; got {self.filters}.")
        if self.kernel_size < 1:
            raise bad("kernel_size must be at least 1.")
        if self.code_size is not None and self.code_size < 1:
            raise bad("code_size must be at least 1 (or none for the convolutional code).")
        if self.loss not in ("bce", "mse"):
            raise bad(f"loss must be bce or mse; got {self.loss!r}.")
        if self.optimizer not in OPTIMIZERS:
            raise bad(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}.")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise bad("learning_rate must be positive (or none for the optimizer's default).")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 0:
            raise bad("epochs and batch_size must be at least 1 and patience at least 0.")

    def _fingerprint(self, input_shape: tuple[int, ...], scale: float) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed (not epochs or patience)."""
        return {
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
            "code_size": self.code_size,
            "loss": self.loss,
            "optimizer": self.optimizer,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "input_shape": list(input_shape),
            "scale": scale,
        }

    # Network -----------------------------------------------------------------------------------
    def build(self, input_shape: tuple[int, int, int], scale: float = 1 / 255) -> Any:
        """The compiled autoencoder for images of ``input_shape`` whose pixels times ``scale``
        lie in [0, 1] (1/255 for uint8, 1 for float images)."""
        keras = _keras()
        layers = keras.layers
        height, width, channels = (int(v) for v in input_shape)
        unit = 2 ** len(self.filters)
        pad_h, pad_w = (-height) % unit, (-width) % unit
        pads = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
        conv = functools.partial(layers.Conv2D, kernel_size=self.kernel_size, padding="same")

        inputs = keras.Input(shape=(height, width, channels), name="images")
        x = layers.Rescaling(scale, name="rescale")(inputs)
        if pad_h or pad_w:
            x = layers.ZeroPadding2D(pads, name="pad")(x)
        last = len(self.filters)
        for i, width_i in enumerate(self.filters, 1):
            x = conv(width_i, activation="relu", name=f"encode_conv{i}")(x)
            is_code = i == last and self.code_size is None
            pool_name = CODE_LAYER if is_code else f"encode_pool{i}"
            x = layers.MaxPooling2D(2, padding="same", name=pool_name)(x)
        if self.code_size is not None:
            grid = tuple(int(v) for v in x.shape[1:])
            x = layers.Flatten(name="flatten")(x)
            x = layers.Dense(self.code_size, name=CODE_LAYER)(x)
            x = layers.Dense(math.prod(grid), activation="relu", name="decode_dense")(x)
            x = layers.Reshape(grid, name="unflatten")(x)
        for i, width_i in enumerate(reversed(self.filters), 1):
            x = conv(width_i, activation="relu", name=f"decode_conv{i}")(x)
            x = layers.UpSampling2D(2, name=f"decode_up{i}")(x)
        x = conv(channels, activation="sigmoid", name="reconstruction")(x)
        if pad_h or pad_w:
            x = layers.Cropping2D(pads, name="crop")(x)
        model = keras.Model(inputs, x, name="conv_ae")
        model.compile(optimizer=self._make_optimizer(), loss=self._make_loss(scale))
        return model

    def _make_optimizer(self) -> Any:
        keras = _keras()
        class_name, default_rate = OPTIMIZERS[self.optimizer]
        rate = default_rate if self.learning_rate is None else float(self.learning_rate)
        return getattr(keras.optimizers, class_name)(learning_rate=rate)

    def _make_loss(self, scale: float) -> Any:
        return _keras_classes().PixelLoss(kind=self.loss, scale=scale)

    # Fitting -----------------------------------------------------------------------------------
    def fit(self, images: np.ndarray, validation: np.ndarray | None = None) -> ConvAutoencoder:
        """Train on ``images`` (validating on ``validation`` after each epoch); resume from
        ``checkpoint_dir`` when it holds an earlier, interrupted fit of the same settings."""
        keras = _keras()
        images = _as_images(images, "training images")
        shape = tuple(int(v) for v in images.shape[1:])
        scale = _scale_of(images)
        if validation is not None:
            validation = _as_images(validation, "validation images")
            if tuple(validation.shape[1:]) != shape:
                raise DataError(
                    f"conv-ae: validation images are {tuple(validation.shape[1:])}, training "
                    f"images {shape}: use images of one size."
                )
            validation = _rescaled(validation, scale)
        self.input_shape_, self.scale_ = shape, scale
        self.history_ = {"loss": [], "val_loss": []}
        self.epoch_seconds_ = []
        self._encoder = None

        state = self._read_checkpoint(shape, scale)
        keras.utils.set_random_seed(self.seed + (state["epoch"] if state else 0))
        if state:
            model = _load_model(Path(self.checkpoint_dir) / state["model"], compile=True)
            self.history_ = {k: list(state["history"].get(k, [])) for k in ("loss", "val_loss")}
            start = int(state["epoch"])
            done = state.get("stopped") or start >= self.epochs
            _say(f"conv-ae: resuming from epoch {start} of {self.epochs} ({self.checkpoint_dir})")
        else:
            model, start, done = self.build(shape, scale), 0, False
        self.model_ = model
        if not done:
            monitor = "val_loss" if validation is not None else "loss"
            model.fit(
                images,
                images,
                batch_size=self.batch_size,
                epochs=self.epochs,
                initial_epoch=start,
                validation_data=None if validation is None else (validation, validation),
                callbacks=[_keras_classes().EpochEnd(self, monitor)],
                shuffle=True,
                verbose=0,
            )
        return self

    def _should_stop(self, monitor: str) -> bool:
        values = self.history_.get(monitor) or []
        if self.patience < 1 or not values:
            return False
        best = int(np.argmin(values))
        return len(values) - 1 - best >= self.patience

    def _report(self, epoch: int, seconds: float, stopped: bool) -> None:
        parts = [f"{k} {v[-1]:.4f}" for k, v in self.history_.items() if v]
        note = " (stopping early)" if stopped else ""
        _say(f"conv-ae epoch {epoch}/{self.epochs}: {', '.join(parts)} ({seconds:.1f} s){note}")

    # Checkpoints -------------------------------------------------------------------------------
    def _write_checkpoint(self, model: Any, epoch: int, stopped: bool) -> None:
        """Save the model with its optimizer, then commit by rewriting the state file."""
        folder = Path(self.checkpoint_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch:04d}.keras"
        temporary = folder / f".tmp-{name}"
        model.save(temporary)
        os.replace(temporary, folder / name)
        atomic.write_json(
            folder / STATE_FILE,
            {
                "format": FORMAT,
                "epoch": epoch,
                "model": name,
                "stopped": bool(stopped),
                "history": self.history_,
                "settings": self._fingerprint(self.input_shape_, self.scale_),
            },
        )
        for old in folder.glob("epoch-*.keras"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def _read_checkpoint(self, shape: tuple[int, ...], scale: float) -> dict[str, Any] | None:
        if self.checkpoint_dir is None:
            return None
        path = Path(self.checkpoint_dir) / STATE_FILE
        if not path.exists():
            return None
        try:
            state = json.loads(path.read_text())
            model_file = Path(self.checkpoint_dir) / state["model"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"conv-ae: checkpoint {str(path)!r} is unreadable ({exc}); "
                "delete the folder to start over."
            ) from None
        if state.get("settings") != self._fingerprint(shape, scale):
            raise ImgclustError(
                f"conv-ae: the checkpoint in {str(self.checkpoint_dir)!r} was written with other "
                "settings or images; delete it to start over or use the settings it records."
            )
        if not model_file.exists():
            raise DataError(
                f"conv-ae: checkpoint model {str(model_file)!r} is missing; delete the folder."
            )
        return state

    # Using the fitted network --------------------------------------------------------------------
    def transform(self, images: np.ndarray) -> np.ndarray:
        """The code of each image, flattened: (N, D) float32, computed in batches."""
        encoder = self._encoder_model()
        images = self._check_fitted_input(images)
        width = math.prod(int(v) for v in encoder.output.shape[1:])
        out = np.empty((len(images), width), dtype=np.float32)
        for start, chunk in self._batches(images):
            out[start : start + len(chunk)] = np.asarray(encoder.predict_on_batch(chunk)).reshape(
                len(chunk), -1
            )
        return out

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """The network's restored images: float32 (N, H, W, C) in [0, 1], the input's size."""
        model = self._fitted()
        images = self._check_fitted_input(images)
        out = np.empty((len(images), *self.input_shape_), dtype=np.float32)
        for start, chunk in self._batches(images):
            out[start : start + len(chunk)] = np.asarray(model.predict_on_batch(chunk))
        return out

    def summary(self) -> list[tuple[str, tuple[int, ...], int]]:
        """(layer name, output shape without the batch axis, parameters) of each layer."""
        model = self._fitted()
        return [
            (layer.name, tuple(layer.output.shape[1:]), int(layer.count_params()))
            for layer in model.layers
        ]

    def _fitted(self) -> Any:
        if self.model_ is None:
            raise ImgclustError("conv-ae is not fitted: call fit() or load() first.")
        return self.model_

    def _encoder_model(self) -> Any:
        if self._encoder is None:
            keras = _keras()
            model = self._fitted()
            self._encoder = keras.Model(model.input, model.get_layer(CODE_LAYER).output)
        return self._encoder

    def _check_fitted_input(self, images: np.ndarray) -> np.ndarray:
        images = _as_images(images, "images")
        if tuple(images.shape[1:]) != tuple(self.input_shape_):
            raise DataError(
                f"conv-ae was fitted on {tuple(self.input_shape_)} images, got "
                f"{tuple(images.shape[1:])}: resize them or fit a new encoder."
            )
        return images

    def _batches(self, images: np.ndarray) -> Any:
        """(start, float32 chunk at the network's input scale), sized to bound memory."""
        height, width = self.input_shape_[:2]
        per_image = height * width * max(self.filters) * 4
        size = int(max(1, min(4096, BATCH_BYTES // max(per_image, 1))))
        for start in range(0, len(images), size):
            yield start, _rescaled(np.asarray(images[start : start + size]), self.scale_, copy=True)

    # Saving ------------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write ``model.keras`` and ``conv_ae.json`` (shape, scale, settings, history)."""
        model = self._fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".tmp-{MODEL_FILE}"
        model.save(temporary)
        os.replace(temporary, directory / MODEL_FILE)
        atomic.write_json(
            directory / META_FILE,
            {
                "format": FORMAT,
                "input_shape": list(self.input_shape_),
                "scale": self.scale_,
                "settings": self._fingerprint(self.input_shape_, self.scale_),
                "history": self.history_,
            },
        )

    def load(self, directory: Path) -> ConvAutoencoder:
        """Load a saved encoder with Keras ``safe_mode`` (no code from the file is run)."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / META_FILE).read_text())
            self.input_shape_ = tuple(int(v) for v in meta["input_shape"])
            self.scale_ = float(meta["scale"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"conv-ae: cannot read {str(directory / META_FILE)!r}: {exc}") from None
        if not (directory / MODEL_FILE).exists():
            raise DataError(f"conv-ae: {str(directory / MODEL_FILE)!r} is missing.")
        self.model_ = _load_model(directory / MODEL_FILE, compile=False)
        self.history_ = {k: list(meta.get("history", {}).get(k, [])) for k in ("loss", "val_loss")}
        self._encoder = None
        return self


def _load_model(path: Path, compile: bool) -> Any:
    """A ``.keras`` file in safe mode (no code from the file runs); failures are one line."""
    keras = _keras()
    _keras_classes()  # registers the loss the file names
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=compile)
    except (ValueError, TypeError, OSError) as exc:
        reason = " ".join(str(exc).split())[:200]
        message = f"conv-ae: cannot load {str(path)!r} in Keras safe mode: {reason}"
        raise DataError(message) from None


def _as_images(images: Any, what: str) -> np.ndarray:
    """(N, H, W, C) uint8 or float32; (N, H, W) gains a channel axis; features are refused."""
    if not hasattr(images, "ndim"):
        images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(
            f"conv-ae needs images (N, H, W, C); its {what} have shape {tuple(images.shape)}: "
            "put conv-ae first in the encoder chain."
        )
    if len(images) == 0:
        raise DataError(f"conv-ae: no {what} to work on.")
    if images.dtype != np.uint8 and images.dtype != np.float32:
        if not np.issubdtype(images.dtype, np.number):
            raise DataError(f"conv-ae: {what} of dtype {images.dtype} are not supported.")
        images = images.astype(np.float32)
    return images


def _scale_of(images: np.ndarray) -> float:
    """What turns these pixels into [0, 1]: 1/255 for uint8, 1 for float images."""
    return 1 / 255 if images.dtype == np.uint8 else 1.0


def _rescaled(images: np.ndarray, scale: float, copy: bool = False) -> np.ndarray:
    """Images at the pixel range a network of input ``scale`` expects (uint8 kept when it fits)."""
    if _scale_of(images) == scale:
        return images.astype(np.float32) if copy else images
    factor = np.float32(_scale_of(images) / scale)
    return images.astype(np.float32) * factor


def _say(message: str) -> None:
    """Training progress goes to stderr, so that ``--json`` output on stdout stays clean."""
    print(message, file=sys.stderr, flush=True)


@hookimpl
def register_encoders(register):
    register(
        "conv-ae",
        ConvAutoencoder,
        summary="convolutional autoencoder (Keras); by default the article's 937-parameter network",
    )
