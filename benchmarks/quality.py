"""`make bench-quality`: a Shakespeare preset, end to end, as a user runs it.

Trains configs/shakespeare-quick.yaml (100-second budget) on tiny Shakespeare, then
scores the validation slice (the last 10% of characters, never trained on) with
`charlm eval` (in windows of the config's train.eval_seq_length), and prints both.
The 15-minute preset: `make bench-quality CONFIG=configs/shakespeare.yaml`.

    python benchmarks/quality.py [CORPUS] [--config configs/shakespeare-quick.yaml]

CORPUS defaults to data/tinyshakespeare.txt (`charlm data fetch tinyshakespeare`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from charlm.config import load_config

FETCHED_CORPUS = Path("data/tinyshakespeare.txt")


def charlm(*args: str) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [sys.executable, "-m", "charlm.cli", *args], text=True, stdout=subprocess.PIPE
    )
    if completed.returncode:
        raise SystemExit(f"charlm {args[0]} failed (exit {completed.returncode})")
    return completed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=FETCHED_CORPUS)
    parser.add_argument("--config", default="configs/shakespeare-quick.yaml")
    args = parser.parse_args()
    corpus = args.corpus
    if not corpus.exists():
        raise SystemExit(
            f"{corpus} does not exist: run `charlm data fetch tinyshakespeare` "
            f"or give the corpus's path"
        )
    text = corpus.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="charlm-quality-") as root:
        run_dir = Path(root) / "run"
        charlm(
            "train",
            args.config,
            "--set",
            f"data.corpus={corpus}",
            "--set",
            f"train.run_dir={run_dir}",
        )
        validation = Path(root) / "validation.txt"
        validation_text = text[int(len(text) * 0.9) :]  # the config's val_fraction: 0.1
        validation.write_text(validation_text, encoding="utf-8")
        scored = charlm("eval", "--checkpoint", str(run_dir), str(validation)).stdout.strip()
    window = load_config(args.config).train.eval_length
    print(
        f"{args.config} on {corpus}: validation (last 10%, {len(validation_text):,} "
        f"chars, windows of {window}): {scored}"
    )


if __name__ == "__main__":
    main()
