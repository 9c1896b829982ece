"""How streams become the rows of a batch: the row counts a batch runs as, and why a
stream's numbers then do not depend on the streams beside it."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf

# A single row is multiplied by a matrix with another kernel (a vector product) than
# several rows, by TensorFlow and by XLA alike, and its sums round differently; from two
# rows on, each row's result is the same whatever the batch (up to BLOCK_ROWS for XLA).
# The vector kernel is faster (docs/decisions.md, one-row-kernel), so a lone stream of
# `charlm sample` runs as one row. A server runs every batch as at least INVARIANT_ROWS
# rows (Sampler.batch_invariant), so that a request's text never depends on whether it
# was alone: it is then the text `charlm sample --num-samples n` gives for any n >= 2.
INVARIANT_ROWS = 2
# The generation loop is compiled by XLA, whose matrix products are faster than the
# default kernels for few rows (docs/decisions.md, xla-sampling). XLA gives a row the same result
# for 2 to 32 rows but not for more, so larger batches are stepped in blocks of
# BLOCK_ROWS rows, each its own products. XLA compiles a loop per shape, so batches are
# padded to a few row counts (see row_bucket).
BLOCK_ROWS = 32


def row_bucket(rows: int, min_rows: int = 1) -> int:
    """The row count `rows` streams are generated as: a power of two up to BLOCK_ROWS
    (at least `min_rows`); beyond, whole blocks of BLOCK_ROWS and the rest as a block of
    its own power of two (at least INVARIANT_ROWS: no row of a large batch runs alone),
    so that every block is a row count XLA has a program for and few rows are padding."""
    if rows <= BLOCK_ROWS:
        return max(min_rows, 1 << (rows - 1).bit_length())
    whole, rest = divmod(rows, BLOCK_ROWS)
    return whole * BLOCK_ROWS + (row_bucket(rest, INVARIANT_ROWS) if rest else 0)


def pad_rows(array, rows: int):
    """`array` with its first row repeated up to `rows` rows (see row_bucket)."""
    missing = rows - len(array)
    if missing <= 0:
        return array
    if isinstance(array, np.ndarray):
        return np.concatenate([array] + [array[:1]] * missing)
    return tf.concat([array] + [array[:1]] * missing, axis=0)


def in_blocks(function, arrays, rows: int):
    """`function(arrays)` for up to BLOCK_ROWS rows; for more, `function` of each block of
    BLOCK_ROWS rows of every array in `arrays` (any structure, `rows` rows), each block in
    a thread of its own, their results joined row after row. XLA runs a program's steps
    one after the other, and two keep the cores busy in each other's gaps
    (docs/decisions.md, blocks-of-32)."""
    if rows <= BLOCK_ROWS:
        return function(arrays)
    blocks = [block_at(start, arrays) for start in range(0, rows, BLOCK_ROWS)]
    with ThreadPoolExecutor(max_workers=len(blocks)) as pool:
        return concat_rows(list(pool.map(function, blocks)))


def block_at(start: int, arrays):
    """Rows `start` to `start + BLOCK_ROWS` of each array in `arrays` (any structure)."""
    return tf.nest.map_structure(lambda array: array[start : start + BLOCK_ROWS], arrays)


def concat_rows(blocks: list):
    """Blocks of rows (each the same structure of tensors) joined, row after row."""
    return tf.nest.map_structure(lambda *parts: tf.concat(parts, axis=0), *blocks)


class CompiledPerRows:
    """`function` compiled by XLA, a tf.function per row count (its first argument's first
    dimension). XLA compiles a program per shape in any case, but a tf.function traced
    for five shapes in a row makes TensorFlow warn of "excessive retracing", and a
    server compiles every row bucket at start (Sampler.compile)."""

    def __init__(self, function):
        self.function = function
        self.by_rows = {}

    def __call__(self, first, *rest, **keywords):
        return self.for_rows(first.shape[0])(first, *rest, **keywords)

    def for_rows(self, rows: int):
        compiled = self.by_rows.get(rows)
        if compiled is None:
            # A partial of its own: TensorFlow counts the traces of every tf.function of
            # one Python function together.
            own = functools.partial(self.function)
            compiled = self.by_rows.setdefault(rows, tf.function(own, jit_compile=True))
        return compiled

    def experimental_get_tracing_count(self) -> int:
        """Traces over every row count, as a tf.function counts them."""
        return sum(f.experimental_get_tracing_count() for f in list(self.by_rows.values()))
