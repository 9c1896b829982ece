"""The one place charlm reaches into Keras's private code, and the Keras it was made for.

Keras 3's `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585,
tensorflow/tensorflow#72388). Two targeted fixes make it work:

1. Each step's scalar loss is reduced with `strategy.reduce("MEAN", v, axis=0)`, which
   fails for a scalar ("Invalid reduction dimension 0 for input with 0 dimensions"):
   scalars are reduced over replicas only (axis=None).
2. Before training, fit averages the first data batch across workers only to learn its
   shapes; the cross-worker reduce of a PerReplica batch fails ("Attempt to convert a
   value (PerReplica...)"). The local replica's batch has the same shapes.

The fixes replace two private functions, so they are applied only to the Keras versions
they were verified on (TESTED_KERAS, declared in pyproject.toml too), and only when the
functions are still the ones verified (the sha256 of their source). On anything else
`train.distribute: multi_worker` is refused with one line instead of failing somewhere
inside Keras, or silently overriding code that changed.
"""

from __future__ import annotations

import hashlib
import inspect

import keras
import tensorflow as tf

from charlm.errors import ConfigError
from charlm.training.distribute import is_multi_worker

TESTED_KERAS = ("3.15", "3.16")  # [lowest, first untested) as in pyproject.toml
# sha256 of inspect.getsource of each replaced function, as verified.
VERIFIED_SOURCES = {
    "reduce_per_replica": "2e7d54b1e6edc29a8c6a7e6b66cd4c8be3ba7842412c93753ac3afe169fa7fb8",
    "TensorFlowTrainer._maybe_symbolic_build": (
        "92a504f5eba9b29f81f1bf26180bdd5bf5186b06b7bda426534b90d2d02bc1c2"
    ),
}


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def patched_functions() -> dict:
    """The private Keras functions the fixes replace, by their qualified names."""
    from keras.src.backend.tensorflow import trainer

    return {
        "reduce_per_replica": getattr(trainer, "reduce_per_replica", None),
        "TensorFlowTrainer._maybe_symbolic_build": getattr(
            trainer.TensorFlowTrainer, "_maybe_symbolic_build", None
        ),
    }


def source_digest(function) -> str | None:
    try:
        return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()
    except (TypeError, OSError):
        return None


def unsupported_reason(version: str | None = None) -> str | None:
    """Why the fixes cannot be applied to this Keras, or None when they can."""
    version = version or keras.__version__
    low, high = (version_tuple(v) for v in TESTED_KERAS)
    if not low <= version_tuple(version) < high:
        return f"Keras {version} is outside the tested range {TESTED_KERAS[0]}.x"
    for name, function in patched_functions().items():
        if getattr(function, "charlm_original", None) is not None:
            function = function.charlm_original
        if function is None or source_digest(function) != VERIFIED_SOURCES[name]:
            return f"Keras {version}'s {name} is not the function charlm's fix was made for"
    return None


def patch_keras_for_multi_worker() -> None:
    """Apply the two fixes (once), or refuse multi-worker training in one line."""
    reason = unsupported_reason()
    if reason:
        raise ConfigError(
            f"train.distribute: multi_worker needs Keras {TESTED_KERAS[0]}.x "
            f"({reason}); install it with pip install 'keras>={TESTED_KERAS[0]},"
            f"<{TESTED_KERAS[1]}' or train on one process"
        )
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer.reduce_per_replica, "charlm_original", None) is not None:
        return
    original_reduce = trainer.reduce_per_replica
    original_build = trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and is_multi_worker(strategy):
            return tf.nest.map_structure(lambda v: reduce_mean(v, strategy), values)
        return original_reduce(values, strategy, reduction)

    def reduce_mean(value, strategy):
        scalar = value.shape.rank in (0, None)
        return strategy.reduce("MEAN", value, axis=None if scalar else 0)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is None or not is_multi_worker(self.distribute_strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tf.nest.map_structure(
                lambda v: self.distribute_strategy.experimental_local_results(v)[0], batch
            )
            break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    reduce_per_replica.charlm_original = original_reduce
    maybe_symbolic_build.charlm_original = original_build
    trainer.reduce_per_replica = reduce_per_replica
    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
