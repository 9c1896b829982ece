"""The run directory: everything a run needs to be sampled, evaluated or resumed.

    RUN/
      config.yaml                 the resolved config the run was started with
      vocab.json                  {"chars": [...], "unknown_id": N}: index = token id
      model.keras                 the best-validation model (what `charlm sample` uses)
      checkpoints/step-00001000/  the latest checkpoints, for resuming
          model.keras             model + optimizer state (step, schedule position, moments)
          state.json              step, best validation loss, elapsed time, ...
          carried_states.npz      contiguous training only: the recurrent states
      history.jsonl               one JSON line per evaluation
      tensorboard/                TensorBoard logs
      .lock                       held while a `charlm train` writes here

Every file is written under a temporary name, flushed to disk and renamed into
place, and a checkpoint directory is renamed whole (charlm.files), so a crash or a
power loss at any moment leaves the previous checkpoint complete and loadable.
This module owns every file name in a run directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np

from charlm.config import save_config
from charlm.errors import RunError
from charlm.files import (
    TMP_PREFIX,
    link_or_copy,
    remove,
    replaced_atomically,
)
from charlm.run.checkpoints import (  # noqa: F401  (the run directory's names, re-exported)
    CARRIED_STATES_FILE,
    CHECKPOINT_PREFIX,
    CHECKPOINTS_DIR,
    MODEL_FILE,
    STATE_FILE,
    STATE_VERSION,
    TrainState,
    checkpoint_model,
    checkpoint_problem,
    is_checkpoint_dir,
    read_carried_states,
    read_state,
    save_failure,
)

DAMAGED_PREFIX = "damaged-"  # a damaged checkpoint set aside by a resume (kept, not used)


class HistoryWarning(UserWarning):
    """history.jsonl has lines that are not records; they were skipped."""


class RunDir:
    def __init__(self, path: str | Path):
        path = Path(path)
        # A checkpoint directory names its run: `--resume RUN/checkpoints/step-N` is RUN,
        # resumed from that checkpoint (see preflight.check_run_dir).
        self.named_checkpoint = path if is_checkpoint_dir(path) else None
        self.path = path.parent.parent if self.named_checkpoint else path
        self.lock_file = None
        self.summary_writer = None
        self.vocab_digest = None  # of the vocabulary this run trains on, for its checkpoints

    config_path = property(lambda self: self.path / "config.yaml")
    vocab_path = property(lambda self: self.path / "vocab.json")
    best_model_path = property(lambda self: self.path / MODEL_FILE)
    history_path = property(lambda self: self.path / "history.jsonl")
    tensorboard_path = property(lambda self: self.path / "tensorboard")
    checkpoints_path = property(lambda self: self.path / CHECKPOINTS_DIR)

    # ------------------------------------------------------------ one writer at a time
    def lock(self) -> None:
        """Take the run's lock; the OS releases it when the process ends, even by kill -9."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunError(
                f"run directory {self.path} cannot be created ({error.strerror}); "
                f"choose another train.run_dir"
            ) from None
        self.lock_file = open(self.path / ".lock", "a+")
        try:
            fcntl.flock(self.lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.lock_file.seek(0)
            owner = self.lock_file.read().strip() or "another process"
            self.lock_file.close()
            self.lock_file = None
            raise RunError(
                f"run directory {self.path} is in use by {owner}; wait for it to "
                f"finish or choose another train.run_dir"
            ) from None
        self.lock_file.truncate(0)
        self.lock_file.write(f"charlm train (pid {os.getpid()})")
        self.lock_file.flush()

    def unlock(self) -> None:
        if self.lock_file:
            self.lock_file.close()
            self.lock_file = None

    def check_writable(self, needed_bytes: int) -> None:
        """Fail before training, not at the first checkpoint, if nothing can be saved."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.path):
                pass
        except OSError as error:
            raise RunError(
                f"run directory {self.path} is not writable ({error.strerror}); "
                f"choose another train.run_dir"
            ) from None
        free = shutil.disk_usage(self.path).free
        if free < needed_bytes:
            raise RunError(
                f"run directory {self.path} has {free / 1e6:.0f} MB free, a "
                f"checkpoint needs about {needed_bytes / 1e6:.0f} MB; free some "
                f"space or choose another train.run_dir"
            )

    # ------------------------------------------------------------ checkpoints
    def has_checkpoints(self) -> bool:
        return bool(self.checkpoints())

    def checkpoints(self) -> list[Path]:
        """Complete checkpoint directories, oldest first."""
        if not self.checkpoints_path.is_dir():
            return []
        found = [
            p
            for p in self.checkpoints_path.iterdir()
            if p.name.startswith(CHECKPOINT_PREFIX) and (p / STATE_FILE).exists()
        ]
        return sorted(found, key=lambda p: p.name)

    def newest_intact_checkpoint(self) -> tuple[Path | None, list[tuple[Path, str]]]:
        """The newest checkpoint that can be resumed from, and the newer damaged ones with
        what is wrong with each (newest first)."""
        damaged = []
        for checkpoint in reversed(self.checkpoints()):
            problem = checkpoint_problem(checkpoint)
            if problem is None:
                return checkpoint, damaged
            damaged.append((checkpoint, problem))
        return None, damaged

    def latest_state(self) -> tuple[Path | None, TrainState | None]:
        """The newest checkpoint whose state reads, and that state: a run's facts (steps,
        best loss, the vocabulary's digest) for sampling, when a newer one is damaged."""
        for checkpoint in reversed(self.checkpoints()):
            try:
                return checkpoint, read_state(checkpoint)
            except RunError:
                continue
        return None, None

    def set_aside(self, checkpoint: Path) -> Path:
        """Rename a damaged checkpoint out of the way (kept for inspection): a resume from an
        earlier one would otherwise find its step taken and never save it again."""
        target = checkpoint.with_name(DAMAGED_PREFIX + checkpoint.name)
        suffix = 1
        while target.exists():
            target = checkpoint.with_name(f"{DAMAGED_PREFIX}{checkpoint.name}.{suffix}")
            suffix += 1
        checkpoint.rename(target)
        return target

    def remove_partial_saves(self) -> None:
        """Temporary files and directories left by a process killed while saving."""
        for folder in (self.path, self.checkpoints_path):
            for leftover in folder.glob(f"{TMP_PREFIX}*"):
                remove(leftover)

    def save_checkpoint(
        self, model, state: TrainState, keep: int, carried_states: list | None = None
    ) -> Path:
        """Save model + optimizer + state (+ the recurrent states carried between steps in
        contiguous training) as checkpoints/step-N, atomically, then prune."""
        final = self.checkpoints_path / f"{CHECKPOINT_PREFIX}{state.step:08d}"
        if final.exists():
            return final
        state.vocab_digest = self.vocab_digest or state.vocab_digest
        with (
            self.saving(self.latest_checkpoint()),
            replaced_atomically(final, directory=True) as tmp,
        ):
            model.save(tmp / MODEL_FILE)
            if carried_states:
                np.savez(tmp / CARRIED_STATES_FILE, *carried_states)
            (tmp / STATE_FILE).write_text(json.dumps(asdict(state)), encoding="utf-8")
        self.prune(keep)
        return final

    def save_best(self, model, saved_as: Path | None = None) -> None:
        """Replace model.keras with `model`, atomically. `saved_as`, a checkpoint's file
        this same model was just saved to, becomes model.keras too (link_or_copy): a
        hard link costs nothing, where saving again would serialise the model a second
        time (docs/decisions.md, best-model-linked)."""
        with self.saving(self.best_model_path), replaced_atomically(self.best_model_path) as tmp:
            if saved_as is not None:
                link_or_copy(saved_as, tmp)
            else:
                model.save(tmp)

    @staticmethod
    @contextmanager
    def saving(kept: Path | None):
        """An OS error while saving (a full disk, say) becomes one line naming what is kept."""
        try:
            yield
        except OSError as error:
            raise RunError(save_failure(error, kept)) from None

    def prune(self, keep: int) -> None:
        for old in self.checkpoints()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    # ------------------------------------------------------------ what a run writes besides
    def save_config(self, config) -> None:
        save_config(config, self.config_path)

    def save_vocab(self, vocab) -> None:
        vocab.save(self.vocab_path)
        self.vocab_digest = vocab.digest()

    def load_vocab(self, checkpoint: Path | None):
        """The run's vocab.json, refused if it is not the vocabulary `checkpoint` was trained
        with (edited or replaced since: every token id would mean another character).
        Checkpoints of older versions recorded no digest: nothing to check against."""
        from charlm.data.vocabulary import Vocabulary

        vocab = Vocabulary.load(self.vocab_path)
        recorded = read_state(checkpoint).vocab_digest if checkpoint else None
        if recorded is not None and recorded != vocab.digest():
            raise RunError(
                f"{checkpoint} was trained with a different vocabulary than "
                f"{self.vocab_path} (edited or replaced since); restore the run's own vocab.json"
            )
        self.vocab_digest = vocab.digest()
        return vocab

    def append_history(self, record: dict) -> None:
        with open(self.history_path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
        self.write_tensorboard(record)

    def write_tensorboard(self, record: dict) -> None:
        import tensorflow as tf

        if self.summary_writer is None:
            self.summary_writer = tf.summary.create_file_writer(str(self.tensorboard_path))
        with self.summary_writer.as_default(step=record["step"]):
            for name, value in record.items():
                if isinstance(value, str):
                    tf.summary.text(name, value)
                elif name != "step" and value is not None:
                    tf.summary.scalar(name, value)
        self.summary_writer.flush()

    def history(self) -> list[dict]:
        """history.jsonl's records, oldest first. Every reader of the history goes through
        here: a line that is not a record (a crash mid-write, an edit) is skipped, with one
        HistoryWarning per file, and never fails what reads it."""
        try:
            text = self.history_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        records, skipped = [], 0
        for line in filter(str.strip, text.splitlines()):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
            else:
                skipped += 1
        if skipped and self.history_path.resolve() not in WARNED_HISTORIES:
            WARNED_HISTORIES.add(self.history_path.resolve())
            warnings.warn(
                f"{self.history_path}: {skipped} line(s) that are not history records skipped",
                HistoryWarning,
                stacklevel=2,
            )
        return records


WARNED_HISTORIES: set[Path] = set()  # history files already warned about in this process
