"""The model a training call starts from, and how many steps it runs."""

from __future__ import annotations

import math
from pathlib import Path

import keras

from charlm.config import DEFAULT_STEPS, Config
from charlm.model.build import build_model
from charlm.run.load import load_model
from charlm.run.rundir import checkpoint_model
from charlm.training.optimizer import build_optimizer


def load_or_build(
    config: Config, vocab_size: int, checkpoint: Path | None, total_steps: int, jit: bool
) -> keras.Model:
    if checkpoint is not None:
        model = load_model(
            checkpoint_model(checkpoint), compile=True, implementation=config.model.implementation
        )
        model.jit_compile = jit  # the device may have changed since the checkpoint
        return model
    contiguous = config.train.windows == "contiguous"
    model = build_model(
        config.model,
        vocab_size,
        config.train.seed,
        stateful_batch_size=config.train.batch_size if contiguous else None,
    )
    model.compile(
        optimizer=build_optimizer(config.train, total_steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    return model


def resolve_total_steps(config: Config, train_chars: int) -> int:
    if config.train.epochs is not None:
        per_step = config.train.batch_size * config.train.seq_length
        return max(1, math.ceil(config.train.epochs * train_chars / per_step))
    return config.train.steps or DEFAULT_STEPS
