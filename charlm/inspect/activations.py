"""What every recurrent layer of a model holds after each character of a text: its hidden
state and, for an LSTM or a GRU, its gates.

The values come from the fused loop's forward pass (charlm.model.time_loops.forward_loop),
the very program training runs, which keeps every step's states and the gates its cell's
equations (charlm.model.cell_math) computed; no second copy of the equations exists to
drift from them. A text is read from the state after a newline, as scoring and generation
start, a piece at a time with the states carried, so working memory stays flat in the
text's length (only the returned arrays grow with it).

>>> layers = activations(model, vocab, "To be")   # doctest: +SKIP
>>> sorted(layers[0]), layers[0]["hidden"].shape  # doctest: +SKIP
(['candidate', 'hidden', 'reset_gate', 'update_gate'], (5, 256))
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from charlm.data.vocabulary import Vocabulary
from charlm.errors import RunError
from charlm.generate import start_token
from charlm.model.build import is_stateful
from charlm.model.fused import cell_math, compiled_loops, loop_weights, projected_inputs, split_bias
from charlm.model.step import chain_of_layers
from charlm.scoring import state_sizes

PIECE = 512  # characters per compiled call: one XLA program per layer, flat memory


def activations(
    model: keras.Model, vocab: Vocabulary, text: str, piece: int = PIECE
) -> list[dict[str, np.ndarray]]:
    """What each recurrent layer holds after each character of `text`.

    Args:
        model: a stateless model of stock recurrent layers computing in float32 (what
            load_checkpoint returns).
        vocab: its vocabulary; characters it lacks are read as the unknown token.
        text: the characters to read, from the state after a newline.
        piece: characters per compiled call (working memory grows with it, not the text).

    Returns:
        One dict per recurrent layer, input to output, of float32 arrays shaped
        (len(text), units), row t the values after reading text[t]: `hidden` for every
        cell; an LSTM's `input_gate`, `forget_gate`, `output_gate`, `candidate` and
        `cell`; a GRU's `update_gate`, `reset_gate` and `candidate` (Keras's convention:
        hidden = update_gate * previous + (1 - update_gate) * candidate).

    Raises:
        charlm.errors.RunError: the model carries state between batches, or a layer is
            not one the fused loop computes.
    """
    layers = inspectable_layers(model)
    ids = np.concatenate([[start_token(vocab)], vocab.encode(text)]).astype(np.int32)
    reader = LayerReader(layers)
    results = [
        {name: np.empty((len(text), units), np.float32) for name in names}
        for names, units in reader.shapes()
    ]
    for start in range(0, len(ids), piece):
        width = min(piece, len(ids) - start)
        # Every call `piece` wide (one traced program per layer); the padding comes after
        # the text, so nothing read before it changes, and its states are not kept.
        padded = np.zeros((1, piece), np.int32)
        padded[0, :width] = ids[start : start + width]
        values = reader.read(tf.constant(padded), width)
        # Row 0 of the ids is the newline before the text: its values are not the text's.
        first = 1 if start == 0 else 0
        rows = slice(start + first - 1, start + width - 1)
        for result, layer_values in zip(results, values):
            for name, array in layer_values.items():
                result[name][rows] = array[first:width]
    return results


def inspectable_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's chain of layers, checked: stateless, every recurrent layer one the
    fused loop computes (a stock cell in float32)."""
    if is_stateful(model):
        raise RunError(
            "this model carries its state between batches (contiguous training); "
            "load it with charlm.load or load_checkpoint, which make a stateless copy"
        )
    layers = chain_of_layers(model)
    for layer in layers:
        if isinstance(layer, keras.layers.RNN) and cell_math(layer) is None:
            raise RunError(
                f"layer {layer.name} is not a stock LSTM, GRU or SimpleRNN computing in "
                f"float32 ({layer.compute_dtype}); its gates cannot be read"
            )
    return layers


class LayerReader:
    """Runs the model's layers up to its last recurrent one over pieces of a sequence,
    carrying each recurrent layer's states from piece to piece."""

    def __init__(self, layers: list[keras.layers.Layer]):
        last = max(i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.RNN))
        # Dropout is off at inference; the layers after the last recurrent one (the
        # logits) are not read.
        self.layers = [
            layer for layer in layers[: last + 1] if not isinstance(layer, keras.layers.Dropout)
        ]
        self.recurrent = [layer for layer in self.layers if isinstance(layer, keras.layers.RNN)]
        self.states = [
            [tf.zeros((1, size)) for size in state_sizes(layer)] for layer in self.recurrent
        ]

    def shapes(self) -> list[tuple[list[str], int]]:
        """Per recurrent layer, the names of its values and its unit count."""
        return [(value_names(cell_math(layer)), layer.cell.units) for layer in self.recurrent]

    def read(self, ids: tf.Tensor, width: int) -> list[dict[str, np.ndarray]]:
        """Every recurrent layer's named values at each step of `ids` (1, piece), as
        (piece, units) arrays; the states after the first `width` steps are carried."""
        x = ids
        carried = iter(range(len(self.recurrent)))
        values = []
        for layer in self.layers:
            if not isinstance(layer, keras.layers.RNN):
                x = layer(x)
                continue
            index = next(carried)
            state_seqs, saved_seqs = run_layer(layer, x, self.states[index])
            self.states[index] = [seq[width - 1] for seq in state_seqs]
            math = cell_math(layer)
            named = zip(math.state_names + math.saved_names, state_seqs + saved_seqs)
            values.append({name: seq[:, 0].numpy() for name, seq in named if name})
            x = tf.transpose(state_seqs[0], [1, 0, 2])  # the layer's outputs, batch-major
        return values


def run_layer(layer: keras.layers.RNN, x: tf.Tensor, states: list[tf.Tensor]):
    """The fused loop's forward pass of `layer` over `x` (1, time, features) from
    `states`: every step's states and the gates its cell saved, time-major."""
    math = cell_math(layer)
    kernel, recurrent_kernel, bias = loop_weights(layer.cell)
    input_bias, recurrent_bias = split_bias(math, bias)
    _, _, px = projected_inputs(tf.cast(x, kernel.dtype), kernel, input_bias)
    forward, _ = compiled_loops(math)
    state_seqs, saved_seqs, _ = forward(px, states, recurrent_kernel, recurrent_bias)
    return list(state_seqs), list(saved_seqs)


def value_names(math) -> list[str]:
    return [name for name in math.state_names + math.saved_names if name]
