"""`charlm eval`: a model's loss on a text file, in nats and bits per character."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import keras

from charlm.data.pipeline import evaluation_dataset
from charlm.data.sources import check_not_binary
from charlm.data.split import Split
from charlm.data.tokens import encode_text_file
from charlm.errors import CorpusError
from charlm.files import file_problem
from charlm.run.load import load_checkpoint


@dataclass
class EvalResult:
    """What `charlm eval` prints."""

    loss: float  # nats per character
    chars: int  # characters scored
    unknown: int  # characters outside the model's vocabulary

    @property
    def bits(self) -> float:
        """The loss in bits per character."""
        return self.loss / math.log(2)


def evaluate_file(checkpoint: Path, file: Path) -> EvalResult:
    """Score `file` the way validation is scored during training: consecutive windows of
    train.eval_seq_length (default train.seq_length) characters, each from a fresh state.

    Args:
        checkpoint: what `--checkpoint` takes (a run directory, a checkpoint directory or
            a `.keras` file inside a run).
        file: a UTF-8 text file of at least 2 characters.

    Returns:
        EvalResult: the mean loss over the characters scored (the tail shorter than a
        window is left out), how many were scored, how many the vocabulary lacks.

    Raises:
        charlm.errors.CorpusError: the file is missing, binary, not UTF-8 or too short.
        charlm.errors.RunError: the run cannot be loaded.
    """
    loaded = load_checkpoint(checkpoint)
    problem = file_problem(file)
    if problem:
        raise CorpusError(f"{file} {problem}; give the text to score")
    check_not_binary(file)
    seq_length = loaded.config.train.eval_length
    tokens = encode_text_file(file, loaded.vocab, loaded.config.data.encoding_errors)
    split = Split(tokens, 0, tokens.length)
    if len(split) < 2:
        raise CorpusError(f"{file} has {len(split)} characters; at least 2 are needed")
    seq_length = min(seq_length, len(split) - 1)
    model = loaded.model
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    windows = evaluation_dataset(split, loaded.config.train.eval_batch_size, seq_length)
    loss = model.evaluate(windows, verbose=0, return_dict=True)["loss"]
    scored = (len(split) - 1) // seq_length * seq_length
    return EvalResult(float(loss), scored, count_unknown(tokens, loaded.vocab.unknown_id))


def count_unknown(tokens, unknown_id: int, buffer_tokens: int = 1 << 24) -> int:
    """How many characters of the file the vocabulary does not know (read a buffer of
    `buffer_tokens` at a time, so memory stays constant)."""
    return sum(
        int((tokens.read(start, min(buffer_tokens, tokens.length - start)) == unknown_id).sum())
        for start in range(0, tokens.length, buffer_tokens)
    )
