"""Which device trains (the GPU when present, the CPU otherwise), precision and XLA."""

from __future__ import annotations

import keras
import tensorflow as tf


def gpus() -> list:
    return tf.config.list_physical_devices("GPU")


def describe_device() -> str:
    found = gpus()
    if not found:
        return "training on the CPU"
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in found]
    return f"training on {len(found)} GPU{'s' if len(found) > 1 else ''} ({', '.join(names)})"


def resolve_precision(precision: str, reporter=None) -> str:
    """Set Keras's global dtype policy before the model is built (loss scaling needs that)."""
    if precision == "auto":
        precision = "mixed_float16" if gpus() else "float32"
    if precision != "float32" and not gpus() and reporter:
        reporter.message(f"warning: train.precision {precision} on a CPU is slower than float32")
    keras.mixed_precision.set_global_policy(precision)
    return precision


def resolve_jit(setting: str, replicas: int = 1) -> bool:
    """XLA only when asked. `auto` means off: on CPUs with oneDNN the layers train faster
    without it and skip its compile (docs/decisions.md, no-xla-step); on a GPU cuDNN
    kernels cannot be compiled by XLA; across replicas a step holds cross-device
    reductions."""
    if setting == "auto" or replicas > 1:
        return False
    return setting == "on"
