"""The one place a config becomes Keras layers.

    Embedding(vocab -> embedding_dim) -> layers x {SimpleRNN | LSTM | GRU} -> Dense(vocab) logits

Input: int32 token ids shaped (batch, time). Output: float32 logits shaped
(batch, time, vocab). The recurrent layers are Keras's with their default activations
(cuDNN-eligible on a GPU); by default (model.implementation: fused) they run charlm's
fused loop on a CPU (fused.py), which is faster and leaves the saved files stock.
Generation steps the same chain one character at a time (step.py).
"""

from __future__ import annotations

import keras

from charlm.config import ModelConfig
from charlm.model.fused import use_fused_loop

RECURRENT_LAYERS = {
    "simple_rnn": keras.layers.SimpleRNN,
    "lstm": keras.layers.LSTM,
    "gru": keras.layers.GRU,
}


def build_model(
    config: ModelConfig,
    vocab_size: int,
    seed: int | None = 0,
    stateful_batch_size: int | None = None,
) -> keras.Model:
    """A Functional model of `config`; weights are initialised from `seed`.

    With `stateful_batch_size`, the recurrent layers keep their state from one batch
    to the next (contiguous training); the batch size is then fixed.
    """
    if seed is not None:
        keras.utils.set_random_seed(seed)
    inputs = keras.Input(
        shape=(None,), dtype="int32", name="tokens", batch_size=stateful_batch_size
    )
    x = keras.layers.Embedding(vocab_size, config.embedding_dim, name="embedding")(inputs)
    for index in range(config.layers):
        x = recurrent_layer(config, f"{config.cell}_{index}", stateful_batch_size is not None)(x)
        if config.dropout > 0:
            # No seed: a copy for inference (stateless_copy), where dropout is off.
            dropout_seed = None if seed is None else seed + index
            x = keras.layers.Dropout(config.dropout, seed=dropout_seed, name=f"dropout_{index}")(x)
    # float32 logits even under mixed precision: softmax and loss need the range.
    logits = keras.layers.Dense(vocab_size, dtype="float32", name="logits")(x)
    model = keras.Model(inputs, logits, name=f"charlm_{config.cell}")
    set_implementation(model, config.implementation)
    return model


def set_implementation(model: keras.Model, implementation: str) -> keras.Model:
    """Fused: the recurrent layers run charlm's fused loop (charlm.model.fused); stock leaves
    them as they are. A model loaded from a .keras file has stock layers until this is
    called with fused."""
    if implementation == "fused":
        for layer in recurrent_layers(model):
            use_fused_loop(layer)
    return model


def recurrent_layer(config: ModelConfig, name: str, stateful: bool = False) -> keras.layers.Layer:
    return RECURRENT_LAYERS[config.cell](
        config.units, return_sequences=True, stateful=stateful, name=name
    )


def stateless_copy(model: keras.Model, config: ModelConfig, vocab_size: int) -> keras.Model:
    """The same weights in a model that takes any batch size and starts every call from a
    zero state: what evaluation, sampling and model.keras use."""
    copy = build_model(config, vocab_size, seed=None)
    copy.set_weights(model.get_weights())
    return copy


def is_stateful(model: keras.Model) -> bool:
    return any(layer.stateful for layer in recurrent_layers(model))


def recurrent_states(model: keras.Model) -> list:
    """The carried states of stateful layers (contiguous training), as numpy arrays."""
    return [
        state.numpy()
        for layer in recurrent_layers(model)
        if layer.stateful
        for state in layer.states
    ]


def restore_recurrent_states(model: keras.Model, states: list) -> None:
    variables = [
        state for layer in recurrent_layers(model) if layer.stateful for state in layer.states
    ]
    for variable, value in zip(variables, states):
        variable.assign(value)


def reset_recurrent_states(model: keras.Model) -> None:
    for layer in recurrent_layers(model):
        if layer.stateful:
            layer.reset_state()


def recurrent_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.RNN)]


def rng_states(model: keras.Model) -> list[list[int]]:
    """The dropout layers' random-generator states. Keras does not save them in .keras
    files, so a checkpoint keeps them itself: without them a resumed run would draw
    different dropout masks than an uninterrupted one."""
    return [layer.seed_generator.state.numpy().tolist() for layer in dropout_layers(model)]


def restore_rng_states(model: keras.Model, states: list[list[int]]) -> None:
    for layer, state in zip(dropout_layers(model), states):
        layer.seed_generator.state.assign(state)


def dropout_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]


def parameter_count(model: keras.Model) -> int:
    return int(sum(w.numpy().size for w in model.trainable_weights))


def estimated_bytes(config: ModelConfig, vocab_size: int, batch_size: int, seq_length: int) -> int:
    """A rough lower bound of training memory: weights with Adam's two slots, plus the
    activations backprop keeps (gates of every layer at every step)."""
    gates = {"simple_rnn": 1, "lstm": 4, "gru": 3}[config.cell]
    inputs = [config.embedding_dim] + [config.units] * (config.layers - 1)
    weights = (
        config.embedding_dim * vocab_size
        + (config.units + 1) * vocab_size
        + sum(gates * config.units * (size + config.units + 2) for size in inputs)
    )
    activations = (
        batch_size * seq_length * (config.layers * config.units * (gates + 2) + 3 * vocab_size)
    )
    return 4 * (4 * weights + activations)
