"""charlm's sampling rates on a trained reference model, one stream's floor, and the
measuring in turn that keeps each rate beside its bound on a machine whose speed drifts."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def best_in_turn(measures: dict[str, Callable[[], float]], rounds: int = 3) -> dict[str, float]:
    """The highest of `rounds` readings of each measure, the measures taken in turn (a,
    b, c, a, b, c, ...): a rate and its bound, read minutes apart, can see machines tens
    of percent apart when other guests share the CPU; read in turn, they see the same
    one, and the best reading of each is the least disturbed."""
    readings: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            readings[name].append(measure())
    return {name: max(values) for name, values in readings.items()}


class SamplingRate:
    """chars/s of the sampling layer every front end runs (TextGenerator.pieces, ids
    decoded to text) on a trained reference model: `streams` streams of `length`
    characters per call, compiled before the first."""

    def __init__(self, run_dir: Path, streams: int, length: int):
        import charlm

        self.generator = charlm.load(run_dir).generator
        self.streams, self.length = streams, length
        self.settings = self.generator.settings(length=length, seed=1, n=streams)
        warm = self.generator.settings(length=200, seed=0, n=streams)
        for _ in self.generator.pieces("", warm):
            pass  # compiles the loop

    def __call__(self) -> float:
        started = time.perf_counter()
        for _ in self.generator.pieces("", self.settings):
            pass
        return self.streams * self.length / (time.perf_counter() - started)


def sampling_chars_per_s(run_dir: Path, streams: int, length: int) -> float:
    """One reading of SamplingRate."""
    return SamplingRate(run_dir, streams, length)()


class OneStreamFloor:
    """chars/s of the model's vector-matrix products alone for one stream (numpy, no
    other op): each character must read every weight matrix once, about 13 MB for the
    2x512 LSTM, so memory bandwidth, not arithmetic, bounds one-stream sampling."""

    def __init__(self, run_dir: Path, length: int = 1000):
        from charlm.model.step import CharacterStep
        from charlm.run.load import load_checkpoint

        model = load_checkpoint(run_dir).model
        self.matrices = [w.numpy() for w in CharacterStep(model).matrices()]
        self.rows = [np.ones((1, m.shape[0]), np.float32) for m in self.matrices]
        self.length = length

    def __call__(self) -> float:
        started = time.perf_counter()
        for _ in range(self.length):
            for row, matrix in zip(self.rows, self.matrices):
                row @ matrix
        return self.length / (time.perf_counter() - started)
