"""Preparing a run's corpus: counted, encoded, and split into training and validation.

Validation is the end of the corpus (as nanoGPT splits it) or a separate
`data.val_corpus`; both must hold at least one window.
"""

from __future__ import annotations

from dataclasses import dataclass

from charlm.data.sources import resolve_files
from charlm.data.tokens import CorpusStats, Progress, TokenFile, encode_corpus, scan_corpus
from charlm.data.vocabulary import Vocabulary
from charlm.errors import CorpusError


@dataclass
class Split:
    """A contiguous range [start, stop) of a token file."""

    tokens: TokenFile
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass
class PreparedCorpus:
    vocab: Vocabulary
    stats: CorpusStats
    train: Split
    val: Split | None


def prepare_corpus(
    data,
    seq_length: int,
    vocab: Vocabulary | None = None,
    progress: Progress | None = None,
    val_seq_length: int | None = None,
) -> PreparedCorpus:
    """Scan, encode and split the corpus a DataConfig names.

    The vocabulary is every character of `data.corpus` (unless a run's saved
    vocabulary is given); validation is the end of the corpus or `data.val_corpus`,
    bounded by `data.val_max_chars`, and must hold one window of `val_seq_length`
    (train.eval_seq_length; None: seq_length).
    """
    files = resolve_files(data.corpus, "data.corpus")
    stats = scan_corpus(files, data.encoding_errors, progress)
    if stats.chars == 0:
        raise CorpusError("data.corpus is empty: it holds no characters")
    vocab = vocab or stats.vocabulary()
    tokens = encode_corpus(files, vocab, data.encoding_errors, progress)
    if data.val_corpus is not None:
        val_files = resolve_files(data.val_corpus, "data.val_corpus")
        val_tokens = encode_corpus(val_files, vocab, data.encoding_errors, progress)
        train, val = Split(tokens, 0, tokens.length), Split(val_tokens, 0, val_tokens.length)
    else:
        # As nanoGPT splits: the first int(n * 0.9) characters train, the rest validate.
        n_train = int(tokens.length * (1 - data.val_fraction))
        train = Split(tokens, 0, n_train)
        val = Split(tokens, n_train, tokens.length) if n_train < tokens.length else None
    if val is not None:
        val.stop = min(val.stop, val.start + data.val_max_chars)
    check_long_enough(train, val, seq_length, val_seq_length)
    return PreparedCorpus(vocab, stats, train, val)


def check_long_enough(
    train: Split, val: Split | None, seq_length: int, val_seq_length: int | None = None
) -> None:
    need = seq_length + 1
    if len(train) < need:
        raise CorpusError(
            f"the training text has {len(train)} characters, fewer than one "
            f"sequence (train.seq_length + 1 = {need}); give more text or lower "
            f"train.seq_length"
        )
    val_need = (val_seq_length or seq_length) + 1
    if val is not None and len(val) < val_need:
        raise CorpusError(
            f"the validation text has {len(val)} characters, fewer than one "
            f"window ({val_need}); raise data.val_fraction, give data.val_corpus, "
            f"or lower train.{'eval_' if val_seq_length else ''}seq_length"
        )
