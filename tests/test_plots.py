"""The plots of a run: each a valid PNG of sensible size that shows what it says, on synthetic
data (fast), with failures reported as warnings rather than raised."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from imgclust.errors import SettingsError
from imgclust.report.plots import PlotInputs, PlotOptions, make_plots, options_from_env
from imgclust.report.plots.confusion import confusion_table
from imgclust.report.plots.projection import choose_method, project

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAIN_PLOTS = ("reconstructions.png", "clusters.png", "map.png", "confusion.png", "training.png")
FAST = PlotOptions(map_method="pca")


def decode_png(path: Path):
    """The decoded image of a PNG file, after checking its signature and integrity."""
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    with Image.open(io.BytesIO(data)) as probe:
        probe.verify()
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def assert_sensible(path: Path, min_side: int = 200, max_side: int = 6000) -> np.ndarray:
    """A PNG of sensible size with something drawn in it; return its pixels."""
    image = decode_png(path)
    width, height = image.size
    assert min_side <= width <= max_side and min_side <= height <= max_side, (path.name, image.size)
    pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert pixels.std() > 10, f"{path.name} looks blank"
    return pixels


class FakeAutoencoder:
    """Stands in for conv-ae: flattens images, 'reconstructs' them dimmed, records its calls."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[np.ndarray] = []
        self.history_ = {"loss": [0.30, 0.20, 0.15], "val_loss": [0.28, 0.21, 0.17]}

    def transform(self, images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1).astype(np.float32) / 255

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        if self.fail:
            raise RuntimeError("decoder exploded")
        self.calls.append(np.array(images))
        return (images.astype(np.float32) / 255 * 0.5).astype(np.float32)


def synthetic(
    n: int = 400,
    k: int = 4,
    labels: bool = True,
    noise: int = 0,
    channels: int = 1,
    encoder: object | None = None,
) -> PlotInputs:
    """Blobs of images whose brightness pattern depends on their class, clustered near-perfectly."""
    rng = np.random.default_rng(0)
    classes = rng.integers(0, k, size=n)
    images = rng.integers(0, 60, size=(n, 12, 12, channels)).astype(np.uint8)
    for c in range(k):
        images[classes == c, c : c + 4, 2:10] = 250
    features = rng.normal(size=(n, 6)).astype(np.float32) + classes[:, None] * 4.0
    clusters = classes.copy()
    clusters[:10] = (clusters[:10] + 1) % k  # a few mistakes
    if noise:
        clusters[-noise:] = -1
    encoders = [("fake-ae", encoder)] if encoder is not None else []
    return PlotInputs(
        clusters=clusters,
        images=images,
        features=features,
        labels=classes if labels else None,
        class_names=[f"class-{c}" for c in range(k)] if labels else None,
        encoders=encoders,
        histories={"fake-ae": encoder.history_} if encoder is not None else {},
        seed=0,
        source="synthetic",
    )


def test_every_plot_is_a_sensible_png(tmp_path: Path) -> None:
    outcome = make_plots(synthetic(encoder=FakeAutoencoder(), noise=20), tmp_path, FAST)
    assert not outcome.failed, outcome.failed
    for name in MAIN_PLOTS:
        assert_sensible(tmp_path / "plots" / name)
    assert {p.name for p in outcome.written if p.parent.name == "plots"} == set(MAIN_PLOTS)
    explorer = {p.name for p in outcome.written if p.parent.name == "explorer"}
    assert explorer == {"points.json", "thumbs-0.png"}  # what report.html's explorer embeds
    assert "clusters/" in outcome.skipped  # 4 clusters: no montages


def test_clusters_png_has_one_row_per_cluster_and_noise(tmp_path: Path) -> None:
    heights = {}
    for k in (3, 9):
        folder = tmp_path / str(k)
        make_plots(synthetic(k=k), folder, FAST, only=("clusters.png",))
        heights[k] = decode_png(folder / "plots" / "clusters.png").size[1]
    make_plots(synthetic(k=9, noise=15), tmp_path / "noise", FAST, only=("clusters.png",))
    with_noise = decode_png(tmp_path / "noise" / "plots" / "clusters.png").size[1]
    row = (heights[9] - heights[3]) / 6
    assert row > 20
    assert with_noise == pytest.approx(heights[9] + row, abs=3)


def test_many_clusters_get_a_montage_each(tmp_path: Path) -> None:
    inputs = synthetic(n=900, k=30, noise=12)
    only = ("clusters/",)
    outcome = make_plots(inputs, tmp_path, PlotOptions(montage_threshold=20), only=only)
    montages = sorted((tmp_path / "plots" / "clusters").glob("*.png"))
    assert len(montages) == 31 and (tmp_path / "plots" / "clusters" / "noise.png") in montages
    for path in montages[:3]:
        assert_sensible(path, min_side=60)
    assert not outcome.failed
    outcome = make_plots(inputs, tmp_path, PlotOptions(montage_threshold=40), only=only)
    assert "clusters/" in outcome.skipped  # few enough for clusters.png alone
    # a rebuild replaces the montages of the earlier one
    options = PlotOptions(montage_threshold=5, montage_limit=4)
    make_plots(inputs, tmp_path, options, only=only)
    assert len(list((tmp_path / "plots" / "clusters").glob("*.png"))) == 5  # 4 largest + noise


def test_reconstructions_show_the_encoders_output_spread_over_the_classes(tmp_path: Path) -> None:
    encoder = FakeAutoencoder()
    inputs = synthetic(encoder=encoder)
    make_plots(inputs, tmp_path, FAST, only=("reconstructions.png",))
    pixels = assert_sensible(tmp_path / "plots" / "reconstructions.png")
    (shown,) = encoder.calls
    assert shown.shape == (10, 12, 12, 1) and shown.dtype == np.uint8
    # the clustered images themselves, evenly over the 4 classes, in class order
    matches = [np.flatnonzero((inputs.images == image).all(axis=(1, 2, 3))) for image in shown]
    classes = [int(inputs.labels[m[0]]) for m in matches]
    assert classes == sorted(classes) and np.bincount(classes).tolist() == [3, 3, 2, 2]
    assert pixels.shape[1] > 500


def test_plots_that_do_not_apply_are_skipped_with_a_reason(tmp_path: Path) -> None:
    outcome = make_plots(synthetic(labels=False), tmp_path, FAST)
    assert set(outcome.skipped) >= {"reconstructions.png", "confusion.png", "training.png"}
    assert "labels" in outcome.skipped["confusion.png"]
    assert not (tmp_path / "plots" / "confusion.png").exists()
    labelled = tmp_path / "labelled"
    make_plots(synthetic(), labelled, FAST, only=("map.png",))
    one_panel = decode_png(tmp_path / "plots" / "map.png").size[0]
    two_panels = decode_png(labelled / "plots" / "map.png").size[0]
    assert two_panels > 1.7 * one_panel  # a second map, coloured by true label


def test_a_failing_plot_is_a_one_line_warning_and_the_others_are_written(tmp_path: Path) -> None:
    lines: list[str] = []
    outcome = make_plots(
        synthetic(encoder=FakeAutoencoder(fail=True)), tmp_path, FAST, lines.append
    )
    assert list(outcome.failed) == ["reconstructions.png"]
    warnings = [line for line in lines if line.startswith("warning:")]
    assert warnings == [
        "warning: plots/reconstructions.png not written: RuntimeError: decoder exploded"
    ]
    for name in ("clusters.png", "map.png", "confusion.png", "training.png"):
        assert (tmp_path / "plots" / name).is_file()


def test_colour_images_and_float_images_are_drawn(tmp_path: Path) -> None:
    inputs = synthetic(channels=3, n=200, k=25)
    inputs.images = inputs.images.astype(np.float32) / 255
    outcome = make_plots(inputs, tmp_path, PlotOptions(map_method="pca", montage_threshold=20))
    assert not outcome.failed, outcome.failed
    image = decode_png(tmp_path / "plots" / "clusters.png")
    assert image.mode in ("RGB", "RGBA")


def test_confusion_columns_follow_the_hungarian_matching() -> None:
    labels = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    clusters = np.array([2] * 50 + [0] * 30 + [1] * 18 + [-1] * 2)
    clusters[:5] = 0  # five a's in cluster 0
    inputs = PlotInputs(clusters=clusters, labels=labels)
    table, rows, columns, matching = confusion_table(inputs)
    assert rows == [2, 0, 1, -1]  # largest first, noise last
    assert columns == ["a", "b", "c"]  # the classes matched to those rows, in that order
    assert matching == {2: "a", 0: "b", 1: "c"}
    assert table.sum() == len(labels)
    assert table[0, 0] == 45 and table[1, 0] == 5 and table[1, 1] == 30 and table[3].sum() == 2


def test_training_curve_needs_a_history(tmp_path: Path) -> None:
    outcome = make_plots(synthetic(), tmp_path, FAST, only=("training.png",))
    assert "training.png" in outcome.skipped
    inputs = synthetic()
    inputs.histories = {"conv-ae": {"loss": [0.3, 0.2], "val_loss": []}}
    make_plots(inputs, tmp_path, FAST, only=("training.png",))
    assert_sensible(tmp_path / "plots" / "training.png")


def test_map_samples_large_data_with_a_fixed_seed() -> None:
    features = np.random.default_rng(1).normal(size=(3000, 8)).astype(np.float32)
    options = PlotOptions(map_method="pca", pca_sample=500)
    first, again = project(features, options, seed=3), project(features, options, seed=3)
    assert first.xy.shape == (500, 2) and first.method == "PCA"
    assert np.array_equal(first.index, again.index) and len(np.unique(first.index)) == 500
    assert not np.array_equal(first.index, project(features, options, seed=4).index)
    assert project(features[:200], options).xy.shape == (200, 2)  # small data: every point
    flat = project(features[:, :2], options)
    assert flat.method == "features" and np.allclose(flat.xy, features[flat.index, :2])


def test_map_method_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    assert choose_method("pca", 10_000) == ("pca", "")
    assert choose_method("umap", 10)[0] == "pca"  # too few points for UMAP
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert choose_method("auto", 10_000) == ("pca", "")
    method, note = choose_method("umap", 10_000)
    assert method == "pca" and "not installed" in note


def test_map_settings_from_the_environment() -> None:
    assert options_from_env({}).map_method == "auto"
    options = options_from_env({"IMGCLUST_PLOT_MAP": "PCA", "IMGCLUST_PLOT_MAP_SAMPLE": "123"})
    assert (options.map_method, options.pca_sample, options.umap_sample) == ("pca", 123, 123)
    with pytest.raises(SettingsError, match="auto, umap, pca"):
        options_from_env({"IMGCLUST_PLOT_MAP": "tsne"})
    with pytest.raises(SettingsError, match="whole number"):
        options_from_env({"IMGCLUST_PLOT_MAP_SAMPLE": "many"})


def test_importing_the_package_does_not_import_matplotlib() -> None:
    import subprocess
    import sys

    code = (
        "import sys, imgclust.report.plots, imgclust.report.page; "
        "print('matplotlib' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


@pytest.mark.slow
def test_umap_map_of_a_sample(tmp_path: Path) -> None:
    pytest.importorskip("umap")
    inputs = synthetic(n=1500, k=5)
    options = PlotOptions(map_method="umap", umap_sample=600)
    projection = project(inputs.features, options, seed=0)
    assert projection.method == "UMAP" and projection.xy.shape == (600, 2)
    make_plots(inputs, tmp_path, options, only=("map.png",))
    assert_sensible(tmp_path / "plots" / "map.png")


@pytest.mark.slow
@pytest.mark.mnist
def test_plotting_10000_mnist_images_takes_seconds(mnist_path: Path, tmp_path: Path) -> None:
    import time

    from sklearn.cluster import MiniBatchKMeans
    from sklearn.decomposition import PCA

    from imgclust.plugins.mnist import MnistDataset

    data = MnistDataset(path=str(mnist_path)).load("test")
    features = PCA(n_components=30, random_state=0).fit_transform(
        data.images.reshape(len(data), -1).astype(np.float32) / 255
    )
    clusters = MiniBatchKMeans(10, random_state=0, n_init=1).fit_predict(features)
    inputs = PlotInputs(
        clusters=clusters,
        images=data.images,
        features=features.astype(np.float32),
        labels=data.labels,
        class_names=data.class_names,
        encoders=[("fake-ae", FakeAutoencoder())],
        histories={"fake-ae": FakeAutoencoder().history_},
        source="mnist (test split)",
    )
    started = time.perf_counter()
    outcome = make_plots(inputs, tmp_path, FAST)
    assert time.perf_counter() - started < 30  # about 4 s on 2 busy cores
    assert not outcome.failed
    for name in MAIN_PLOTS:
        assert_sensible(tmp_path / "plots" / name)
