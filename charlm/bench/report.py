"""`charlm bench`'s run and its table: every figure measured in one run, side by side."""

from __future__ import annotations

import tempfile
from pathlib import Path

from charlm.bench.machine import machine, matmul_gflops
from charlm.bench.reference import CELLS, forward_flops_per_char, reference_corpus
from charlm.bench.sampling import one_stream_weight_floor, sampling_chars_per_s
from charlm.bench.torch_reference import (
    TorchTraining,
    importable_torch,
    torch_sampling_chars_per_s,
)
from charlm.bench.training import train_rates

STREAMS = {"1_stream": (1, 2000), "64_streams": (64, 500)}  # streams, characters each


def run_benchmark(cells=CELLS, steps: int = 8) -> dict:
    described = machine()
    torch = importable_torch(described["torch_threads"])
    results = {"machine": described, "matmul_gflops": matmul_gflops(), "cells": {}}
    with tempfile.TemporaryDirectory(prefix="charlm-bench-") as root:
        root = Path(root)
        corpus = reference_corpus(root)
        for cell in cells:
            reference = TorchTraining(torch, cell) if torch else None
            charlm, other = train_rates(cell, corpus, root, steps, torch=reference)
            gflops = 3 * forward_flops_per_char(cell) * charlm["fastest"] / 1e9
            entry = {
                "train_chars_per_s": charlm,
                "train_gflops": gflops,
                "fraction_of_matmul_ceiling": gflops / results["matmul_gflops"],
                "stock_keras_chars_per_s": train_rates(cell, corpus, root, steps, "stock")[0][
                    "fastest"
                ],
            }
            if other:
                entry["torch_chars_per_s"] = other
                entry["ratio_to_torch"] = {k: charlm[k] / other[k] for k in charlm}
            results["cells"][cell] = entry
        if "lstm" in cells:
            results["sampling"] = sampling(root / "run-lstm-fused", torch, results)
    return results


def sampling(run: Path, torch, results: dict) -> dict:
    """charlm's sampler at 1 and 64 streams, one stream's floor, the 64 streams' share
    of the matmul ceiling, and PyTorch's carried-state sampler with oneDNN on and off."""
    found = {name: sampling_chars_per_s(run, *shape) for name, shape in STREAMS.items()}
    found["1_stream_floor"] = one_stream_weight_floor(run)
    found["1_stream_of_floor"] = found["1_stream"] / found["1_stream_floor"]
    gflops = found["64_streams"] * forward_flops_per_char("lstm") / 1e9
    found["64_streams_gflops"] = gflops
    found["64_streams_of_ceiling"] = gflops / results["matmul_gflops"]
    if torch:
        for name, (streams, length) in STREAMS.items():
            rates = {
                f"onednn_{'on' if on else 'off'}": torch_sampling_chars_per_s(
                    torch, streams, length // 4, on
                )
                for on in (True, False)
            }
            found[f"torch_{name}"] = rates
            found[f"{name}_ratio_to_torch"] = found[name] / max(rates.values())
    return found


def format_results(results: dict) -> str:
    described = results["machine"]
    limit, xla = described["onednn_isa_limit"], described.get("xla_isa_limit")
    lines = [
        f"CPU: {described['cpu']}, {described['instruction_set']}"
        + (f" (oneDNN limited to {limit} by ONEDNN_MAX_CPU_ISA)" if limit else "")
        + (f" (XLA limited to {xla} by --xla_cpu_max_isa)" if xla else "")
        + f"; threads: TensorFlow {described['tensorflow_threads']}, PyTorch "
        f"{described['torch_threads']} (set equal)",
        f"matmul ceiling (numpy float32 2048x2048, all cores): "
        f"{results['matmul_gflops']:.0f} GFLOP/s",
        "",
        "training chars/s (fastest step / median step / whole segment with evaluation "
        "and checkpoint):",
        "",
        "| cell | charlm | GFLOP/s (of ceiling) | stock Keras layers | PyTorch "
        "| charlm / PyTorch |",
        "|---|---|---|---|---|---|",
    ]
    for cell, entry in results["cells"].items():
        torch_rates, ratios = "not installed", "-"
        if "torch_chars_per_s" in entry:
            torch_rates = three(entry["torch_chars_per_s"], "{:,.0f}")
            ratios = three(entry["ratio_to_torch"], "{:.2f}x")
        lines.append(
            f"| {cell} | {three(entry['train_chars_per_s'], '{:,.0f}')} | "
            f"{entry['train_gflops']:.0f} ({entry['fraction_of_matmul_ceiling']:.0%}) | "
            f"{entry['stock_keras_chars_per_s']:,.0f} | {torch_rates} | {ratios} |"
        )
    if "sampling" in results:
        lines += sampling_lines(results["sampling"])
    return "\n".join(lines)


def three(rates: dict, form: str) -> str:
    return " / ".join(form.format(rates[k]) for k in ("fastest", "median", "segment"))


def sampling_lines(found: dict) -> list[str]:
    lines = [
        "",
        "sampling, 2x512 LSTM, chars/s:",
        "",
        "| streams | charlm | bound | PyTorch carried state (oneDNN on / off) "
        "| charlm / PyTorch's faster |",
        "|---|---|---|---|---|",
    ]
    bounds = {
        "1_stream": f"{found['1_stream_of_floor']:.2f} of the floor "
        f"({found['1_stream_floor']:,.0f}: the matrix products alone)",
        "64_streams": f"{found['64_streams_gflops']:.0f} GFLOP/s = "
        f"{found['64_streams_of_ceiling']:.2f} of the matmul ceiling",
    }
    for name in STREAMS:
        other, ratio = "not installed", "-"
        if f"torch_{name}" in found:
            rates = found[f"torch_{name}"]
            other = f"{rates['onednn_on']:,.0f} / {rates['onednn_off']:,.0f}"
            ratio = f"{found[f'{name}_ratio_to_torch']:.2f}x"
        streams = STREAMS[name][0]
        lines.append(f"| {streams} | {found[name]:,.0f} | {bounds[name]} | {other} | {ratio} |")
    return lines
