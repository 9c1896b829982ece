"""Sampling: the recurrent state is carried from character to character inside a
compiled loop; the prefix is never re-run.

A prime is read in pieces through the model's sequence path (one call per piece, memory
flat for a prime of any length). Then a chunk of characters is generated per call of one
`tf.function` (a `tf.while_loop` over steps), so the Python loop runs once per chunk, not
once per character, and text can still be printed as it is made.

Every stream (a lane) carries its own controls: seed, position, temperature, top-k and
top-p. Its random draws are a function of its own seed and position alone (see
`uniform_noise`), so a stream's text is the same whether it is generated alone or beside
any number of others, which is what lets a server batch unrelated requests.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from charlm.data.vocabulary import Vocabulary
from charlm.model.step import CharacterStep

CHUNK = 128  # characters per compiled call: large enough to hide Python, small enough to stream
# TensorFlow multiplies a single row by a matrix with another kernel (a vector product)
# than several rows, and its sums round differently; from two rows on, each row's result
# is the same whatever the batch. One stream is therefore run as two identical rows, so
# its text is exactly the one it gets beside other streams.
MIN_ROWS = 2
FEED_CHARS = 4096  # prime characters per call: bounds the memory of reading a long prime
FEED_ALIGN = 8  # prompts are read in widths that are multiples of this (see read_prompts)
MASK32 = 0xFFFFFFFF
SEED_LIMIT = 2**62  # stream seeds live below this (int64 arithmetic, no overflow)
MODES = ("argmax", "plain", "filtered")  # see sampling_mode


@dataclass
class SamplingOptions:
    length: int = 500
    temperature: float = 0.8  # 0 means argmax
    top_k: int = 0  # 0: no limit
    top_p: float = 1.0
    argmax: bool = False
    seed: int = 0


@dataclass
class Lanes:
    """Per-stream sampling controls, as arrays of one entry per stream."""

    seeds: np.ndarray  # int64
    positions: np.ndarray  # int64: characters generated so far
    temperature: np.ndarray  # float32; 0 means argmax
    top_k: np.ndarray  # int32; 0 means no limit
    top_p: np.ndarray  # float32

    @classmethod
    def of(cls, options: SamplingOptions, streams: int) -> Lanes:
        temperature = 0.0 if options.argmax else options.temperature
        return cls(
            seeds=np.array([stream_seed(options.seed, k) for k in range(streams)], np.int64),
            positions=np.zeros(streams, np.int64),
            temperature=np.full(streams, temperature, np.float32),
            top_k=np.full(streams, options.top_k, np.int32),
            top_p=np.full(streams, options.top_p, np.float32),
        )


def stream_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of a request made with `seed` (sample 0 uses `seed`)."""
    return (seed + index * 0x9E3779B97F4A7C15) % SEED_LIMIT


class Sampler:
    """Generates text from a trained charlm model, several streams at once."""

    def __init__(self, model: keras.Model, vocab: Vocabulary):
        self.vocab = vocab
        self.model_step = CharacterStep(model)
        self.unknown_mask = tf.constant(
            np.where(np.arange(vocab.size) == vocab.unknown_id, -np.inf, 0.0), tf.float32
        )
        # One graph each, for any number of streams and prompt lengths: the signatures
        # leave those sizes open. Without them, TensorFlow keeps a dispatch entry for every
        # new shape it is called with, and a server's memory grows with each. Not
        # XLA-compiled: XLA is faster for one stream (2,272 against
        # 1,521 chars/s), but its matrix products round differently from 33 rows on, so a
        # stream's text would depend on how many run beside it.
        logits = tf.TensorSpec((None, vocab.size), tf.float32)
        states = [
            [tf.TensorSpec((None, *state.shape[1:]), state.dtype) for state in layer]
            for layer in self.initial_states(1)
        ]
        lanes = tuple(
            tf.TensorSpec((None,), dtype)
            for dtype in (tf.int64, tf.int64, tf.float32, tf.int32, tf.float32)
        )
        ids = tf.TensorSpec((None, None), tf.int32)
        self.feed_piece = tf.function(
            self._feed_piece, input_signature=[ids, tf.TensorSpec((None, None), tf.bool), states]
        )
        self.generate_chunk = {
            mode: tf.function(
                functools.partial(self._generate_chunk, mode=mode),
                input_signature=[logits, states, tf.TensorSpec((), tf.int32), lanes],
            )
            for mode in MODES
        }

    def initial_states(self, streams: int) -> list:
        return self.model_step.initial_states(streams)

    def step(self, tokens, states):
        """Logits for the next character after `tokens` (shape (streams,)), and new states."""
        logits, states = self.model_step(tokens, states)
        # The unknown token stands for characters never seen in training: never emit it.
        return logits + self.unknown_mask, states

    # ------------------------------------------------------------ compiled loops
    def _feed_piece(self, tokens, mask, states):
        logits, states = self.model_step.feed(tokens, states, mask)
        return logits + self.unknown_mask, states

    def _generate_chunk(self, logits, states, steps, lanes, mode):
        """Sample `steps` characters; returns them (streams, steps), the last logits, states.
        `mode` is a Python string, so each mode gets a graph with only the ops it needs."""
        seeds, positions, temperature, top_k, top_p = lanes
        out = tf.TensorArray(tf.int32, size=steps)
        for t in tf.range(steps):
            noise = None  # argmax draws nothing
            if mode != "argmax":
                noise = uniform_noise(seeds, positions + tf.cast(t, tf.int64), self.vocab.size)
            token = choose(logits, noise, temperature, top_k, top_p, mode)
            out = out.write(t, token)
            logits, states = self.step(token, states)
        return tf.transpose(out.stack()), logits, states

    # ------------------------------------------------------------ public
    def feed(self, prime_ids, streams: int = 1):
        """The logits after the prime and the states after it, for `streams` copies: read
        once and copied, so every copy is exactly the same."""
        logits, states = self.read_prompts([self.prime_row(prime_ids)])
        copies = [[tf.repeat(state, streams, axis=0) for state in layer] for layer in states]
        return tf.repeat(logits, streams, axis=0), copies

    def read_prompts(self, prompts: list[np.ndarray]):
        """The logits and states after each of `prompts` (1-D id arrays, of any lengths,
        none empty), read together: padded on the left, with a mask that keeps each
        row's states untouched until its prompt begins. Read in pieces of FEED_CHARS, so
        memory stays flat for a prompt of any length; a row's numbers are the same
        whatever rows it is read with."""
        # Rounded up: TensorFlow's kernels keep state per input shape, so a server that
        # met every width and row count would grow by each (measured: +20% over 2,000
        # calls of mixed shapes, flat with a few shapes). The extra steps are masked.
        width = -(-max(len(prompt) for prompt in prompts) // FEED_ALIGN) * FEED_ALIGN
        rows = len(prompts)
        padded_rows = max(MIN_ROWS, 1 << (rows - 1).bit_length())
        ids = np.zeros((padded_rows, width), np.int32)
        mask = np.zeros((padded_rows, width), bool)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = prompt
            mask[row, width - len(prompt) :] = True
        states = self.initial_states(len(ids))
        for start in range(0, width, FEED_CHARS):
            piece = slice(start, start + FEED_CHARS)
            logits, states = self.feed_piece(
                tf.constant(ids[:, piece]), tf.constant(mask[:, piece]), states
            )
        return logits[:rows], [[state[:rows] for state in layer] for layer in states]

    def generate(self, logits, states, lanes: Lanes, steps: int, mode: str):
        """`steps` characters for every lane: (ids (lanes, steps), logits, states)."""
        rows = len(lanes.seeds)
        logits = pad_rows(logits)
        states = [[pad_rows(state) for state in layer] for layer in states]
        controls = tuple(
            tf.constant(pad_rows(array))
            for array in (lanes.seeds, lanes.positions, lanes.temperature, lanes.top_k, lanes.top_p)
        )
        ids, logits, states = self.generate_chunk[mode](
            logits, states, tf.constant(steps), controls
        )
        lanes.positions += steps
        states = [[state[:rows] for state in layer] for layer in states]
        return ids.numpy()[:rows], logits[:rows], states

    def sample(
        self,
        prime_ids: list[int],
        streams: int,
        options: SamplingOptions,
    ) -> Iterator[np.ndarray]:
        """Yield chunks of generated token ids, shape (streams, chunk)."""
        logits, states = self.feed(prime_ids, streams)
        lanes = Lanes.of(options, streams)
        mode = sampling_mode(lanes)
        done = 0
        while done < options.length:
            steps = min(CHUNK, options.length - done)
            ids, logits, states = self.generate(logits, states, lanes, steps, mode)
            done += steps
            yield ids

    def prime_row(self, prime_ids) -> np.ndarray:
        """The ids a prime is read as: the start token when it is empty."""
        ids = np.asarray(prime_ids, np.int32).reshape(-1)
        return ids if ids.size else np.array([self.start_token()], np.int32)

    def start_token(self) -> int:
        """Without a prime, generation starts as if after a newline (or the first character)."""
        return self.vocab.chars.index("\n") if "\n" in self.vocab.chars else 0


def sampling_mode(lanes: Lanes) -> str:
    """The cheapest graph that gives every lane the tokens the general one gives it: all
    argmax, no filtering, or per-lane filters (see `choose`)."""
    if not lanes.temperature.any():
        return "argmax"
    if not lanes.top_k.any() and (lanes.top_p >= 1).all():
        return "plain"
    return "filtered"


def choose(logits, noise, temperature, top_k, top_p, mode: str):
    """One token per stream from `logits` (streams, vocab), as a draw from the softmax at
    each lane's temperature after its top-k and top-p filters (the Gumbel-max trick: the
    argmax of logits plus Gumbel noise is a sample of their softmax). A lane at
    temperature 0 takes the argmax."""
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    if mode == "argmax":
        return greedy
    scaled = logits / tf.where(temperature > 0, temperature, 1.0)[:, None]
    if mode == "filtered":
        scaled = keep_top_k(scaled, top_k)
        # Only lanes with top_p < 1 are filtered by it: the cumulative sum can round to 1
        # before the last token, and a lane without the filter must draw what "plain" draws.
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


def pad_rows(array):
    """`array` with its first row repeated up to MIN_ROWS rows (see MIN_ROWS)."""
    missing = MIN_ROWS - len(array)
    if missing <= 0:
        return array
    if isinstance(array, np.ndarray):
        return np.concatenate([array] + [array[:1]] * missing)
    return tf.concat([array] + [array[:1]] * missing, axis=0)
