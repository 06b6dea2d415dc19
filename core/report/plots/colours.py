"""Colours for clusters and classes: distinct for up to 20, spread over a rainbow beyond; a class
gets the colour of the cluster the Hungarian matching pairs it with, so both maps compare at a
glance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NOISE_COLOUR = (0.55, 0.55, 0.55, 1.0)


def palette(count: int) -> list[tuple[float, float, float, float]]:
    """``count`` distinguishable RGBA colours (tab10, tab20, then a shuffled turbo)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_rgba

    if count <= 20:
        table = colormaps["tab10" if count <= 10 else "tab20"].colors  # type: ignore[attr-defined]
        return [to_rgba(c) for c in table[:count]]
    steps = np.linspace(0.05, 0.95, count)
    order = np.random.default_rng(0).permutation(count)  # neighbours in order get far colours
    turbo = colormaps["turbo"]
    return [to_rgba(turbo(float(steps[i]))) for i in order]


def matched_colours(
    clusters: Sequence[int], classes: Sequence[str], matching: dict[int, str]
) -> tuple[dict[int, tuple], dict[str, tuple]]:
    """A colour per cluster and per class; matched pairs share one."""
    matched = {str(v) for v in matching.values()}
    unmatched = [c for c in classes if c not in matched]
    colours = palette(len(clusters) + len(unmatched))
    by_cluster = {c: colours[i] for i, c in enumerate(clusters)}
    by_class = {str(cls): by_cluster[c] for c, cls in matching.items() if c in by_cluster}
    for offset, cls in enumerate(unmatched):
        by_class[cls] = colours[len(clusters) + offset]
    return by_cluster, by_class
