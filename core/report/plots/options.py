"""What the plots show and how much work they may cost: the map's method and sample sizes,
rows of the cluster overview, when per-cluster montages are written.

A run reads the map settings from the environment (``IMGCLUST_PLOT_MAP`` = auto, umap or pca;
``IMGCLUST_PLOT_MAP_SAMPLE`` = points); ``imgclust report`` takes them as options.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from imgclust.errors import SettingsError

MAP_METHODS = ("auto", "umap", "pca")


@dataclass(frozen=True)
class PlotOptions:
    """Settings of the plotting stage; the defaults keep 70,000 images well under a minute."""

    #: "auto" (UMAP when installed, else PCA), "umap" or "pca"
    map_method: str = "auto"
    #: points projected by UMAP (its cost grows with them; numba compiles once per process)
    umap_sample: int = 3_000
    #: points projected by PCA and drawn
    pca_sample: int = 20_000
    #: cluster rows in clusters.png (the largest ones, then noise)
    cluster_rows: int = 20
    #: images per row in clusters.png
    per_row: int = 16
    #: more clusters than this: also one montage per cluster in plots/clusters/
    montage_threshold: int = 20
    #: images in each montage
    montage_images: int = 64
    #: montages written at most (the largest clusters)
    montage_limit: int = 500
    #: originals shown in reconstructions.png
    reconstructions: int = 10
    #: pixel bytes of thumbnails report.html embeds: 30,000 MNIST digits (28x28 grey); beyond
    #: that a fixed-seed sample (colour and larger tiles cost more each, so fewer fit)
    explorer_bytes: int = 30_000 * 28 * 28

    def __post_init__(self) -> None:
        if self.map_method not in MAP_METHODS:
            raise SettingsError(
                f"map method {self.map_method!r} is unknown: use one of {', '.join(MAP_METHODS)}."
            )
        for name in (
            "umap_sample",
            "pca_sample",
            "cluster_rows",
            "per_row",
            "montage_images",
            "explorer_bytes",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"plot setting {name} must be at least 1.")

    def with_map(self, method: str | None = None, sample: int | None = None) -> PlotOptions:
        """These options with another map method and/or map sample size (both kinds of map)."""
        changed = self if method is None else replace(self, map_method=method.lower())
        if sample is not None:
            changed = replace(changed, umap_sample=sample, pca_sample=sample)
        return changed


def options_from_env(environ: dict[str, str] | None = None) -> PlotOptions:
    """Defaults, with the map method and sample taken from the environment when set there."""
    env = os.environ if environ is None else environ
    method = env.get("IMGCLUST_PLOT_MAP") or None
    sample_text = env.get("IMGCLUST_PLOT_MAP_SAMPLE") or None
    sample = None
    if sample_text is not None:
        try:
            sample = int(sample_text)
        except ValueError:
            raise SettingsError(
                f"IMGCLUST_PLOT_MAP_SAMPLE={sample_text!r} is not a whole number of points."
            ) from None
    return PlotOptions().with_map(method, sample)
