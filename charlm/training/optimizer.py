"""The optimizer and its learning-rate schedule, from the train section of a config."""

from __future__ import annotations

import math

import keras

from charlm.config import TrainConfig


def build_optimizer(train_config: TrainConfig, total_steps: int) -> keras.optimizers.Optimizer:
    rate = learning_rate_schedule(train_config, total_steps)
    clip = {"global_clipnorm": train_config.clip_norm} if train_config.clip_norm > 0 else {}
    if train_config.optimizer == "adam":
        return keras.optimizers.Adam(rate, **clip)
    if train_config.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=train_config.weight_decay, **clip)
    if train_config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(rate, **clip)
    return keras.optimizers.SGD(rate, momentum=0.9, **clip)


def learning_rate_schedule(train_config, total_steps: int):
    rate = train_config.learning_rate
    if train_config.anneal_over == "time_budget":
        return time_annealed_rate(train_config, 0, 0.0)  # then set per step by a callback
    if train_config.schedule == "cosine":
        warmup = min(train_config.warmup_steps, total_steps - 1)
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else rate,
            decay_steps=max(1, total_steps - warmup),
            alpha=train_config.min_lr_fraction,
            warmup_target=rate if warmup else None,
            warmup_steps=warmup,
        )
    if train_config.schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            rate, decay_steps=train_config.decay_steps, decay_rate=train_config.decay_rate
        )
    return rate


def time_annealed_rate(config, step: int, elapsed_s: float) -> float:
    """Linear warm-up over steps, times a cosine over the share of the budget used."""
    progress = min(1.0, elapsed_s / config.time_budget_s)
    floor = config.min_lr_fraction
    cosine = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    return config.learning_rate * cosine * warmup


def base_optimizer(model: keras.Model) -> keras.optimizers.Optimizer:
    """The model's optimizer, unwrapped from the loss-scaling wrapper of mixed_float16."""
    return getattr(model.optimizer, "inner_optimizer", model.optimizer)


def current_learning_rate(model: keras.Model) -> float:
    rate = base_optimizer(model).learning_rate
    return float(rate.numpy() if hasattr(rate, "numpy") else rate)
