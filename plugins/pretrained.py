"""``pretrained``: features from an ImageNet-pretrained ``keras.applications`` backbone.

Photos cluster by what they show only with features that know about objects; an autoencoder
trained for minutes on a few thousand photos learns colour and layout. Each image is resized to
the backbone's resolution (grayscale repeated to three channels), passed through the backbone's
own preprocessing, average-pooled to one vector and, by default, scaled to unit length.
Keras is imported only when the encoder is fitted, used or loaded.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.errors import DataError, ImgclustError, SettingsError, one_line
from imgclust.kit import atomic, hookimpl, import_keras, read_json

STATE_FILE = "pretrained.json"
WEIGHTS_FILE = "backbone.weights.h5"


@dataclass(frozen=True)
class Backbone:
    """A ``keras.applications`` constructor, its module (for ``preprocess_input``) and size."""

    constructor: str
    module: str
    resolution: int
    extra: tuple[tuple[str, Any], ...] = ()


BACKBONES: dict[str, Backbone] = {
    "efficientnetv2-b0": Backbone("EfficientNetV2B0", "efficientnet_v2", 224),
    "mobilenetv3-small": Backbone("MobileNetV3Small", "mobilenet_v3", 224),
    "mobilenetv3-large": Backbone("MobileNetV3Large", "mobilenet_v3", 224),
    "resnet50v2": Backbone("ResNet50V2", "resnet_v2", 224),
    "convnext-tiny": Backbone("ConvNeXtTiny", "convnext", 224),
}


class PretrainedEncoder:
    """One pooled feature vector per image from a pretrained ``keras.applications`` backbone.

    Parameters
    ----------
    backbone : str
        Which network: efficientnetv2-b0, mobilenetv3-small, mobilenetv3-large, resnet50v2 or
        convnext-tiny.
    weights : str
        "imagenet" (Keras downloads and caches them on first use), a path to a weights file
        for this backbone without its top, or "none" for random initialisation.
    resolution : int
        Side in pixels that images are resized to (0: the backbone's own, 224).
    batch_size : int
        Images per inference batch.
    normalize : bool
        Scale each feature vector to unit length (cosine geometry suits clustering).
    seed : int
        Seed of the random initialisation when weights is "none".
    """

    def __init__(
        self,
        backbone: str = "efficientnetv2-b0",
        weights: str = "imagenet",
        resolution: int = 0,
        batch_size: int = 32,
        normalize: bool = True,
        seed: int = 0,
    ) -> None:
        if backbone not in BACKBONES:
            raise SettingsError(
                f"encoder 'pretrained' has no backbone {backbone!r}; choose one of "
                f"{', '.join(BACKBONES)}."
            )
        if resolution != 0 and not 32 <= resolution <= 1024:
            raise SettingsError("encoder 'pretrained' needs 32 <= resolution <= 1024, or 0.")
        if batch_size < 1:
            raise SettingsError("encoder 'pretrained' needs batch_size >= 1.")
        self.backbone = backbone
        self.weights = str(weights)
        self.resolution = resolution or BACKBONES[backbone].resolution
        self.batch_size = batch_size
        self.normalize = normalize
        self.seed = seed
        self.model_: Any = None
        self.input_shape_: tuple[int, ...] | None = None

    # Interface ---------------------------------------------------------------------------
    def fit(self, images: np.ndarray, validation: np.ndarray | None = None) -> PretrainedEncoder:
        """Nothing is learned: check the input and build the backbone with its weights."""
        self.input_shape_ = _check_images(images)
        self.model_ = self._build(self.weights)
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        """(N, D) float32 features, computed a batch at a time (images may be a memory map)."""
        if self.model_ is None:
            raise ImgclustError("encoder 'pretrained' is not fitted yet: fit it first.")
        shape = _check_images(images)
        if self.input_shape_ is not None and shape[-1] != self.input_shape_[-1]:
            raise DataError(
                f"encoder 'pretrained' was fitted on images with {self.input_shape_[-1]} "
                f"channels; got {shape[-1]}."
            )
        keras = import_keras()
        preprocess = getattr(keras.applications, BACKBONES[self.backbone].module).preprocess_input
        width = int(self.model_.output_shape[-1])
        out = np.empty((len(images), width), dtype=np.float32)
        progress = _Progress(len(images))
        for start in range(0, len(images), self.batch_size):
            batch = self._pixels(np.asarray(images[start : start + self.batch_size]), keras)
            features = self.model_.predict_on_batch(preprocess(batch))
            out[start : start + len(batch)] = np.asarray(features)
            progress.update(start + len(batch))
        progress.close()
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, np.float32(1e-12))
        return out

    def save(self, directory: Path) -> None:
        """The backbone's weights and settings: a saved pipeline never downloads anything."""
        if self.model_ is None:
            raise ImgclustError("encoder 'pretrained' is not fitted yet: nothing to save.")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".tmp-{WEIGHTS_FILE}"
        self.model_.save_weights(temporary)
        os.replace(temporary, directory / WEIGHTS_FILE)
        state = {
            "backbone": self.backbone,
            "resolution": self.resolution,
            "input_shape": list(self.input_shape_ or ()),
        }
        atomic.write_json(directory / STATE_FILE, state)

    def load(self, directory: Path) -> PretrainedEncoder:
        """Rebuild the backbone untrained and read the saved weights (no download, no code)."""
        directory = Path(directory)
        try:
            state = read_json(directory / STATE_FILE, f"encoder 'pretrained': {STATE_FILE}")
            backbone, resolution = str(state["backbone"]), int(state["resolution"])
            shape = tuple(int(v) for v in state["input_shape"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"cannot read the saved pretrained encoder: {exc}") from None
        if backbone != self.backbone or resolution != self.resolution:
            raise DataError(
                f"the saved pretrained encoder is {backbone} at {resolution} px but its settings "
                f"say {self.backbone} at {self.resolution} px: the run folder is inconsistent."
            )
        weights = directory / WEIGHTS_FILE
        if not weights.is_file() or weights.is_symlink():
            raise DataError(f"the saved pretrained encoder has no {WEIGHTS_FILE}.")
        self.model_ = self._build("none")
        try:
            self.model_.load_weights(weights)
        except Exception as exc:
            raise DataError(f"cannot read {WEIGHTS_FILE}: {one_line(exc)}") from None
        self.input_shape_ = shape
        return self

    # Internals ---------------------------------------------------------------------------
    def _build(self, weights: str) -> Any:
        """The backbone without its classifier, average-pooled, with the requested weights."""
        keras = import_keras()
        spec = BACKBONES[self.backbone]
        keras.utils.set_random_seed(self.seed)
        source = _weights_argument(weights)
        constructor = getattr(keras.applications, spec.constructor)
        try:
            with contextlib.redirect_stdout(sys.stderr):  # "Downloading data from ..." is no result
                return constructor(
                    include_top=False,
                    weights=source,
                    input_shape=(self.resolution, self.resolution, 3),
                    pooling="avg",
                    **dict(spec.extra),
                )
        except Exception as exc:
            raise _weights_error(self.backbone, weights, exc) from None

    def _pixels(self, batch: np.ndarray, keras: Any) -> Any:
        """A batch as float32 0..255, three channels, at the backbone's resolution."""
        pixels = batch.astype(np.float32)
        if batch.dtype != np.uint8:
            pixels *= np.float32(255.0)
        if pixels.shape[-1] == 1:
            pixels = np.repeat(pixels, 3, axis=-1)
        if pixels.shape[1:3] != (self.resolution, self.resolution):
            pixels = keras.ops.image.resize(
                pixels, (self.resolution, self.resolution), interpolation="bilinear", antialias=True
            )
        return pixels


def _check_images(images: np.ndarray) -> tuple[int, ...]:
    """Images must be (N, H, W, 1 or 3): the first stage of a chain, not features."""
    if images.ndim != 4:
        raise DataError(
            "encoder 'pretrained' reads images (N, H, W, C), not features: put it first in the "
            f"chain (got shape {tuple(images.shape)})."
        )
    if images.shape[-1] not in (1, 3):
        raise DataError(
            f"encoder 'pretrained' reads grayscale or RGB images; got {images.shape[-1]} "
            "channels: load the images with mode rgb."
        )
    return tuple(int(v) for v in images.shape[1:])


def _weights_argument(weights: str) -> str | None:
    """What keras.applications takes: "imagenet", None, or an existing weights file's path."""
    if weights.lower() == "imagenet":
        return "imagenet"
    if weights.lower() in ("none", ""):
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise SettingsError(
            f"encoder 'pretrained': weights file {weights!r} does not exist; give "
            'weights="imagenet", weights="none" or the path of a weights file.'
        )
    return str(path)


def _weights_error(backbone: str, weights: str, exc: Exception) -> ImgclustError:
    """One line for a failed build: offline without cached weights, or a mismatched file."""
    text = one_line(exc)
    found = re.search(r"https?://\S+?/([^/\s:]+\.h5)", text)
    if weights.lower() == "imagenet" and ("URL fetch failure" in text or found):
        name = found.group(1) if found else "the backbone's weights file"
        cache = Path(os.environ.get("KERAS_HOME", "~/.keras")) / "models"
        return ImgclustError(
            f"cannot download the ImageNet weights of {backbone} ({name}): put that file in "
            f"{cache}/, or pass --set encoder.weights=PATH to a copy of it "
            '(or encoder.weights="none" for random features).'
        )
    return ImgclustError(f"cannot build backbone {backbone} with weights {weights!r}: {text}")


class _Progress:
    """Images encoded so far on stderr: a live line on a terminal, else every ~10 seconds."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.live = sys.stderr.isatty()
        self.started = self.shown = time.perf_counter()
        self.written = False

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.shown < (0.5 if self.live else 10.0) or done >= self.total:
            return
        self.shown = now
        rate = done / max(now - self.started, 1e-9)
        line = f"pretrained: {done}/{self.total} images ({rate:.0f}/s)"
        sys.stderr.write(f"\r{line}" if self.live else f"{line}\n")
        sys.stderr.flush()
        self.written = self.live

    def close(self) -> None:
        if self.written:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


@hookimpl
def register_encoders(register):
    register(
        "pretrained",
        PretrainedEncoder,
        summary="ImageNet-pretrained keras.applications backbone, pooled (for photos)",
    )
