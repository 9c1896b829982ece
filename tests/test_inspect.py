"""charlm.inspect: the activations read from the fused loop against Keras's own layers,
the cells' equations between them, and find_units on activations with a planted answer."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from charlm.config import load_config
from charlm.data.vocabulary import Vocabulary
from charlm.errors import RunError
from charlm.inspect.activations import activations
from charlm.inspect.units import find_units, text_properties
from charlm.model.build import build_model, recurrent_layers

VOCAB = Vocabulary(list('\nabcdeT (")'))
TEXT = 'Tab (cab) "dead" bee\nace "a(b)c"\n' * 3  # longer than the pieces read below
PIECE = 16  # pieces shorter than the text: the states must be carried across them


def stock_model(cell: str, **more) -> keras.Model:
    """A 2-layer model with dropout between the layers, run by Keras's own loops."""
    settings = [
        f"model.cell={cell}",
        "model.layers=2",
        "model.units=6",
        "model.embedding_dim=4",
        "model.dropout=0.1",
        "model.implementation=stock",
    ]
    config = load_config(None, settings + [f"{k}={v}" for k, v in more.items()])
    return build_model(config.model, VOCAB.size, seed=3)


def stock_outputs(model: keras.Model, text: str) -> list[np.ndarray]:
    """Each recurrent layer's outputs over the text read after a newline, by Keras."""
    layers = recurrent_layers(model)
    outputs = keras.Model(model.input, [layer.output for layer in layers])
    ids = np.concatenate([VOCAB.encode("\n"), VOCAB.encode(text)])[np.newaxis]
    return [np.asarray(out)[0, 1:] for out in outputs(ids, training=False)]


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
def test_hidden_states_are_the_stock_layers_outputs(cell):
    model = stock_model(cell)
    layers = activations(model, VOCAB, TEXT, piece=PIECE)
    expected_keys = {
        "lstm": {"hidden", "input_gate", "forget_gate", "output_gate", "candidate", "cell"},
        "gru": {"hidden", "update_gate", "reset_gate", "candidate"},
        "simple_rnn": {"hidden"},
    }[cell]
    assert len(layers) == 2
    for values, expected in zip(layers, stock_outputs(model, TEXT)):
        assert set(values) == expected_keys
        for array in values.values():
            assert array.shape == (len(TEXT), 6) and array.dtype == np.float32
        np.testing.assert_allclose(values["hidden"], expected, atol=1e-5)
        assert np.abs(values["hidden"]).max() <= 1


def test_lstm_gates_obey_the_cell_equations_and_the_final_cell_state_is_keras_s():
    model = stock_model("lstm")
    layers = activations(model, VOCAB, TEXT, piece=PIECE)
    for values in layers:
        i, f, o = values["input_gate"], values["forget_gate"], values["output_gate"]
        candidate, cell, hidden = values["candidate"], values["cell"], values["hidden"]
        for gate in (i, f, o):
            assert 0 <= gate.min() and gate.max() <= 1
        assert np.abs(candidate).max() <= 1
        np.testing.assert_allclose(hidden, o * np.tanh(cell), atol=1e-6)
        np.testing.assert_allclose(cell[1:], f[1:] * cell[:-1] + i[1:] * candidate[1:], atol=1e-6)
    # The first layer's last cell state, against a stock LSTM with the same weights.
    first = recurrent_layers(model)[0]
    twin = keras.layers.LSTM(6, return_sequences=True, return_state=True)
    embedded = model.get_layer("embedding")(VOCAB.encode("\n" + TEXT)[np.newaxis])
    twin(embedded)
    twin.set_weights(first.get_weights())
    _, _, final_cell = twin(embedded)
    np.testing.assert_allclose(layers[0]["cell"][-1], np.asarray(final_cell)[0], atol=1e-5)


def test_gru_hidden_state_mixes_the_previous_one_and_the_candidate_by_the_update_gate():
    model = stock_model("gru")
    for values in activations(model, VOCAB, TEXT, piece=PIECE):
        z, r = values["update_gate"], values["reset_gate"]
        candidate, hidden = values["candidate"], values["hidden"]
        for gate in (z, r):
            assert 0 <= gate.min() and gate.max() <= 1
        assert np.abs(candidate).max() <= 1
        # Keras's convention: z keeps the previous state (PyTorch's keeps the candidate).
        np.testing.assert_allclose(
            hidden[1:], z[1:] * hidden[:-1] + (1 - z[1:]) * candidate[1:], atol=1e-6
        )


def test_the_values_do_not_depend_on_the_pieces():
    model = stock_model("gru")
    whole = activations(model, VOCAB, TEXT, piece=512)[1]["hidden"]
    pieces = activations(model, VOCAB, TEXT, piece=7)[1]["hidden"]
    np.testing.assert_allclose(pieces, whole, atol=1e-6)
    assert [layer["hidden"].shape for layer in activations(model, VOCAB, "")] == [(0, 6)] * 2


def test_a_stateful_model_is_refused():
    config = load_config(None, ["model.cell=gru", "model.units=4", "model.embedding_dim=2"])
    model = build_model(config.model, VOCAB.size, stateful_batch_size=2)
    with pytest.raises(RunError, match="stateless copy"):
        activations(model, VOCAB, "abc")


# ------------------------------------------------------------------ find_units
UNIT_TEXT = ('He said "Let (it) be" and left.\nCall 555 (now), "then" go.\n') * 20


def planted_activations(text: str) -> list[dict[str, np.ndarray]]:
    """Noise, with a unit planted for three properties: layer 1's cell unit 5 follows
    the quotes, layer 0's hidden unit 2 falls along the line, layer 1's hidden unit 0
    fires on upper case."""
    rng = np.random.default_rng(0)
    properties = text_properties(text)
    layers = [
        {q: rng.normal(size=(len(text), 8)).astype(np.float32) for q in ("hidden", "cell")}
        for _ in range(2)
    ]
    noise = rng.normal(scale=0.1, size=len(text))
    layers[1]["cell"][:, 5] = 3 * properties["inside quotes"] + noise
    layers[0]["hidden"][:, 2] = -properties["position in line"] / 30 + noise
    layers[1]["hidden"][:, 0] = properties["upper case"] + noise
    return layers


def test_find_units_finds_the_planted_units_first():
    found = find_units(planted_activations(UNIT_TEXT), UNIT_TEXT, top=3)
    assert set(found) == {
        "inside quotes",
        "inside brackets",
        "position in line",
        "start of word",
        "after newline",
        "digit",
        "upper case",
    }
    quotes, line, upper = (
        found["inside quotes"][0],
        found["position in line"][0],
        found["upper case"][0],
    )
    assert (quotes.layer, quotes.quantity, quotes.unit) == (1, "cell", 5)
    assert quotes.correlation > 0.9
    assert (line.layer, line.quantity, line.unit) == (0, "hidden", 2)
    assert line.correlation < -0.9  # falling along the line counts as much as rising
    assert (upper.layer, upper.quantity, upper.unit) == (1, "hidden", 0)
    # The noise units follow nothing: the runners-up correlate weakly.
    assert all(abs(unit.correlation) < 0.3 for unit in found["inside quotes"][1:])
    assert len(found["digit"]) == 3


def test_a_property_the_text_never_varies_gets_no_units():
    text = "abc def\nghi\n" * 5
    found = find_units(planted_activations(text), text)
    assert found["digit"] == [] and found["inside quotes"] == []
    assert found["after newline"]


def test_text_properties():
    props = text_properties('Go (a "b)")\n7')
    assert props["inside quotes"].tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    assert props["inside brackets"].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert props["position in line"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 1]
    assert props["start of word"].tolist() == [1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0]
    assert props["after newline"].tolist() == [0] * 11 + [1, 0]
    assert props["digit"].tolist() == [0] * 12 + [1]
    assert props["upper case"].tolist() == [1] + [0] * 12


@pytest.mark.slow  # trains the tiny run
def test_language_model_activations_predict_what_score_says(trained_run):
    """The last layer's hidden state after text[t], through the logits layer, gives the
    log-probability `score` gives text[t + 1]: both read from the state after a newline."""
    import charlm

    language_model = charlm.load(trained_run)
    text = "the cat sat on a mat\nand ran (to the box)"
    layers = language_model.activations(text)
    hidden = layers[-1]["hidden"]
    logits = np.asarray(language_model.keras_model.get_layer("logits")(hidden), np.float64)
    logprobs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    following = language_model.vocabulary.encode(text[1:])
    predicted = logprobs[np.arange(len(text) - 1), following]
    np.testing.assert_allclose(predicted, language_model.score(text).logprobs[1:], atol=1e-4)
    found = language_model.find_units(text, top=2)
    assert len(found["inside brackets"]) == 2 and found["digit"] == []
