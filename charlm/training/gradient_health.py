"""Gradient health: the gradients' norms measured inside every training step, reported
at each evaluation.

    step: grads ──norms──▶ sums (one variable) ──▶ clipping, update (Keras's)
    evaluation: sums ──▶ history.jsonl fields ──▶ zero again at each eval_interval step

A record holds the global gradient norm before clipping (its mean and maximum over the
steps since the previous scheduled evaluation), the share of those steps whose norm
exceeded train.clip_norm (where Keras's global clipping scaled the gradients down),
and for each recurrent layer the mean norm of its kernel's and recurrent kernel's
gradients. A norm that sinks toward zero in the lower layers says their gradients
vanish; one at the clip on most steps says they explode.

The norms are taken where the optimizer receives the gradients (after mixed precision's
loss scale is undone), by wrapping that one optimizer's `_backend_apply_gradients`, as
charlm's fused loop wraps a layer's `inner_loop`: the model and its saved files stay
stock Keras. Under a tf.distribute strategy each replica clips its own gradients before
they are summed; the sums then hold the first replica's, which is what it clipped.

The sums cover the steps since the last evaluation at a multiple of train.eval_interval;
an evaluation in between (Ctrl-C, the time budget) reports them without zeroing them,
and checkpoints keep them, so a resumed run reports what an uninterrupted one does.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from charlm.model.build import recurrent_layers
from charlm.training.optimizer import base_optimizer

# Positions in the sums vector; the recurrent layers' norms follow, two per layer.
TOTAL, MAXIMUM, STEPS, CLIPPED, LAYERS = range(5)


class GradientHealth:
    """Attach to a compiled model (inside its strategy's scope) before training."""

    def __init__(self, model: keras.Model):
        self.optimizer = base_optimizer(model)
        self.watched = [
            (f"{layer.name}/{name}", getattr(layer.cell, name))
            for layer in recurrent_layers(model)
            for name in ("kernel", "recurrent_kernel")
        ]
        # Not an attribute of the optimizer or the model: they would save it.
        self.sums = tf.Variable(
            tf.zeros(LAYERS + len(self.watched)),
            trainable=False,
            name="gradient_health",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        apply_gradients = self.optimizer._backend_apply_gradients

        def measured_apply_gradients(grads, trainable_variables):
            self.measure(grads, trainable_variables)
            return apply_gradients(grads, trainable_variables)

        self.optimizer._backend_apply_gradients = measured_apply_gradients

    def measure(self, grads, trainable_variables) -> None:
        """Add this step's norms to the sums (traced into the training step)."""
        squares = [squared_norm(grad) for grad in grads]
        norm = tf.sqrt(tf.add_n(squares))
        clip = self.optimizer.global_clipnorm
        clipped = tf.cast(norm > clip, tf.float32) if clip else tf.constant(0.0)
        index = {id(variable): position for position, variable in enumerate(trainable_variables)}
        layer_norms = [tf.sqrt(squares[index[id(variable)]]) for _, variable in self.watched]
        sums = self.sums
        self.sums.assign(
            tf.concat(
                [
                    [sums[TOTAL] + norm, tf.maximum(sums[MAXIMUM], norm)],
                    [sums[STEPS] + 1.0, sums[CLIPPED] + clipped],
                    sums[LAYERS:] + tf.stack(layer_norms) if layer_norms else sums[LAYERS:],
                ],
                axis=0,
            )
        )

    def report(self, reset: bool) -> dict:
        """The history fields of the steps summed so far (none if there were none);
        `reset` zeroes the sums for the next interval."""
        sums = self.sums.numpy().tolist()
        if reset:
            self.sums.assign(tf.zeros_like(self.sums))
        steps = sums[STEPS]
        if not steps:
            return {}
        fields = {
            "grad_norm_mean": sums[TOTAL] / steps,
            "grad_norm_max": sums[MAXIMUM],
            "grad_clipped_fraction": sums[CLIPPED] / steps,
        }
        for (name, _), total in zip(self.watched, sums[LAYERS:]):
            fields[f"grad_norm/{name}"] = total / steps
        return fields

    def state(self) -> list[float]:
        """What a checkpoint keeps (float32 values, exact through JSON)."""
        return self.sums.numpy().tolist()

    def restore(self, state: list[float] | None) -> None:
        if state is not None and len(state) == self.sums.shape[0]:
            self.sums.assign(state)


def squared_norm(grad) -> tf.Tensor:
    """The squared L2 norm of a gradient; an embedding's comes as IndexedSlices whose rows
    may repeat an index, so they are summed per row first."""
    if isinstance(grad, tf.IndexedSlices):
        grad = tf.math.unsorted_segment_sum(grad.values, grad.indices, grad.dense_shape[0])
    grad = tf.cast(grad, tf.float32)
    return tf.reduce_sum(tf.square(grad))
