"""What the CPU offers TensorFlow: its model name, the widest vector instructions it has,
and whether oneDNN (TensorFlow's CPU matrix library) may use AVX-512 on it."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

# The widest first: the name of the first flag /proc/cpuinfo lists is reported.
ISA_FLAGS = (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))
# ONEDNN_MAX_CPU_ISA values that hold oneDNN below AVX-512 (oneDNN's documented names).
BELOW_AVX512 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")


@functools.cache
def cpu_info() -> tuple[str, frozenset]:
    """The CPU's model name and its flags, from /proc/cpuinfo ("unknown" and none
    where there is no such file: not Linux)."""
    model, flags = "unknown", frozenset()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = frozenset(value.split())
    return model, flags


def widest_instruction_set() -> str:
    flags = cpu_info()[1]
    return next((name for flag, name in ISA_FLAGS if flag in flags), "below AVX2")


def onednn_uses_avx512() -> bool:
    """Whether oneDNN runs AVX-512 code here: the CPU has it (known on Linux only) and
    ONEDNN_MAX_CPU_ISA does not hold oneDNN below it."""
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    return "avx512f" in cpu_info()[1] and limit not in BELOW_AVX512
