"""The ``dense-ae`` encoder: the fully connected autoencoder of DEC and N2D, d-500-500-2000-k.

ReLU hidden layers, a linear code of ``code_size`` numbers and a linear reconstruction, trained
with Adam on the mean squared error. It reads images (flattened) or the previous encoder's
features. Keras is imported only when the encoder is built, fitted or loaded, and the network
uses ``keras.ops`` only, so any Keras backend runs it. uint8 images stay uint8: the network
rescales them itself. Progress goes to stderr, one line per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.errors import DataError, SettingsError
from imgclust.kit import CODE_LAYER, KerasAutoencoder, hookimpl, import_keras, predict_in_batches

ENCODE_BATCH = 4096


class DenseAutoencoder(KerasAutoencoder):
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
        Stop after this many epochs without a lower (validation) loss; 0 never stops early.
    seed : int
        Seed of weight initialisation and shuffling (keras.utils.set_random_seed).
    """

    stage_name = "dense-ae"
    model_file = "dense_ae.keras"
    meta_file = "dense_ae.json"

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
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        super().__init__(epochs, patience, seed)
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

    # Network -----------------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed (not epochs or patience)."""
        return {
            "dims": list(self.dims),
            "code_size": self.code_size,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
            "input_shape": list(self.input_shape_),
            "scale": self.scale_,
        }

    def build(self, input_shape: tuple[int, ...], scale: float = 1.0) -> Any:
        """The compiled autoencoder for inputs of ``input_shape`` (flattened), rescaled by
        ``scale``."""
        keras = import_keras()
        n_inputs = math.prod(input_shape)
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
            loss=self.pixel_loss("mse", scale),
        )
        return model

    # Fitting -----------------------------------------------------------------------------------
    def fit(self, images: np.ndarray, validation: np.ndarray | None = None) -> DenseAutoencoder:
        """Train on the flattened inputs (validating on ``validation`` after each epoch)."""
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
        self.train(x, validation, tuple(int(v) for v in np.shape(images)[1:]), scale)
        return self

    # Using the fitted network --------------------------------------------------------------------
    def transform(self, images: np.ndarray) -> np.ndarray:
        """The code of each input: (N, code_size) float32, computed in batches."""
        encoder = self.encoder_model()
        x = self._check_input(images)
        out = np.empty((len(x), self.code_size), dtype=np.float32)
        return predict_in_batches(encoder, _batches(x), out)

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """The network's restored inputs, in the input's shape, at the [0, 1] scale."""
        model = self.fitted()
        x = self._check_input(images)
        out = np.empty(x.shape, dtype=np.float32)
        return predict_in_batches(model, _batches(x), out).reshape((len(x), *self.input_shape_))

    def _check_input(self, images: np.ndarray) -> np.ndarray:
        self.fitted()
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
    def load(self, directory: Path) -> DenseAutoencoder:
        """Read a saved network with Keras's ``safe_mode`` (no code runs from the file)."""
        super().load(directory)
        self.code_size = int(self.model_.get_layer(CODE_LAYER).units)
        return self


def _batches(x: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(start, rows) of ``x``, :data:`ENCODE_BATCH` rows at a time."""
    for start in range(0, len(x), ENCODE_BATCH):
        yield start, x[start : start + ENCODE_BATCH]


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
