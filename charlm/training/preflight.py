"""Checks made before any work: the run directory, a resume's config, memory, and what
distribution allows. Each refusal is one line naming what to change."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import keras

from charlm.config import Config, load_config
from charlm.config.load import shown
from charlm.errors import ConfigError, RunError
from charlm.model.build import estimated_bytes, parameter_count
from charlm.run.rundir import RunDir
from charlm.training.distribute import is_multi_worker

# Keys that may differ between a run's saved config and the one given with --resume.
RESUMABLE_CHANGES = {
    "train.steps",
    "train.epochs",
    "train.time_budget_s",
    "train.eval_interval",
    "train.keep_checkpoints",
    "train.early_stopping_patience",
    "train.run_dir",
    "data.val_max_chars",
    "train.distribute",
    "train.jit_compile",
    "model.implementation",
}
MEMORY_LIMIT_FRACTION = 0.8


def check_run_dir(
    config: Config, run_dir: RunDir, resuming: bool, say: Callable[[str], None]
) -> Path | None:
    """The checkpoint to resume from, or None for a new run; refuses to overwrite a run.
    `say` tells which checkpoint a resume fell back to (the reporter's message)."""
    if not resuming:
        if run_dir.has_checkpoints() or run_dir.best_model_path.exists():
            raise RunError(
                f"run directory {run_dir.path} already holds a run; resume it "
                f"(charlm train --resume {run_dir.path}) or set train.run_dir to a new directory"
            )
        return None
    checkpoint = resume_checkpoint(run_dir, say)
    if run_dir.config_path.exists():
        check_resumable(config, load_config(run_dir.config_path))
    return checkpoint


def resume_checkpoint(run_dir: RunDir, say: Callable[[str], None]) -> Path:
    """The newest intact checkpoint of the run (damaged newer ones are set aside, and
    `say` tells which was used), or the one the resume named if it is that one."""
    checkpoint, damaged = run_dir.newest_intact_checkpoint()
    named = run_dir.named_checkpoint
    if named is not None and named != checkpoint:
        why = dict(damaged).get(named)
        state = f"is damaged ({why})" if why else "is not the run's newest checkpoint"
        raise RunError(
            f"resume {named}: this checkpoint {state}; a run resumes from its newest "
            f"intact checkpoint: resume {run_dir.path} (or start a new run from these "
            f"weights with train.init_from: {named})"
        )
    if checkpoint is None or not run_dir.vocab_path.exists():
        found = "; ".join(f"{c.name}: {why}" for c, why in damaged)
        raise RunError(
            f"resume {run_dir.path}: no checkpoint there to resume from"
            + (f" (all are damaged: {found})" if found else "")
        )
    if damaged:
        kept = [
            f"{bad.name} ({why}; kept as {run_dir.set_aside(bad).name})" for bad, why in damaged
        ]
        say(
            f"damaged checkpoint {', '.join(kept)}: resuming from {checkpoint.name}, "
            f"the newest intact one"
        )
    return checkpoint


def check_resumable(config: Config, saved: Config) -> None:
    """Refuse a resume whose config changes the model, the data or the optimizer."""
    new, old = flatten(config.to_dict()), flatten(saved.to_dict())
    if new.get("train.init_from") is None:  # a resume reads its own weights, not the base's
        new["train.init_from"] = old.get("train.init_from")
    changed = [
        k
        for k in new
        if new[k] != old.get(k) and k not in RESUMABLE_CHANGES and not k.startswith("sample.")
    ]
    if changed:
        k = changed[0]
        raise ConfigError(
            f"resume: {k} is {shown(new[k])} here but {shown(old.get(k))} in the run; "
            f"a resumed run keeps its model, data and optimizer settings "
            f"(only {', '.join(sorted(RESUMABLE_CHANGES))} may change)"
        )


def flatten(tree: dict) -> dict:
    return {f"{section}.{k}": v for section, values in tree.items() for k, v in values.items()}


def check_memory(config: Config, vocab_size: int) -> None:
    """Refuse, with the estimate, a model that cannot fit in this machine's memory."""
    need = estimated_bytes(
        config.model, vocab_size, config.train.batch_size, config.train.seq_length
    )
    total = physical_memory_bytes()
    if total and need > MEMORY_LIMIT_FRACTION * total:
        raise ConfigError(
            f"this model needs about {need / 2**30:.1f} GiB to train but the "
            f"machine has {total / 2**30:.1f} GiB; lower model.units, "
            f"model.layers, train.batch_size or train.seq_length"
        )


def physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def model_file_bytes(model: keras.Model) -> int:
    """A checkpoint holds the weights and (Adam) two optimizer slots, in float32."""
    return 3 * 4 * parameter_count(model) + 1_000_000


def check_distributable(config: Config, strategy) -> None:
    replicas = strategy.num_replicas_in_sync
    if config.train.batch_size % replicas:
        raise ConfigError(
            f"train.batch_size {config.train.batch_size} must be a multiple of "
            f"the {replicas} replicas"
        )
    if config.train.anneal_over == "time_budget" and is_multi_worker(strategy):
        raise ConfigError(
            "train.anneal_over: time_budget needs one process (each worker's "
            "clock would give it another learning rate); anneal over steps"
        )
    if replicas > 1 and config.train.windows == "contiguous":
        raise ConfigError(
            "train.windows: contiguous runs on one device only (its carried "
            "state has a fixed batch); use random windows to distribute"
        )
