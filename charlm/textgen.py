"""Reading, generating and scoring text with a trained model: the one layer under every
front end (`charlm sample`, `charlm serve`, `charlm export`, `charlm bench`, the Python API).

Its rules, each in one place:
- settings, the default seed, prime filtering, stop strings: charlm.sampling_rules;
- the start state, "as after a newline": Sampler.prime_row (charlm.generate.start_token);
- reading a prime, then generating in chunks: `TextGenerator.pieces`;
- scoring, each character predicted from the state after a newline and the characters
  before it: charlm.scoring.scoring_row, run by `TextGenerator.score`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from charlm.config import SampleConfig
from charlm.controls import SamplingOptions
from charlm.data.vocabulary import Vocabulary
from charlm.generate import Sampler
from charlm.reading import READ_CHARS
from charlm.sampling_rules import CHUNK, Settings, StopScan, readable_prime, resolve_settings
from charlm.scoring import Scorer, scoring_row


@dataclass
class Scores:
    """How likely a model finds each character of a text.

    logprobs: (chars,) float32, the natural log of each character's probability.
    top_ids, top_logprobs: (chars, top), the most likely tokens at each position (most
        likely first) and their log-probabilities.
    """

    text: str
    logprobs: np.ndarray
    top_ids: np.ndarray
    top_logprobs: np.ndarray
    vocab: Vocabulary

    @property
    def bits_per_char(self) -> float:
        """Mean surprise in bits per character (nan for an empty text)."""
        return float(-self.logprobs.mean() / math.log(2)) if len(self.logprobs) else math.nan

    @property
    def top(self) -> list[list[tuple[str, float]]]:
        """At each position, the most likely characters and their log-probabilities."""
        chars = self.vocab.table
        return [
            [(chars[i], float(p)) for i, p in zip(ids, logprobs)]
            for ids, logprobs in zip(self.top_ids, self.top_logprobs)
        ]


class TextGenerator:
    """Generates and scores text with one model and its vocabulary; `defaults` is the
    run's sample section (the settings a call leaves unset)."""

    def __init__(
        self,
        model: keras.Model,
        vocab: Vocabulary,
        defaults: SampleConfig,
        sampler: Sampler | None = None,
    ):
        self.model, self.vocab, self.defaults = model, vocab, defaults
        self.sampler = sampler or Sampler(model, vocab)
        self.scorer = None  # built at the first score() call

    # ------------------------------------------------------------ the rules
    def settings(self, *, argmax: bool = False, stop=None, **given) -> Settings:
        """Resolved, checked settings (see charlm.sampling_rules.resolve_settings)."""
        return resolve_settings(
            self.defaults, argmax=argmax, stop=stop, vocab_size=self.vocab.size, **given
        )

    def readable(self, prime: str) -> str:
        """The part of `prime` the model reads (unknown characters left out, with a
        warning: see readable_prime)."""
        return readable_prime(prime, self.vocab.known_part)

    # ------------------------------------------------------------ generating
    def pieces(self, readable: str, settings: Settings) -> Iterator[list[str]]:
        """Each sample's text as it is made: a list of one new piece per sample (`settings.n`
        samples), the first the prime itself. Every sample ends at its length or before
        its first stop string; generation stops when all have ended."""
        yield [readable] * settings.n
        if settings.length == 0:
            return
        scans = [StopScan(settings.length, settings.stop) for _ in range(settings.n)]
        options = SamplingOptions(
            length=settings.length,
            temperature=settings.temperature,
            top_k=settings.top_k,
            top_p=settings.top_p,
            seed=settings.seed,
        )
        for ids in self.sampler.sample(self.vocab.encode(readable), settings.n, options):
            yield [scan.take(self.vocab.decode(row)) for scan, row in zip(scans, ids)]
            if all(scan.finish_reason for scan in scans):
                return

    def generate(self, prime: str, settings: Settings) -> list[str]:
        """Each sample's whole text, the prime's readable part first."""
        texts = [[] for _ in range(settings.n)]
        for pieces in self.pieces(self.readable(prime), settings):
            for text, piece in zip(texts, pieces):
                text.append(piece)
        return ["".join(text) for text in texts]

    def graph_generate(self, signature):
        """`generate` for one stream as one TensorFlow graph (for a SavedModel), with the
        inputs of `signature`: the prompt read in pieces, then `length` steps in chunks, by
        the compiled loops `pieces` runs, so its ids are those `charlm sample` gives."""
        sampler = self.sampler
        rows = sampler.rows_for(1)

        @tf.function(input_signature=signature, autograph=True)
        def generate(prompt_ids, length, temperature, top_k, top_p, seed):
            prompt_ids = tf.concat([[sampler.start_token()], prompt_ids], axis=0)  # prime_row
            states = sampler.initial_states(rows)
            logits = tf.zeros([rows, sampler.vocab.size])
            for start in tf.range(0, tf.size(prompt_ids), READ_CHARS):
                piece = prompt_ids[start : start + READ_CHARS]
                steps = tf.size(piece)
                tokens = tf.tile(tf.pad(piece, [[0, READ_CHARS - steps]])[None], [rows, 1])
                # The XLA-compiled reading loop `charlm sample` runs, a piece at a time.
                logits, states, _ = sampler.read_chunk(
                    tokens,
                    tf.zeros_like(tokens),
                    tf.ones_like(tokens, tf.bool),
                    steps,
                    logits,
                    states,
                )
            generated = tf.zeros([0], tf.int32)
            for start in tf.range(0, length, CHUNK):
                tf.autograph.experimental.set_loop_options(
                    shape_invariants=[(generated, tf.TensorShape([None]))]
                )
                steps = tf.minimum(CHUNK, length - start)
                controls = (  # Controls.arrays(), without a logit bias
                    tf.fill([rows], seed),
                    tf.fill([rows], tf.cast(start, tf.int64)),  # positions
                    tf.fill([rows], temperature),
                    tf.fill([rows], top_k),
                    tf.fill([rows], top_p),
                    tf.zeros([rows, sampler.vocab.size]),
                )
                # The XLA-compiled chunk `charlm sample` runs, in chunks as it runs it.
                ids, logits, states = sampler.generate_chunk["filtered"](
                    logits, states, steps, controls
                )
                generated = tf.concat([generated, ids[0, :steps]], axis=0)
            return {"ids": generated}

        return generate

    # ------------------------------------------------------------ scoring
    def score(self, text: str, top: int = 5) -> Scores:
        """Log-probabilities of every character of `text`, read a piece at a time with the
        state carried (memory flat in the text's length), and the `top` most likely
        tokens at each position."""
        scores = self.score_ids(self.vocab.encode(text), top)
        scores.text = text  # as given: an unseen character is the unknown token's id
        return scores

    def score_ids(self, ids, top: int = 5) -> Scores:
        """`score` of the text of token ids `ids` (the unknown token's id included)."""
        if not 0 <= top <= self.vocab.size:
            raise ValueError(f"top must be between 0 and {self.vocab.size}; got {top}")
        if self.scorer is None:
            self.scorer = Scorer(self.model)
        row = scoring_row(ids, self.sampler.start_token())
        return self.scores_of(row.targets, self.scorer.run([row], top)[0])

    def scores_of(self, ids: np.ndarray, scored) -> Scores:
        """The Scores of the text of `ids`, from a Scorer's RowScores of it."""
        return Scores(
            self.vocab.decode(ids), scored.logprobs, scored.top_ids, scored.top_logprobs, self.vocab
        )
