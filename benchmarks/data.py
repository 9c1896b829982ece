"""`make bench-data`: does charlm stream? Peak memory of `charlm train` on a 1 MB and a
2 GB corpus, time to the first step with the corpus cached, corpus-pass MB/s, and the
input pipeline's batches/s against what the reference model consumes.

Everything is generated deterministically in a temporary directory and deleted
afterwards. Run it alone: another job on the machine changes its figures.

    python benchmarks/data.py [--gigabytes 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BLOCK_BYTES = 64 << 20
REFERENCE = [
    "model.cell=lstm",
    "model.layers=2",
    "model.units=512",
    "model.embedding_dim=64",
    "train.batch_size=64",
    "train.seq_length=100",
]


def generate_corpus(path: Path, size: int, seed: int = 0) -> None:
    """Pseudo-English with some non-ASCII words, `size` bytes, the same every time.

    A 64 MiB block of random words is written rotated by a different offset each time,
    so no stretch of the file repeats the previous one byte for byte.
    """
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, rng.integers(1, 9))) for _ in range(5000)]
    words += ["café", "naïve", "Ελλάδα", "日本語", "déjà"]
    block = bytearray()
    while len(block) < min(size, BLOCK_BYTES):
        picks = rng.integers(0, len(words), 200_000)
        line_breaks = rng.random(200_000) < 0.08
        block += "".join(
            words[i] + ("\n" if nl else " ") for i, nl in zip(picks, line_breaks)
        ).encode("utf-8")
    block = bytes(block[:BLOCK_BYTES]).decode("utf-8", "ignore").encode("utf-8")
    with open(path, "wb") as out:
        written = 0
        while written < size:
            shift = int(rng.integers(0, len(block)))
            piece = (block[shift:] + block[:shift])[: size - written]
            piece = piece.decode("utf-8", "ignore").encode("utf-8")  # whole characters only
            out.write(piece)
            written += len(piece)


def run_train(corpus: Path, run_dir: Path, cache: Path, steps: int) -> dict:
    """Run `charlm train` in a child process; its wall time and peak RSS (from wait4)."""
    settings = REFERENCE + [
        f"data.corpus={corpus}",
        f"train.run_dir={run_dir}",
        f"train.steps={steps}",
        f"train.eval_interval={steps}",
        "data.val_fraction=0.001",
        "data.val_max_chars=20000",
    ]
    command = [sys.executable, "-m", "charlm.cli", "train"]
    for setting in settings:
        command += ["--set", setting]
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        env=dict(os.environ, CHARLM_CACHE_DIR=str(cache)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"charlm train failed on {corpus}: {process.stderr.read().decode()}")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def corpus_pass_speed(corpus: Path, cache: Path) -> dict:
    """MB/s of the counting pass and of the encoding pass (both uncached)."""
    os.environ["CHARLM_CACHE_DIR"] = str(cache)
    from charlm.data.tokens import encode_corpus, scan_corpus

    size = corpus.stat().st_size
    started = time.perf_counter()
    stats = scan_corpus([corpus])
    counted = time.perf_counter()
    encode_corpus([corpus], stats.vocabulary())
    encoded = time.perf_counter()
    return {
        "count_mb_s": size / 1e6 / (counted - started),
        "encode_mb_s": size / 1e6 / (encoded - counted),
    }


def pipeline_speed(corpus: Path, cache: Path, batches: int = 2000) -> float:
    """Batches/s of the training input pipeline alone (reference batch 64 x 100)."""
    os.environ["CHARLM_CACHE_DIR"] = str(cache)
    from charlm.data.pipeline import training_dataset
    from charlm.data.split import Split
    from charlm.data.tokens import encode_corpus, scan_corpus

    tokens = encode_corpus([corpus], scan_corpus([corpus]).vocabulary())
    data = training_dataset(Split(tokens, 0, tokens.length), 64, 100, 0, 0, batches + 50)
    iterator = iter(data)
    for _ in range(50):  # warm up the prefetch threads
        next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches / (time.perf_counter() - started)


def model_consumption(steps: int = 6) -> float:
    """Steps/s the reference 2x512 LSTM trains at here (after compiling)."""
    import keras
    import tensorflow as tf

    from charlm.config import load_config
    from charlm.model.build import build_model
    from charlm.training.devices import resolve_jit
    from charlm.training.optimizer import build_optimizer

    config = load_config(None, REFERENCE)
    model = build_model(config.model, 66)
    model.compile(
        optimizer=build_optimizer(config.train, 1000),
        jit_compile=resolve_jit(config.train.jit_compile),  # as charlm train does
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = tf.random.uniform((64, 100), 0, 66, dtype=tf.int32)
    model.train_on_batch(x, x)
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, x)
    return steps / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="charlm-bench-data-") as root:
        root = Path(root)
        small, large = root / "small.txt", root / "large.txt"
        generate_corpus(small, 1 << 20)
        started = time.perf_counter()
        generate_corpus(large, int(args.gigabytes * (1 << 30)))
        print(
            f"generated {large.stat().st_size / 1e9:.2f} GB in "
            f"{time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        results.update(corpus_pass_speed(large, root / "pass-cache"))
        shutil_rmtree(root / "pass-cache")
        results["small"] = run_train(small, root / "run-small", root / "cache", steps=3)
        results["large_cold"] = run_train(large, root / "run-large", root / "cache", steps=3)
        results["large_cached"] = run_train(large, root / "run-large-2", root / "cache", steps=1)
        results["pipeline_batches_s"] = pipeline_speed(large, root / "cache")
    results["model_steps_s"] = model_consumption()
    report(results, args)


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def report(results: dict, args) -> None:
    if args.json:
        print(json.dumps(results, indent=2))
        return
    small, large = results["small"]["peak_rss_mb"], results["large_cold"]["peak_rss_mb"]
    allowed = max(0.10 * small, 100)
    print(
        f"peak RSS of charlm train: 1 MB corpus {small:.0f} MB, {args.gigabytes:g} GB corpus "
        f"{large:.0f} MB (difference {large - small:+.0f} MB; allowed {allowed:.0f} MB)"
    )
    print(
        f"counting pass {results['count_mb_s']:.0f} MB/s, encoding pass "
        f"{results['encode_mb_s']:.0f} MB/s"
    )
    print(
        f"time from `charlm train` to the end of step 1 with the corpus cached: "
        f"{results['large_cached']['wall_s']:.1f} s (includes start-up, compiling, one "
        f"evaluation and one checkpoint)"
    )
    ratio = results["pipeline_batches_s"] / results["model_steps_s"]
    print(
        f"input pipeline {results['pipeline_batches_s']:.0f} batches/s; the 2x512 LSTM "
        f"consumes {results['model_steps_s']:.2f} batches/s: {ratio:.0f}x headroom"
    )


if __name__ == "__main__":
    main()
