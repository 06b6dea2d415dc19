"""What every Keras autoencoder stage shares: the reconstruction loss, per-epoch progress on
stderr, early stopping, checkpoints a fit resumes from, and saving and loading in safe mode.

A subclass builds its network (``build``) and says what must match for a checkpoint to be
resumed (``fingerprint``); ``KerasAutoencoder.train`` does the rest. Keras is imported only
when a network is built, trained or loaded.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from imgclust.errors import DataError, ImgclustError
from imgclust.io import atomic
from imgclust.io.bounded import read_json
from imgclust.kit.keras import import_keras

CODE_LAYER = "code"
STATE_FILE = "state.json"
CHECKPOINT_FORMAT = 1


@functools.cache
def keras_parts() -> Any:
    """The loss and callback classes, defined once Keras is imported (not at module import)."""
    keras = import_keras()
    ops = keras.ops
    Loss: Any = keras.losses.Loss  # Keras ships no annotations: its classes are Any
    Callback: Any = keras.callbacks.Callback

    @keras.saving.register_keras_serializable(package="imgclust", name="PixelLoss")
    class PixelLoss(Loss):
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

    class EpochEnd(Callback):
        """After each epoch: record the history, report on stderr, checkpoint, stop early.
        On a terminal it also shows the step count within the epoch, twice a second at most."""

        def __init__(self, owner: KerasAutoencoder, monitor: str) -> None:
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
                    f"\r{self.owner.stage_name} epoch {self.epoch}/{self.owner.epochs}: "
                    f"step {batch + 1}/{steps} ({now - self.started:.0f} s)"
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
            stop = owner.should_stop(self.monitor)
            owner.report(epoch + 1, seconds, stopped=stop)
            if owner.checkpoint_dir is not None:
                owner.write_checkpoint(self.model, epoch + 1, stopped=stop)
            if stop:
                self.model.stop_training = True

    return type("KerasParts", (), {"PixelLoss": PixelLoss, "EpochEnd": EpochEnd})


class KerasAutoencoder:
    """Base of the autoencoder encoders. Subclasses set ``stage_name``, ``model_file`` and
    ``meta_file``, and implement ``build`` and ``fingerprint``."""

    stage_name = "autoencoder"
    model_file = "model.keras"
    meta_file = "autoencoder.json"
    #: Images per training step; each subclass sets it from its settings.
    batch_size: int

    def __init__(self, epochs: int, patience: int, seed: int) -> None:
        self.epochs = int(epochs)
        self.patience = int(patience)
        self.seed = int(seed)
        #: Set by the run before ``fit``: where each epoch is checkpointed and resumed from.
        self.checkpoint_dir: Path | None = None
        self.history_: dict[str, list[float]] = {"loss": [], "val_loss": []}
        self.epoch_seconds_: list[float] = []
        self.model_: Any = None
        self._encoder: Any = None

    # To implement ----------------------------------------------------------------------------
    def build(self, input_shape: tuple[int, ...], scale: float = 1 / 255) -> Any:
        """The compiled network for inputs of ``input_shape`` whose values times ``scale``
        lie in [0, 1]."""
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        """The settings and input facts that must match for a checkpoint to be resumed."""
        raise NotImplementedError

    # Training --------------------------------------------------------------------------------
    def train(self, x: Any, validation: Any, input_shape: tuple[int, ...], scale: float) -> None:
        """Build (or resume from ``checkpoint_dir``) and fit the network on ``x`` -> ``x``."""
        keras = import_keras()
        self.input_shape_, self.scale_ = tuple(input_shape), float(scale)
        self.history_ = {"loss": [], "val_loss": []}
        self.epoch_seconds_ = []
        self._encoder = None
        state = self.read_checkpoint()
        keras.utils.set_random_seed(self.seed + (state["epoch"] if state else 0))
        if state and self.checkpoint_dir is not None:  # a state is only read from a folder
            model = self.load_keras_file(Path(self.checkpoint_dir) / state["model"], compile=True)
            self.history_ = {k: list(state["history"].get(k, [])) for k in ("loss", "val_loss")}
            start = int(state["epoch"])
            done = state.get("stopped") or start >= self.epochs
            say(f"{self.stage_name}: resuming from epoch {start} of {self.epochs}")
        else:
            model, start, done = self.build(self.input_shape_, self.scale_), 0, False
        self.model_ = model
        if done:
            return
        monitor = "val_loss" if validation is not None else "loss"
        model.fit(
            x,
            x,
            batch_size=self.batch_size,
            epochs=self.epochs,
            initial_epoch=start,
            validation_data=None if validation is None else (validation, validation),
            callbacks=[keras_parts().EpochEnd(self, monitor)],
            shuffle=True,
            verbose=0,
        )

    def pixel_loss(self, kind: str, scale: float) -> Any:
        """The reconstruction loss against the input rescaled by ``scale``."""
        return keras_parts().PixelLoss(kind=kind, scale=scale)

    def should_stop(self, monitor: str) -> bool:
        """Whether ``patience`` epochs have passed without a better ``monitor`` value."""
        values = self.history_.get(monitor) or []
        if self.patience < 1 or not values:
            return False
        return len(values) - 1 - int(np.argmin(values)) >= self.patience

    def report(self, epoch: int, seconds: float, stopped: bool) -> None:
        """One line per epoch on stderr."""
        parts = [f"{k} {v[-1]:.4f}" for k, v in self.history_.items() if v]
        note = " (stopping early)" if stopped else ""
        say(
            f"{self.stage_name} epoch {epoch}/{self.epochs}: {', '.join(parts)} "
            f"({seconds:.1f} s){note}"
        )

    # Checkpoints -----------------------------------------------------------------------------
    def write_checkpoint(self, model: Any, epoch: int, stopped: bool) -> None:
        """Save the model with its optimizer, then commit by rewriting the state file.

        Each file is written under a temporary name and renamed, so a killed process leaves the
        last whole checkpoint. Nothing is forced to disk (no fsync): a checkpoint serves
        ``--resume`` after an interruption, not after a power loss, and on a busy disk that wait
        took tens of seconds per epoch, inside the training time."""
        if self.checkpoint_dir is None:  # called only when there is a folder to write to
            return
        folder = Path(self.checkpoint_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch:04d}.keras"
        temporary = folder / f".tmp-{name}"
        model.save(temporary)
        os.replace(temporary, folder / name)
        atomic.write_json(
            folder / STATE_FILE,
            {
                "format": CHECKPOINT_FORMAT,
                "epoch": epoch,
                "model": name,
                "stopped": bool(stopped),
                "history": self.history_,
                "settings": self.fingerprint(),
            },
            sync=False,
        )
        for old in folder.glob("epoch-*.keras"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def read_checkpoint(self) -> dict[str, Any] | None:
        """The state of an interrupted fit in ``checkpoint_dir`` with matching settings, if any."""
        if self.checkpoint_dir is None:
            return None
        path = Path(self.checkpoint_dir) / STATE_FILE
        if not path.exists():
            return None
        name = self.stage_name
        try:
            state = read_json(path, f"{name}: checkpoint {str(path)!r}")
            model_file = Path(self.checkpoint_dir) / state["model"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"{name}: checkpoint {str(path)!r} is unreadable ({exc}); "
                "delete the folder to start over."
            ) from None
        if state.get("settings") != self.fingerprint():
            raise ImgclustError(
                f"{name}: the checkpoint in {str(self.checkpoint_dir)!r} was written with other "
                "settings or images; delete it to start over or use the settings it records."
            )
        if not model_file.exists():
            raise DataError(
                f"{name}: checkpoint model {str(model_file)!r} is missing; delete the folder."
            )
        return state

    # The fitted network ----------------------------------------------------------------------
    def fitted(self) -> Any:
        """The trained model; a one-line error before ``fit`` or ``load``."""
        if self.model_ is None:
            raise ImgclustError(f"{self.stage_name} is not fitted: call fit() or load() first.")
        return self.model_

    def encoder_model(self) -> Any:
        """The network up to its code layer."""
        if self._encoder is None:
            keras = import_keras()
            model = self.fitted()
            self._encoder = keras.Model(model.input, model.get_layer(CODE_LAYER).output)
        return self._encoder

    # Saving ----------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write the network (native ``.keras``) and a JSON of shape, scale, settings, history."""
        model = self.fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".tmp-{self.model_file}"
        model.save(temporary)
        os.replace(temporary, directory / self.model_file)
        atomic.write_json(
            directory / self.meta_file,
            {
                "format": CHECKPOINT_FORMAT,
                "input_shape": list(self.input_shape_),
                "scale": self.scale_,
                "settings": self.fingerprint(),
                "history": self.history_,
            },
        )

    def load(self, directory: Path) -> KerasAutoencoder:
        """Load a saved network with Keras ``safe_mode`` (no code from the file is run)."""
        directory = Path(directory)
        meta_path = directory / self.meta_file
        try:
            meta = read_json(meta_path, f"{self.stage_name}: {str(meta_path)!r}")
            self.input_shape_ = tuple(int(v) for v in meta["input_shape"])
            self.scale_ = float(meta["scale"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{self.stage_name}: cannot read {str(meta_path)!r}: {exc}") from None
        if not (directory / self.model_file).exists():
            raise DataError(f"{self.stage_name}: {str(directory / self.model_file)!r} is missing.")
        self.model_ = self.load_keras_file(directory / self.model_file, compile=False)
        history = meta.get("history", {})
        self.history_ = {k: list(history.get(k, [])) for k in ("loss", "val_loss")}
        self._encoder = None
        return self

    def load_keras_file(self, path: Path, compile: bool) -> Any:
        """A ``.keras`` file in safe mode (no code from the file runs); failures are one line."""
        keras = import_keras()
        keras_parts()  # registers the loss the file names
        try:
            return keras.saving.load_model(path, safe_mode=True, compile=compile)
        except (ValueError, TypeError, OSError) as exc:
            reason = " ".join(str(exc).split())[:200]
            message = f"{self.stage_name}: cannot load {str(path)!r} in Keras safe mode: {reason}"
            raise DataError(message) from None


def predict_in_batches(
    model: Any, batches: Iterable[tuple[int, np.ndarray]], out: np.ndarray
) -> np.ndarray:
    """Fill ``out`` with ``model``'s outputs for each ``(start, chunk)`` batch, row by row in
    ``out``'s shape, so that only one batch of outputs is held besides ``out``."""
    for start, chunk in batches:
        found = np.asarray(model.predict_on_batch(chunk))
        out[start : start + len(chunk)] = found.reshape(len(chunk), *out.shape[1:])
    return out


def say(message: str) -> None:
    """Training progress goes to stderr, so that ``--json`` output on stdout stays clean."""
    print(message, file=sys.stderr, flush=True)
