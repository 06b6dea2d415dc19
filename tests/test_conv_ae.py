"""The conv-ae encoder: the article's exact network, training, saving, resuming, any image size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imgclust.errors import DataError, ImgclustError, SettingsError
from imgclust.plugins.conv_ae import ConvAutoencoder

ARTICLE_LAYERS = [
    ("images", (28, 28, 1), 0),
    ("rescale", (28, 28, 1), 0),
    ("encode_conv1", (28, 28, 16), 160),
    ("encode_pool1", (14, 14, 16), 0),
    ("encode_conv2", (14, 14, 2), 290),
    ("code", (7, 7, 2), 0),
    ("decode_conv1", (7, 7, 2), 38),
    ("decode_up1", (14, 14, 2), 0),
    ("decode_conv2", (14, 14, 16), 304),
    ("decode_up2", (28, 28, 16), 0),
    ("reconstruction", (28, 28, 1), 145),
]


def layer_table(model) -> list[tuple[str, tuple[int, ...], int]]:
    return [(la.name, tuple(la.output.shape[1:]), int(la.count_params())) for la in model.layers]


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    from imgclust.plugins.digits import DigitsDataset

    return DigitsDataset().load("all").images  # (1797, 8, 8, 1) uint8


@pytest.fixture(scope="module")
def fitted(digits: np.ndarray) -> ConvAutoencoder:
    """One short fit on 8x8 digits, shared by the tests that only use the result."""
    return ConvAutoencoder(epochs=1).fit(digits[:300], validation=digits[300:400])


def test_article_network_layer_by_layer():
    encoder = ConvAutoencoder()
    model = encoder.build((28, 28, 1))
    assert layer_table(model) == ARTICLE_LAYERS
    assert model.count_params() == 937
    activations = {
        la.name: la.activation.__name__ for la in model.layers if hasattr(la, "activation")
    }
    assert activations.pop("reconstruction") == "sigmoid"
    assert set(activations.values()) == {"relu"} and len(activations) == 4
    assert all(la.padding == "same" for la in model.layers if hasattr(la, "padding"))
    optimizer = model.optimizer
    assert type(optimizer).__name__ == "Adadelta"
    assert float(optimizer.learning_rate) == pytest.approx(1.0)
    assert model.loss.kind == "bce" and model.loss.scale == pytest.approx(1 / 255)
    assert (encoder.epochs, encoder.batch_size) == (3, 32)


def test_wider_network_with_dense_code_and_padding():
    encoder = ConvAutoencoder(filters=(8, 16, 32), code_size=10, optimizer="adam", loss="mse")
    model = encoder.build((30, 30, 3), scale=1.0)  # 30 is padded to 32 for three poolings
    shapes = {name: shape for name, shape, _ in layer_table(model)}
    assert shapes["pad"] == (32, 32, 3)
    assert shapes["encode_pool3"] == (4, 4, 32)
    assert shapes["code"] == (10,)
    assert shapes["unflatten"] == (4, 4, 32)
    assert shapes["reconstruction"] == (32, 32, 3)
    assert shapes["crop"] == (30, 30, 3)
    assert type(model.optimizer).__name__ == "Adam"
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)


def test_dcec_network_as_published():
    """DCEC's network: strided convolutions 32-64-128 (5x5, 5x5, 3x3), a dense 10-number code,
    transposed convolutions back (28 is padded to 32 for three halvings)."""
    encoder = ConvAutoencoder(
        filters=(32, 64, 128),
        kernel_size=(5, 5, 3),
        downsample="stride",
        code_size=10,
        output="linear",
        loss="mse",
    )
    model = encoder.build((28, 28, 1))
    table = {name: (shape, params) for name, shape, params in layer_table(model)}
    assert table["encode_conv1"] == ((16, 16, 32), 5 * 5 * 32 + 32)
    assert table["encode_conv2"] == ((8, 8, 64), 5 * 5 * 32 * 64 + 64)
    assert table["encode_conv3"] == ((4, 4, 128), 3 * 3 * 64 * 128 + 128)
    assert table["code"] == ((10,), 4 * 4 * 128 * 10 + 10)
    assert table["decode_deconv1"][0] == (8, 8, 64)
    assert table["decode_deconv2"][0] == (16, 16, 32)
    assert table["reconstruction"][0] == (32, 32, 1) and table["crop"][0] == (28, 28, 1)
    assert not any("pool" in name or "up" in name for name in table)
    assert model.get_layer("reconstruction").activation.__name__ == "linear"
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
    fitted = ConvAutoencoder(
        filters=(4, 8),
        kernel_size=(5, 3),
        downsample="stride",
        code_size=3,
        output="linear",
        loss="mse",
        epochs=1,
    ).fit(images)
    assert fitted.transform(images[:5]).shape == (5, 3)
    restored = fitted.reconstruct(images[:2])
    assert restored.shape == (2, 28, 28, 1) and 0 <= restored.min() <= restored.max() <= 1


def test_fit_keeps_history_and_encodes_in_batches(fitted: ConvAutoencoder, digits: np.ndarray):
    assert set(fitted.history_) == {"loss", "val_loss"}
    assert len(fitted.history_["loss"]) == 1 and len(fitted.history_["val_loss"]) == 1
    values = fitted.history_["loss"] + fitted.history_["val_loss"]
    assert all(np.isfinite(v) and v > 0 for v in values)
    features = fitted.transform(digits)
    assert features.shape == (len(digits), 2 * 2 * 2) and features.dtype == np.float32
    # batch boundaries must not change the result
    head = fitted.transform(digits[:7])
    np.testing.assert_allclose(features[:7], head, rtol=1e-5, atol=1e-6)


def test_reconstruct_restores_images_at_their_size(fitted: ConvAutoencoder, digits: np.ndarray):
    restored = fitted.reconstruct(digits[:5])
    assert restored.shape == (5, 8, 8, 1) and restored.dtype == np.float32
    assert 0.0 <= restored.min() and restored.max() <= 1.0


def test_float_and_uint8_inputs_give_the_same_code(fitted: ConvAutoencoder, digits: np.ndarray):
    as_float = digits[:50].astype(np.float32) / 255
    np.testing.assert_allclose(
        fitted.transform(as_float), fitted.transform(digits[:50]), rtol=1e-5, atol=1e-6
    )


def test_save_load_round_trip_encodes_identically(fitted: ConvAutoencoder, digits, tmp_path):
    fitted.save(tmp_path / "enc")
    assert (tmp_path / "enc" / "model.keras").is_file()
    meta = json.loads((tmp_path / "enc" / "conv_ae.json").read_text())
    assert meta["input_shape"] == [8, 8, 1]
    loaded = ConvAutoencoder().load(tmp_path / "enc")
    np.testing.assert_array_equal(loaded.transform(digits), fitted.transform(digits))
    np.testing.assert_array_equal(loaded.reconstruct(digits[:9]), fitted.reconstruct(digits[:9]))
    assert loaded.history_ == fitted.history_


def test_load_refuses_code_in_the_model_file(tmp_path):
    import keras

    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    (tmp_path / "enc").mkdir()
    model.save(tmp_path / "enc" / "model.keras")
    meta = {"input_shape": [8, 8, 1], "scale": 1.0}
    (tmp_path / "enc" / "conv_ae.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="safe mode"):
        ConvAutoencoder().load(tmp_path / "enc")


def test_wrong_input_is_one_clear_error(fitted: ConvAutoencoder):
    with pytest.raises(DataError, match="first in the encoder chain"):
        fitted.transform(np.zeros((4, 64), np.float32))
    with pytest.raises(DataError, match="fitted on"):
        fitted.transform(np.zeros((4, 28, 28, 1), np.uint8))
    with pytest.raises(ImgclustError, match="not fitted"):
        ConvAutoencoder().transform(np.zeros((4, 8, 8, 1), np.uint8))


@pytest.mark.parametrize(
    "settings",
    [
        {"filters": ()},
        {"filters": (16, 0)},
        {"optimizer": "adagrad"},
        {"loss": "l1"},
        {"learning_rate": 0.0},
        {"epochs": 0},
        {"code_size": 0},
        {"kernel_size": (5, 3, 3)},
        {"kernel_size": 0},
        {"downsample": "average"},
        {"output": "tanh"},
        {"output": "linear", "loss": "bce"},
    ],
)
def test_bad_settings(settings):
    with pytest.raises(SettingsError, match="conv-ae"):
        ConvAutoencoder(**settings)


def test_rgb_images_of_odd_size():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(64, 13, 17, 3), dtype=np.uint8)
    encoder = ConvAutoencoder(filters=(4, 2), epochs=1, batch_size=16).fit(images)
    assert encoder.history_["val_loss"] == [] and len(encoder.history_["loss"]) == 1
    assert encoder.reconstruct(images[:3]).shape == (3, 13, 17, 3)
    assert encoder.transform(images).shape == (64, 4 * 5 * 2)  # padded to 16x20, pooled twice


def test_same_seed_same_training(digits: np.ndarray, fitted: ConvAutoencoder):
    again = ConvAutoencoder(epochs=1).fit(digits[:300], validation=digits[300:400])
    assert again.history_ == fitted.history_
    np.testing.assert_array_equal(again.transform(digits[:100]), fitted.transform(digits[:100]))


def test_early_stopping_stops_when_nothing_improves(digits: np.ndarray):
    # a learning rate this small leaves the weights exactly as they are
    encoder = ConvAutoencoder(epochs=5, patience=1, optimizer="sgd", learning_rate=1e-30)
    encoder.fit(digits[:64], validation=digits[64:96])
    assert len(encoder.history_["val_loss"]) == 2


def test_interrupted_fit_resumes_from_its_last_epoch(digits, tmp_path, monkeypatch, capsys):
    checkpoints = tmp_path / "checkpoints"
    images, validation = digits[:160], digits[160:224]
    first = ConvAutoencoder(epochs=2)
    first.checkpoint_dir = checkpoints
    write = ConvAutoencoder.write_checkpoint

    def write_then_die(self, model, epoch, stopped):
        write(self, model, epoch, stopped)
        raise KeyboardInterrupt  # the machine went away after epoch 1 was saved

    monkeypatch.setattr(ConvAutoencoder, "write_checkpoint", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        first.fit(images, validation)
    monkeypatch.undo()
    state = json.loads((checkpoints / "state.json").read_text())
    assert state["epoch"] == 1 and (checkpoints / state["model"]).is_file()

    second = ConvAutoencoder(epochs=2)
    second.checkpoint_dir = checkpoints
    second.fit(images, validation)
    err = capsys.readouterr().err
    assert "resuming from epoch 1 of 2" in err
    after = err.split("resuming")[1]
    assert "epoch 2/2" in after and "epoch 1/2" not in after
    assert second.history_["loss"][0] == first.history_["loss"][0]
    assert len(second.history_["loss"]) == 2
    steps = -(-len(images) // 32)
    assert int(second.model_.optimizer.iterations) == 2 * steps  # the optimizer state came back
    assert sorted(p.name for p in checkpoints.glob("*.keras")) == ["epoch-0002.keras"]

    done = ConvAutoencoder(epochs=2)
    done.checkpoint_dir = checkpoints
    done.fit(images, validation)  # nothing left to train: loads the last epoch
    assert done.history_ == second.history_
    np.testing.assert_array_equal(done.transform(images), second.transform(images))

    other = ConvAutoencoder(filters=(8, 2), epochs=3)
    other.checkpoint_dir = checkpoints
    with pytest.raises(ImgclustError, match="other settings"):
        other.fit(images, validation)


def test_plugin_import_is_cheap():
    code = (
        "import sys, imgclust.plugins.conv_ae, imgclust.plugins.mnist;"
        "print([m for m in ('keras', 'tensorflow') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registered_with_its_settings(registry):
    entry = registry.get("encoders", "conv-ae")
    assert entry.target is ConvAutoencoder


def test_run_json_stays_clean_and_records_losses(cli, runs_dir: Path):
    result = cli(
        "run",
        "--dataset",
        "digits",
        "--encoder",
        "conv-ae",
        "--clusterer",
        "kmeans",
        "--set",
        "encoder.epochs=1",
        "--set",
        "fit_split=train",
        "--set",
        "split=test",
        "--set",
        "validation_split=test",
        "--runs-dir",
        runs_dir,
        "--no-plots",
        "--json",
        "--keep-checkpoints",
    )
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)  # progress must not leak into stdout
    assert "conv-ae epoch 1/1" in result.stderr
    folder = Path(record["run"])
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["loss"] > 0 and metrics["val_loss"] > 0
    assert record["feature_dim"] == 8
    state = json.loads((folder / "checkpoints" / "conv-ae" / "state.json").read_text())
    assert state["epoch"] == 1 and state["history"]["val_loss"] == [metrics["val_loss"]]


def test_bad_setting_from_the_command_line(cli, runs_dir: Path):
    result = cli(
        "run",
        "--dataset",
        "digits",
        "--encoder",
        "conv-ae",
        "--clusterer",
        "kmeans",
        "--set",
        "encoder.optimizer=adagrad",
        "--runs-dir",
        runs_dir,
    )
    assert result.exit_code != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "optimizer" in result.stderr


@pytest.mark.slow
@pytest.mark.mnist
def test_article_training_matches_the_published_losses(mnist_path: Path):
    """3 epochs on MNIST train, validated on test: val_loss within 10% of the article's 0.0926."""
    from imgclust.plugins.mnist import MnistDataset

    dataset = MnistDataset(path=str(mnist_path))
    train, test = dataset.load("train"), dataset.load("test")
    encoder = ConvAutoencoder().fit(train.images, validation=test.images)
    assert len(encoder.history_["val_loss"]) == 3
    assert abs(encoder.history_["val_loss"][-1] - 0.0926) <= 0.1 * 0.0926
    assert encoder.transform(test.images[:10]).shape == (10, 98)
