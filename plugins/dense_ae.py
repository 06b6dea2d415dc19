"""The ``dense-ae`` encoder: the fully connected autoencoder of DEC and N2D, d-500-500-2000-k.

ReLU hidden layers, a linear code of ``code_size`` numbers and a linear reconstruction, trained
with Adam on the mean squared error. It reads images (flattened) or the previous encoder's
features. Keras is imported only when the encoder is built, fitted or loaded, and the network
uses ``keras.ops`` only, so any Keras backend runs it. uint8 images stay uint8: the network
rescales them itself. Progress goes to stderr, one line per epoch.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from imgclust import atomic
from imgclust.errors import DataError, ImgclustError, SettingsError
from imgclust.hookspecs import hookimpl

MODEL_FILE = "dense_ae.keras"
META_FILE = "dense_ae.json"
CODE_LAYER = "code"
ENCODE_BATCH = 4096


def _keras() -> Any:
    """Import Keras, TensorFlow backend unless the user chose another."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


@functools.cache
def _keras_classes() -> Any:
    """The loss and callback classes, defined once Keras is imported."""
    keras = _keras()
    ops = keras.ops

    @keras.saving.register_keras_serializable(package="imgclust", name="ScaledMSE")
    class ScaledMSE(keras.losses.Loss):
        """Mean squared error against the input rescaled like the network's input."""

        def __init__(self, scale: float = 1.0, **kwargs: Any) -> None:
            kwargs.setdefault("name", "scaled_mse")
            super().__init__(**kwargs)
            self.scale = float(scale)

        def call(self, y_true: Any, y_pred: Any) -> Any:
            y_true = ops.cast(y_true, y_pred.dtype) * self.scale
            return ops.mean(ops.square(y_true - y_pred), axis=-1)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "scale": self.scale}

    class EpochEnd(keras.callbacks.Callback):
        """Record the history and report each epoch on stderr; stop when patience runs out."""

        def __init__(self, owner: DenseAutoencoder, monitor: str) -> None:
            super().__init__()
            self.owner = owner
            self.monitor = monitor
            self.started = time.perf_counter()

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            owner = self.owner
            for key in ("loss", "val_loss"):
                if logs and key in logs:
                    owner.history_[key].append(float(logs[key]))
            seconds = time.perf_counter() - self.started
            owner.epoch_seconds_.append(seconds)
            stop = owner._should_stop(self.monitor)
            parts = [f"{k} {v[-1]:.5f}" for k, v in owner.history_.items() if v]
            note = " (stopping early)" if stop else ""
            print(
                f"dense-ae epoch {epoch + 1}/{owner.epochs}: {', '.join(parts)} "
                f"({seconds:.1f} s){note}",
                file=sys.stderr,
                flush=True,
            )
            if stop:
                self.model.stop_training = True

    return type("KerasClasses", (), {"ScaledMSE": ScaledMSE, "EpochEnd": EpochEnd})


class DenseAutoencoder:
    """Fully connected autoencoder (DEC, N2D): input-500-500-2000-code and back, Adam, MSE.

    Parameters
    ----------
    dims : tuple[int, ...]
        Widths of the hidden encoder layers (the decoder mirrors them); DEC's are 500,500,2000.
    code_size : int
        Numbers in the code, the feature handed on (DEC and N2D use the number of clusters).
    epochs : int
        Training epochs (N2D trains 1000; tens already give a useful code).
    batch_size : int
        Samples per training step (DEC and N2D use 256).
    learning_rate : float
        Adam's step size.
    patience : int
        Stop when the validation loss (training loss without validation) has not improved for
        this many epochs; 0 never stops early.
    seed : int
        Seed of weight initialisation and shuffling (keras.utils.set_random_seed).
    """

    def __init__(
        self,
        dims: tuple[int, ...] = (500, 500, 2000),
        code_size: int = 10,
        epochs: int = 50,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        patience: int = 0,
        seed: int = 0,
    ) -> None:
        self.dims = tuple(int(d) for d in dims)
        self.code_size = int(code_size)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.patience = int(patience)
        self.seed = int(seed)
        if not self.dims or any(d < 1 for d in self.dims):
            raise SettingsError(
                f"encoder 'dense-ae': dims must be positive widths, e.g. 500,500,2000; got {dims}."
            )
        if self.code_size < 1 or self.epochs < 1 or self.batch_size < 1:
            raise SettingsError(
                "encoder 'dense-ae': code_size, epochs and batch_size must be at least 1."
            )
        if not self.learning_rate > 0 or self.patience < 0:
            raise SettingsError(
                "encoder 'dense-ae': learning_rate must be positive and patience >= 0."
            )
        self.history_: dict[str, list[float]] = {"loss": [], "val_loss": []}
        self.epoch_seconds_: list[float] = []
        self.model_: Any = None
        self._encoder: Any = None

    # Network -----------------------------------------------------------------------------------
    def build(self, n_inputs: int, scale: float = 1.0) -> Any:
        """The compiled autoencoder for ``n_inputs`` numbers per sample, rescaled by ``scale``."""
        keras = _keras()
        layers = keras.layers
        inputs = keras.Input(shape=(n_inputs,), name="inputs")
        x = layers.Rescaling(scale, name="rescale")(inputs)
        for i, width in enumerate(self.dims, 1):
            x = layers.Dense(width, activation="relu", name=f"encode_{i}")(x)
        x = layers.Dense(self.code_size, name=CODE_LAYER)(x)
        for i, width in enumerate(reversed(self.dims), 1):
            x = layers.Dense(width, activation="relu", name=f"decode_{i}")(x)
        outputs = layers.Dense(n_inputs, name="reconstruction")(x)
        model = keras.Model(inputs, outputs, name="dense_ae")
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=self.learning_rate),
            loss=_keras_classes().ScaledMSE(scale=scale),
        )
        return model

    # Fitting -----------------------------------------------------------------------------------
    def fit(self, images: np.ndarray, validation: np.ndarray | None = None) -> DenseAutoencoder:
        """Train on the flattened inputs (validating on ``validation`` after each epoch)."""
        keras = _keras()
        x = _flat(images, "training inputs")
        scale = 1 / 255 if x.dtype == np.uint8 else 1.0
        if validation is not None:
            validation = _flat(validation, "validation inputs")
            if validation.shape[1] != x.shape[1]:
                raise DataError(
                    f"dense-ae: validation inputs have {validation.shape[1]} numbers each, "
                    f"training inputs {x.shape[1]}: use data of one shape."
                )
            if validation.dtype != x.dtype:
                validation = _rescale_like(validation, x.dtype)
        self.input_shape_ = tuple(int(v) for v in np.shape(images)[1:])
        self.scale_ = scale
        self.history_ = {"loss": [], "val_loss": []}
        self.epoch_seconds_ = []
        self._encoder = None
        keras.utils.set_random_seed(self.seed)
        self.model_ = self.build(x.shape[1], scale)
        monitor = "val_loss" if validation is not None else "loss"
        self.model_.fit(
            x,
            x,
            batch_size=self.batch_size,
            epochs=self.epochs,
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
        return len(values) - 1 - int(np.argmin(values)) >= self.patience

    # Using the fitted network --------------------------------------------------------------------
    def transform(self, images: np.ndarray) -> np.ndarray:
        """The code of each input: (N, code_size) float32, computed in batches."""
        encoder = self._encoder_model()
        x = self._check_input(images)
        out = np.empty((len(x), self.code_size), dtype=np.float32)
        for start in range(0, len(x), ENCODE_BATCH):
            chunk = x[start : start + ENCODE_BATCH]
            out[start : start + len(chunk)] = np.asarray(encoder.predict_on_batch(chunk))
        return out

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """The network's restored inputs, in the input's shape, at the [0, 1] scale."""
        model = self._fitted()
        x = self._check_input(images)
        out = np.empty(x.shape, dtype=np.float32)
        for start in range(0, len(x), ENCODE_BATCH):
            chunk = x[start : start + ENCODE_BATCH]
            out[start : start + len(chunk)] = np.asarray(model.predict_on_batch(chunk))
        return out.reshape((len(x), *self.input_shape_))

    def _fitted(self) -> Any:
        if self.model_ is None:
            raise ImgclustError("dense-ae is not fitted: call fit() or load() first.")
        return self.model_

    def _encoder_model(self) -> Any:
        if self._encoder is None:
            keras = _keras()
            model = self._fitted()
            self._encoder = keras.Model(model.input, model.get_layer(CODE_LAYER).output)
        return self._encoder

    def _check_input(self, images: np.ndarray) -> np.ndarray:
        self._fitted()
        x = _flat(images, "inputs")
        expected = math.prod(self.input_shape_)
        if x.shape[1] != expected:
            raise DataError(
                f"dense-ae was fitted on inputs of {expected} numbers, got {x.shape[1]}: "
                "use the same encoders and image size as the fit."
            )
        wanted = np.uint8 if self.scale_ != 1.0 else np.float32
        return x if x.dtype == wanted else _rescale_like(x, wanted)

    # Persistence -------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write ``dense_ae.keras`` (native Keras format) and ``dense_ae.json`` (shape, history)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model = self._fitted()
        temporary = directory / f".tmp-{MODEL_FILE}"
        model.save(temporary)
        os.replace(temporary, directory / MODEL_FILE)
        atomic.write_json(
            directory / META_FILE,
            {
                "input_shape": list(self.input_shape_),
                "scale": self.scale_,
                "history": self.history_,
            },
        )

    def load(self, directory: Path) -> DenseAutoencoder:
        """Read a saved network with Keras's ``safe_mode`` (no code runs from the file)."""
        keras = _keras()
        _keras_classes()  # registers the loss so the file can name it
        directory = Path(directory)
        try:
            meta = json.loads((directory / META_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {directory / META_FILE}: {exc}") from None
        self.model_ = keras.saving.load_model(directory / MODEL_FILE, safe_mode=True)
        self.input_shape_ = tuple(int(v) for v in meta["input_shape"])
        self.scale_ = float(meta["scale"])
        self.history_ = meta.get("history", {"loss": [], "val_loss": []})
        self.code_size = int(self.model_.get_layer(CODE_LAYER).units)
        self._encoder = None
        return self


def _flat(images: Any, what: str) -> np.ndarray:
    """(N, D) view of images or features: uint8 stays uint8, anything else becomes float32."""
    array = np.asarray(images)
    if array.ndim < 2 or len(array) == 0:
        raise DataError(f"dense-ae: {what} must be a non-empty (N, ...) array; got {array.shape}.")
    array = array.reshape(len(array), -1)
    if array.dtype != np.uint8 and array.dtype != np.float32:
        array = array.astype(np.float32)
    if array.dtype == np.float32 and not np.isfinite(array).all():
        raise DataError(f"dense-ae: {what} contain NaN or infinite values.")
    return array


def _rescale_like(x: np.ndarray, dtype: Any) -> np.ndarray:
    """Bring inputs to the training inputs' kind: uint8 0..255 or float32 [0, 1]."""
    if dtype == np.uint8:
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    return x.astype(np.float32) / np.float32(255.0)


@hookimpl
def register_encoders(register):
    register(
        "dense-ae",
        DenseAutoencoder,
        summary="fully connected autoencoder of DEC and N2D (d-500-500-2000-k, Adam, MSE)",
    )
