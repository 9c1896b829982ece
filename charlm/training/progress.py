"""The Rich progress display of `charlm train`, on stderr (stdout stays for data).

Bars are transient: they vanish when done (or on an error), leaving the lines
printed above them (evaluations, messages) and the final summary.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

LN2 = 0.6931471805599453


class RichReporter:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task = None
        self.corpus_task = None

    def corpus_progress(self, done: int, total: int) -> None:
        """The passes over the corpus (counting, encoding): bytes, speed, time left."""
        if self.corpus_task is None:
            self.switch_to(
                Progress(
                    TextColumn("reading corpus"),
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    TimeRemainingColumn(),
                    console=self.console,
                    transient=True,
                )
            )
            self.corpus_task = self.progress.add_task("corpus", total=max(total, 1))
        self.progress.update(self.corpus_task, completed=done, total=max(total, 1))

    def start(self, total_steps: int, step: int) -> None:
        self.corpus_task = None
        self.switch_to(
            Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("val {task.fields[val]}"),
                TextColumn("{task.fields[speed]} chars/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
        )
        self.task = self.progress.add_task(
            "train", total=total_steps, completed=step, loss="-", val="-", speed="-"
        )

    def switch_to(self, progress: Progress) -> None:
        self.close()
        self.progress = progress
        self.progress.start()

    def advance(self, step: int, loss: float, chars_per_s: float) -> None:
        self.progress.update(
            self.task, completed=step, loss=f"{loss:.4f}", speed=f"{chars_per_s:,.0f}"
        )

    def evaluated(self, step: int, val_loss: float | None) -> None:
        if val_loss is None:
            return
        self.progress.update(self.task, val=f"{val_loss:.4f}")
        self.message(
            f"step {step}: validation loss {val_loss:.4f} nats/char "
            f"({val_loss / LN2:.4f} bits/char)"
        )

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
