"""The run directory as a non-chief worker of a distributed run sees it."""

from __future__ import annotations

from pathlib import Path

from charlm.run.rundir import RunDir


class WorkerRunDir(RunDir):
    """The run directory as a non-chief worker of a distributed run sees it: it reads
    (to resume) but writes nothing; the chief writes for everyone."""

    def lock(self) -> None: ...
    def unlock(self) -> None: ...
    def check_writable(self, needed_bytes: int) -> None: ...
    def remove_partial_saves(self) -> None: ...
    def save_best(self, model, saved_as=None) -> None: ...
    def save_config(self, config) -> None: ...
    def save_vocab(self, vocab) -> None: ...
    def append_history(self, record: dict) -> None: ...

    def save_checkpoint(self, model, state, keep, carried_states=None) -> Path | None:
        return None

    def set_aside(self, checkpoint: Path) -> Path:
        return checkpoint  # the chief sets it aside
