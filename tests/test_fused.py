"""The fused layers compute the stock Keras layers' function and gradient, hold the same
weights, and give way to Keras (cuDNN) on a GPU or with options they do not implement."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from charlm.config import ModelConfig
from charlm.model import fused
from charlm.model.build import build_model, set_implementation

LAYERS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "simple_rnn": keras.layers.SimpleRNN}
STATES = {"lstm": 2, "gru": 1, "simple_rnn": 1}


def twin_layers(cell, units=6, **options):
    """A stock layer and a fused one with the same (random, seeded) weights."""
    keras.utils.set_random_seed(1)
    stock = LAYERS[cell](units, return_sequences=True, return_state=True, **options)
    twin = LAYERS[cell](units, return_sequences=True, return_state=True, **options)
    fused.use_fused_loop(twin)
    sample = tf.zeros((2, 3, 5))
    stock(sample)
    twin(sample)
    # Non-zero biases, so that every bias gradient is exercised.
    twin.set_weights(
        [w + 0.1 * np.random.default_rng(2).standard_normal(w.shape) for w in stock.get_weights()]
    )
    stock.set_weights(twin.get_weights())
    return stock, twin


def outputs_and_gradients(layer, x, initial):
    with tf.GradientTape() as tape:
        tape.watch([x, *initial])
        sequence, *final = layer(x, initial_state=initial)
        # A loss that weights every output and every final state differently.
        loss = tf.reduce_sum(
            sequence * tf.sin(tf.range(tf.size(sequence[0, 0]), dtype=tf.float32))
        ) + sum(tf.reduce_sum(state**2) for state in final)
    gradients = tape.gradient(loss, [x, *initial, *layer.trainable_weights])
    return [sequence, *final], gradients


@pytest.mark.parametrize("cell", sorted(LAYERS))
def test_outputs_and_gradients_match_the_stock_layer(cell):
    stock, twin = twin_layers(cell)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((3, 7, 5)), tf.float32)
    initial = [
        tf.constant(rng.standard_normal((3, 6)) * 0.5, tf.float32) for _ in range(STATES[cell])
    ]
    assert fused.fused_loop_applies(twin, None)
    expected_out, expected_grads = outputs_and_gradients(stock, x, initial)
    got_out, got_grads = outputs_and_gradients(twin, x, initial)
    for want, got in zip(expected_out + expected_grads, got_out + got_grads):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


def test_a_layer_returning_its_last_output_only_matches_too():
    keras.utils.set_random_seed(10)
    stock = keras.layers.GRU(5)
    twin = keras.layers.GRU(5)
    fused.use_fused_loop(twin)
    x = tf.constant(np.random.default_rng(11).standard_normal((2, 6, 3)), tf.float32)
    stock(x)
    twin(x)
    twin.set_weights(stock.get_weights())
    gradients = []
    for layer in (stock, twin):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) ** 2)
        gradients.append(tape.gradient(loss, [x, *layer.trainable_weights]))
    for want, got in zip(*gradients):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", sorted(LAYERS))
def test_a_training_step_matches_the_stock_model(cell):
    """One model.fit step of the whole charlm model: same loss, same updated weights."""

    def fitted(implementation):
        config = ModelConfig(
            cell=cell, layers=2, units=8, embedding_dim=4, implementation=implementation
        )
        model = build_model(config, vocab_size=11, seed=3)
        model.compile(
            optimizer=keras.optimizers.Adam(0.01, global_clipnorm=5.0),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        tokens = np.random.default_rng(4).integers(0, 11, (4, 13)).astype("int32")
        loss = model.fit(tokens[:, :-1], tokens[:, 1:], batch_size=4, epochs=2, verbose=0).history[
            "loss"
        ]
        return loss, model.get_weights()

    (stock_loss, stock_weights), (fused_loss, fused_weights) = fitted("stock"), fitted("fused")
    np.testing.assert_allclose(fused_loss, stock_loss, rtol=1e-5)
    for got, want in zip(fused_weights, stock_weights):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cell", sorted(LAYERS))
def test_saved_files_are_stock_keras_and_load_as_either_implementation(tmp_path, cell):
    """A fused model's .keras file is a plain Keras file: plain keras.saving.load_model
    gives stock layers (what a GPU runs on cuDNN) with identical outputs; charlm makes
    them fused again, with identical outputs too."""
    tokens = np.random.default_rng(5).integers(0, 11, (2, 9)).astype("int32")
    model = build_model(
        ModelConfig(cell=cell, layers=1, units=8, embedding_dim=4), vocab_size=11, seed=6
    )
    assert model.get_layer(f"{cell}_0").uses_fused_loop
    model.save(tmp_path / "m.keras")
    stock = keras.saving.load_model(tmp_path / "m.keras")
    assert type(stock.get_layer(f"{cell}_0")) is LAYERS[cell]
    assert not getattr(stock.get_layer(f"{cell}_0"), "uses_fused_loop", False)
    expected = model.predict(tokens, verbose=0)
    np.testing.assert_allclose(stock.predict(tokens, verbose=0), expected, rtol=1e-5, atol=1e-6)
    reloaded = set_implementation(keras.saving.load_model(tmp_path / "m.keras"), "fused")
    assert reloaded.get_layer(f"{cell}_0").uses_fused_loop
    assert fused.fused_loop_applies(reloaded.get_layer(f"{cell}_0"), None)
    np.testing.assert_allclose(reloaded.predict(tokens, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_stateful_fused_layer_carries_its_state_like_the_stock_one():
    keras.utils.set_random_seed(7)
    stock = keras.layers.LSTM(4, return_sequences=True, stateful=True)
    twin = keras.layers.LSTM(4, return_sequences=True, stateful=True)
    fused.use_fused_loop(twin)
    x = tf.constant(np.random.default_rng(8).standard_normal((2, 5, 3)), tf.float32)
    stock(x)
    twin(x)
    twin.set_weights(stock.get_weights())
    twin.reset_state()
    stock.reset_state()
    for _ in range(2):  # the second call starts from the first one's final state
        np.testing.assert_allclose(twin(x).numpy(), stock(x).numpy(), rtol=1e-5, atol=1e-6)


def test_a_visible_gpu_hands_the_layer_to_keras(monkeypatch):
    """On a GPU the stock path (Keras's cuDNN kernels) runs, not the fused loop."""
    stock, twin = twin_layers("gru")
    monkeypatch.setattr(fused, "gpu_visible", lambda: True)
    calls = []
    original = keras.layers.GRU.inner_loop

    def spy(self, *args, **kwargs):
        calls.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(keras.layers.GRU, "inner_loop", spy)
    monkeypatch.setattr(fused, "run_fused", lambda *a, **k: pytest.fail("fused loop ran"))
    twin(tf.zeros((2, 3, 5)))
    assert calls == [twin.name]


@pytest.mark.parametrize(
    "options", [{"dropout": 0.5}, {"go_backwards": True}, {"activation": "relu"}]
)
def test_options_the_fused_loop_lacks_run_keras_code(options):
    stock, twin = twin_layers("lstm", **options)
    assert not fused.fused_loop_applies(twin, None)
    x = tf.constant(np.random.default_rng(9).standard_normal((2, 4, 5)), tf.float32)
    np.testing.assert_allclose(twin(x)[0].numpy(), stock(x)[0].numpy(), rtol=1e-5, atol=1e-6)


def test_the_start_up_line_names_the_loop_that_runs(monkeypatch):
    stock, twin = twin_layers("lstm")
    assert fused.describe_loops([twin]) == "fused recurrent loop"
    assert fused.describe_loops([stock, twin]).startswith("Keras's")
    monkeypatch.setattr(fused, "gpu_visible", lambda: True)
    assert fused.describe_loops([twin]).startswith("Keras's")
