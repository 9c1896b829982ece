"""charlm's sampling rates on a trained reference model, and one stream's floor."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def sampling_chars_per_s(run_dir: Path, streams: int, length: int) -> float:
    """Generation rate of `charlm sample`'s Sampler on a trained reference model."""
    from charlm.generate import Sampler, SamplingOptions
    from charlm.run.load import load_checkpoint

    loaded = load_checkpoint(run_dir)
    sampler = Sampler(loaded.model, loaded.vocab)
    for _ in sampler.sample([0], streams, SamplingOptions(length=200, seed=0)):
        pass  # compiles the loop
    started = time.perf_counter()
    for _ in sampler.sample([0], streams, SamplingOptions(length=length, seed=1)):
        pass
    return streams * length / (time.perf_counter() - started)


def one_stream_weight_floor(run_dir: Path, length: int = 1000) -> float:
    """chars/s of the model's vector-matrix products alone for one stream (numpy, no
    other op): each character must read every weight matrix once, about 13 MB for the
    2x512 LSTM, so memory bandwidth, not arithmetic, bounds one-stream sampling."""
    from charlm.model.step import CharacterStep
    from charlm.run.load import load_checkpoint

    model = load_checkpoint(run_dir).model
    matrices = [w.numpy() for w in CharacterStep(model).matrices()]
    rows = [np.ones((1, m.shape[0]), np.float32) for m in matrices]
    started = time.perf_counter()
    for _ in range(length):
        for row, matrix in zip(rows, matrices):
            row @ matrix
    return length / (time.perf_counter() - started)
