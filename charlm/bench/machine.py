"""What every figure depends on: the CPU, its widest vector instructions, the threads
each framework computes with, and the machine's float32 matmul rate."""

from __future__ import annotations

import os
import time

import numpy as np

from charlm.cpu import cpu_info, widest_instruction_set


def machine() -> dict:
    """The CPU, the widest vector instructions it has (and the limits oneDNN and XLA are
    held to, if ONEDNN_MAX_CPU_ISA or XLA_FLAGS' --xla_cpu_max_isa sets them), and the
    threads each framework computes with (PyTorch's are set to TensorFlow's: the same
    cores each)."""
    import tensorflow as tf

    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    return {
        "cpu": cpu_info()[0],
        "instruction_set": widest_instruction_set(),
        "onednn_isa_limit": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "xla_isa_limit": xla_isa_limit(os.environ.get("XLA_FLAGS", "")),
        "tensorflow_threads": threads,
        "torch_threads": threads,
    }


def xla_isa_limit(flags: str) -> str | None:
    """The value of --xla_cpu_max_isa in XLA_FLAGS, if any."""
    for flag in flags.split():
        name, _, value = flag.partition("=")
        if name == "--xla_cpu_max_isa":
            return value
    return None


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The machine's float32 matmul rate (numpy, all cores): the practical ceiling."""
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    a @ a
    started = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9
