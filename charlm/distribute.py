"""Scaling out on tf.distribute: which strategy, which worker writes, how data is split.

- one device: the default strategy.
- several GPUs (or, for trying it, several logical CPUs: CHARLM_CPU_DEVICES=N):
  MirroredStrategy.
- several machines: MultiWorkerMirroredStrategy, configured by the standard
  TF_CONFIG environment variable; `charlm train --workers N` starts N local workers
  on 127.0.0.1 with a generated TF_CONFIG.

Every worker reads only its own rows of each global batch (disjoint windows of
the shared token file), so a distributed run sees exactly the batches a
single-process run with the same seed and global batch sees. Only the chief
(task 0) writes under the run directory.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile

import tensorflow as tf

from charlm.config import ConfigError

CPU_DEVICES_ENV = "CHARLM_CPU_DEVICES"


# ---------------------------------------------------------------- which strategy

def tf_config() -> dict:
    try:
        return json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        raise ConfigError("TF_CONFIG is not valid JSON; see the README's cluster "
                          "section") from None


def cluster_size() -> int:
    cluster = tf_config().get("cluster", {})
    return sum(len(tasks) for tasks in cluster.values())


def is_chief() -> bool:
    """Task 0 of the workers (or the task named chief) writes; everyone else only trains."""
    task = tf_config().get("task")
    if not task:
        return True
    return task.get("type") == "chief" or (task.get("type") == "worker" and
                                           int(task.get("index", 0)) == 0 and
                                           "chief" not in tf_config().get("cluster", {}))


def split_cpu(devices: int) -> None:
    """Make N logical CPU devices (must run before TensorFlow starts its runtime)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)])


def choose_strategy(setting: str) -> tf.distribute.Strategy:
    """The strategy `train.distribute` asks for; `auto` picks by what is there."""
    if setting == "auto":
        setting = "multi_worker" if cluster_size() > 1 else \
            "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 or \
            int(os.environ.get(CPU_DEVICES_ENV, "1")) > 1 else "none"
    if setting == "multi_worker":
        if cluster_size() < 1:
            raise ConfigError("train.distribute is multi_worker but TF_CONFIG names no "
                              "cluster; set TF_CONFIG on every worker or use --workers N")
        patch_keras_for_multi_worker()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if setting == "mirrored":
        if int(os.environ.get(CPU_DEVICES_ENV, "1")) > 1:
            split_cpu(int(os.environ[CPU_DEVICES_ENV]))
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def describe_strategy(strategy: tf.distribute.Strategy) -> str:
    replicas = strategy.num_replicas_in_sync
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return f"MultiWorkerMirroredStrategy, {cluster_size()} workers, {replicas} replicas"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return f"MirroredStrategy over {replicas} devices"
    return ""


def patch_keras_for_multi_worker() -> None:
    """Two targeted fixes that make Keras 3's model.fit work under
    MultiWorkerMirroredStrategy (keras-team/keras#20585, tensorflow/tensorflow#72388):

    1. Each step's scalar loss is reduced with `strategy.reduce("MEAN", v, axis=0)`,
       which fails for a scalar ("Invalid reduction dimension 0 for input with 0
       dimensions"): scalars are reduced over replicas only (axis=None).
    2. Before training, fit averages the first data batch across workers only to learn
       its shapes; the cross-worker reduce of a PerReplica batch fails ("Attempt to
       convert a value (PerReplica...)"). The local replica's batch has the same shapes.
    """
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer.reduce_per_replica, "charlm_patched", False):
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
                lambda v: self.distribute_strategy.experimental_local_results(v)[0], batch)
            break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    reduce_per_replica.charlm_patched = True
    trainer.reduce_per_replica = reduce_per_replica
    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build


def is_multi_worker(strategy) -> bool:
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


# ---------------------------------------------------------------- local workers

def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch_local_workers(count: int, arguments: list[str]) -> int:
    """Run `charlm train ARGUMENTS` as `count` workers on 127.0.0.1; the chief's output
    is shown, the others' is kept quiet unless they fail. Returns the worst exit code."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(count)]
    processes, logs = [], []
    for index in range(count):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(config))
        log = tempfile.TemporaryFile() if index else None  # the chief speaks for all
        logs.append(log)
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "charlm.cli", "train", *arguments,
             "--set", "train.distribute=multi_worker"], env=env,
            stdout=log or None, stderr=log or None))
    try:
        codes = [p.wait() for p in processes]
    except KeyboardInterrupt:  # Ctrl-C reaches every worker of the process group itself
        codes = [p.wait() for p in processes]
    for index, code in enumerate(codes):
        if code and logs[index]:
            logs[index].seek(0)
            sys.stderr.write(f"worker {index} exited with {code}:\n"
                             + logs[index].read().decode(errors="replace")[-2000:])
    return max(codes, key=abs)
