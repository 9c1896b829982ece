"""The Rich progress display of `charlm train`, on stderr (stdout stays for data)."""

from __future__ import annotations


from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)


class RichReporter:
    """One Progress, owned here; messages print above the bar."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("val {task.fields[val]}"),
            TextColumn("{task.fields[speed]} chars/s"), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
            transient=False)
        self.task = None
        self.corpus_task = None
        self.last_val = "-"

    def corpus_progress(self, done: int, total: int) -> None:
        """Progress of the passes over the corpus (counting, encoding), in MB."""
        if self.corpus_task is None:
            self.progress.start()
            self.corpus_task = self.progress.add_task("reading corpus", total=max(total, 1),
                                                      loss="-", val="-", speed="-")
        self.progress.update(self.corpus_task, completed=done, total=max(total, 1))

    def start(self, total_steps: int, step: int) -> None:
        if self.corpus_task is not None:
            self.progress.remove_task(self.corpus_task)
            self.corpus_task = None
        self.progress.start()
        self.task = self.progress.add_task("train", total=total_steps, completed=step,
                                           loss="-", val=self.last_val, speed="-")

    def advance(self, step: int, loss: float, chars_per_s: float) -> None:
        self.progress.update(self.task, completed=step, loss=f"{loss:.4f}",
                             speed=f"{chars_per_s:,.0f}")

    def evaluated(self, step: int, val_loss: float | None) -> None:
        if val_loss is not None:
            self.last_val = f"{val_loss:.4f}"
            if self.task is not None:
                self.progress.update(self.task, val=self.last_val)
            self.message(f"step {step}: validation loss {val_loss:.4f} nats/char "
                         f"({val_loss / 0.6931471805599453:.4f} bits/char)")

    def message(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, markup=False)

    def close(self) -> None:
        self.progress.stop()
