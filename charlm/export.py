"""`charlm export`: a run as a TensorFlow SavedModel, for TensorFlow Serving or any
program that loads SavedModels, with no charlm needed to run it.

The `generate` signature is charlm's own sampling loop (TextGenerator.graph_generate),
traced once:

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
from charlm.run.load import load_checkpoint
from charlm.textgen import TextGenerator

SIGNATURE = [
    tf.TensorSpec([None], tf.int32, name="prompt_ids"),
    tf.TensorSpec([], tf.int32, name="length"),
    tf.TensorSpec([], tf.float32, name="temperature"),
    tf.TensorSpec([], tf.int32, name="top_k"),
    tf.TensorSpec([], tf.float32, name="top_p"),
    tf.TensorSpec([], tf.int64, name="seed"),
]


def export_saved_model(checkpoint: Path, out: Path) -> None:
    """Write a run's model as a SavedModel with the `generate` signature above.

    Args:
        checkpoint: what `--checkpoint` takes (a run directory, a checkpoint directory,
            or a `.keras` file inside a run).
        out: the directory to write (created; it may exist only if empty). It receives
            the SavedModel and the run's vocab.json.

    Raises:
        charlm.errors.RunError: `out` is not empty, or the run cannot be loaded.
    """
    if out.exists() and any(out.iterdir()):
        raise RunError(f"export directory {out} is not empty; give a new directory")
    loaded = load_checkpoint(checkpoint)
    generator = TextGenerator(loaded.model, loaded.vocab, loaded.config.sample)
    archive = keras.export.ExportArchive()
    archive.track(loaded.model)
    archive.add_endpoint("generate", generator.graph_generate(SIGNATURE))
    archive.write_out(str(out), verbose=False)
    loaded.vocab.save(out / "vocab.json")
