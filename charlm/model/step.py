"""One character at a time through a model that build.py built: what generation runs.

The model is a chain of layers. Stepping it walks that chain in order: a recurrent
layer advances its explicit state by one character; every other layer acts on each
character by itself (the embedding, the logits) and is applied as it is; dropout is
off at inference. So whatever build_model puts in the chain, the step follows it, and
no layer is looked up by name.

A stock recurrent layer (the fused loop's cells, cell_math.py) is stepped by its gate
math rather than by its Keras cell, for two reasons that make one stream faster
(docs/decisions.md, step-by-gate-math):

* its input projection `x @ kernel + bias`, right after the embedding, depends on the
  character alone: it is computed once for every character of the vocabulary, and each
  step looks its row up instead of multiplying;
* each matrix product stays on its own in the XLA program (see `alone`).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla

from charlm.model.fused import cell_math, loop_weights, split_bias


class CharacterStep:
    """`step(tokens, states) -> (logits, states)` for a batch of independent streams,
    inside an XLA-compiled function. The weights are read when it is built: it steps the
    model as it is then. With `live`, the weights it derives are variables that
    `refresh()` sets to the model's current ones, so a program compiled once keeps
    stepping a model in training (the training timeline)."""

    def __init__(self, model: keras.Model, live: bool = False):
        self.layers = chain_of_layers(model)
        self.compute_dtype = self.layers[0].compute_dtype
        self.stages = stages_of(self.layers, live)

    def refresh(self) -> None:
        """Read the model's weights again (built with `live`; the other stages read the
        layers' own variables at every step)."""
        for stage in self.stages:
            if isinstance(stage, RecurrentStep):
                stage.refresh()

    def initial_states(self, streams: int) -> list[list[tf.Tensor]]:
        """Zero states for every recurrent layer, as a fresh model call starts from."""
        states = []
        for layer in self.layers:
            if isinstance(layer, keras.layers.RNN):
                sizes = layer.cell.state_size
                sizes = sizes if isinstance(sizes, (list, tuple)) else [sizes]
                states.append([tf.zeros((streams, size), self.compute_dtype) for size in sizes])
        return states

    def __call__(self, tokens, states):
        """Float32 logits for the character after `tokens` (shape (streams,)), and the
        states after it."""
        x = tokens
        remaining = iter(states)
        new_states = []
        for stage in self.stages:
            if isinstance(stage, (RecurrentStep, CellStep)):
                x, state = stage(x, next(remaining))
                new_states.append(state)
            else:
                x = stage(x)
        return tf.cast(x, tf.float32), new_states

    def matrices(self) -> list:
        """The weight matrices one character is multiplied by (every kernel but the
        embedding's, which is a lookup): what bounds one stream's speed."""
        return [
            weight
            for layer in self.layers
            if not isinstance(layer, keras.layers.Embedding)
            for weight in layer.weights
            if len(weight.shape) == 2
        ]


def stages_of(layers: list, live: bool = False) -> list:
    """What the step runs, in order: a RecurrentStep for each stock recurrent layer
    (taking the embedding before it in), a CellStep for any other recurrent layer, and
    every other layer but dropout as it is."""
    kept = [layer for layer in layers if not isinstance(layer, keras.layers.Dropout)]
    stages = []
    for index, layer in enumerate(kept):
        following = kept[index + 1] if index + 1 < len(kept) else None
        if isinstance(layer, keras.layers.Embedding) and stepped_by_math(following):
            continue  # the next layer's RecurrentStep looks it up
        if stepped_by_math(layer):
            previous = kept[index - 1] if index else None
            embedding = previous if isinstance(previous, keras.layers.Embedding) else None
            stages.append(RecurrentStep(layer, embedding, live))
        elif isinstance(layer, keras.layers.RNN):
            stages.append(CellStep(layer))
        else:
            stages.append(layer)
    return stages


def stepped_by_math(layer) -> bool:
    return isinstance(layer, keras.layers.RNN) and cell_math(layer) is not None


class RecurrentStep:
    """One step of a stock recurrent layer by its gate math. With `embedding` (the layer
    before it), the input projection of every character is a table, looked up. With
    `live`, the weights are variables that `refresh()` sets again."""

    def __init__(self, layer: keras.layers.RNN, embedding=None, live: bool = False):
        self.layer, self.embedding = layer, embedding
        self.math = cell_math(layer)
        weights = self.derived_weights()
        if live:
            weights = {name: tf.Variable(w, trainable=False) for name, w in weights.items()}
        self.weights = weights
        self.kernel, self.recurrent_kernel = weights["kernel"], weights["recurrent_kernel"]
        self.input_bias = weights["input_bias"]
        self.recurrent_bias = weights.get("recurrent_bias")
        self.table = weights.get("table")

    def derived_weights(self) -> dict:
        """The layer's weights as the step uses them, read now (absent ones left out)."""
        kernel, recurrent_kernel, bias = loop_weights(self.layer.cell)
        input_bias, recurrent_bias = split_bias(self.math, bias)
        weights = {"kernel": kernel, "recurrent_kernel": recurrent_kernel, "input_bias": input_bias}
        if recurrent_bias is not None:
            weights["recurrent_bias"] = recurrent_bias
        if self.embedding is not None:
            embeddings = tf.convert_to_tensor(self.embedding.embeddings)
            weights["table"] = tf.matmul(embeddings, kernel) + input_bias
        return weights

    def refresh(self) -> None:
        for name, value in self.derived_weights().items():
            self.weights[name].assign(value)

    def __call__(self, x, states):
        """The layer's output and states after `x` (token ids with a table, else the
        previous layer's output)."""
        if self.table is None:
            px = alone(tf.matmul(x, self.kernel)) + self.input_bias
        else:
            px = tf.gather(self.table, x)
        rec = alone(tf.matmul(states[0], self.recurrent_kernel))
        if self.recurrent_bias is not None:
            rec = rec + self.recurrent_bias
        new_states, _ = self.math.forward(px, rec, states)
        return new_states[0], list(new_states)


class CellStep:
    """One step of any other recurrent layer, by its Keras cell."""

    def __init__(self, layer: keras.layers.RNN):
        self.cell = layer.cell

    def __call__(self, x, states):
        x, state = self.cell(x, states, training=False)
        return x, list(state)


def alone(product):
    """`product`, kept out of XLA's fusions. XLA fuses a one-row matrix product with the
    additions after it into one loop that runs far slower than its matrix-vector kernel;
    from two rows on it changes nothing (docs/decisions.md, products-alone)."""
    (kept,) = xla.optimization_barrier(product)
    return kept


def chain_of_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers from input to output, refusing a model that is not a chain."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    for previous, layer in zip([None] + layers, layers):
        parents = (
            {
                node.parent_nodes[0].operation if node.parent_nodes else None
                for node in layer._inbound_nodes
            }
            if previous
            else set()
        )
        if previous and parents != {previous}:
            raise ValueError(
                f"layer {layer.name} does not follow {previous.name}: "
                f"only a chain of layers can be stepped"
            )
    return layers
