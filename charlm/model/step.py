"""One character at a time through a model that build.py built: what generation runs.

The model is a chain of layers. Stepping it walks that chain in order: a recurrent
layer's cell advances its explicit state by one character; every other layer acts on
each character by itself (the embedding, the logits) and is applied as it is; dropout
is off at inference. So whatever build_model puts in the chain, the step follows it,
and no layer is looked up by name.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class CharacterStep:
    """`step(tokens, states) -> (logits, states)` for a batch of independent streams."""

    def __init__(self, model: keras.Model):
        self.layers = chain_of_layers(model)
        self.compute_dtype = self.layers[0].compute_dtype

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
        for layer in self.layers:
            if isinstance(layer, keras.layers.RNN):
                x, state = layer.cell(x, next(remaining), training=False)
                new_states.append(list(state))
            elif not isinstance(layer, keras.layers.Dropout):
                x = layer(x)
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
