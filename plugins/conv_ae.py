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
import math
from typing import Any, Literal

import numpy as np

from imgclust.errors import DataError, SettingsError
from imgclust.kit import CODE_LAYER, KerasAutoencoder, hookimpl, import_keras, predict_in_batches

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


#: Bounds on the network a config may ask for: far past any useful autoencoder of small images,
#: well before one exhausts memory (a setting may come from a stranger's config file).
MAX_LAYERS = 8
MAX_FILTERS = 4096
MAX_CODE = 65536


class ConvAutoencoder(KerasAutoencoder):
    """Convolutional autoencoder; the code after the last pooling (or dense layer) is the feature.

    Each entry of ``filters`` adds a ``Conv2D`` (ReLU, ``padding="same"``) and a 2x2 max-pooling
    (or, with ``downsample="stride"``, a convolution of stride 2, as DCEC); the decoder mirrors
    them with up-sampling (or transposed convolutions of stride 2) and ends in a sigmoid (or,
    with ``output="linear"``, a linear) layer with the input's channel count. Images whose sides
    are not multiples of ``2 ** len(filters)`` are zero-padded inside the network and the
    reconstruction is cropped back, so any size and channel count works.

    Parameters
    ----------
    filters : tuple[int, ...]
        Filters of each encoder convolution; (16, 2) is the article's 7x7x2 code on MNIST.
    kernel_size : int | tuple[int, ...]
        Side of every convolution kernel, or one side per entry of filters (DCEC: 5,5,3).
    downsample : str
        pool: 2x2 max-pooling after each convolution (the article's); stride: convolutions of
        stride 2 and transposed ones in the decoder (DCEC's).
    code_size : int | None
        Size of a dense bottleneck after the convolutions (as DCEC); None keeps the grid code.
    loss : str
        Reconstruction loss: bce (binary cross-entropy, the article's) or mse.
    output : str
        The last layer's activation: sigmoid (the article's) or linear (DCEC's, with mse; a
        sigmoid after a dense code can stall at the mean image). Reconstructions are clipped
        to [0, 1].
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

    stage_name = "conv-ae"
    model_file = "model.keras"
    meta_file = "conv_ae.json"

    def __init__(
        self,
        filters: tuple[int, ...] = (16, 2),
        kernel_size: int | tuple[int, ...] = 3,
        downsample: Literal["pool", "stride"] = "pool",
        code_size: int | None = None,
        loss: Literal["bce", "mse"] = "bce",
        output: Literal["sigmoid", "linear"] = "sigmoid",
        optimizer: Literal["adadelta", "adam", "adamw", "nadam", "rmsprop", "sgd"] = "adadelta",
        learning_rate: float | None = None,
        epochs: int = 3,
        batch_size: int = 32,
        patience: int = 0,
        seed: int = 0,
    ) -> None:
        self.filters = tuple(int(f) for f in filters)
        self.kernel_size: int | tuple[int, ...] = (
            int(kernel_size)
            if isinstance(kernel_size, (int, np.integer))
            else tuple(int(k) for k in kernel_size)
        )
        self.downsample = downsample
        self.code_size = None if code_size is None else int(code_size)
        self.loss = loss
        self.output = output
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = int(batch_size)
        super().__init__(epochs, patience, seed)
        self._check_settings()

    # Settings ----------------------------------------------------------------------------------
    def _check_settings(self) -> None:
        def bad(message: str) -> SettingsError:
            return SettingsError(f"encoder 'conv-ae': {message}")

        if not self.filters or any(f < 1 for f in self.filters):
            raise bad(f"filters must be positive widths, e.g. 16,2; got {self.filters}.")
        if len(self.filters) > MAX_LAYERS or max(self.filters) > MAX_FILTERS:
            raise bad(
                f"filters allows at most {MAX_LAYERS} layers of at most {MAX_FILTERS} filters "
                f"each (the network's memory grows with them); got {self.filters}."
            )
        if self.code_size is not None and self.code_size > MAX_CODE:
            raise bad(f"code_size must be at most {MAX_CODE}; got {self.code_size}.")
        sizes = self.kernel_size if isinstance(self.kernel_size, tuple) else (self.kernel_size,)
        if not sizes or min(sizes) < 1:
            raise bad(f"kernel_size must be at least 1; got {self.kernel_size}.")
        if isinstance(self.kernel_size, tuple) and len(sizes) != len(self.filters):
            raise bad(
                f"kernel_size gives {len(sizes)} sides for {len(self.filters)} filters: give "
                "one side, or one per entry of filters."
            )
        if self.downsample not in ("pool", "stride"):
            raise bad(f"downsample must be pool or stride; got {self.downsample!r}.")
        if self.code_size is not None and self.code_size < 1:
            raise bad("code_size must be at least 1 (or none for the convolutional code).")
        if self.loss not in ("bce", "mse"):
            raise bad(f"loss must be bce or mse; got {self.loss!r}.")
        if self.output not in ("sigmoid", "linear"):
            raise bad(f"output must be sigmoid or linear; got {self.output!r}.")
        if self.output == "linear" and self.loss == "bce":
            raise bad("a linear output needs loss = mse (bce needs the sigmoid's [0, 1]).")
        if self.optimizer not in OPTIMIZERS:
            raise bad(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}.")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise bad("learning_rate must be positive (or none for the optimizer's default).")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 0:
            raise bad("epochs and batch_size must be at least 1 and patience at least 0.")

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed (not epochs or patience)."""
        return {
            "filters": list(self.filters),
            "kernel_size": (
                list(self.kernel_size) if isinstance(self.kernel_size, tuple) else self.kernel_size
            ),
            "code_size": self.code_size,
            "loss": self.loss,
            "optimizer": self.optimizer,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "input_shape": list(self.input_shape_),
            "scale": self.scale_,
            **({"downsample": self.downsample} if self.downsample != "pool" else {}),
            **({"output": self.output} if self.output != "sigmoid" else {}),
        }

    # Network -----------------------------------------------------------------------------------
    def kernels(self) -> tuple[int, ...]:
        """The kernel side of each encoder convolution."""
        if isinstance(self.kernel_size, tuple):
            return self.kernel_size
        return (self.kernel_size,) * len(self.filters)

    def build(self, input_shape: tuple[int, ...], scale: float = 1 / 255) -> Any:
        """The compiled autoencoder for images of ``input_shape`` whose pixels times ``scale``
        lie in [0, 1] (1/255 for uint8, 1 for float images)."""
        keras = import_keras()
        layers = keras.layers
        height, width, channels = (int(v) for v in input_shape)
        unit = 2 ** len(self.filters)
        pad_h, pad_w = (-height) % unit, (-width) % unit
        pads = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
        kernels = self.kernels()
        strided = self.downsample == "stride"
        conv = functools.partial(layers.Conv2D, padding="same")

        inputs = keras.Input(shape=(height, width, channels), name="images")
        x = layers.Rescaling(scale, name="rescale")(inputs)
        if pad_h or pad_w:
            x = layers.ZeroPadding2D(pads, name="pad")(x)
        last = len(self.filters)
        for i, (width_i, kernel) in enumerate(zip(self.filters, kernels, strict=True), 1):
            is_code = i == last and self.code_size is None
            if strided:
                name = CODE_LAYER if is_code else f"encode_conv{i}"
                x = conv(width_i, kernel, strides=2, activation="relu", name=name)(x)
                continue
            x = conv(width_i, kernel, activation="relu", name=f"encode_conv{i}")(x)
            pool_name = CODE_LAYER if is_code else f"encode_pool{i}"
            x = layers.MaxPooling2D(2, padding="same", name=pool_name)(x)
        if self.code_size is not None:
            grid = tuple(int(v) for v in x.shape[1:])
            x = layers.Flatten(name="flatten")(x)
            x = layers.Dense(self.code_size, name=CODE_LAYER)(x)
            x = layers.Dense(math.prod(grid), activation="relu", name="decode_dense")(x)
            x = layers.Reshape(grid, name="unflatten")(x)
        last_activation = None if self.output == "linear" else "sigmoid"
        if strided:  # transposed convolutions back to the input's size
            widths = [*reversed(self.filters[:-1]), channels]
            for i, (width_i, kernel) in enumerate(zip(widths, reversed(kernels), strict=True), 1):
                final = i == len(widths)
                x = layers.Conv2DTranspose(
                    width_i,
                    kernel,
                    strides=2,
                    padding="same",
                    activation=last_activation if final else "relu",
                    name="reconstruction" if final else f"decode_deconv{i}",
                )(x)
        else:
            mirrored = zip(reversed(self.filters), reversed(kernels), strict=True)
            for i, (width_i, kernel) in enumerate(mirrored, 1):
                x = conv(width_i, kernel, activation="relu", name=f"decode_conv{i}")(x)
                x = layers.UpSampling2D(2, name=f"decode_up{i}")(x)
            x = conv(channels, kernels[0], activation=last_activation, name="reconstruction")(x)
        if pad_h or pad_w:
            x = layers.Cropping2D(pads, name="crop")(x)
        model = keras.Model(inputs, x, name="conv_ae")
        model.compile(optimizer=self._make_optimizer(), loss=self.pixel_loss(self.loss, scale))
        return model

    def _make_optimizer(self) -> Any:
        keras = import_keras()
        class_name, default_rate = OPTIMIZERS[self.optimizer]
        rate = default_rate if self.learning_rate is None else float(self.learning_rate)
        return getattr(keras.optimizers, class_name)(learning_rate=rate)

    # Fitting -----------------------------------------------------------------------------------
    def fit(self, images: np.ndarray, validation: np.ndarray | None = None) -> ConvAutoencoder:
        """Train on ``images`` (validating on ``validation`` after each epoch); resume from
        ``checkpoint_dir`` when it holds an earlier, interrupted fit of the same settings."""
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
        self.train(images, validation, shape, scale)
        return self

    # Using the fitted network --------------------------------------------------------------------
    def transform(self, images: np.ndarray) -> np.ndarray:
        """The code of each image, flattened: (N, D) float32, computed in batches."""
        encoder = self.encoder_model()
        images = self._check_fitted_input(images)
        width = math.prod(int(v) for v in encoder.output.shape[1:])
        out = np.empty((len(images), width), dtype=np.float32)
        return predict_in_batches(encoder, self._batches(images), out)

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """The network's restored images: float32 (N, H, W, C) in [0, 1], the input's size."""
        model = self.fitted()
        images = self._check_fitted_input(images)
        out = np.empty((len(images), *self.input_shape_), dtype=np.float32)
        restored = predict_in_batches(model, self._batches(images), out)
        return np.clip(restored, 0.0, 1.0, out=restored)  # a linear output may overshoot

    def summary(self) -> list[tuple[str, tuple[int, ...], int]]:
        """(layer name, output shape without the batch axis, parameters) of each layer."""
        model = self.fitted()
        return [
            (layer.name, tuple(layer.output.shape[1:]), int(layer.count_params()))
            for layer in model.layers
        ]

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


@hookimpl
def register_encoders(register):
    register(
        "conv-ae",
        ConvAutoencoder,
        summary="convolutional autoencoder (Keras); by default the article's 937-parameter network",
    )
