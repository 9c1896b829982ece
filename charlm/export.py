"""`charlm export`: a run as a TensorFlow SavedModel, for TensorFlow Serving or any
program that loads SavedModels, with no charlm needed to run it.

The `generate` signature is charlm's own sampling loop (charlm.generate), traced once:

    generate(prompt_ids int32[n], length int32, temperature float32, top_k int32,
             top_p float32, seed int64) -> {"ids": int32[length]}

It gives the ids `charlm sample --prime ... --seed ...` gives for the same inputs (the
prompt's characters mapped through vocab.json, written beside it). Keras's own
ExportArchive writes it.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from charlm.errors import RunError
from charlm.generate import CHUNK, READ_CHARS, Sampler
from charlm.run.load import load_checkpoint

SIGNATURE = [
    tf.TensorSpec([None], tf.int32, name="prompt_ids"),
    tf.TensorSpec([], tf.int32, name="length"),
    tf.TensorSpec([], tf.float32, name="temperature"),
    tf.TensorSpec([], tf.int32, name="top_k"),
    tf.TensorSpec([], tf.float32, name="top_p"),
    tf.TensorSpec([], tf.int64, name="seed"),
]


def export_saved_model(checkpoint: Path, out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise RunError(f"--out {out} is not empty; give a new directory")
    loaded = load_checkpoint(checkpoint)
    sampler = Sampler(loaded.model, loaded.vocab)
    archive = keras.export.ExportArchive()
    archive.track(loaded.model)
    archive.add_endpoint("generate", generation_function(sampler))
    archive.write_out(str(out), verbose=False)
    loaded.vocab.save(out / "vocab.json")


def generation_function(sampler: Sampler):
    """The sampling loop as one graph: the prompt read in pieces, then `length` steps in
    chunks for one stream, run as `charlm sample` runs one stream."""
    rows = sampler.rows_for(1)

    @tf.function(input_signature=SIGNATURE, autograph=True)
    def generate(prompt_ids, length, temperature, top_k, top_p, seed):
        prompt_ids = tf.cond(
            tf.size(prompt_ids) > 0,
            lambda: prompt_ids,
            lambda: tf.constant([sampler.start_token()], tf.int32),
        )
        states = sampler.initial_states(rows)
        logits = tf.zeros([rows, sampler.vocab.size])
        for start in tf.range(0, tf.size(prompt_ids), READ_CHARS):
            piece = prompt_ids[start : start + READ_CHARS]
            steps = tf.size(piece)
            tokens = tf.tile(tf.pad(piece, [[0, READ_CHARS - steps]])[None], [rows, 1])
            # The XLA-compiled reading loop `charlm sample` runs, a piece at a time.
            logits, states = sampler.read_chunk(
                tokens, tf.ones_like(tokens, tf.bool), steps, logits, states
            )
        generated = tf.zeros([0], tf.int32)
        for start in tf.range(0, length, CHUNK):
            tf.autograph.experimental.set_loop_options(
                shape_invariants=[(generated, tf.TensorShape([None]))]
            )
            steps = tf.minimum(CHUNK, length - start)
            lanes = (
                tf.fill([rows], seed),
                tf.fill([rows], tf.cast(start, tf.int64)),  # positions
                tf.fill([rows], temperature),
                tf.fill([rows], top_k),
                tf.fill([rows], top_p),
            )
            # The XLA-compiled chunk `charlm sample` runs, in chunks as it runs it.
            ids, logits, states = sampler.generate_chunk["filtered"](logits, states, steps, lanes)
            generated = tf.concat([generated, ids[0, :steps]], axis=0)
        return {"ids": generated}

    return generate
