"""Scaling out on tf.distribute: which strategy, which worker writes, how data is split.

- one device: the default strategy.
- several GPUs (or, for trying it, several logical CPUs: CHARLM_CPU_DEVICES=N):
  MirroredStrategy.
- several machines: MultiWorkerMirroredStrategy, configured by the standard
  TF_CONFIG environment variable (workers.py starts N local ones; keras_compat.py
  makes Keras's model.fit work under it).

Every worker reads only its own rows of each global batch (disjoint windows of
the shared token file), so a distributed run sees exactly the batches a
single-process run with the same seed and global batch sees. Only the chief
(task 0) writes under the run directory.
"""

from __future__ import annotations

import functools
import json
import os

import tensorflow as tf

from charlm.errors import ConfigError

CPU_DEVICES_ENV = "CHARLM_CPU_DEVICES"


# ---------------------------------------------------------------- which strategy


def tf_config() -> dict:
    try:
        return json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        raise ConfigError("TF_CONFIG is not valid JSON; see docs/distributed.md") from None


def cluster_size() -> int:
    cluster = tf_config().get("cluster", {})
    return sum(len(tasks) for tasks in cluster.values())


def is_chief() -> bool:
    """Task 0 of the workers (or the task named chief) writes; everyone else only trains."""
    task = tf_config().get("task")
    if not task:
        return True
    return task.get("type") == "chief" or (
        task.get("type") == "worker"
        and int(task.get("index", 0)) == 0
        and "chief" not in tf_config().get("cluster", {})
    )


def split_cpu(devices: int) -> None:
    """Make N logical CPU devices (must run before TensorFlow starts its runtime; a
    second call asking for as many is a no-op)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or []) == devices:
        return
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)]
    )


def strategy_name(setting: str) -> str:
    """What `train.distribute` asks for, with `auto` resolved by what is there."""
    if setting != "auto":
        return setting
    if cluster_size() > 1:
        return "multi_worker"
    several_devices = (
        len(tf.config.list_physical_devices("GPU")) > 1
        or int(os.environ.get(CPU_DEVICES_ENV, "1")) > 1
    )
    return "mirrored" if several_devices else "none"


def choose_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy of `strategy_name`'s answer."""
    if name == "multi_worker":
        if cluster_size() < 1:
            raise ConfigError(
                "train.distribute is multi_worker but TF_CONFIG names no "
                "cluster; set TF_CONFIG on every worker or use --workers N"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        if int(os.environ.get(CPU_DEVICES_ENV, "1")) > 1:
            split_cpu(int(os.environ[CPU_DEVICES_ENV]))
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return mirrored_strategy(tuple(devices))
    return tf.distribute.get_strategy()


@functools.cache
def mirrored_strategy(devices: tuple[str, ...]) -> tf.distribute.MirroredStrategy:
    """One MirroredStrategy per set of devices and process: a second one over the same
    devices numbers its collective operations from the start again, and their shapes
    clash with the first one's ("Shape mismatch in the collective instance 100") when a
    process trains twice (library use, tests)."""
    return tf.distribute.MirroredStrategy(list(devices))


def describe_strategy(strategy: tf.distribute.Strategy) -> str:
    replicas = strategy.num_replicas_in_sync
    if is_multi_worker(strategy):
        return f"MultiWorkerMirroredStrategy, {cluster_size()} workers, {replicas} replicas"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return f"MirroredStrategy over {replicas} devices"
    return ""


def is_multi_worker(strategy) -> bool:
    """The one test of "is this run spread over several worker processes?"."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


# ---------------------------------------------------------------- data


def distribute_training_data(strategy, make_batches, batch_size: int):
    """Give each replica its rows of every global batch.

    `make_batches(rows)` returns a dataset of (inputs, targets) holding only the given
    rows of each global batch; the union over replicas is the single-process batch.
    """
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return make_batches(slice(None))
    per_replica = batch_size // replicas

    def dataset_for(context: tf.distribute.InputContext):
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local * per_replica
        rows = slice(first, first + local * per_replica)
        # One element per local replica, in replica order: tf.distribute hands the
        # elements of a pipeline to its replicas round-robin.
        return make_batches(rows).unbatch().batch(per_replica)

    return strategy.distribute_datasets_from_function(dataset_for)


def shard_evaluation_data(dataset):
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


# ---------------------------------------------------------------- agreeing to stop


def agree_to_stop(strategy, reason: str | None) -> bool:
    """Whether to stop now; under several workers, if any of them wants to (all-reduce)."""
    if not is_multi_worker(strategy):
        return reason is not None
    return float(stop_vote(strategy)(tf.constant(1.0 if reason else 0.0))) > 0


@functools.cache
def stop_vote(strategy):
    """How many workers want to stop (compiled once: eager collectives are slow)."""

    @tf.function
    def vote(wants):
        return strategy.reduce("SUM", strategy.run(tf.identity, args=(wants,)), axis=None)

    return vote
