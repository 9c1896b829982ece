"""What gradient health costs a training step: the reference model built and compiled as
`charlm train` builds it, twice, one with its gradients measured (GradientHealth) and one
without, trained step by step in turn on the same batch, so that both see the same
machine (a shared machine's speed drifts within a minute)."""

from __future__ import annotations

import statistics
import time

import numpy as np

from charlm.bench.reference import REFERENCE, VOCAB_CHARS, chars_per_step


def gradient_health_rates(cell: str, rounds: int = 5, steps: int = 3) -> dict:
    """Training chars/s of the median step with and without gradient health, and their
    ratio, from `rounds` turns of `steps` steps each."""
    from charlm.config import load_config
    from charlm.training.gradient_health import GradientHealth
    from charlm.training.model_setup import load_or_build

    config = load_config(
        None,
        [f"model.cell={cell}", "train.clip_norm=5"]
        + [f"model.{key}={REFERENCE[key]}" for key in ("layers", "units", "embedding_dim")]
        + [f"train.{key}={REFERENCE[key]}" for key in ("batch_size", "seq_length")],
    )
    vocab = VOCAB_CHARS + 1
    models = {
        name: load_or_build(config, vocab, None, total_steps=1000, jit=False)
        for name in ("with", "without")
    }
    GradientHealth(models["with"])
    rng = np.random.default_rng(0)
    shape = (REFERENCE["batch_size"], REFERENCE["seq_length"])
    x, y = (rng.integers(0, VOCAB_CHARS, shape).astype(np.int32) for _ in range(2))
    times = {name: [] for name in models}
    for turn in range(rounds + 1):  # the first turn compiles and warms up
        for name, model in models.items():
            for _ in range(steps):
                started = time.perf_counter()
                model.train_on_batch(x, y)
                if turn:
                    times[name].append(time.perf_counter() - started)
    rates = {name: chars_per_step() / statistics.median(times[name]) for name in models}
    rates["ratio"] = rates["with"] / rates["without"]
    return rates
