"""Scoring: how likely a model finds each character of a text, each predicted from the
state after a newline (the start token) and the characters before it.

    text:    T0  T1  T2 ... Tn-1
    inputs:  \\n  T0  T1 ... Tn-2     (scoring_row: the rule, in one place)
    targets: T0  T1  T2 ... Tn-1

The Scorer runs the model's layers over a batch of such rows, `piece` columns per call,
with the recurrent states carried from call to call (memory flat in a text's length).
A row may start from given states instead of the start (see ScoringRow), and the Scorer
can hand back each row's states after every whole piece: what a cache of scored text
needs (charlm.serve.prefix_cache.ScoreCache).

A row's numbers do not depend on the rows beside it from INVARIANT_ROWS rows on (see
charlm.batching): rows are scored in blocks of at most BLOCK_ROWS. Nor do they depend on
where its reading started, if it started from the states after whole pieces: each call
takes the same products whatever column a text began at.
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

SCORE_PIECE = 2048  # characters per compiled scoring call: one program, flat memory


@dataclass
class ScoringRow:
    """A text to score (or its part past what is known, see scoring_row): `inputs[t]`
    is read to predict `targets[t]`, from `states` (per layer, per state, (units,));
    None is the state before any text."""

    inputs: np.ndarray
    targets: np.ndarray
    states: list[list[np.ndarray]] | None = None


def scoring_row(ids: np.ndarray, start_id: int, known: int = 0, states=None) -> ScoringRow:
    """The row scoring `ids` from position `known` on; `states` must be those after
    reading its first `known` inputs (the start token and ids[:known - 1])."""
    ids = np.asarray(ids, np.int32).reshape(-1)
    inputs = np.concatenate([np.array([start_id], np.int32), ids[:-1]])
    return ScoringRow(inputs[known:], ids[known:], states)


@dataclass
class RowScores:
    """A row's log-probabilities (chars,), its `top` most likely ids and their
    log-probabilities (chars, top), and, if asked for, its states after each whole piece."""

    logprobs: np.ndarray
    top_ids: np.ndarray
    top_logprobs: np.ndarray
    piece_states: list

    ARRAYS = ("logprobs", "top_ids", "top_logprobs")


class Scorer:
    """The model run over long sequences, a batch of rows together, `piece` characters
    per call. Each layer runs as the model's own call runs it (the fused loop's inference
    pass on a CPU), so a log-probability here is the model's own, up to the rounding of
    a longer sequence. Batches run as at least `min_rows` rows (see INVARIANT_ROWS)."""

    def __init__(self, model: keras.Model, min_rows: int = 1, piece: int = SCORE_PIECE):
        self.layers = [
            layer for layer in chain_of_layers(model) if not isinstance(layer, keras.layers.Dropout)
        ]
        self.dtype = self.layers[0].compute_dtype
        self.state_sizes = [state_sizes(layer) for layer in recurrent_layers(model)]
        self.min_rows, self.width = min_rows, piece
        self.piece = tf.function(self._piece)

    def run(self, rows: list[ScoringRow], top: int, keep_states: bool = False) -> list[RowScores]:
        """Every row's scores, with the `top` most likely ids at each position; with
        `keep_states`, its states after each whole piece of its inputs."""
        blocks = [rows[start : start + BLOCK_ROWS] for start in range(0, len(rows), BLOCK_ROWS)]
        if len(blocks) == 1:
            return self.run_block(blocks[0], top, keep_states)
        # Each block in a thread: one block's loop runs its steps in turn, and two keep the
        # cores busy in each other's gaps (as generation does, docs/decisions.md, blocks-of-32).
        with ThreadPoolExecutor(max_workers=len(blocks)) as pool:
            done = pool.map(lambda block: self.run_block(block, top, keep_states), blocks)
            return [scores for block in done for scores in block]

    def run_block(self, rows: list[ScoringRow], top: int, keep_states: bool) -> list[RowScores]:
        """`run` for at most BLOCK_ROWS rows, read together."""
        lengths = [len(row.targets) for row in rows]
        length = max(lengths, default=0)
        # Rows rounded up as for sampling (one traced program per bucket), every call
        # `width` wide (the padding comes after a row's text: it changes nothing read
        # before it).
        padded = row_bucket(len(rows), self.min_rows)
        columns = np.zeros((2, padded, length), np.int32)
        for index, row in enumerate(rows):
            columns[0, index, : len(row.inputs)] = row.inputs
            columns[1, index, : len(row.targets)] = row.targets
        logprobs = np.empty((len(rows), length), np.float32)
        top_ids = np.empty((len(rows), length, top), np.int32)
        top_logprobs = np.empty((len(rows), length, top), np.float32)
        kept = [[] for _ in rows]
        states = self.start_states(rows, padded)
        for start in range(0, length, self.width):
            piece = slice(start, start + self.width)
            width = min(self.width, length - start)
            call = np.zeros((2, padded, self.width), np.int32)
            call[:, :, :width] = columns[:, :, piece]
            chosen, ids, values, states = self.piece(tf.constant(call), states, top)
            logprobs[:, piece] = chosen.numpy()[: len(rows), :width]
            top_ids[:, piece] = ids.numpy()[: len(rows), :width]
            top_logprobs[:, piece] = values.numpy()[: len(rows), :width]
            if keep_states:
                self.keep_whole(kept, states, lengths, start + self.width)
        return [
            RowScores(logprobs[r, :n], top_ids[r, :n], top_logprobs[r, :n], kept[r])
            for r, n in enumerate(lengths)
        ]

    def start_states(self, rows: list[ScoringRow], padded: int) -> list[list[tf.Tensor]]:
        """Each row's given states, zeros for the others and the padding rows."""
        states = [
            [np.zeros((padded, size), self.dtype) for size in sizes] for sizes in self.state_sizes
        ]
        for index, row in enumerate(rows):
            for layer, given in zip(states, row.states or ()):
                for state, value in zip(layer, given):
                    state[index] = value
        return [[tf.constant(state) for state in layer] for layer in states]

    @staticmethod
    def keep_whole(kept: list, states, lengths: list[int], read: int) -> None:
        """Append the states to kept[r] for each row r with `read` inputs or more."""
        arrays = None
        for index, length in enumerate(lengths):
            if length >= read:
                arrays = arrays or [[state.numpy() for state in layer] for layer in states]
                kept[index].append([[state[index].copy() for state in layer] for layer in arrays])

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


def state_sizes(layer: keras.layers.RNN) -> list[int]:
    sizes = layer.cell.state_size
    return list(sizes) if isinstance(sizes, (list, tuple)) else [sizes]
