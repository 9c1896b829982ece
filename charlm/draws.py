"""How each stream draws its next character from the logits: a Gumbel-max draw at the
stream's own temperature, after its own top-k and top-p filters, from noise that is a
hash of the stream's seed and position alone (so a stream draws the same characters
whatever other streams share its batch)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

MASK32 = 0xFFFFFFFF


def choose(logits, noise, temperature, top_k, top_p, mode: str):
    """One token per stream from `logits` (streams, vocab), as a draw from the softmax at
    each stream's temperature after its top-k and top-p filters (the Gumbel-max trick: the
    argmax of logits plus Gumbel noise is a sample of their softmax). A stream at
    temperature 0 takes the argmax."""
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    if mode == "argmax":
        return greedy
    scaled = logits / tf.where(temperature > 0, temperature, 1.0)[:, None]
    if mode == "filtered":
        scaled = keep_top_k(scaled, top_k)
        # Only streams with top_p < 1 are filtered by it: the cumulative sum can round to 1
        # before the last token, and a stream without the filter must draw what "plain" draws.
        scaled = tf.where((top_p < 1.0)[:, None], keep_top_p(scaled, top_p), scaled)
    gumbel = -tf.math.log(-tf.math.log(noise))
    drawn = tf.argmax(scaled + tf.cast(gumbel, scaled.dtype), axis=-1, output_type=tf.int32)
    return tf.where(temperature > 0, drawn, greedy)


def keep_top_k(logits, top_k):
    """Logits outside each row's k largest become -inf (k = 0 keeps all)."""
    vocab_size = tf.shape(logits)[-1]
    k = tf.where(top_k > 0, tf.minimum(top_k, vocab_size), vocab_size)
    ordered = tf.sort(logits, direction="DESCENDING", axis=-1)
    threshold = tf.gather(ordered, k[:, None] - 1, batch_dims=1)
    return tf.where(logits < threshold, -np.inf, logits)


def keep_top_p(logits, top_p):
    """Keep each row's smallest set of most likely tokens whose probability reaches top_p."""
    ordered = tf.sort(logits, direction="DESCENDING", axis=-1)
    cumulative = tf.cumsum(tf.nn.softmax(ordered, axis=-1), axis=-1, exclusive=True)
    # The most likely token is always kept (its exclusive cumulative mass is 0).
    kept = tf.where(cumulative < top_p[:, None], ordered, np.inf)
    threshold = tf.reduce_min(kept, axis=-1, keepdims=True)
    return tf.where(logits < threshold, -np.inf, logits)


def uniform_noise(seeds, positions, vocab_size: int):
    """Uniform numbers in (0, 1), shape (streams, vocab), each a hash of (the stream's
    seed, its position, the token index) alone. TensorFlow's stateless samplers take one
    seed per call, so a stream's draws would depend on which other streams share the
    batch; these do not. float64, so that no draw rounds to 0 or 1."""
    key = mix32(xor(mix32(low32(seeds)), high32(seeds)))
    key = mix32(xor(key, low32(positions)))
    index = tf.range(vocab_size, dtype=tf.int64)
    bits = mix32(xor(mix32(xor(key[:, None], index[None, :])), high32(positions)[:, None]))
    return (tf.cast(bits, tf.float64) + 0.5) / 2.0**32


def mix32(x):
    """A 32-bit integer hash (good avalanche: every input bit moves every output bit),
    computed in int64 so that no product overflows."""
    for _ in range(2):
        x = low32(xor(tf.bitwise.right_shift(x, 16), x) * 0x45D9F3B)
    return xor(tf.bitwise.right_shift(x, 16), x)


def low32(x):
    return tf.bitwise.bitwise_and(x, tf.constant(MASK32, tf.int64))


def high32(x):
    return low32(tf.bitwise.right_shift(x, 32))


def xor(a, b):
    return tf.bitwise.bitwise_xor(a, b)
