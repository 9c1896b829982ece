"""`make bench-finetune`: what starting from a trained run gains on a small text.

Trains a base GRU on tiny Shakespeare, then trains on a small text (the first 100,000
characters of `builtin:pydoc`, Python's own reference text, which holds digits,
brackets, `_`, `=` and more that Shakespeare never uses) twice with the same config,
steps and seed: once fine-tuned from the base (`charlm train --init-from`), once from
scratch. Prints the table (base, steps, best validation losses, times), both runs' validation
losses at each evaluation, and the ratio.

    python benchmarks/finetune.py [CORPUS] [--base-steps 500] [--steps 300]

CORPUS defaults to data/tinyshakespeare.txt (`charlm data fetch tinyshakespeare`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FETCHED_CORPUS = Path("data/tinyshakespeare.txt")
SMALL_CHARS = 100_000
MODEL = ["model.cell=gru", "model.layers=1", "model.units=256", "model.embedding_dim=32"]
SHARED = ["train.batch_size=64", "train.seq_length=64", "train.seed=0"]
BASE = ["train.learning_rate=0.01", "train.schedule=cosine", "train.warmup_steps=50"]
# The small text's runs, both of them: a constant, lower rate and early stopping, as the
# README recommends for fine-tuning; from scratch gets the same, to compare like with like.
SMALL = [
    "train.learning_rate=0.002",
    "train.eval_interval=50",
    "train.early_stopping_patience=3",
]


def charlm_train(run: Path, corpus: Path, steps: int, *settings: str) -> dict:
    """`charlm train` as a user runs it; the run's best validation loss, steps and times."""
    every = [*MODEL, *SHARED, f"data.corpus={corpus}", f"train.run_dir={run}"]
    every += [f"train.steps={steps}", *settings]
    command = [sys.executable, "-m", "charlm.cli", "train"]
    command += [part for item in every for part in ("--set", item)]
    started = time.perf_counter()
    completed = subprocess.run(command, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if completed.returncode:
        raise SystemExit(f"charlm train failed:\n{completed.stderr[-2000:]}")
    checkpoints = sorted((run / "checkpoints").iterdir())
    state = json.loads((checkpoints[-1] / "state.json").read_text())
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    curve = {record["step"]: record["val_loss"] for record in history}
    return dict(state, wall_s=wall, corpus=corpus.name, curve=curve)


def small_text(root: Path) -> Path:
    """The first SMALL_CHARS characters of builtin:pydoc (it differs by Python version)."""
    from charlm.data.sources import builtin_corpus

    text = builtin_corpus("pydoc", "data.corpus").read_text(encoding="utf-8")[:SMALL_CHARS]
    path = root / f"pydoc-{sys.version_info[0]}.{sys.version_info[1]}-{SMALL_CHARS}.txt"
    path.write_text(text, encoding="utf-8")
    return path


def new_characters(base_corpus: Path, small: Path) -> str:
    seen = set(base_corpus.read_text(encoding="utf-8"))
    return "".join(sorted(set(small.read_text(encoding="utf-8")) - seen))


def table(rows: list[tuple[str, dict]]) -> str:
    lines = [
        "| run | corpus | steps (best at) | best val loss | training time | wall time |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['corpus']} | {r['step']} ({r['best_step']}) | "
            f"{r['best_val_loss']:.4f} | {r['elapsed_s']:.0f} s | {r['wall_s']:.0f} s |"
        )
    return "\n".join(lines)


def curves(tuned: dict, scratch: dict) -> str:
    """Validation loss at each evaluation of the two runs on the small text."""
    lines = ["| step | fine-tuned | from scratch |", "|---|---|---|"]
    for step in sorted(set(tuned["curve"]) | set(scratch["curve"])):
        pair = [run["curve"].get(step) for run in (tuned, scratch)]
        lines.append(
            f"| {step} | " + " | ".join(f"{v:.4f}" if v is not None else "-" for v in pair) + " |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=FETCHED_CORPUS)
    parser.add_argument("--base-steps", type=int, default=500)
    parser.add_argument("--steps", type=int, default=300, help="Steps on the small text.")
    args = parser.parse_args()
    if not args.corpus.exists():
        raise SystemExit(
            f"{args.corpus} does not exist: run `charlm data fetch tinyshakespeare` "
            f"or give the corpus's path"
        )
    with tempfile.TemporaryDirectory(prefix="charlm-finetune-") as name:
        root = Path(name)
        small = small_text(root)
        print(f"small text: {small.name}, new characters {new_characters(args.corpus, small)!r}")
        base = charlm_train(
            root / "base",
            args.corpus,
            args.base_steps,
            *BASE,
            f"train.eval_interval={args.base_steps // 3}",
        )
        tuned = charlm_train(
            root / "tuned", small, args.steps, *SMALL, f"train.init_from={root / 'base'}"
        )
        scratch = charlm_train(root / "scratch", small, args.steps, *SMALL)
    print(table([("base", base), ("fine-tuned from base", tuned), ("from scratch", scratch)]))
    print(curves(tuned, scratch))
    ratio = tuned["best_val_loss"] / scratch["best_val_loss"]
    print(f"fine-tuned / from scratch best validation loss: {ratio:.3f}")


if __name__ == "__main__":
    main()
