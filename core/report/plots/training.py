"""``training.png``: each trained encoder's loss and validation loss per epoch, and each
refiner's course: its training loss and the share of labels it changed per self-labelling round
or DEC target update (and DEC's autoencoder pretraining loss)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass
class RefinerCourse:
    """What a refiner's panel draws: x values and their label, loss and share of labels changed."""

    x: list[int]
    xlabel: str
    unit: str
    loss: list[float]
    changed: list[float]


def refiner_course(history: dict[str, list[float]]) -> RefinerCourse | None:
    """A refiner's course from its history; None when it recorded neither loss nor changes.
    DEC records a target update per ``step`` (the first has no labels before it to compare
    with); self-labelling one value per round."""
    changed = [float(v) for v in history.get("changed", [])]
    loss = [float(v) for v in history.get("loss", [])]
    count = max(len(changed), len(loss))
    if not count:
        return None
    steps = [int(v) for v in history.get("step", [])]
    if len(steps) > count:
        x = steps[1 : count + 1]
        return RefinerCourse(
            x, "training step (at each update of the targets)", "updates", loss, changed
        )
    return RefinerCourse(list(range(1, count + 1)), "self-labelling round", "rounds", loss, changed)


def plot_training(inputs: PlotInputs, folder: Path, options: PlotOptions) -> list[Path]:
    """Write ``training.png`` (one panel per trained encoder, one or two per refiner) and return
    its path."""
    panels: list[tuple[str, str, Any]] = [  # (title, stage, its curves or its course)
        (f"Training of encoder {name}", name, curves)
        for name, h in inputs.histories.items()
        if (curves := loss_curves(h))
    ]
    for name, history in inputs.refiner_histories.items():
        pretrain = [float(v) for v in history.get("pretrain_loss", [])]
        if pretrain:  # DEC's own autoencoder: a panel like an encoder's, before its course
            panels.append(
                (f"Refiner {name}: its autoencoder's pretraining", name, {"loss": pretrain})
            )
        if course := refiner_course(history):
            panels.append((f"Refiner {name}", name, course))
    if not panels:
        raise SkipPlot("no encoder or refiner recorded a training history")
    from matplotlib.ticker import MaxNLocator

    figure = new_figure(6.0 * len(panels), 4.2)
    for axes, (title, name, curves) in zip(
        figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True
    ):
        if isinstance(curves, RefinerCourse):
            draw_refiner(axes, name, curves)
            continue
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
        axes.set_title(f"{title}: loss per epoch ({longest} epochs)", fontsize=10)
    return [save_png(figure, folder / "training.png")]


LOSS_OF = {
    "updates": "training loss, mean since the last update",
    "rounds": "classifier's loss, last epoch of the round",
}


def draw_refiner(axes: Any, name: str, course: RefinerCourse) -> None:
    """A refiner's panel: its training loss (left axis) and the share of labels it changed
    (right axis, in percent) at each round or target update."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    lines = []
    if course.loss:
        last = course.loss[-1]
        lines += axes.plot(
            course.x[: len(course.loss)], course.loss, marker="o", color="tab:blue",
            label=f"{LOSS_OF[course.unit]} (last {last:.4f})",
        )  # fmt: skip
        axes.set_ylabel("training loss")
    if course.changed:
        right = axes.twinx()
        shares = [100 * v for v in course.changed]
        lines += right.plot(
            course.x[: len(shares)], shares, marker="s", color="tab:orange",
            label=f"labels changed (last {shares[-1]:.2f}%)",
        )  # fmt: skip
        right.set_ylabel("labels changed")
        right.yaxis.set_major_formatter(PercentFormatter(decimals=1))
        right.set_ylim(bottom=0)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel(course.xlabel)
    axes.grid(alpha=0.3)
    axes.legend(lines, [line.get_label() for line in lines], fontsize=9)
    axes.set_title(
        f"Refiner {name}: loss and labels changed ({len(course.x)} {course.unit})", fontsize=10
    )
