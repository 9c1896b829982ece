"""`charlm bench`: training and sampling throughput at the reference size, measured
through the code users run, with the machine's matmul ceiling (and PyTorch, when it is
importable) timed in the same run.

Reference model: Embedding(65 -> 64), 2 recurrent layers of 512 units, Dense(65);
batch 64, 100 steps of time, Adam, global-norm clip 5.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from charlm.training.reporter import SilentReporter

CELLS = ("simple_rnn", "lstm", "gru")
# The widest first: the name of the first flag /proc/cpuinfo lists is reported.
ISA_FLAGS = (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))
GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
VOCAB_CHARS = 65
REFERENCE = dict(embedding_dim=64, layers=2, units=512, batch_size=64, seq_length=100)


def forward_flops_per_char(cell: str, vocab: int = VOCAB_CHARS + 1) -> float:
    """Multiply-adds x 2 of one character through the reference model."""
    units, sizes = REFERENCE["units"], [REFERENCE["embedding_dim"], REFERENCE["units"]]
    recurrent = sum(2 * GATES[cell] * units * (size + units) for size in sizes)
    return recurrent + 2 * units * vocab


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The machine's float32 matmul rate (numpy, all cores): the practical ceiling."""
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    a @ a
    started = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


class ThroughputRecorder(SilentReporter):
    """A train() reporter that times each training step, from the end of one to the end
    of the next: everything `charlm train` does per step, none of a segment's start-up.

    With `between_steps` (PyTorch's step), it runs and times that after every charlm
    step, so the two alternate step by step and see the same machine: on a shared machine
    the speed drifts by tens of percent within a minute."""

    def __init__(self, between_steps=None):
        self.between_steps = between_steps
        self.step_times: list[float] = []
        self.other_times: list[float] = []
        self.resumed = time.perf_counter()

    def advance(self, step, loss, chars_per_s):
        self.step_times.append(time.perf_counter() - self.resumed)
        if self.between_steps:
            started = time.perf_counter()
            self.between_steps()
            self.other_times.append(time.perf_counter() - started)
        self.resumed = time.perf_counter()


def best_rate(step_times: list[float], steps: int) -> float:
    """chars/s of the fastest of the last `steps` steps. The fastest, not the mean: other
    guests of this virtual machine steal CPU time in bursts (up to a third of it, seen in
    /proc/stat), and a burst landing on one side's steps would decide the ratio."""
    return REFERENCE["batch_size"] * REFERENCE["seq_length"] / min(step_times[-steps:])


def reference_corpus(root: Path) -> Path:
    """About 1 MB of text over exactly 65 characters (as tiny Shakespeare has)."""
    rng = np.random.default_rng(0)
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'-\n&$3"))
    path = root / "reference.txt"
    path.write_text("".join(rng.choice(alphabet, 1_000_000)), encoding="utf-8")
    return path


def train_chars_per_s(
    cell: str, corpus: Path, root: Path, steps: int, implementation: str = "fused", torch_step=None
) -> tuple:
    """Train through charlm.training.loop.train for two segments of `steps` + 1 steps (the first
    one compiles) and time the last `steps`: (charlm chars/s, torch_step's chars/s)."""
    from charlm.config import load_config
    from charlm.training.loop import train

    settings = [
        f"model.cell={cell}",
        f"model.layers={REFERENCE['layers']}",
        f"model.units={REFERENCE['units']}",
        f"model.embedding_dim={REFERENCE['embedding_dim']}",
        f"train.batch_size={REFERENCE['batch_size']}",
        f"train.seq_length={REFERENCE['seq_length']}",
        "train.clip_norm=5",
        f"train.steps={2 * (steps + 1)}",
        f"train.eval_interval={steps + 1}",
        "data.val_max_chars=101",
        f"data.corpus={corpus}",
        f"model.implementation={implementation}",
        f"train.run_dir={root / f'run-{cell}-{implementation}'}",
    ]
    recorder = ThroughputRecorder(torch_step)
    train(load_config(None, settings), reporter=recorder)
    other = best_rate(recorder.other_times, steps) if torch_step else None
    return best_rate(recorder.step_times, steps), other


def torch_step_function(cell: str):
    """One training step of the same model in PyTorch (CPU), warmed up; None when torch
    is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(machine()["torch_threads"])
    torch.manual_seed(0)
    layer = {"simple_rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    vocab = VOCAB_CHARS + 1
    model = torch.nn.ModuleDict(
        dict(
            embedding=torch.nn.Embedding(vocab, REFERENCE["embedding_dim"]),
            rnn=layer(
                REFERENCE["embedding_dim"],
                REFERENCE["units"],
                REFERENCE["layers"],
                batch_first=True,
            ),
            logits=torch.nn.Linear(REFERENCE["units"], vocab),
        )
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    batch, length = REFERENCE["batch_size"], REFERENCE["seq_length"]
    tokens = torch.randint(0, vocab, (batch, length + 1))

    def step():
        hidden, _ = model["rnn"](model["embedding"](tokens[:, :-1]))
        loss = torch.nn.functional.cross_entropy(
            model["logits"](hidden).reshape(-1, vocab), tokens[:, 1:].reshape(-1)
        )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    for _ in range(2):
        step()
    return step


def sampling_chars_per_s(run_dir: Path, streams: int, length: int) -> float:
    """Generation rate of `charlm sample`'s Sampler on a trained reference model."""
    from charlm.generate import Sampler, SamplingOptions
    from charlm.run.load import load_checkpoint

    loaded = load_checkpoint(run_dir)
    sampler = Sampler(loaded.model, loaded.vocab)
    for _ in sampler.sample([0], streams, SamplingOptions(length=200, seed=0)):
        pass  # compiles the loop
    started = time.perf_counter()
    for _ in sampler.sample([0], streams, SamplingOptions(length=length, seed=1)):
        pass
    return streams * length / (time.perf_counter() - started)


def one_stream_weight_floor(run_dir: Path, length: int = 1000) -> float:
    """chars/s of the model's vector-matrix products alone for one stream (numpy, no
    other op): each character must read every weight matrix once, about 13 MB for the
    2x512 LSTM, so memory bandwidth, not arithmetic, bounds one-stream sampling."""
    from charlm.model.step import CharacterStep
    from charlm.run.load import load_checkpoint

    model = load_checkpoint(run_dir).model
    matrices = [w.numpy() for w in CharacterStep(model).matrices()]
    rows = [np.ones((1, m.shape[0]), np.float32) for m in matrices]
    started = time.perf_counter()
    for _ in range(length):
        for row, matrix in zip(rows, matrices):
            row @ matrix
    return length / (time.perf_counter() - started)


def machine() -> dict:
    """What every figure depends on: the CPU, the widest vector instructions it has (and
    the limit oneDNN is held to, if ONEDNN_MAX_CPU_ISA sets one), and the threads each
    framework computes with (PyTorch's are set to TensorFlow's: the same cores each)."""
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
        "tensorflow_threads": threads,
        "torch_threads": threads,
    }


def run_benchmark(cells=CELLS, steps: int = 8) -> dict:
    results = {"machine": machine(), "matmul_gflops": matmul_gflops(), "cells": {}}
    with tempfile.TemporaryDirectory(prefix="charlm-bench-") as root:
        root = Path(root)
        corpus = reference_corpus(root)
        for cell in cells:
            rate, torch_rate = train_chars_per_s(
                cell, corpus, root, steps, torch_step=torch_step_function(cell)
            )
            gflops = 3 * forward_flops_per_char(cell) * rate / 1e9
            entry = {
                "train_chars_per_s": rate,
                "train_gflops": gflops,
                "fraction_of_matmul_ceiling": gflops / results["matmul_gflops"],
                "stock_keras_chars_per_s": train_chars_per_s(cell, corpus, root, steps, "stock")[0],
            }
            if torch_rate:
                entry.update(torch_chars_per_s=torch_rate, ratio_to_torch=rate / torch_rate)
            results["cells"][cell] = entry
        if "lstm" in cells:
            results["sample_lstm_chars_per_s"] = {
                "1_stream": sampling_chars_per_s(root / "run-lstm-fused", 1, 2000),
                "64_streams": sampling_chars_per_s(root / "run-lstm-fused", 64, 500),
                "1_stream_weight_floor": one_stream_weight_floor(root / "run-lstm-fused"),
            }
    return results


def format_results(results: dict) -> str:
    described = results["machine"]
    limit = described["onednn_isa_limit"]
    lines = [
        f"CPU: {described['cpu']}, {described['instruction_set']}"
        + (f" (oneDNN limited to {limit} by ONEDNN_MAX_CPU_ISA)" if limit else "")
        + f"; threads: TensorFlow {described['tensorflow_threads']}, PyTorch "
        f"{described['torch_threads']} (set equal)",
        f"matmul ceiling (numpy float32 2048x2048, all cores): "
        f"{results['matmul_gflops']:.0f} GFLOP/s",
        "",
        "| cell | charlm train chars/s | GFLOP/s | of ceiling | stock Keras layers "
        "| PyTorch chars/s | charlm / PyTorch |",
        "|---|---|---|---|---|---|---|",
    ]
    for cell, entry in results["cells"].items():
        torch_rate = (
            f"{entry['torch_chars_per_s']:,.0f}"
            if "torch_chars_per_s" in entry
            else "not installed"
        )
        ratio = f"{entry['ratio_to_torch']:.2f}x" if "ratio_to_torch" in entry else "-"
        lines.append(
            f"| {cell} | {entry['train_chars_per_s']:,.0f} | "
            f"{entry['train_gflops']:.0f} | {entry['fraction_of_matmul_ceiling']:.0%} | "
            f"{entry['stock_keras_chars_per_s']:,.0f} | {torch_rate} | {ratio} |"
        )
    if "sample_lstm_chars_per_s" in results:
        sample = results["sample_lstm_chars_per_s"]
        lines += [
            "",
            f"sampling, 2x512 LSTM: {sample['1_stream']:,.0f} chars/s (1 stream), "
            f"{sample['64_streams']:,.0f} chars/s (64 streams)",
            f"one stream's bound, the model's matrix products alone (no other op): "
            f"{sample['1_stream_weight_floor']:,.0f} chars/s",
        ]
    return "\n".join(lines)
