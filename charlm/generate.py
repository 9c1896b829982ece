"""Sampling: the recurrent state is carried from character to character inside a
compiled loop; the prefix is never re-run.

A prime is read a piece at a time (one call per piece, memory flat for a prime of any
length), one character per step of the same model step that generation runs. Then a
chunk of characters is generated per call of one `tf.function` (a `tf.while_loop` over
steps), so the Python loop runs once per chunk, not once per character, and text can
still be printed as it is made.

Every stream carries its own controls (charlm.controls): seed, position, temperature,
top-k, top-p and logit bias. Its random draws are a function of its own seed and position alone (see
`uniform_noise`), and from two streams on its numbers do not depend on the others (see
charlm.batching), so a stream's text is the same beside any number of others, which is
what lets a server batch unrelated requests.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf

from charlm.batching import (
    BLOCK_ROWS,
    INVARIANT_ROWS,
    CompiledPerRows,
    in_blocks,
    pad_rows,
    row_bucket,
)
from charlm.controls import MODES, Controls, SamplingOptions, sampling_mode
from charlm.data.vocabulary import Vocabulary
from charlm.draws import choose, uniform_noise
from charlm.model.step import CharacterStep
from charlm.reading import READ_CHARS, PromptReading, listed
from charlm.sampling_rules import CHUNK


class Sampler:
    """Generates text from a trained charlm model, several streams at once; with `live`,
    its weights can be read again (see CharacterStep)."""

    def __init__(self, model: keras.Model, vocab: Vocabulary, live: bool = False):
        self.vocab = vocab
        self.min_rows = 1  # rows a batch runs as, at least (see INVARIANT_ROWS)
        self.model_step = CharacterStep(model, live)
        self.unknown_mask = tf.constant(
            np.where(np.arange(vocab.size) == vocab.unknown_id, -np.inf, 0.0), tf.float32
        )
        # One XLA program per row bucket (row_bucket keeps those few), and per mode.
        self.read_chunk = CompiledPerRows(self._read_chunk)
        self.generate_chunk = {
            mode: CompiledPerRows(functools.partial(self._generate_chunk, mode=mode))
            for mode in MODES
        }

    def batch_invariant(self) -> Sampler:
        """This sampler (sharing its compiled loops) with every batch run as at least
        INVARIANT_ROWS rows: a stream's numbers are then the same alone or beside others."""
        invariant = copy.copy(self)
        invariant.min_rows = INVARIANT_ROWS
        return invariant

    def rows_for(self, streams: int) -> int:
        """The row count `streams` streams run as (see row_bucket and INVARIANT_ROWS)."""
        return row_bucket(streams, self.min_rows)

    def initial_states(self, streams: int) -> list:
        return self.model_step.initial_states(streams)

    def step(self, tokens, states):
        """Logits for the next character after `tokens` (shape (streams,)), and new states."""
        logits, states = self.model_step(tokens, states)
        return self.masked(logits), states

    def masked(self, logits):
        """The model's logits as generation draws from them: the unknown token stands for
        characters never seen in training, never emitted."""
        return logits + self.unknown_mask

    # ------------------------------------------------------------ compiled loops
    def _read_chunk(self, tokens, targets, mask, steps, logits, states):
        """Read the first `steps` columns of `tokens` (streams, READ_CHARS), a character
        per step; where `mask` is False, a step leaves the stream's logits and states as
        they were. The step is generation's: a prompt is read with the products (and
        roundings) its text is then generated with (docs/decisions.md, xla-sampling).
        After each character read, the scores of the next: the log-probability of
        `targets` at that column and the most likely ids and theirs (streams,
        READ_CHARS[, listed]), the model's own (before the unknown token is masked)."""
        top = listed(self.vocab.size)
        chosen = tf.TensorArray(tf.float32, size=READ_CHARS)
        top_ids = tf.TensorArray(tf.int32, size=READ_CHARS)
        top_logprobs = tf.TensorArray(tf.float32, size=READ_CHARS)
        t = tf.constant(0)
        while t < steps:
            keep = mask[:, t, tf.newaxis]
            raw, new_states = self.model_step(tokens[:, t], states)
            logprobs = tf.nn.log_softmax(raw, axis=-1)
            chosen = chosen.write(t, tf.gather(logprobs, targets[:, t], batch_dims=1))
            values, ids = tf.math.top_k(logprobs, k=top)
            top_ids, top_logprobs = top_ids.write(t, ids), top_logprobs.write(t, values)
            logits = tf.where(keep, self.masked(raw), logits)
            states = [
                [tf.where(keep, new, old) for new, old in zip(new_layer, old_layer)]
                for new_layer, old_layer in zip(new_states, states)
            ]
            t += 1
        scores = (
            tf.transpose(chosen.stack()),
            tf.transpose(top_ids.stack(), [1, 0, 2]),
            tf.transpose(top_logprobs.stack(), [1, 0, 2]),
        )
        return logits, states, scores

    def _generate_chunk(self, logits, states, steps, controls, mode):
        """Sample `steps` characters; returns them (streams, steps), the last logits, states.
        `mode` is a Python string, so each mode gets a graph with only the ops it needs.
        `controls` are Controls.arrays(), one row per stream."""
        seeds, positions, temperature, top_k, top_p, bias = controls
        # CHUNK columns whatever `steps` is: XLA needs the size, and one program then
        # serves every chunk length. Columns from `steps` on are left 0.
        # A while loop, not `for t in tf.range(steps)`: XLA would compile a program per
        # value of `steps` for the range.
        out = tf.TensorArray(tf.int32, size=CHUNK)
        t = tf.constant(0)
        while t < steps:
            noise = None  # argmax draws nothing
            if mode != "argmax":
                noise = uniform_noise(seeds, positions + tf.cast(t, tf.int64), self.vocab.size)
            # A zero bias adds nothing: the draw is bit for bit the one without it.
            token = choose(logits + bias, noise, temperature, top_k, top_p, mode)
            out = out.write(t, token)
            logits, states = self.step(token, states)
            t += 1
        return tf.transpose(out.stack()), logits, states

    # ------------------------------------------------------------ public
    def feed(self, prime_ids, streams: int = 1):
        """The logits after the prime and the states after it, for `streams` copies: read
        once and copied, so every copy is exactly the same. Read with the kernel its
        streams are generated with: as one row only if they run as one row."""
        min_rows = min(self.rows_for(streams), INVARIANT_ROWS)
        reading = PromptReading(self, [self.prime_row(prime_ids)], min_rows)
        logits, states = reading.read_all()
        copies = [[tf.repeat(state, streams, axis=0) for state in layer] for layer in states]
        return tf.repeat(logits, streams, axis=0), copies

    def read_prompts(self, prompts: list[np.ndarray]):
        """The logits and states after each of `prompts` (1-D id arrays, of any lengths,
        none empty), read together (see PromptReading)."""
        return PromptReading(self, prompts).read_all()

    def generate(self, logits, states, controls: Controls, steps: int, mode: str):
        """`steps` (at most CHUNK) characters for every stream: (ids (streams, steps),
        logits, states)."""
        if not 0 < steps <= CHUNK:
            raise ValueError(f"steps must be in 1..{CHUNK}, not {steps}")
        rows = len(controls.seeds)
        padded = self.rows_for(rows)
        logits = pad_rows(logits, padded)
        states = [[pad_rows(state, padded) for state in layer] for layer in states]
        arrays = tuple(pad_rows(array, padded) for array in controls.arrays())
        ids, logits, states = self.generate_in_blocks(logits, states, steps, arrays, mode)
        controls.positions += steps
        if padded > rows:  # drop the padding rows (only then: each slice is a copy)
            logits = logits[:rows]
            states = [[state[:rows] for state in layer] for layer in states]
        return ids.numpy()[:rows, :steps], logits, states

    def read_in_blocks(self, tokens, targets, mask, steps: int, logits, states):
        """read_chunk (numpy `tokens`, `targets` and `mask`), BLOCK_ROWS rows per call at
        most."""

        def run(block):
            tokens, targets, mask, logits, states = block
            arrays = (tf.constant(tokens), tf.constant(targets), tf.constant(mask))
            return self.read_chunk(*arrays, tf.constant(steps), logits, states)

        return in_blocks(run, (tokens, targets, mask, logits, states), len(tokens))

    def generate_in_blocks(self, logits, states, steps: int, controls, mode: str):
        """generate_chunk, BLOCK_ROWS rows per call at most."""

        def run(block):
            logits, states, controls = block
            constants = tuple(tf.constant(array) for array in controls)
            return self.generate_chunk[mode](logits, states, tf.constant(steps), constants)

        return in_blocks(run, (logits, states, controls), len(controls[0]))

    def compile(self, max_streams: int) -> None:
        """Compile the reading and generation loops for every row bucket up to
        `max_streams` streams and every mode now, not when a server's first batch of that
        size arrives: compiling would stall every stream running (docs/decisions.md,
        compile-at-start). A program runs BLOCK_ROWS rows at most: no more buckets."""
        most = min(max_streams, BLOCK_ROWS)
        for rows in sorted({self.rows_for(n) for n in range(1, most + 1)}):
            logits, _ = self.read_prompts([np.zeros(1, np.int32)] * rows)
            controls = Controls.of(SamplingOptions(), rows, self.vocab.size)
            for mode in MODES:
                self.generate(logits, self.initial_states(rows), controls, 1, mode)

    def sample(self, prime_ids, streams: int, options: SamplingOptions) -> Iterator[np.ndarray]:
        """Yield chunks of generated token ids, shape (streams, chunk), after `prime_ids`."""
        logits, states = self.feed(prime_ids, streams)
        controls = Controls.of(options, streams, self.vocab.size)
        mode = sampling_mode(controls)
        done = 0
        while done < options.length:
            steps = min(CHUNK, options.length - done)
            ids, logits, states = self.generate(logits, states, controls, steps, mode)
            done += steps
            yield ids

    def prime_row(self, prime_ids) -> np.ndarray:
        """The ids a prime is read as: the start token, then the prime (see start_token)."""
        ids = np.asarray(prime_ids, np.int32).reshape(-1)
        return np.concatenate([np.array([self.start_token()], np.int32), ids])

    def start_token(self) -> int:
        return start_token(self.vocab)


def start_token(vocab: Vocabulary) -> int:
    """Every text is read as if after a newline (or the first character, if the model
    never saw one): a prime before generation, a text scored, charlm.inspect's. One start
    for all makes a prompt's state the same whether it is read to generate or to score
    (a server reads it once for both), and the newline is where a line starts."""
    return vocab.chars.index("\n") if "\n" in vocab.chars else 0
