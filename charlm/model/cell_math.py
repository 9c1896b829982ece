"""The gate math of one time step of each Keras cell, forward and backward, for the
fused loop (fused.py).

Each cell says what one step does forward, given the projected input `px` and the
recurrent term `rec` of that step, and backward, given the gradient reaching its states.
The loops and the weight gradients are shared (fused.run_fused).
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla


class LSTMMath:
    """Keras LSTM: c' = f*c + i*tanh(z_c); h' = o*tanh(c'), gates in Keras's order
    i, f, c, o."""

    has_recurrent_bias = False
    separate_input_gradient = False
    saved_count = 4  # i, f, tanh(z_c), o; tanh(c') is recomputed from c' (backward)
    # What forward's states and saved values are, by name (charlm.inspect reads them).
    state_names = ("hidden", "cell")
    saved_names = ("input_gate", "forget_gate", "candidate", "output_gate")

    @staticmethod
    def forward(px, rec, states):
        _, c = states
        # sigmoid(z) = tanh(z / 2) / 2 + 1/2, so all four gates are one tanh over the
        # whole width, one pass where XLA otherwise makes several (docs/decisions.md,
        # lstm-one-tanh).
        scale, shift = sigmoid_by_tanh(tf.shape(px)[-1] // 4)
        gates = tf.tanh((px + rec) * scale) * scale + shift
        i, f, candidate, o = tf.split(gates, 4, axis=-1)
        c_new = f * c + i * candidate
        return (o * tf.tanh(c_new), c_new), (i, f, candidate, o)

    @staticmethod
    def backward(d_states, saved, states, previous, recurrent_kernel):
        dh, dc = d_states
        i, f, candidate, o = saved
        _, c_prev = previous
        # Recomputed rather than kept: a tanh per step costs less than one more kept
        # sequence (zeroed by XLA, then written a step at a time) read back here.
        tanh_c = tf.tanh(states[1])
        # Element-wise: XLA, which compiles the backward loop, fuses these into a few
        # kernels (TensorFlow's LSTMBlockCellGrad, the same math in one op, has no XLA
        # kernel). dc stands behind a barrier so that it is computed once: XLA would
        # otherwise fuse it, tanh included, into each of the four gate gradients.
        (dc,) = xla.optimization_barrier(dc + dh * o * (1.0 - tanh_c * tanh_c))
        dz = tf.concat(
            [
                dc * candidate * i * (1.0 - i),
                dc * c_prev * f * (1.0 - f),
                dc * i * (1.0 - candidate * candidate),
                dh * tanh_c * o * (1.0 - o),
            ],
            axis=-1,
        )
        # No direct path from h to h': it all goes through the recurrent kernel.
        return None, dz, (None, dc * f)  # None: the input gradient is dz too


def sigmoid_by_tanh(width):
    """Per column of the LSTM's gates (i, f, c, o): the scale and shift that turn
    tanh into the sigmoid on i, f and o, and leave the candidate's tanh as it is."""
    half, one, zero = tf.fill([width], 0.5), tf.ones([width]), tf.zeros([width])
    return tf.concat([half, half, one, half], 0), tf.concat([half, half, zero, half], 0)


class GRUMath:
    """Keras GRU (reset_after=True, cuDNN's variant): gates z, r, h;
    h' = z*h + (1-z)*tanh(x_h + r*(h @ U_h + b_h))."""

    has_recurrent_bias = True
    separate_input_gradient = True  # the candidate's: r scales only the recurrent part
    saved_count = 4  # z, r, the candidate, the recurrent term of the candidate
    state_names = ("hidden",)
    saved_names = ("update_gate", "reset_gate", "candidate", None)  # None: not shown

    @staticmethod
    def forward(px, rec, states):
        (h,) = states
        x_z, x_r, x_h = tf.split(px, 3, axis=-1)
        r_z, r_r, r_h = tf.split(rec, 3, axis=-1)
        z = tf.sigmoid(x_z + r_z)
        r = tf.sigmoid(x_r + r_r)
        candidate = tf.tanh(x_h + r * r_h)
        h_new = candidate + z * (h - candidate)
        return (h_new,), (z, r, candidate, r_h)

    @staticmethod
    def backward(d_states, saved, states, previous, recurrent_kernel):
        (dh,) = d_states
        z, r, candidate, r_h = saved
        (h_prev,) = previous
        # TanhGrad(y, dy) = dy * (1 - y^2) and SigmoidGrad(y, dy) = dy * y * (1 - y).
        d_candidate = tf.raw_ops.TanhGrad(y=candidate, dy=dh * (1.0 - z))
        d_update = tf.raw_ops.SigmoidGrad(y=z, dy=dh * (h_prev - candidate))
        d_reset = tf.raw_ops.SigmoidGrad(y=r, dy=d_candidate * r_h)
        d_px = tf.concat([d_update, d_reset, d_candidate], axis=-1)
        d_rec = tf.concat([d_update, d_reset, d_candidate * r], axis=-1)
        return d_px, d_rec, (dh * z,)


class SimpleRNNMath:
    """Keras SimpleRNN: h' = tanh(x @ W + b + h @ U)."""

    has_recurrent_bias = False
    separate_input_gradient = False
    saved_count = 0  # the output alone suffices
    state_names = ("hidden",)
    saved_names = ()

    @staticmethod
    def forward(px, rec, states):
        return (tf.tanh(px + rec),), ()

    @staticmethod
    def backward(d_states, saved, states, previous, recurrent_kernel):
        (dh,) = d_states
        (h,) = states
        da = tf.raw_ops.TanhGrad(y=h, dy=dh)  # dh * (1 - h^2) in one op
        return None, da, (None,)  # None: the input gradient is da too
