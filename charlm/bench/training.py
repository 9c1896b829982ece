"""charlm's training rates at the reference size, through charlm.training.loop.train
(callbacks and input pipeline included): the fastest step, the median step, and a whole
segment with its evaluation and checkpoint."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from charlm.bench.reference import REFERENCE, VALIDATION_CHARS, chars_per_step
from charlm.training.reporter import SilentReporter


class ThroughputRecorder(SilentReporter):
    """A train() reporter for four segments. The first compiles. The second and third
    are timed whole, each from the end of the previous segment's evaluation (after its
    checkpoint) to the end of its own, and each is followed by `between_segments`
    (PyTorch's whole segment, timed on its own). In the fourth, each step is timed (from
    the end of one to the end of the next) and followed by `between_steps` (PyTorch's
    step), timed too. So the two frameworks alternate, segment by segment and then step
    by step, and see the same machine: on a shared machine the speed drifts by tens of
    percent within a minute."""

    TIMED_WHOLE = (2, 3)  # the segments timed whole, counted from 1

    def __init__(self, between_steps=None, between_segments=None):
        self.between_steps, self.between_segments = between_steps, between_segments
        self.step_times: list[float] = []  # the fourth segment's
        self.other_times: list[float] = []
        self.segment_times: list[float] = []
        self.other_segment_rates: list[float] = []
        self.evaluations = 0
        self.resumed = self.segment_started = time.perf_counter()

    def advance(self, step, loss, chars_per_s):
        if self.evaluations == len(self.TIMED_WHOLE) + 1:
            self.step_times.append(time.perf_counter() - self.resumed)
            if self.between_steps:
                started = time.perf_counter()
                self.between_steps()
                self.other_times.append(time.perf_counter() - started)
        self.resumed = time.perf_counter()

    def evaluated(self, step, val_loss):
        self.evaluations += 1
        if self.evaluations in self.TIMED_WHOLE:
            self.segment_times.append(time.perf_counter() - self.segment_started)
            if self.between_segments:
                self.other_segment_rates.append(self.between_segments())
        self.resumed = self.segment_started = time.perf_counter()


def rates(step_times: list[float], steps: int) -> dict:
    """chars/s of the fastest and of the median of the last `steps` steps (the first
    step of a segment also waits for the previous evaluation). The fastest
    is the peak: other guests of a virtual machine steal CPU time in bursts, and a burst
    landing on one side's steps would decide a ratio of means; the median shows a
    typical step."""
    last = step_times[-steps:]
    return {
        "fastest": chars_per_step() / min(last),
        "median": chars_per_step() / statistics.median(last),
    }


def training_settings(cell: str, corpus: Path, run_dir: Path, steps: int, implementation: str):
    return [
        f"model.cell={cell}",
        f"model.layers={REFERENCE['layers']}",
        f"model.units={REFERENCE['units']}",
        f"model.embedding_dim={REFERENCE['embedding_dim']}",
        f"train.batch_size={REFERENCE['batch_size']}",
        f"train.seq_length={REFERENCE['seq_length']}",
        "train.clip_norm=5",
        f"train.steps={4 * steps}",
        f"train.eval_interval={steps}",
        f"data.val_max_chars={VALIDATION_CHARS}",
        f"data.corpus={corpus}",
        f"model.implementation={implementation}",
        f"train.run_dir={run_dir}",
    ]


def train_rates(
    cell: str, corpus: Path, root: Path, steps: int, implementation: str = "fused", torch=None
) -> tuple[dict, dict | None]:
    """Train four segments of `steps` + 1 steps (see ThroughputRecorder): the rate of the
    faster of the two timed whole, and the fastest and median steps of the fourth, for
    charlm and for `torch` (a PyTorch reference, run in turn)."""
    from charlm.config import load_config
    from charlm.training.loop import train

    run_dir = root / f"run-{cell}-{implementation}"
    settings = training_settings(cell, corpus, run_dir, steps + 1, implementation)
    recorder = ThroughputRecorder(
        torch.step if torch else None,
        (lambda: torch.segment_rate(steps + 1, run_dir / "torch-checkpoint.pt")) if torch else None,
    )
    train(load_config(None, settings), reporter=recorder)
    charlm = rates(recorder.step_times, steps)
    charlm["segment"] = (steps + 1) * chars_per_step() / min(recorder.segment_times)
    if not torch:
        return charlm, None
    other = rates(recorder.other_times, steps)
    other["segment"] = max(recorder.other_segment_rates)
    return charlm, other
