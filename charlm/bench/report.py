"""`charlm bench`'s run and its table: every figure measured in one run, side by side."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from charlm.bench.api import api_lines, api_rates
from charlm.bench.gradient_health import gradient_health_rates
from charlm.bench.machine import machine, matmul_gflops
from charlm.bench.reference import CELLS, forward_flops_per_char, reference_corpus
from charlm.bench.sampling import OneStreamFloor, SamplingRate, best_in_turn
from charlm.bench.timeline import timeline_cost
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
            entry["gradient_health_chars_per_s"] = gradient_health_rates(cell)
            entry["timeline_cost"] = timeline_cost(cell)
            results["cells"][cell] = entry
        if "lstm" in cells:
            results["sampling"] = sampling(root / "run-lstm-fused", torch)
            results["api"] = api_rates(root / "run-lstm-fused", torch)
    return results


def sampling(run: Path, torch) -> dict:
    """charlm's sampler at 1 stream beside its floor, and at 64 streams beside the
    matmul ceiling, each bound measured in turn with the rate it bounds (see
    best_in_turn); PyTorch's carried-state sampler, oneDNN on and off, in the same turns."""
    bounds = {
        "1_stream": ("1_stream_floor", OneStreamFloor(run)),
        "64_streams": ("64_streams_ceiling_gflops", matmul_gflops),
    }
    found = {}
    for name, (streams, length) in STREAMS.items():
        bound_name, bound = bounds[name]
        others = {
            f"onednn_{'on' if on else 'off'}": functools.partial(
                torch_sampling_chars_per_s, torch, streams, length // 4, on
            )
            for on in ((True, False) if torch else ())
        }
        best = best_in_turn({name: SamplingRate(run, streams, length), bound_name: bound, **others})
        found[name], found[bound_name] = best[name], best[bound_name]
        if others:
            found[f"torch_{name}"] = {key: best[key] for key in others}
            found[f"{name}_ratio_to_torch"] = best[name] / max(best[key] for key in others)
    found["1_stream_of_floor"] = found["1_stream"] / found["1_stream_floor"]
    found["64_streams_gflops"] = found["64_streams"] * forward_flops_per_char("lstm") / 1e9
    found["64_streams_of_ceiling"] = found["64_streams_gflops"] / found["64_streams_ceiling_gflops"]
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
    lines += gradient_health_lines(results["cells"])
    lines += timeline_lines(results["cells"])
    if "sampling" in results:
        lines += sampling_lines(results["sampling"])
    if "api" in results:
        lines += api_lines(results["api"])
    return "\n".join(lines)


def gradient_health_lines(cells: dict) -> list[str]:
    lines = [
        "",
        "gradient health's cost: training chars/s of the median step, the model with its "
        "gradients measured and without, trained in turn:",
        "",
        "| cell | with | without | with / without |",
        "|---|---|---|---|",
    ]
    for cell, entry in cells.items():
        rates = entry["gradient_health_chars_per_s"]
        lines.append(
            f"| {cell} | {rates['with']:,.0f} | {rates['without']:,.0f} | {rates['ratio']:.3f} |"
        )
    return lines


def timeline_lines(cells: dict) -> list[str]:
    lines = [
        "",
        "the training timeline's cost: a timeline sample, as at each evaluation, against "
        "an evaluation interval's training steps, in turn (the first sample compiles):",
        "",
        "| cell | median step | first sample | later samples | share of the interval |",
        "|---|---|---|---|---|",
    ]
    for cell, entry in cells.items():
        cost = entry["timeline_cost"]
        lines.append(
            f"| {cell} | {cost['step_s']:.3f} s | {cost['first_sample_s']:.2f} s | "
            f"{cost['sample_s']:.2f} s | {cost['fraction']:.1%} |"
        )
    return lines


def three(rates: dict, form: str) -> str:
    return " / ".join(form.format(rates[k]) for k in ("fastest", "median", "segment"))


def sampling_lines(found: dict) -> list[str]:
    lines = [
        "",
        "sampling, 2x512 LSTM, chars/s (each figure the best of three readings, taken in "
        "turn with its bound's and PyTorch's):",
        "",
        "| streams | charlm | bound | PyTorch carried state (oneDNN on / off) "
        "| charlm / PyTorch's faster |",
        "|---|---|---|---|---|",
    ]
    bounds = {
        "1_stream": f"{found['1_stream_of_floor']:.2f} of the floor "
        f"({found['1_stream_floor']:,.0f}: the matrix products alone)",
        "64_streams": f"{found['64_streams_gflops']:.0f} GFLOP/s = "
        f"{found['64_streams_of_ceiling']:.2f} of the matmul ceiling "
        f"({found['64_streams_ceiling_gflops']:.0f} GFLOP/s)",
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
