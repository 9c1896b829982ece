"""The fused loop's passes over time (fused.py runs them as XLA programs): forward, the
recurrent product and the gate math of each step, keeping what the backward pass needs;
backward, the gate gradients and the recurrent product of each step, latest first; and
inference, forward keeping the outputs alone."""

from __future__ import annotations

import tensorflow as tf


def recurrent_step(math, px_t, states, recurrent_kernel, recurrent_bias):
    """One step forward: the recurrent product, then the cell's gate math."""
    rec = tf.matmul(states[0], recurrent_kernel)
    if recurrent_bias is not None:
        rec = rec + recurrent_bias
    return math.forward(px_t, rec, states)


def forward_loop(math, px, states0, recurrent_kernel, recurrent_bias):
    steps = tf.shape(px)[0]

    def body(t, states, state_arrays, saved_arrays):
        states, saved = recurrent_step(math, px[t], states, recurrent_kernel, recurrent_bias)
        state_arrays = [a.write(t, s) for a, s in zip(state_arrays, states)]
        saved_arrays = [a.write(t, s) for a, s in zip(saved_arrays, saved)]
        return t + 1, tuple(states), state_arrays, saved_arrays

    _, final_states, state_arrays, saved_arrays = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (
            tf.constant(0),
            tuple(states0),
            new_arrays(len(states0), px.dtype, steps),
            new_arrays(math.saved_count, px.dtype, steps),
        ),
        maximum_iterations=steps,  # XLA sizes the arrays by it
    )
    return ([a.stack() for a in state_arrays], [a.stack() for a in saved_arrays], final_states)


def inference_loop(math, px, states0, recurrent_kernel, recurrent_bias):
    """The forward loop keeping only the outputs (h at every step) and the final states."""
    steps = tf.shape(px)[0]

    def body(t, states, outputs):
        states, _ = recurrent_step(math, px[t], states, recurrent_kernel, recurrent_bias)
        return t + 1, tuple(states), outputs.write(t, states[0])

    _, final_states, outputs = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), tuple(states0), tf.TensorArray(px.dtype, size=steps)),
        maximum_iterations=steps,  # XLA sizes the array by it
    )
    return outputs.stack(), final_states


def backward_loop(
    math, d_h_seq, d_final_states, saved_seqs, state_seqs, previous, recurrent_kernel
):
    """The sequential part of the backward pass: the gradients of the projected inputs
    (None where they are those of the recurrent terms) and of the recurrent terms at
    every step, and those of the initial states."""
    steps = tf.shape(d_h_seq)[0]

    def body(t, d_states, arrays):
        d_states = (d_states[0] + d_h_seq[t],) + tuple(d_states[1:])
        d_px, d_rec, d_previous = math.backward(
            d_states,
            [s[t] for s in saved_seqs],
            [s[t] for s in state_seqs],
            [p[t] for p in previous],
            recurrent_kernel,
        )
        # By the kernel as stored: XLA's product with transpose_b needs no transposed
        # copy and is no slower (docs/decisions.md, transpose-b).
        dh_prev = tf.matmul(d_rec, recurrent_kernel, transpose_b=True)
        if d_previous[0] is not None:
            dh_prev = dh_prev + d_previous[0]
        # Only the GRU's input gradient differs from its recurrent one: keep one copy.
        kept = [d_rec] if d_px is None else [d_rec, d_px]
        return (
            t - 1,
            (dh_prev,) + tuple(d_previous[1:]),
            [a.write(t, d) for a, d in zip(arrays, kept)],
        )

    arrays = new_arrays(2 if math.separate_input_gradient else 1, d_h_seq.dtype, steps)
    _, d_states0, arrays = tf.while_loop(
        lambda t, *_: t >= 0,
        body,
        (steps - 1, tuple(d_final_states), arrays),
        maximum_iterations=steps,  # XLA sizes the arrays by it
    )
    d_rec_seq, *d_px_seq = [a.stack() for a in arrays]
    # None where the input gradient is the recurrent one: an XLA program that returned
    # one array twice would copy it (docs/decisions.md, returned-once).
    return (d_px_seq[0] if d_px_seq else None), d_rec_seq, d_states0


def new_arrays(count, dtype, size):
    return [tf.TensorArray(dtype, size=size) for _ in range(count)]
