"""Scoring: how likely a model finds each character of a text, each predicted from the
state after a newline (the start token) and the characters before it.

    text:    T0  T1  T2 ... Tn-1
    inputs:  \\n  T0  T1 ... Tn-2     (scoring_row: the rule, in one place)
    targets: T0  T1  T2 ... Tn-1

The Scorer runs the model's layers over a batch of such rows, `piece` columns per call,
with the recurrent states carried from call to call (memory flat in a text's length):
what `LanguageModel.score` runs.

A server scores with generation's own reading instead (StepScorer): it reads a prompt
once to generate and to score it, and its numbers are those of the step that generates
(the fused loop's differ from them in the last places). A row may start from a point of
its text read before (see ScoringRow), and the StepScorer can hand back each row's
logits and states after every whole piece: what a cache of scored text needs
(charlm.serve.prefix_cache.ScoreCache). A row's numbers do not depend on the rows beside
it (see charlm.batching), nor on where its reading started, if it started after whole
pieces: each step is the same program whatever column a text began at.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from charlm.batching import BLOCK_ROWS, row_bucket
from charlm.model.build import recurrent_layers
from charlm.model.step import chain_of_layers
from charlm.reading import PromptReading, Start, next_targets

SCORE_PIECE = 2048  # characters per compiled scoring call: one program, flat memory


@dataclass
class ScoringRow:
    """A text to score (or its part past what is known, see scoring_row): `inputs[t]`
    is read to predict `targets[t]`, from `start` (the logits and states after the text
    before `inputs`); None is the state before any text."""

    inputs: np.ndarray
    targets: np.ndarray
    start: Start | None = None


def scoring_row(ids: np.ndarray, start_id: int, known: int = 0, start=None) -> ScoringRow:
    """The row scoring `ids` from position `known` on; `start` must be the point after
    reading its first `known` inputs (the start token and ids[:known - 1])."""
    ids = np.asarray(ids, np.int32).reshape(-1)
    read = np.concatenate([np.array([start_id], np.int32), ids])  # after the start token
    inputs, targets = read[:-1], next_targets(read)[:-1]  # targets: ids
    return ScoringRow(inputs[known:], targets[known:], start)


@dataclass
class RowScores:
    """A row's log-probabilities (chars,), its `top` most likely ids and their
    log-probabilities (chars, top), and, if asked for, the points (Start) after each
    whole piece of its inputs."""

    logprobs: np.ndarray
    top_ids: np.ndarray
    top_logprobs: np.ndarray
    piece_starts: list

    ARRAYS = ("logprobs", "top_ids", "top_logprobs")


class Scorer:
    """The model run over long sequences, a batch of rows together, `piece` characters
    per call. Each layer runs as the model's own call runs it (the fused loop's inference
    pass on a CPU), so a log-probability here is the model's own, up to the rounding of
    a longer sequence. Rows start from the state before any text."""

    def __init__(self, model: keras.Model, piece: int = SCORE_PIECE):
        self.layers = [
            layer for layer in chain_of_layers(model) if not isinstance(layer, keras.layers.Dropout)
        ]
        self.dtype = self.layers[0].compute_dtype
        self.state_sizes = [state_sizes(layer) for layer in recurrent_layers(model)]
        self.width = piece
        self.piece = tf.function(self._piece)

    def run(self, rows: list[ScoringRow], top: int) -> list[RowScores]:
        """Every row's scores, with the `top` most likely ids at each position."""
        blocks = [rows[start : start + BLOCK_ROWS] for start in range(0, len(rows), BLOCK_ROWS)]
        if len(blocks) == 1:
            return self.run_block(blocks[0], top)
        # Each block in a thread: one block's loop runs its steps in turn, and two keep the
        # cores busy in each other's gaps (as generation does, docs/decisions.md, blocks-of-32).
        with ThreadPoolExecutor(max_workers=len(blocks)) as pool:
            done = pool.map(lambda block: self.run_block(block, top), blocks)
            return [scores for block in done for scores in block]

    def run_block(self, rows: list[ScoringRow], top: int) -> list[RowScores]:
        """`run` for at most BLOCK_ROWS rows, read together."""
        lengths = [len(row.targets) for row in rows]
        length = max(lengths, default=0)
        # Rows rounded up as for sampling (one traced program per bucket), every call
        # `width` wide (the padding comes after a row's text: it changes nothing read
        # before it).
        padded = row_bucket(len(rows))
        columns = np.zeros((2, padded, length), np.int32)
        for index, row in enumerate(rows):
            columns[0, index, : len(row.inputs)] = row.inputs
            columns[1, index, : len(row.targets)] = row.targets
        logprobs = np.empty((len(rows), length), np.float32)
        top_ids = np.empty((len(rows), length, top), np.int32)
        top_logprobs = np.empty((len(rows), length, top), np.float32)
        states = [
            [tf.zeros((padded, size), self.dtype) for size in sizes] for sizes in self.state_sizes
        ]
        for start in range(0, length, self.width):
            piece = slice(start, start + self.width)
            width = min(self.width, length - start)
            call = np.zeros((2, padded, self.width), np.int32)
            call[:, :, :width] = columns[:, :, piece]
            chosen, ids, values, states = self.piece(tf.constant(call), states, top)
            logprobs[:, piece] = chosen.numpy()[: len(rows), :width]
            top_ids[:, piece] = ids.numpy()[: len(rows), :width]
            top_logprobs[:, piece] = values.numpy()[: len(rows), :width]
        return [
            RowScores(logprobs[r, :n], top_ids[r, :n], top_logprobs[r, :n], [])
            for r, n in enumerate(lengths)
        ]

    def _piece(self, columns, states, top: int):
        x = columns[0]
        carried = iter(states)
        new_states = []
        for layer in self.layers:
            if isinstance(layer, keras.layers.RNN):
                _, x, layer_states = layer.inner_loop(x, list(next(carried)), None, False)
                new_states.append(list(layer_states))
            else:
                x = layer(x)
        logprobs = tf.nn.log_softmax(tf.cast(x, tf.float32), axis=-1)
        chosen = tf.gather(logprobs, columns[1], batch_dims=2)
        values, ids = tf.math.top_k(logprobs, k=top)
        return chosen, ids, values, new_states


class StepScorer:
    """Scorer.run's rows scored by generation's reading (charlm.reading.PromptReading,
    the sampler's step, its rows at least the sampler's min_rows), `piece` characters per
    call, each row from its start; it lists charlm.reading.listed characters at most."""

    def __init__(self, sampler, piece: int):  # a charlm.generate.Sampler
        self.sampler, self.width = sampler, piece

    def run(self, rows: list[ScoringRow], top: int, keep_starts: bool = False) -> list[RowScores]:
        """Every row's scores, with the `top` most likely ids at each position; with
        `keep_starts`, its points after each whole piece of its inputs."""
        reading = PromptReading(
            self.sampler,
            [row.inputs for row in rows],
            starts=[row.start for row in rows],
            piece=self.width,
            targets=[row.targets for row in rows],
        )
        kept = [[] for _ in rows]
        while not reading.done:
            reading.read_piece()
            whole = [r for r, row in enumerate(rows) if len(row.inputs) >= reading.start]
            if keep_starts and whole:
                for row, start in zip(whole, reading.row_starts(whole)):
                    kept[row].append(start)
        scores = [reading.row_scores(row) for row in range(len(rows))]
        return [
            RowScores(logprobs, ids[:, :top], values[:, :top], starts)
            for (logprobs, ids, values), starts in zip(scores, kept)
        ]


def state_sizes(layer: keras.layers.RNN) -> list[int]:
    sizes = layer.cell.state_size
    return list(sizes) if isinstance(sizes, (list, tuple)) else [sizes]
