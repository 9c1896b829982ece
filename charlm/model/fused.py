"""Fused recurrent layers: the stock Keras LSTM, GRU and SimpleRNN, trained faster on a CPU.

Why not the stock layers on a CPU: Keras runs its cell once per time step and lets
TensorFlow differentiate that loop, so every step multiplies its input by the kernel, and
on the way back every step computes its own small weight gradients. Small matmuls waste
most of a CPU's speed. Here:

* forward: the input projection `x @ kernel + bias` of all time steps is one large
  matmul; the loop does only `h @ recurrent_kernel` and the gate math;
* backward (a custom gradient): the loop does only what is sequential, the gate
  gradients and `dz @ recurrent_kernel^T`, and keeps dz; the gradients of the kernel,
  recurrent kernel and inputs are then large matmuls over all steps, and the bias's a
  sum over them.

The layers stay the stock keras.layers.LSTM, GRU and SimpleRNN objects with their own
variables; only their inner loop is replaced (use_fused_loop). So a checkpoint is a plain
Keras file: trained here, it runs with the stock layers (cuDNN) on a GPU, and the other
way round. Whenever TensorFlow sees a GPU, or a layer uses an option the fused loop does
not implement (nested masks, dropout inside the cell, other activations, go_backwards, unroll,
a precision other than float32), the layer runs Keras's own code, which is cuDNN on a
GPU.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

from charlm.cpu import onednn_uses_avx512
from charlm.model.cell_math import GRUMath, LSTMMath, SimpleRNNMath
from charlm.model.time_loops import backward_loop, forward_loop, inference_loop, recurrent_step


# ------------------------------------------------------------------ the shared loops
def run_fused(math, sequences, initial_states, kernel, recurrent_kernel, bias, training=True):
    """Runs a whole sequence. sequences: (batch, time, features); returns the outputs
    (batch, time, units) and the final states, differentiable by a custom gradient.
    The loops are XLA programs (see compiled_loops). Training, the forward loop keeps
    what the backward pass needs, every step's gates and states; otherwise it keeps the
    outputs alone (less memory and time; docs/decisions.md, eval-keeps-outputs),
    and a gradient asked for anyway first runs the training loop, to the same numbers."""
    state_count = len(initial_states)

    @tf.custom_gradient
    def fused(x, kernel, recurrent_kernel, bias, *states0):
        input_bias, recurrent_bias = split_bias(math, bias)
        x_tm, flat_x, px = projected_inputs(x, kernel, input_bias)
        # This custom gradient differentiates the loop: TensorFlow must not also record
        # the XLA program for an eager tape (its lists cannot leave the program).
        loop_inputs = [
            None if tensor is None else tf.nest.map_structure(tf.stop_gradient, tensor)
            for tensor in (px, states0, recurrent_kernel, recurrent_bias)
        ]
        forward, backward = compiled_loops(math)
        kept = None  # the state sequences, the saved gates, the final states
        if training:
            kept = forward(*loop_inputs)
            h_seq, final_states = kept[0][0], kept[2]
        else:
            h_seq, final_states = compiled_inference_loop(math)(*loop_inputs)
        outputs = tf.transpose(h_seq, [1, 0, 2])

        def gradient(d_outputs, *d_final_states):
            state_seqs, saved_seqs, _ = kept if kept is not None else forward(*loop_inputs)
            # None: that output was not used (a layer that returns its last output only).
            d_h_seq = tf.transpose(zeros_if_none(d_outputs, outputs), [1, 0, 2])
            previous = [
                tf.concat([s0[tf.newaxis], seq[:-1]], axis=0)
                for s0, seq in zip(states0, state_seqs)
            ]
            d_px, d_rec, d_states0, d_bias = backward(
                d_h_seq,
                [zeros_if_none(d, s0) for d, s0 in zip(d_final_states, states0)],
                saved_seqs,
                state_seqs,
                previous,
                recurrent_kernel,
            )
            if d_px is None:  # the input gradient is the recurrent one (backward_loop)
                d_px = d_rec
            flat_d_px = tf.reshape(d_px, [-1, tf.shape(d_px)[2]])
            flat_d_rec = tf.reshape(d_rec, [-1, tf.shape(d_rec)[2]])
            flat_h_prev = tf.reshape(previous[0], [-1, tf.shape(previous[0])[2]])
            d_kernel, d_recurrent_kernel = weight_gradients(
                math, flat_x, flat_h_prev, flat_d_px, flat_d_rec
            )
            # Last: the layer below starts its backward pass when d_x is ready, and
            # should not share the cores with this layer's products.
            with tf.control_dependencies([d_kernel, d_recurrent_kernel]):
                d_x = tf.reshape(tf.matmul(flat_d_px, kernel, transpose_b=True), tf.shape(x_tm))
            return (tf.transpose(d_x, [1, 0, 2]), d_kernel, d_recurrent_kernel, d_bias, *d_states0)

        return (outputs, *final_states), gradient

    results = fused(sequences, kernel, recurrent_kernel, bias, *initial_states)
    return results[0], list(results[1 : 1 + state_count])


def run_masked(math, sequences, mask, initial_states, kernel, recurrent_kernel, bias, zero_out):
    """A whole sequence where the steps that `mask` (batch, time) marks False leave the
    states as they were, as Keras's masks do (a model with a Masking layer, or padded
    sequences of different lengths). Outputs at those steps are zeros with `zero_out`
    (Keras's zero_output_for_mask), else the last output (zeros before the first).
    Forward only: TensorFlow differentiates it, if ever asked, through its own loop."""
    input_bias, recurrent_bias = split_bias(math, bias)
    _, _, px = projected_inputs(sequences, kernel, input_bias)
    mask_tm = tf.transpose(mask, [1, 0])[:, :, tf.newaxis]
    steps = tf.shape(px)[0]

    def body(t, states, last_output, outputs):
        stepped, _ = recurrent_step(math, px[t], states, recurrent_kernel, recurrent_bias)
        states = tuple(tf.where(mask_tm[t], new, old) for new, old in zip(stepped, states))
        kept = tf.zeros_like(last_output) if zero_out else last_output
        output = tf.where(mask_tm[t], stepped[0], kept)
        return t + 1, states, output, outputs.write(t, output)

    first = tf.zeros_like(initial_states[0])  # Keras's "last output" before any step
    _, final_states, _, outputs = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), tuple(initial_states), first, tf.TensorArray(sequences.dtype, size=steps)),
    )
    return tf.transpose(outputs.stack(), [1, 0, 2]), list(final_states)


def projected_inputs(sequences, kernel, input_bias):
    """Time-major inputs, flattened to (time * batch, features), and their projection
    `x @ kernel + bias` for every step at once, (time, batch, width): one large matmul."""
    x_tm = tf.transpose(sequences, [1, 0, 2])  # time-major: one step = one slice
    steps, batch = tf.shape(x_tm)[0], tf.shape(x_tm)[1]
    flat_x = tf.reshape(x_tm, [-1, tf.shape(x_tm)[2]])
    # The width is spelled out: with an empty batch (a replica's share of a last, short
    # batch) -1 could not be inferred.
    width = tf.shape(kernel)[1]
    px = tf.reshape(tf.matmul(flat_x, kernel) + input_bias, [steps, batch, width])
    return x_tm, flat_x, px


def split_bias(math, bias):
    if math.has_recurrent_bias:  # GRU keeps (input bias, recurrent bias) as two rows
        return bias[0], bias[1]
    return bias, None


def join_bias(math, d_input_bias, d_recurrent_bias):
    if math.has_recurrent_bias:
        return tf.stack([d_input_bias, d_recurrent_bias])
    return d_input_bias


@functools.cache
def compiled_inference_loop(math):
    """The forward loop of `math`'s cell keeping the outputs alone, as an XLA program."""
    return tf.function(functools.partial(inference_loop, math), jit_compile=True)


@functools.cache
def compiled_loops(math):
    """The forward and backward loops of `math`'s cell as XLA programs, for training and
    evaluation alike. Their matrix products (a batch of rows by the recurrent kernel, at
    every step) are where the time goes, and XLA's are at least as fast as oneDNN's at
    these shapes (docs/decisions.md, xla-loops)."""
    return (
        tf.function(functools.partial(forward_loop, math), jit_compile=True),
        tf.function(functools.partial(backward_pass, math), jit_compile=True),
    )


def backward_pass(math, *loop_inputs):
    """The backward loop, and the bias gradient summed in the same XLA program (its sum
    over time and batch beats TensorFlow's: docs/decisions.md, bias-gradient-in-xla)."""
    d_px, d_rec, d_states0 = backward_loop(math, *loop_inputs)
    d_input_bias = tf.reduce_sum(d_rec if d_px is None else d_px, [0, 1])
    d_bias = join_bias(math, d_input_bias, tf.reduce_sum(d_rec, [0, 1]))
    return d_px, d_rec, d_states0, d_bias


def weight_gradients(math, flat_x, flat_h_prev, flat_d_px, flat_d_rec):
    """The gradients of the kernel, x^T d_px, and of the recurrent kernel, h_prev^T d_rec,
    one product after the other. Where d_px is d_rec (LSTM, SimpleRNN) and oneDNN runs
    below AVX-512, they are one product, [x | h_prev]^T d_px: oneDNN's AVX2 products are
    slow at some of the separate shapes and not at the joint one. On AVX-512 the two
    products are as fast and do without the joint one's copy of x and h_prev
    (docs/decisions.md, joint-weight-gradient)."""
    if math.separate_input_gradient or onednn_uses_avx512():
        return one_after_another(
            lambda: tf.matmul(flat_x, flat_d_px, transpose_a=True),
            lambda: tf.matmul(flat_h_prev, flat_d_rec, transpose_a=True),
        )
    joint = tf.matmul(tf.concat([flat_x, flat_h_prev], 1), flat_d_px, transpose_a=True)
    width = tf.shape(flat_x)[1]
    return joint[:width], joint[width:]


def one_after_another(*products):
    """Runs each of `products` (callables) after the one before it. TensorFlow would
    otherwise run independent matrix products at once, each on every core, and together
    they take longer than one after the other (docs/decisions.md, products-in-turn)."""
    results = []
    for product in products:
        with tf.control_dependencies(results[-1:]):
            results.append(product())
    return results


def zeros_if_none(gradient, like):
    return tf.zeros_like(like) if gradient is None else gradient


# ------------------------------------------------------------------ the layers
MATH = {
    keras.layers.LSTM: LSTMMath,
    keras.layers.GRU: GRUMath,
    keras.layers.SimpleRNN: SimpleRNNMath,
}


def use_fused_loop(layer: keras.layers.RNN) -> None:
    """Make a stock LSTM, GRU or SimpleRNN layer run the fused loop where it applies.

    Only this layer object's inner loop changes, not its class: the layer still saves
    as the stock one, so charlm's .keras files are plain Keras files that any Keras
    loads (a GPU then runs them on cuDNN), and charlm calls this again after loading."""
    if getattr(layer, "uses_fused_loop", False):
        return
    math = next(m for cls, m in MATH.items() if isinstance(layer, cls))

    def inner_loop(sequences, initial_state, mask, training=False):
        if not runs_fused(layer, mask):  # the class's own loop: cuDNN on a GPU
            return type(layer).inner_loop(layer, sequences, initial_state, mask, training)
        return fused_inner_loop(layer, math, sequences, initial_state, mask, bool(training))

    layer.inner_loop = inner_loop
    layer.uses_fused_loop = True


def runs_fused(layer, mask) -> bool:
    """Whether `layer` runs the fused loop on inputs with `mask`: the one test that both
    the layer's inner loop and the start-up line (describe_loops) make."""
    return getattr(layer, "uses_fused_loop", False) and fused_loop_applies(layer, mask)


def fused_loop_applies(layer, mask) -> bool:
    """The fused loop implements the stock layers' defaults in float32 (cell_math);
    anything else, and any GPU (cuDNN is faster there), goes to Keras's own code."""
    cell = layer.cell
    return (
        cell_math(layer) is not None
        and not isinstance(mask, (list, tuple))
        and not layer.go_backwards
        and not layer.unroll
        and not cell.dropout
        and not cell.recurrent_dropout
        and not gpu_visible()
    )


def cell_math(layer: keras.layers.RNN):
    """The gate math (cell_math.py) that computes a step of `layer`'s cell as Keras
    does without dropout, or None: it covers the stock LSTM, GRU and SimpleRNN with
    their default activations and biases, in float32 (the loops are written and tested in
    float32 only, and on a CPU the mixed precisions gain nothing: docs/decisions.md,
    float32-on-cpu)."""
    math = next((m for cls, m in MATH.items() if isinstance(layer, cls)), None)
    cell = layer.cell
    defaults = (
        cell.use_bias
        and cell.activation is keras.activations.tanh
        and getattr(cell, "recurrent_activation", keras.activations.sigmoid)
        is keras.activations.sigmoid
        and getattr(cell, "reset_after", True)
        and layer.compute_dtype == "float32"
    )
    return math if defaults else None


def describe_loops(layers) -> str:
    """For the start-up line: which loop the recurrent layers run. charlm's models pass
    no mask, and a layer's compute dtype is the one it trains in."""
    if layers and all(runs_fused(layer, None) for layer in layers):
        return "fused recurrent loop"
    return "Keras's recurrent loop (cuDNN on a GPU)"


def gpu_visible() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))


def fused_inner_loop(layer, math, sequences, initial_state, mask=None, training=False):
    """What Keras's RNN.inner_loop returns: (last output, outputs, final states)."""
    states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
    weights = loop_weights(layer.cell)
    if mask is None:
        outputs, final_states = run_fused(math, sequences, states, *weights, training)
    else:
        outputs, final_states = run_masked(
            math, sequences, mask, states, *weights, layer.zero_output_for_mask
        )
    return final_states[0], outputs, final_states


def loop_weights(cell) -> list:
    """The cell's kernel, recurrent kernel and bias, as tensors."""
    return [tf.convert_to_tensor(w) for w in (cell.kernel, cell.recurrent_kernel, cell.bias)]
