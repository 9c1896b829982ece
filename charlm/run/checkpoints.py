"""A checkpoint directory's files, and the training state it records (see rundir.py for
the layout of a run directory, and for what writes these)."""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charlm.errors import RunError
from charlm.files import archive_problem

STATE_VERSION = 1
CHECKPOINT_PREFIX = "step-"
MODEL_FILE = "model.keras"
STATE_FILE = "state.json"
CARRIED_STATES_FILE = "carried_states.npz"
CHECKPOINTS_DIR = "checkpoints"


@dataclass
class TrainState:
    step: int = 0
    best_val_loss: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    elapsed_s: float = 0.0
    rng_states: list | None = None  # dropout generators' states (see model.rng_states)
    gradient_health: list | None = None  # the interval's gradient sums (GradientHealth)
    vocab_digest: str | None = None  # Vocabulary.digest of the run's vocab.json (None: older)
    version: int = STATE_VERSION


def is_checkpoint_dir(path: Path) -> bool:
    return path.parent.name == CHECKPOINTS_DIR and (path / STATE_FILE).is_file()


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from (its state unreadable, its model or carried
    states truncated or corrupt), or None when it is whole."""
    try:
        read_state(checkpoint)
    except RunError:
        return f"its {STATE_FILE} is unreadable"
    for name in (MODEL_FILE, CARRIED_STATES_FILE):
        path = checkpoint / name
        problem = archive_problem(path) if name == MODEL_FILE or path.exists() else None
        if problem:
            return f"its {name} {problem}"
    return None


def read_carried_states(checkpoint: Path) -> list:
    path = checkpoint / CARRIED_STATES_FILE
    if not path.exists():
        return []
    with np.load(path) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def read_state(checkpoint: Path) -> TrainState:
    try:
        data = json.loads((checkpoint / STATE_FILE).read_text())
        return TrainState(**data)
    except (OSError, ValueError, TypeError) as error:
        raise RunError(
            f"checkpoint {checkpoint} has no readable {STATE_FILE} ({error}); it is damaged: "
            f"use another checkpoint of the run"
        ) from None


def checkpoint_model(checkpoint: Path) -> Path:
    """The model file of a checkpoint directory."""
    return checkpoint / MODEL_FILE


def save_failure(error: OSError, kept: Path | None) -> str:
    reason = "the disk is full" if error.errno == errno.ENOSPC else error.strerror or str(error)
    kept_text = f"; the previous checkpoint {kept} is intact" if kept else ""
    return f"saving a checkpoint failed: {reason}{kept_text}"
