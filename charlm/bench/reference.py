"""The reference model every figure of `charlm bench` is measured on: Embedding(65 -> 64),
2 recurrent layers of 512 units, Dense(65); batch 64, 100 steps of time, Adam, clip 5."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CELLS = ("simple_rnn", "lstm", "gru")
GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'-\n&$3"
VOCAB_CHARS = len(ALPHABET)  # 65, as tiny Shakespeare has
REFERENCE = dict(embedding_dim=64, layers=2, units=512, batch_size=64, seq_length=100)
# Validation text read at the end of each timed segment: ten training batches, so that a
# segment's rate includes an evaluation of the size users see, not a token one.
VALIDATION_CHARS = 10 * REFERENCE["batch_size"] * REFERENCE["seq_length"]


def forward_flops_per_char(cell: str, vocab: int = VOCAB_CHARS + 1) -> float:
    """Multiply-adds x 2 of one character through the reference model."""
    units, sizes = REFERENCE["units"], [REFERENCE["embedding_dim"], REFERENCE["units"]]
    recurrent = sum(2 * GATES[cell] * units * (size + units) for size in sizes)
    return recurrent + 2 * units * vocab


def chars_per_step() -> int:
    return REFERENCE["batch_size"] * REFERENCE["seq_length"]


def evaluation_rows() -> int:
    """Rows of a validation batch of the reference, as charlm's loop evaluates it (see
    TrainConfig.eval_batch_size); PyTorch's segment evaluates the same batches."""
    from charlm.config import load_config

    sizes = [f"train.{key}={REFERENCE[key]}" for key in ("batch_size", "seq_length")]
    return load_config(None, sizes).train.eval_batch_size


def reference_corpus(root: Path) -> Path:
    """About 1 MB of text over exactly 65 characters (as tiny Shakespeare has)."""
    rng = np.random.default_rng(0)
    alphabet = np.array(list(ALPHABET))
    path = root / "reference.txt"
    path.write_text("".join(rng.choice(alphabet, 1_000_000)), encoding="utf-8")
    return path
