"""The umap, dense-ae and deskew encoders, and chaining encoders on the CLI and in config files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imgclust.errors import DataError, ImgclustError, SettingsError

SMALL = ["--dataset", "digits", "--set", "dataset.limit=600", "--no-plots", "--json"]


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[..., None]
    return images, bunch.target


def run_json(cli, *args):
    result = cli("run", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# Import cost ---------------------------------------------------------------------------------
def test_plugins_import_no_heavy_library():
    code = (
        "import sys\n"
        "import imgclust.plugins.umap_encoder, imgclust.plugins.dense_ae\n"
        "import imgclust.plugins.deskew, imgclust.plugins.hdbscan_clusterer\n"
        "import imgclust.plugins.sklearn_clusterers, imgclust.plugins.recipes\n"
        "heavy = {'umap', 'numba', 'keras', 'tensorflow', 'hdbscan', 'sklearn', 'matplotlib'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_umap_is_imported_without_tensorflow():
    code = (
        "import sys\n"
        "from imgclust.kit.umap import import_umap\n"
        "umap = import_umap()\n"
        "print('tensorflow' in sys.modules, hasattr(umap, 'UMAP'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


@pytest.mark.slow
@pytest.mark.parametrize("tensorflow_first", [False, True])
def test_umaps_compiled_code_is_cached_whether_or_not_tensorflow_is_loaded(
    tmp_path, tensorflow_first
):
    """A conv-ae run has loaded TensorFlow before its map imports UMAP: its code is cached too."""
    code = (
        ("import tensorflow\n" if tensorflow_first else "")
        + "from imgclust.kit.umap import import_umap\n"
        "umap = import_umap()\n"
        "from umap import umap_\n"
        "print(type(umap_.smooth_knn_dist._cache).__name__)\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    env.pop("NUMBA_CACHE_DIR", None)
    argv = [sys.executable, "-c", code]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split()[-1] == "FunctionCache"


@pytest.mark.slow
def test_numbas_cannot_cache_warnings_stay_off_the_terminal(tmp_path):
    """pynndescent's nn_descent cannot be cached; compiling it must not print a warning."""
    code = (
        "import numpy as np\n"
        "from imgclust.kit.umap import import_umap\n"
        "import_umap()\n"
        "from pynndescent import NNDescent\n"
        "NNDescent(np.random.default_rng(0).random((300, 5)), n_neighbors=5)\n"
        "print('done')\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    env.pop("NUMBA_CACHE_DIR", None)
    argv = [sys.executable, "-W", "default", "-c", code]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["done"]
    assert "Cannot cache" not in out.stderr, out.stderr


# umap ----------------------------------------------------------------------------------------
def test_umap_with_a_seed_is_reproducible_and_keeps_its_embedding(digits):
    from imgclust.plugins.umap_encoder import UMAPEncoder

    x = digits[0][:400]
    settings = dict(n_components=3, n_neighbors=10, n_epochs=60)
    first = UMAPEncoder(**settings, seed=1).fit(x)
    again = UMAPEncoder(**settings, seed=1).fit(x)
    other = UMAPEncoder(**settings, seed=2).fit(x)
    assert first.embedding_.shape == (400, 3) and first.embedding_.dtype == np.float32
    np.testing.assert_array_equal(first.embedding_, again.embedding_)
    assert not np.allclose(first.embedding_, other.embedding_)
    new = first.transform(digits[0][400:420])
    assert new.shape == (20, 3) and new.dtype == np.float32 and np.isfinite(new).all()


def test_umap_saves_plain_files_that_load_without_trust_and_place_inputs_alike(digits, tmp_path):
    from imgclust.engine.untrusted import needs_trust
    from imgclust.plugins.umap_encoder import UMAPEncoder

    x = digits[0][:300]
    encoder = UMAPEncoder(n_components=2, n_neighbors=8, n_epochs=40).fit(x)
    encoder.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "umap.json", "umap_state.json", "umap_state.npz",
    ]  # fmt: skip
    assert not needs_trust(tmp_path)
    loaded = UMAPEncoder().load(tmp_path)
    np.testing.assert_array_equal(loaded.transform(x), encoder.embedding_)  # its own inputs
    new, again = encoder.transform(digits[0][300:400]), loaded.transform(digits[0][300:400])
    spread = float(np.ptp(encoder.embedding_))
    moved = np.abs(new - again).max(axis=1)  # exact neighbours, the same optimisation: a row
    assert np.mean(moved < 0.02 * spread) >= 0.9  # moves where two neighbours tie (pixels)
    from sklearn.cluster import KMeans

    clusters = KMeans(10, n_init=3, random_state=0).fit(encoder.embedding_)
    assert np.mean(clusters.predict(new) == clusters.predict(again)) >= 0.95


def test_umap_with_a_metric_scikit_learn_lacks_is_pickled_and_loads_only_with_trust(
    digits, tmp_path
):
    from imgclust.plugins.umap_encoder import UMAPEncoder

    x = digits[0][:300]
    encoder = UMAPEncoder(n_components=2, n_neighbors=8, n_epochs=40, metric="hellinger").fit(x)
    encoder.save(tmp_path)
    assert (tmp_path / "umap.pkl").is_file() and not (tmp_path / "umap_state.json").exists()
    with pytest.raises(ImgclustError, match="refusing to unpickle.*trust"):
        UMAPEncoder().load(tmp_path)
    loaded = UMAPEncoder().load(tmp_path, trust=True)
    np.testing.assert_allclose(loaded.transform(x[:10]), encoder.transform(x[:10]), atol=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_epochs": 10**9}, "n_epochs = 1000000000 is outside 3 to 5000"),
        ({"n_epochs": 2}, "n_epochs = 2 is outside 3 to 5000"),  # places nothing: a third is 0
        ({"negative_sample_rate": -1}, "negative_sample_rate = -1 is outside"),
        ({"n_neighbors": 5000}, "n_neighbors = 5000 is outside 2 to 1000"),
        ({"local_connectivity": 1e9}, "local_connectivity = 1000000000.0 is outside"),
        ({"a": 10**400}, "a = 1000000000000000000000000000000000000000 is outside"),
        ({"metric": "os.system"}, "metric 'os.system' is not one of"),
        ({"metric": "correlation"}, "metric 'correlation' is not one of"),
        ({"a": "1"}, "a is not a number"),
        ({"b": None}, "b is not a number"),
        ({"n_neighbors": 8.5}, "n_neighbors is not a whole number"),
    ],
)
def test_umap_numbers_from_a_stranger_are_checked_before_use(digits, tmp_path, change, message):
    import json

    from imgclust.plugins.umap_encoder import UMAPEncoder

    UMAPEncoder(n_components=2, n_neighbors=8, n_epochs=20).fit(digits[0][:200]).save(tmp_path)
    state = tmp_path / "umap_state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), **change}))
    with pytest.raises(
        DataError, match=f"encoder 'umap': umap_state.json cannot be read: {message}"
    ):
        UMAPEncoder().load(tmp_path)
    state.write_text("[" * 60_000)
    with pytest.raises(DataError, match="umap_state.json cannot be read"):
        UMAPEncoder().load(tmp_path)


def test_umap_fitted_outside_the_plain_ranges_is_pickled_so_that_it_still_loads(digits, tmp_path):
    from imgclust.plugins.umap_encoder import UMAPEncoder

    UMAPEncoder(n_components=2, n_neighbors=8, n_epochs=2).fit(digits[0][:200]).save(tmp_path)
    assert (tmp_path / "umap.pkl").is_file() and not (tmp_path / "umap_state.json").exists()


def test_umap_placing_inputs_of_another_width_is_one_line(digits, tmp_path):
    from imgclust.plugins.umap_encoder import UMAPEncoder

    UMAPEncoder(n_components=2, n_neighbors=8, n_epochs=20).fit(digits[0][:200]).save(tmp_path)
    loaded = UMAPEncoder().load(tmp_path)
    with pytest.raises(DataError, match="fitted on 64 numbers per input; got 10"):
        loaded.transform(np.zeros((3, 10), dtype=np.float32))


def test_umap_arrays_from_a_stranger_must_belong_together(digits, tmp_path):
    from imgclust.plugins.umap_encoder import UMAPEncoder

    UMAPEncoder(n_components=2, n_neighbors=8, n_epochs=20).fit(digits[0][:200]).save(tmp_path)
    arrays = dict(np.load(tmp_path / "umap_state.npz"))
    np.savez(
        tmp_path / "umap_state.npz", inputs=arrays["inputs"], embedding=arrays["embedding"][:5]
    )
    with pytest.raises(DataError, match="200 inputs, 5 embedded.*do not belong together"):
        UMAPEncoder().load(tmp_path)
    arrays["inputs"][3, 1] = np.nan
    np.savez(tmp_path / "umap_state.npz", **arrays)
    with pytest.raises(DataError, match="inputs holds NaN"):
        UMAPEncoder().load(tmp_path)
    huge = arrays["inputs"].astype(np.float64)
    huge[0, 0] = 1e300  # finite as float64, infinite as the float32 it is used as
    np.savez(tmp_path / "umap_state.npz", inputs=huge, embedding=arrays["embedding"])
    with pytest.raises(DataError, match="inputs holds NaN or infinite"):
        UMAPEncoder().load(tmp_path)
    np.savez(
        tmp_path / "umap_state.npz", inputs=np.array([object()]), embedding=arrays["embedding"]
    )
    with pytest.raises(DataError, match="umap_state.npz"):
        UMAPEncoder().load(tmp_path)
    (tmp_path / "umap_state.json").write_text("[" * 70_000)
    with pytest.raises(DataError, match="larger than 65536 bytes"):
        UMAPEncoder().load(tmp_path)


def test_umap_needs_more_images_than_dimensions(digits):
    from imgclust.plugins.umap_encoder import UMAPEncoder

    with pytest.raises(DataError, match="needs more than"):
        UMAPEncoder(n_components=10).fit(digits[0][:8])
    with pytest.raises(SettingsError, match="n_neighbors >= 2"):
        UMAPEncoder(n_neighbors=1)
    features = np.ones((50, 4), dtype=np.float32)
    features[3, 1] = np.nan
    with pytest.raises(DataError, match="1 of 50 inputs of encoder 'umap' have NaN"):
        UMAPEncoder().fit(features)


def test_encoders_chain_on_the_cli_each_with_its_settings(cli, runs_dir):
    record = run_json(
        cli, *SMALL, "--encoder", "pca", "--encoder", "umap", "--clusterer", "gmm",
        "--set", "encoder.pca.n_components=20", "--set", "encoder.umap.n_neighbors=10",
        "--set", "encoder.umap.min_dist=0", "--set", "encoder.umap.n_epochs=100",
        "--runs-dir", runs_dir,
    )  # fmt: skip
    assert record["pipeline"] == "digits -> pca -> umap -> gmm"
    assert record["feature_dim"] == 10 and record["metrics"]["acc"] > 0.6
    folder = Path(record["run"])
    from imgclust.engine.config import read_toml

    config = read_toml(folder / "config.toml")
    assert [e["name"] for e in config["encoder"]] == ["pca", "umap"]
    assert config["encoder"][0]["n_components"] == 20
    assert config["encoder"][1]["n_neighbors"] == 10 and config["encoder"][1]["min_dist"] == 0
    assert np.load(folder / "embeddings.npy").shape == (600, 10)
    # umap's plain files: the run predicts without --trust, as the run clustered its images
    manifest = json.loads((folder / "pipeline" / "manifest.json").read_text())
    assert manifest["needs_trust"] is False
    from sklearn.datasets import load_digits

    images = np.round(load_digits().images[:600] * (255 / 16)).astype(np.uint8)
    np.save(folder.parent / "digits.npy", images)
    predicted = cli("predict", folder, folder.parent / "digits.npy", "--json")
    assert predicted.exit_code == 0, predicted.stderr
    clusters = [row["cluster"] for row in json.loads(predicted.stdout)["assignments"]]
    saved = [
        int(line.split(",")[1]) for line in (folder / "assignments.csv").read_text().split()[1:]
    ]
    assert np.mean(np.equal(clusters, saved)) > 0.98
    held_out = np.round(load_digits().images[600:900] * (255 / 16)).astype(np.uint8)
    np.save(folder.parent / "held_out.npy", held_out)  # placed through the exact neighbours
    predicted = cli("predict", folder, folder.parent / "held_out.npy", "--json")
    assert predicted.exit_code == 0, predicted.stderr
    assert len(json.loads(predicted.stdout)["assignments"]) == 300


def test_encoders_chain_in_a_config_file_and_the_cli_overrides_one(cli, runs_dir, tmp_path):
    config = tmp_path / "chain.toml"
    config.write_text(
        '[dataset]\nname = "digits"\nlimit = 500\n\n'
        '[[encoder]]\nname = "deskew"\n\n'
        '[[encoder]]\nname = "pca"\nn_components = 16\n\n'
        '[[encoder]]\nname = "umap"\nn_components = 4\nn_neighbors = 30\nn_epochs = 50\n\n'
        '[clusterer]\nname = "kmeans"\nn_clusters = 10\n'
    )
    record = run_json(
        cli, "--config", config, "--set", "encoder.umap.n_neighbors=10", "--no-plots", "--json",
        "--runs-dir", runs_dir,
    )  # fmt: skip
    assert record["pipeline"] == "digits -> deskew -> pca -> umap -> kmeans"
    assert record["feature_dim"] == 4 and record["n_images"] == 500
    saved = (Path(record["run"]) / "config.toml").read_text()
    assert "n_neighbors = 10" in saved and "n_components = 16" in saved


def test_a_setting_for_an_encoder_not_in_the_chain_is_refused(cli, runs_dir):
    result = cli(
        "run", *SMALL, "--encoder", "pca", "--encoder", "umap", "--clusterer", "kmeans",
        "--set", "encoder.dense-ae.epochs=2", "--runs-dir", runs_dir,
    )  # fmt: skip
    assert result.exit_code != 0
    assert "no single encoder 'dense-ae'" in result.stderr and "Traceback" not in result.stderr
    assert not runs_dir.exists() or not list(runs_dir.iterdir())


# dense-ae ------------------------------------------------------------------------------------
def test_dense_ae_has_the_dec_architecture():
    from imgclust.plugins.dense_ae import DenseAutoencoder

    model = DenseAutoencoder().build((28, 28, 1))
    widths = [layer.units for layer in model.layers if hasattr(layer, "units")]
    assert widths == [500, 500, 2000, 10, 2000, 500, 500, 784]
    sizes = [784, 500, 500, 2000, 10, 2000, 500, 500, 784]
    expected = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    assert model.count_params() == expected
    assert model.get_layer("code").activation.__name__ == "linear"
    assert model.get_layer("reconstruction").activation.__name__ == "linear"
    assert type(model.optimizer).__name__ == "Adam"


def test_dense_ae_trains_reports_on_stderr_and_round_trips(digits, tmp_path, capfd):
    from imgclust.plugins.dense_ae import DenseAutoencoder

    images = digits[0]
    encoder = DenseAutoencoder(dims=(32, 16), code_size=4, epochs=3, batch_size=64, seed=3)
    encoder.fit(images[:1500], validation=images[1500:])
    out, err = capfd.readouterr()
    assert "dense-ae epoch 3/3" in err and "dense-ae" not in out
    assert len(encoder.history_["loss"]) == 3 and len(encoder.history_["val_loss"]) == 3
    assert encoder.history_["loss"][-1] < encoder.history_["loss"][0]
    codes = encoder.transform(images[:100])
    assert codes.shape == (100, 4) and codes.dtype == np.float32
    restored = encoder.reconstruct(images[:5])
    assert restored.shape == (5, 8, 8, 1)
    encoder.save(tmp_path)
    assert (tmp_path / "dense_ae.keras").is_file()
    loaded = DenseAutoencoder().load(tmp_path)
    np.testing.assert_allclose(loaded.transform(images[:100]), codes, rtol=1e-5, atol=1e-5)
    assert loaded.history_["loss"] == encoder.history_["loss"]
    with pytest.raises(DataError, match="fitted on inputs of 64 numbers"):
        loaded.transform(np.zeros((2, 5, 5, 1), dtype=np.uint8))


def test_dense_ae_with_the_same_seed_gives_the_same_code(digits):
    from imgclust.plugins.dense_ae import DenseAutoencoder

    def codes(seed: int) -> np.ndarray:
        encoder = DenseAutoencoder(dims=(16,), code_size=3, epochs=1, batch_size=128, seed=seed)
        return encoder.fit(digits[0][:600]).transform(digits[0][:50])

    np.testing.assert_allclose(codes(4), codes(4), rtol=1e-5, atol=1e-6)
    assert not np.allclose(codes(4), codes(5))


def test_dense_ae_chains_after_pca_on_the_cli(cli, runs_dir):
    record = run_json(
        cli, *SMALL, "--encoder", "pca", "--encoder", "dense-ae", "--clusterer", "kmeans",
        "--set", "encoder.dense-ae.epochs=2", "--set", "encoder.dense-ae.dims=32,16",
        "--set", "encoder.dense-ae.code_size=5", "--runs-dir", runs_dir,
    )  # fmt: skip
    assert record["feature_dim"] == 5
    metrics = json.loads((Path(record["run"]) / "metrics.json").read_text())
    assert len(metrics["training"]["dense-ae"]["loss"]) == 2


@pytest.mark.parametrize(
    ("setting", "message"),
    [("encoder.dims=0", "dims must be positive"), ("encoder.epochs=0", "at least 1"),
     ("encoder.learning_rate=-1", "learning_rate must be positive")],
)  # fmt: skip
def test_dense_ae_bad_settings_are_one_line(cli, runs_dir, setting, message):
    result = cli("run", *SMALL, "--encoder", "dense-ae", "--clusterer", "kmeans",
                 "--set", setting, "--runs-dir", runs_dir)  # fmt: skip
    assert result.exit_code != 0 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# deskew --------------------------------------------------------------------------------------
def slanted_bar(size: int = 28, slope: float = 0.5) -> np.ndarray:
    image = np.zeros((size, size), dtype=np.uint8)
    for row in range(4, size - 4):
        col = int(round(size / 2 + slope * (row - size / 2))) - 3
        image[row, col : col + 3] = 255
    return image


def test_deskew_straightens_a_slanted_bar_and_centres_it():
    from imgclust.plugins.deskew import DeskewEncoder

    images = np.stack([slanted_bar(slope=0.5), slanted_bar(slope=-0.4)])[..., None]
    out = DeskewEncoder().fit(images).transform(images)
    assert out.shape == images.shape and out.dtype == np.uint8
    for before, after in zip(images[..., 0], out[..., 0], strict=True):

        def centres(img: np.ndarray) -> np.ndarray:
            rows = img.sum(axis=1) > 0
            weights = img[rows].astype(float)
            return (weights * np.arange(img.shape[1])).sum(axis=1) / weights.sum(axis=1)

        assert np.ptp(centres(before)) > 6 and np.ptp(centres(after)) < 2
        mass = after.astype(float)
        col = (mass * np.arange(28)[None, :]).sum() / mass.sum()
        assert abs(col - 13.5) < 1


def test_deskew_keeps_float_images_in_range_and_needs_images(digits):
    from imgclust.plugins.deskew import DeskewEncoder

    floats = digits[0][:20].astype(np.float32) / 255
    out = DeskewEncoder(center=False).fit(floats).transform(floats)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    with pytest.raises(DataError, match="put it first"):
        DeskewEncoder().fit(np.zeros((5, 10), dtype=np.float32))
