"""``training.png``: each trained encoder's loss and validation loss per epoch."""

from __future__ import annotations

from pathlib import Path

from imgclust.report.plots.figure import SkipPlot, new_figure, save_png
from imgclust.report.plots.inputs import PlotInputs
from imgclust.report.plots.options import PlotOptions


def loss_curves(history: dict[str, list[float]]) -> dict[str, list[float]]:
    """The curves worth drawing: 'loss', 'val_loss' and other '*loss' series, non-empty."""
    return {
        k: [float(v) for v in values]
        for k, values in history.items()
        if k.endswith("loss") and values
    }


LOSS_NAMES = {"bce": "binary cross-entropy", "mse": "mean squared error"}


def loss_label(loss: object) -> str:
    """'loss (binary cross-entropy)' when the encoder names its loss, else 'loss'."""
    if not isinstance(loss, str) or not loss:
        return "loss"
    return f"loss ({LOSS_NAMES.get(loss, loss)})"


def plot_training(inputs: PlotInputs, folder: Path, options: PlotOptions) -> list[Path]:
    """Write ``training.png`` (one panel per trained encoder) and return its path."""
    trained = {name: curves for name, h in inputs.histories.items() if (curves := loss_curves(h))}
    if not trained:
        raise SkipPlot("no encoder recorded a training history")
    from matplotlib.ticker import MaxNLocator

    figure = new_figure(6.0 * len(trained), 4.2)
    panels = figure.subplots(1, len(trained), squeeze=False)[0]
    for axes, (name, curves) in zip(panels, trained.items(), strict=True):
        for key in sorted(curves, key=lambda k: (k != "loss", k)):
            values = curves[key]
            epochs = range(1, len(values) + 1)
            label = {
                "loss": "training loss, mean over the epoch",
                "val_loss": "validation loss, at the epoch's end",
            }.get(key, key)
            axes.plot(epochs, values, marker="o", label=f"{label} (last {values[-1]:.4f})")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.set_ylabel(loss_label(inputs.encoder_settings.get(name, {}).get("loss")))
        axes.grid(alpha=0.3)
        axes.legend(fontsize=9)
        longest = max(len(v) for v in curves.values())
        axes.set_title(
            f"Training of encoder {name}: loss per epoch ({longest} epochs)", fontsize=10
        )
    return [save_png(figure, folder / "training.png")]
