"""What every figure depends on: the CPU, its widest vector instructions, the threads
each framework computes with, and the machine's float32 matmul rate."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numpy as np

# The widest first: the name of the first flag /proc/cpuinfo lists is reported.
ISA_FLAGS = (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


def machine() -> dict:
    """The CPU, the widest vector instructions it has (and the limits oneDNN and XLA are
    held to, if ONEDNN_MAX_CPU_ISA or XLA_FLAGS' --xla_cpu_max_isa sets them), and the
    threads each framework computes with (PyTorch's are set to TensorFlow's: the same
    cores each)."""
    import tensorflow as tf

    model, flags = "unknown", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    present = next((name for flag, name in ISA_FLAGS if flag in flags), "below AVX2")
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    return {
        "cpu": model,
        "instruction_set": present,
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
