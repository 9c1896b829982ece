"""The fused layers compute the stock Keras layers' function and gradient, hold the same
weights, and give way to Keras (cuDNN) on a GPU or with options they do not implement."""

from __future__ import annotations

from collections import Counter

import keras
import numpy as np
import pytest
import tensorflow as tf

from charlm import cpu
from charlm.config import ModelConfig
from charlm.model import fused
from charlm.model.build import build_model, recurrent_layers, set_implementation
from charlm.training.loop import train
from charlm.training.reporter import SilentReporter
from tests.helpers import tiny_config

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


def outputs_and_gradients(layer, x, initial, training=False):
    with tf.GradientTape() as tape:
        tape.watch([x, *initial])
        sequence, *final = layer(x, initial_state=initial, training=training)
        # A loss that weights every output and every final state differently.
        loss = tf.reduce_sum(
            sequence * tf.sin(tf.range(tf.size(sequence[0, 0]), dtype=tf.float32))
        ) + sum(tf.reduce_sum(state**2) for state in final)
    gradients = tape.gradient(loss, [x, *initial, *layer.trainable_weights])
    return [sequence, *final], gradients


# Times each layer (by name) entered the fused loop: once per eager call, once per trace
# of a tf.function (whose graph then runs the loop without Python).
FUSED_RUNS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def count_fused_runs(monkeypatch):
    """A spy on the fused loop's entry point (layers call it by its module name)."""
    enter = fused.fused_inner_loop

    def counted(layer, *args, **kwargs):
        FUSED_RUNS[layer.name] += 1
        return enter(layer, *args, **kwargs)

    monkeypatch.setattr(fused, "fused_inner_loop", counted)


def runs(*layers) -> int:
    """How many times these layers have entered the fused loop so far."""
    return sum(FUSED_RUNS[layer.name] for layer in layers)


@pytest.mark.parametrize("avx512", [False, True])  # weight gradients: one product or two
@pytest.mark.parametrize("training", [False, True])  # as evaluated and as trained
@pytest.mark.parametrize("cell", sorted(LAYERS))
def test_outputs_and_gradients_match_the_stock_layer(cell, training, avx512, monkeypatch):
    """The fused layer runs its own loop (not the stock one it is compared with) and gives
    the stock layer's outputs, final states and gradients, as oneDNN runs AVX2 or AVX-512."""
    monkeypatch.setattr(fused, "onednn_uses_avx512", lambda: avx512)
    stock, twin = twin_layers(cell)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((3, 7, 5)), tf.float32)
    initial = [
        tf.constant(rng.standard_normal((3, 6)) * 0.5, tf.float32) for _ in range(STATES[cell])
    ]
    assert fused.fused_loop_applies(twin, None)
    before = runs(stock, twin)
    expected_out, expected_grads = outputs_and_gradients(stock, x, initial, training)
    assert runs(stock, twin) == before
    got_out, got_grads = outputs_and_gradients(twin, x, initial, training)
    assert runs(twin) > before
    for want, got in zip(expected_out + expected_grads, got_out + got_grads):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


def test_a_layer_returning_its_last_output_only_matches_too():
    """A fused layer without return_sequences (no output gradient but the last) runs the
    fused loop and gives the stock gradients."""
    keras.utils.set_random_seed(10)
    stock = keras.layers.GRU(5)
    twin = keras.layers.GRU(5)
    fused.use_fused_loop(twin)
    x = tf.constant(np.random.default_rng(11).standard_normal((2, 6, 3)), tf.float32)
    stock(x)
    twin(x)
    twin.set_weights(stock.get_weights())
    gradients, ran = [], []
    for layer in (stock, twin):
        before = runs(layer)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) ** 2)
        gradients.append(tape.gradient(loss, [x, *layer.trainable_weights]))
        ran.append(runs(layer) > before)
    assert ran == [False, True]
    for want, got in zip(*gradients):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "cell, avx512, backward_products",
    [("lstm", True, 3), ("lstm", False, 2), ("simple_rnn", False, 2), ("gru", False, 3)],
)
def test_a_layers_weight_gradient_products_run_one_after_another(
    cell, avx512, backward_products, monkeypatch
):
    """In a traced backward pass, the kernel's, the recurrent kernel's and the input's
    gradient products each wait for the one before (TensorFlow would otherwise run them
    at once, each on every core, slower than in turn). Where oneDNN runs AVX2, the
    kernel's and the recurrent kernel's are one product, unless the cell's input and
    recurrent gradients differ (GRU)."""
    monkeypatch.setattr(fused, "onednn_uses_avx512", lambda: avx512)
    _, twin = twin_layers(cell)
    x = tf.constant(np.random.default_rng(12).standard_normal((2, 3, 5)), tf.float32)

    @tf.function
    def gradients(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(twin(x)[0])
        return tape.gradient(loss, [x, *twin.trainable_weights])

    graph = gradients.get_concrete_function(x).graph
    products = [op for op in graph.get_operations() if op.type == "MatMul"]
    waiting = [op for op in products if any(is_or_slices_a_product(c) for c in op.control_inputs)]
    assert len(products) == 1 + backward_products  # the forward one: the input projection
    assert len(waiting) == backward_products - 1


@pytest.mark.parametrize(
    "flags, limit, expected",
    [
        ({"avx2", "avx512f"}, None, True),
        ({"avx2", "avx512f"}, "AVX2", False),
        ({"avx2", "avx512f"}, "avx512_core", True),
        ({"avx2"}, None, False),
    ],
)
def test_onednn_runs_avx512_where_the_cpu_has_it_and_no_limit_holds_it_below(
    flags, limit, expected, monkeypatch
):
    monkeypatch.setattr(cpu, "cpu_info", lambda: ("a CPU", frozenset(flags)))
    if limit:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
    else:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert cpu.onednn_uses_avx512() is expected


def is_or_slices_a_product(op) -> bool:
    return op.type == "MatMul" or (op.type == "StridedSlice" and op.inputs[0].op.type == "MatMul")


@pytest.mark.slow
def test_evaluating_runs_the_loop_that_keeps_the_outputs_alone():
    """Evaluated, a fused layer runs the forward loop that keeps no gates for a backward
    pass; trained, the one that does."""
    model = build_model(
        ModelConfig(cell="lstm", layers=1, units=13, embedding_dim=4), vocab_size=11, seed=6
    )
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    math = fused.MATH[keras.layers.LSTM]
    loops = {
        "training": fused.compiled_loops(math)[0],
        "outputs": fused.compiled_inference_loop(math),
    }

    def traced():
        return {name: loop.experimental_get_tracing_count() for name, loop in loops.items()}

    tokens = training_tokens()
    before = traced()
    model.evaluate(tokens[:, :-1], tokens[:, 1:], verbose=0)
    evaluated = traced()
    assert evaluated["outputs"] > before["outputs"] and evaluated["training"] == before["training"]
    model.fit(tokens[:, :-1], tokens[:, 1:], verbose=0)
    assert traced()["training"] > evaluated["training"]


def fit_two_steps(cell, implementation, optimizer):
    """Two model.fit steps of the whole charlm model: (initial weights, losses, weights,
    whether its recurrent layers entered the fused loop)."""
    config = ModelConfig(
        cell=cell, layers=2, units=8, embedding_dim=4, implementation=implementation
    )
    model = build_model(config, vocab_size=11, seed=3)
    model.compile(
        optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    initial = model.get_weights()
    tokens = training_tokens()
    layers = recurrent_layers(model)
    before = [runs(layer) for layer in layers]
    history = model.fit(tokens[:, :-1], tokens[:, 1:], batch_size=4, epochs=2, verbose=0)
    ran = all(runs(layer) > count for layer, count in zip(layers, before))
    return initial, history.history["loss"], model.get_weights(), ran


def training_tokens():
    return np.random.default_rng(4).integers(0, 11, (4, 13)).astype("int32")


@pytest.mark.slow
@pytest.mark.parametrize("cell", sorted(LAYERS))
def test_a_training_step_matches_the_stock_model(cell):
    """Two Adam steps: the fused model runs its loop, compiled by XLA, and ends with the
    stock model's losses and weights."""
    _, stock_loss, stock_weights, stock_ran = fit_two_steps(
        cell, "stock", keras.optimizers.Adam(0.01, global_clipnorm=5.0)
    )
    loops = fused.compiled_loops(fused.MATH[LAYERS[cell]])
    traced = [loop.experimental_get_tracing_count() for loop in loops]
    _, fused_loss, fused_weights, fused_ran = fit_two_steps(
        cell, "fused", keras.optimizers.Adam(0.01, global_clipnorm=5.0)
    )
    assert fused_ran and not stock_ran
    assert all(loop._jit_compile for loop in loops)
    assert all(loop.experimental_get_tracing_count() > n for loop, n in zip(loops, traced))
    np.testing.assert_allclose(fused_loss, stock_loss, rtol=1e-5)
    for got, want in zip(fused_weights, stock_weights):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
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
    before = runs(reloaded.get_layer(f"{cell}_0"))
    np.testing.assert_allclose(reloaded.predict(tokens, verbose=0), expected, rtol=1e-5, atol=1e-6)
    assert runs(reloaded.get_layer(f"{cell}_0")) > before


def test_stateful_fused_layer_carries_its_state_like_the_stock_one():
    """A stateful fused layer runs its loop and starts each call from the previous
    call's final state, as the stock layer does."""
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
        before = runs(twin)
        np.testing.assert_allclose(twin(x).numpy(), stock(x).numpy(), rtol=1e-5, atol=1e-6)
        assert runs(twin) > before


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
    before = runs(twin)
    twin(tf.zeros((2, 3, 5)))
    assert calls == [twin.name]
    assert runs(twin) == before
    assert fused.describe_loops([twin]).startswith("Keras's")


@pytest.mark.parametrize(
    "options", [{"dropout": 0.5}, {"go_backwards": True}, {"activation": "relu"}]
)
def test_options_the_fused_loop_lacks_run_keras_code(options):
    """Options the fused loop does not implement: Keras's loop runs, never the fused one."""
    stock, twin = twin_layers("lstm", **options)
    assert not fused.fused_loop_applies(twin, None)
    x = tf.constant(np.random.default_rng(9).standard_normal((2, 4, 5)), tf.float32)
    before = runs(twin)
    np.testing.assert_allclose(twin(x)[0].numpy(), stock(x)[0].numpy(), rtol=1e-5, atol=1e-6)
    assert runs(twin) == before


def test_the_start_up_line_names_the_loop_that_runs(monkeypatch):
    """describe_loops says "fused" only when every layer would run the fused loop."""
    stock, twin = twin_layers("lstm")
    assert fused.describe_loops([twin]) == "fused recurrent loop"
    assert fused.describe_loops([stock, twin]).startswith("Keras's")
    monkeypatch.setattr(fused, "gpu_visible", lambda: True)
    assert fused.describe_loops([twin]).startswith("Keras's")


def unclipped_gradient_norm(cell):
    """The global norm of the first step's gradient, before any clipping."""
    config = ModelConfig(cell=cell, layers=2, units=8, embedding_dim=4, implementation="stock")
    model = build_model(config, vocab_size=11, seed=3)
    tokens = training_tokens()
    loss_function = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_function(tokens[:, 1:], model(tokens[:, :-1], training=True))
    return float(tf.linalg.global_norm(tape.gradient(loss, model.trainable_weights)))


@pytest.mark.slow
@pytest.mark.parametrize("cell", sorted(LAYERS))
def test_clipped_sgd_steps_match_the_stock_model(cell):
    """Two plain SGD steps with the global gradient norm clipped: each update is the
    gradient itself, scaled, so the fused model's weights move as the stock model's only
    if every gradient's magnitude matches (Adam's normalisation would hide a scale)."""
    clip = 0.02
    assert unclipped_gradient_norm(cell) > 5 * clip  # clipping is active at both steps
    results = {
        implementation: fit_two_steps(
            cell, implementation, keras.optimizers.SGD(1.0, global_clipnorm=clip)
        )
        for implementation in ("stock", "fused")
    }
    initial, stock_loss, stock_weights, stock_ran = results["stock"]
    _, fused_loss, fused_weights, fused_ran = results["fused"]
    assert fused_ran and not stock_ran
    np.testing.assert_allclose(fused_loss, stock_loss, rtol=1e-6)
    for start, got, want in zip(initial, fused_weights, stock_weights):
        moved = np.abs(want - start).max()
        assert moved > 0
        np.testing.assert_allclose(got - start, want - start, rtol=1e-3, atol=1e-4 * moved)


class Messages(SilentReporter):
    """A reporter that keeps the lines training prints."""

    def __init__(self):
        self.lines = []

    def message(self, text):
        self.lines.append(text)


@pytest.mark.slow
@pytest.mark.parametrize(
    "setting, fused_runs",
    [
        ("model.implementation=fused", True),
        ("model.implementation=stock", False),
        ("train.precision=mixed_bfloat16", False),  # the fused loop is float32 only
    ],
)
def test_the_start_up_line_names_the_loop_training_ran(tmp_path, corpus_file, setting, fused_runs):
    """One step of `charlm train`: the start-up line says "fused" exactly when the fused
    loop then ran, and Keras's loop otherwise."""
    messages = Messages()
    before = FUSED_RUNS.total()
    try:
        train(
            tiny_config(corpus_file, tmp_path / "run", "train.steps=1", setting), reporter=messages
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    ran = FUSED_RUNS.total() > before
    start_up = next(line for line in messages.lines if "parameters" in line)
    assert ran == fused_runs
    assert ("fused recurrent loop" in start_up) == ran, start_up
    assert ("Keras's recurrent loop" in start_up) == (not ran), start_up


@pytest.mark.parametrize("cell", ["simple_rnn", "lstm", "gru"])
def test_an_empty_batch_gives_empty_outputs(cell):
    """A replica can get no rows of a last, short batch: the fused loop returns empty
    outputs instead of failing on a shape it cannot infer (eagerly and in a graph whose
    batch size is unknown, as in evaluation under tf.distribute)."""
    model = build_model(ModelConfig(cell=cell, layers=1, units=8, embedding_dim=4), 9)
    layers = recurrent_layers(model)
    empty = np.zeros((0, 5), dtype="int32")
    before = runs(*layers)
    assert model(empty).shape == (0, 5, 9)
    graph = tf.function(model, input_signature=[tf.TensorSpec((None, None), tf.int32)])
    assert graph(empty).shape == (0, 5, 9)
    assert runs(*layers) >= before + 2


@pytest.mark.parametrize("cell", sorted(LAYERS))
@pytest.mark.parametrize("zero_output_for_mask", [False, True])
def test_a_left_padded_mask_matches_the_stock_layer(cell, zero_output_for_mask):
    """Rows padded on the left, as prompts of different lengths are read together: the
    fused loop runs (with the mask) and gives the stock layer's outputs and states."""
    stock, twin = twin_layers(cell, zero_output_for_mask=zero_output_for_mask)
    rng = np.random.default_rng(4)
    x = tf.constant(rng.standard_normal((3, 6, 5)), tf.float32)
    mask = tf.constant(np.arange(6)[None, :] >= np.array([[0], [2], [5]]))
    initial = [
        tf.constant(rng.standard_normal((3, 6)) * 0.5, tf.float32) for _ in range(STATES[cell])
    ]
    assert fused.fused_loop_applies(twin, mask)
    before = runs(twin)
    got = twin(x, initial_state=initial, mask=mask)
    assert runs(twin) > before
    want = stock(x, initial_state=initial, mask=mask)
    for expected, actual in zip(want, got):
        np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
