"""Reading prompts: the texts a sampler reads before it generates (or a server before
it scores), a piece of columns per compiled call, several rows together, each from a
point of its own (a Start) and at a column of its own, with the scores of each next
character if asked. The step is the sampler's (charlm.generate.Sampler.read_chunk): a
prompt is read with the products its text is then generated with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from charlm.batching import row_bucket

READ_CHARS = 128  # prompt characters per compiled call (a fixed width: one XLA program)
LISTED = 20  # the most likely characters a reading lists at each position (OpenAI's most)


class PromptReading:
    """Prompts being read together, `piece` columns per call (READ_CHARS, the most), so
    memory stays flat for a prompt of any length and a caller can do other work between
    calls. Row r's prompt starts at column offsets[r] (0 by default), from the logits and
    states starts[r] (those after no text by default, see Start); a mask keeps a row's
    logits and states untouched outside its prompt's columns, so a row's numbers are the
    same whatever rows it is read with (see INVARIANT_ROWS and BLOCK_ROWS), `min_rows`
    (the sampler's by default) allowing. A prompt may be empty: its row ends as it began.

    Given `targets` (per prompt, an array as long as it or None), it keeps the scores of
    each row given one (see _read_chunk): after each character of its prompt, those of
    its target there."""

    def __init__(
        self,
        sampler,
        prompts: list[np.ndarray],
        min_rows: int | None = None,
        starts: list[Start | None] | None = None,
        offsets: list[int] | None = None,
        piece: int | None = None,
        targets: list[np.ndarray | None] | None = None,
    ):
        self.sampler = sampler
        self.piece = piece or READ_CHARS
        self.rows = len(prompts)
        offsets = offsets or [0] * self.rows
        self.width = max(offset + len(prompt) for offset, prompt in zip(offsets, prompts))
        # Rows padded as for generation (see row_bucket) and every call READ_CHARS wide
        # (the last one stops early): the few shapes XLA compiles a program for.
        padded = row_bucket(self.rows, sampler.min_rows if min_rows is None else min_rows)
        self.ids = np.zeros((padded, self.width), np.int32)
        self.targets = np.zeros_like(self.ids)
        self.mask = np.zeros_like(self.ids, bool)
        self.spans = [
            slice(offset, offset + len(prompt)) for prompt, offset in zip(prompts, offsets)
        ]
        for row, (prompt, span) in enumerate(zip(prompts, self.spans)):
            self.ids[row, span] = prompt
            self.mask[row, span] = True
        # Row -> its (logprobs, top ids, top logprobs), one per character of its prompt.
        self.scores: dict[int, tuple] = {}
        for row, (target, span) in enumerate(zip(targets or (), self.spans)):
            if target is not None:
                self.targets[row, span] = target
                self.scores[row] = empty_scores(len(target), listed(sampler.vocab.size))
        self.logits, self.states = start_rows(sampler, starts or [], padded)
        self.start = 0  # the next column to read

    @property
    def done(self) -> bool:
        return self.start >= self.width

    def read_piece(self) -> None:
        piece = slice(self.start, self.start + self.piece)
        steps = min(self.piece, self.width - self.start)
        self.logits, self.states, scores = self.sampler.read_in_blocks(
            *(pad_columns(array[:, piece], READ_CHARS) for array in self.arrays()),
            steps,
            self.logits,
            self.states,
        )
        if self.scores:
            self.keep_scores([read.numpy() for read in scores], steps)
        self.start += self.piece

    def keep_scores(self, scores: list[np.ndarray], steps: int) -> None:
        """Copy the scores of the columns just read (`scores`, from self.start on) into
        those of the rows that keep them."""
        for row, kept in self.scores.items():
            span = self.spans[row]
            first, last = max(span.start, self.start), min(span.stop, self.start + steps)
            if first >= last:  # its prompt has no column in this piece
                continue
            for array, read in zip(kept, scores):
                array[first - span.start : last - span.start] = read[
                    row, first - self.start : last - self.start
                ]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.ids, self.targets, self.mask

    def row_scores(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row `row`'s scores (read with a target), one per character of its prompt."""
        return self.scores[row]

    def read_all(self):
        """Reads what is left; returns `result()`."""
        while not self.done:
            self.read_piece()
        return self.result()

    def result(self):
        """The logits and states after each prompt, once done."""
        rows = self.rows
        return self.logits[:rows], [[state[:rows] for state in layer] for layer in self.states]

    def row_starts(self, rows: list[int]) -> list[Start]:
        """Rows `rows`' logits and states as they are now, copied out of the batch (each
        array brought out once for all of them: a slice per row would be an op each)."""
        logits = self.logits.numpy()
        states = [[state.numpy() for state in layer] for layer in self.states]
        return [
            Start(logits[row].copy(), [[state[row].copy() for state in layer] for layer in states])
            for row in rows
        ]


def listed(vocab_size: int) -> int:
    """How many of the most likely characters a reading lists at each position."""
    return min(LISTED, vocab_size)


def empty_scores(length: int, top: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Room for the scores of `length` characters, `top` listed at each."""
    return (
        np.zeros(length, np.float32),
        np.zeros((length, top), np.int32),
        np.zeros((length, top), np.float32),
    )


def next_targets(ids: np.ndarray) -> np.ndarray:
    """The targets of reading `ids` for the scores of the text itself: each character's
    next (0 after the last, whose next is not known yet)."""
    return np.append(ids[1:], 0)[: len(ids)]


@dataclass
class Start:
    """One row's logits (vocab,) and states (per layer, per state, (units,)): where
    reading a text from a point goes on from."""

    logits: np.ndarray
    states: list[list[np.ndarray]]

    @property
    def nbytes(self) -> int:
        return self.logits.nbytes + sum(state.nbytes for layer in self.states for state in layer)


def start_rows(sampler, starts: list[Start | None], rows: int):
    """Logits and states for `rows` rows: starts[r] for row r where it is given, the
    state after no text (zero logits, the model's initial states) elsewhere."""
    logits = tf.zeros((rows, sampler.vocab.size))
    states = sampler.initial_states(rows)
    if not any(starts):
        return logits, states
    logits = logits.numpy()
    states = [[state.numpy() for state in layer] for layer in states]
    for row, start in enumerate(starts):
        if start is not None:
            logits[row] = start.logits
            for layer, given in zip(states, start.states):
                for state, value in zip(layer, given):
                    state[row] = value
    return tf.constant(logits), [[tf.constant(state) for state in layer] for layer in states]


def pad_columns(array: np.ndarray, columns: int) -> np.ndarray:
    """`array` (rows, at most `columns`) with zero columns appended up to `columns`."""
    return np.pad(array, [(0, 0), (0, columns - array.shape[1])])
