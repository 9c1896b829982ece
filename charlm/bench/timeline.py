"""What the training timeline costs a run: the reference model, trained step by step, and
a timeline sample made from it as the loop makes one at each evaluation (its generator
compiled at the first, its weights read again at each), in turn, so that both see the
same machine.

The cost is a sample's time over an evaluation interval's training time (the default
`train.eval_interval` steps at the median step's time): the fraction of training chars/s
the timeline takes away. The first sample, which compiles, is reported on its own."""

from __future__ import annotations

import statistics
import time

import numpy as np

from charlm.bench.reference import ALPHABET, REFERENCE, VOCAB_CHARS


def timeline_cost(cell: str, rounds: int = 3, steps: int = 3) -> dict:
    """Median seconds of a training step and of a timeline sample after the first, the
    first's seconds, and a sample's share of an evaluation interval (`fraction`), from
    `rounds` turns after a first one."""
    from charlm.config import load_config
    from charlm.data.vocabulary import Vocabulary
    from charlm.training.model_setup import load_or_build
    from charlm.training.timeline import Timeline

    config = load_config(
        None,
        [f"model.cell={cell}"]
        + [f"model.{key}={REFERENCE[key]}" for key in ("layers", "units", "embedding_dim")]
        + [f"train.{key}={REFERENCE[key]}" for key in ("batch_size", "seq_length")],
    )
    vocab = Vocabulary(list(ALPHABET))
    model = load_or_build(config, vocab.size, None, total_steps=1000, jit=False)
    timeline = Timeline(config)
    rng = np.random.default_rng(0)
    shape = (REFERENCE["batch_size"], REFERENCE["seq_length"])
    x, y = (rng.integers(0, VOCAB_CHARS, shape).astype(np.int32) for _ in range(2))
    step_s, sample_s = [], []
    for _ in range(rounds + 1):  # the first turn compiles the step and the sampler
        for _ in range(steps):
            step_s.append(timed(lambda: model.train_on_batch(x, y)))
        sample_s.append(timed(lambda: timeline.sample(model, vocab)))
    step, sample = statistics.median(step_s[steps:]), statistics.median(sample_s[1:])
    interval = config.train.eval_interval * step
    return {
        "step_s": step,
        "first_sample_s": sample_s[0],
        "sample_s": sample,
        "fraction": sample / (interval + sample),
    }


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started
