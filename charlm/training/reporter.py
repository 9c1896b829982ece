"""What training tells the user, declared once: the CLI passes a Rich reporter, tests and
benchmarks pass their own, and `SilentReporter` says nothing."""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    def corpus_progress(self, done: int, total: int) -> None:
        """Bytes of the corpus read so far, in one of the passes over it."""

    def start(self, total_steps: int, step: int) -> None:
        """Training starts (or resumes) at `step` of `total_steps`."""

    def advance(self, step: int, loss: float, chars_per_s: float) -> None:
        """A step ended; `loss` is the mean over the segment so far."""

    def evaluated(self, step: int, val_loss: float | None) -> None:
        """Validation ran (None: there is no validation text)."""

    def message(self, text: str) -> None:
        """A line for the user (start-up facts, warnings)."""

    def close(self) -> None:
        """Training ended; remove any live display."""


class SilentReporter:
    """A Reporter that says nothing."""

    def corpus_progress(self, done: int, total: int) -> None: ...
    def start(self, total_steps: int, step: int) -> None: ...
    def advance(self, step: int, loss: float, chars_per_s: float) -> None: ...
    def evaluated(self, step: int, val_loss: float | None) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...
