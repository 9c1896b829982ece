"""tf.data pipelines over token files: training windows and sequential evaluation windows.

Training batch `step` is a pure function of (seed, step). Random windows start at
offsets drawn from a generator seeded with both; contiguous windows cut the text into
`batch_size` equal parts, row i of every batch reads part i, and step n reads the n-th
window of every part. Resuming at step k therefore needs nothing but k — no iterator
state, no RNG state to save — and every run with the same seed sees the same data in
the same order.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from charlm.data.split import Split

AUTOTUNE = tf.data.AUTOTUNE


def without_autotune_thread(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """tf.data's autotuning runs a model thread per iterator, and deleting the iterator
    waits for that thread, a wait paid at every `fit` or `evaluate` call, so at every
    evaluation (docs/decisions.md, no-autotune). These pipelines
    only read windows from a file, so AUTOTUNE's static meaning (a call per core, a
    prefetch buffer that grows as needed) is all they need."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def window_starts(
    split: Split, batch_size: int, seq_length: int, seed: int, step: int
) -> np.ndarray:
    """Start offsets (in the token file) of the windows of training batch `step`."""
    rng = np.random.default_rng([seed, step])
    return split.start + rng.integers(0, len(split) - seq_length, size=batch_size)


def contiguous_steps(split: Split, batch_size: int, seq_length: int) -> int:
    """Contiguous windows: steps in one pass over the text (each row's part read once)."""
    return (len(split) // batch_size - 1) // seq_length


def contiguous_starts(split: Split, batch_size: int, seq_length: int, step: int) -> np.ndarray:
    """Contiguous windows: row i of step n+1 starts where row i of step n ended."""
    part_length = len(split) // batch_size
    offset = (step % contiguous_steps(split, batch_size, seq_length)) * seq_length
    return split.start + np.arange(batch_size, dtype=np.int64) * part_length + offset


def training_batch(
    split: Split,
    batch_size: int,
    seq_length: int,
    seed: int,
    step: int,
    windows: str = "random",
    rows: slice = slice(None),
):
    """(inputs, targets) of batch `step` (only `rows` of it, for one distributed worker):
    targets are the inputs shifted by one character."""
    starts = (
        contiguous_starts(split, batch_size, seq_length, step)
        if windows == "contiguous"
        else window_starts(split, batch_size, seq_length, seed, step)
    )
    windows_read = split.tokens.read_windows(starts[rows], seq_length + 1)
    return windows_read[:, :-1], windows_read[:, 1:]


def training_dataset(
    split: Split,
    batch_size: int,
    seq_length: int,
    seed: int,
    start_step: int,
    stop_step: int,
    windows: str = "random",
    rows: slice = slice(None),
) -> tf.data.Dataset:
    """Batches `start_step` .. `stop_step - 1`, read from disk in parallel, in order."""
    row_count = len(range(batch_size)[rows])

    def load(step):
        return training_batch(split, batch_size, seq_length, seed, int(step), windows, rows)

    def load_tensor(step):
        inputs, targets = tf.numpy_function(load, [step], [tf.int32, tf.int32])
        inputs.set_shape((row_count, seq_length))
        targets.set_shape((row_count, seq_length))
        return inputs, targets

    return without_autotune_thread(
        tf.data.Dataset.range(start_step, stop_step)
        .map(load_tensor, num_parallel_calls=AUTOTUNE, deterministic=True)
        .prefetch(AUTOTUNE)
    )


def evaluation_dataset(split: Split, batch_size: int, seq_length: int) -> tf.data.Dataset:
    """Consecutive, non-overlapping windows covering `split` once (the tail that does not
    fill a whole window is left out), so every evaluation sees the same characters."""
    n_windows = (len(split) - 1) // seq_length

    def load(window_indices):
        starts = split.start + window_indices * seq_length
        rows = split.tokens.read_windows(starts, seq_length + 1)
        return rows[:, :-1], rows[:, 1:]

    def load_tensor(window_indices):
        inputs, targets = tf.numpy_function(load, [window_indices], [tf.int32, tf.int32])
        inputs.set_shape((None, seq_length))
        targets.set_shape((None, seq_length))
        return inputs, targets

    # Window numbers, not offsets, are batched: nothing grows with the text's length.
    return without_autotune_thread(
        tf.data.Dataset.range(n_windows)
        .batch(batch_size)
        .map(load_tensor, num_parallel_calls=AUTOTUNE, deterministic=True)
        .prefetch(AUTOTUNE)
    )
