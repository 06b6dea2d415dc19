"""``reconstructions.png``: some originals above what an autoencoder makes of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from imgclust.report.plots.figure import SkipPlot, mosaic_axes, save_png
from imgclust.report.plots.inputs import NO_AUTOENCODER, PlotInputs
from imgclust.report.plots.options import PlotOptions
from imgclust.report.plots.tiles import as_rgb, grid, take
from imgclust.stages.interfaces import Reconstructs


def reconstructor(
    encoders: list[tuple[str, Any]], missing: str = NO_AUTOENCODER
) -> tuple[int, str, Any]:
    """The first encoder with ``reconstruct``: its position, name and instance. ``missing``
    says why ``encoders`` is empty, when it is."""
    for position, (name, encoder) in enumerate(encoders):
        if isinstance(encoder, Reconstructs):
            return position, name, encoder
    raise SkipPlot(NO_AUTOENCODER if encoders else missing)


def pick_examples(inputs: PlotInputs, count: int) -> np.ndarray:
    """Random images spread evenly over the classes (in class order) when labelled, else random."""
    rng = np.random.default_rng(inputs.seed)
    names = inputs.label_names()
    if names is None:
        return np.sort(rng.choice(inputs.n, size=min(count, inputs.n), replace=False))
    pools = [rng.permutation(np.flatnonzero(names == cls)) for cls in inputs.label_order()]
    picked: list[list[int]] = [[] for _ in pools]
    depth = 0
    while sum(map(len, picked)) < count and any(depth < len(pool) for pool in pools):
        for slot, pool in enumerate(pools):
            if depth < len(pool) and sum(map(len, picked)) < count:
                picked[slot].append(int(pool[depth]))
        depth += 1
    return np.asarray([index for group in picked for index in group], dtype=np.int64)


def reconstruct(encoders: list[tuple[str, Any]], position: int, images: np.ndarray) -> np.ndarray:
    """Run ``images`` through the encoders before ``position``, then reconstruct; return images."""
    inputs: Any = images
    for _, encoder in encoders[:position]:
        inputs = encoder.transform(inputs)
    out = np.asarray(encoders[position][1].reconstruct(inputs), dtype=np.float32)
    if out.size != images.size:
        raise SkipPlot(
            f"encoder {encoders[position][0]!r} reconstructs {out.shape[1:]} arrays, not images"
        )
    return out.reshape(images.shape)


def plot_reconstructions(inputs: PlotInputs, folder: Path, options: PlotOptions) -> list[Path]:
    """Write ``reconstructions.png`` and return its path."""
    position, name, _ = reconstructor(inputs.encoders, inputs.encoders_missing)
    if inputs.images is None:
        raise SkipPlot("the images are not available")
    index = pick_examples(inputs, options.reconstructions)
    originals = np.asarray(take(inputs.images, index))
    rebuilt = reconstruct(inputs.encoders, position, originals)
    shown_originals, shown_rebuilt = as_rgb(originals), as_rgb(rebuilt)
    error = float(np.mean((shown_originals - shown_rebuilt) ** 2))
    mosaic = grid([shown_originals, shown_rebuilt], len(index), pad=2)

    labels = inputs.label_names()
    height_px, width_px = originals.shape[1:3]
    image_inches = min(10.0, max(6.0, 0.9 * len(index)))
    bottom = 0.55 if labels is not None else 0.15
    figure, axes = mosaic_axes(mosaic.shape, image_inches, 1.3, 0.65, bottom)
    axes.imshow(mosaic, interpolation="nearest")
    axes.set_yticks(
        [2 + height_px / 2, 4 + height_px * 1.5], ["original", "reconstruction"], fontsize=10
    )
    axes.tick_params(axis="y", length=0)
    if labels is not None:
        centres = [2 + (width_px + 2) * i + width_px / 2 for i in range(len(index))]
        axes.set_xticks(centres, [str(v) for v in labels[index]], fontsize=9)
        axes.set_xlabel("true label")
        axes.tick_params(axis="x", length=0)
    else:
        axes.set_xticks([])
    for side in axes.spines.values():
        side.set_visible(False)
    what = ", spread over the classes," if labels is not None else ", at random,"
    axes.set_title(
        f"Encoder {name}: {len(index)} images of {inputs.source}{what} above their "
        f"reconstructions\nmean squared error per pixel {error:.4f} (pixels scaled to 0..1)",
        fontsize=10,
    )
    return [save_png(figure, folder / "reconstructions.png")]
