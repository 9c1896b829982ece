"""Helpers shared by the test modules (test modules import from here, never from each
other): generated corpora, the tiny model's settings, and running the CLI in process."""

from __future__ import annotations

import random
from pathlib import Path

from typer.testing import CliRunner

from charlm.cli import app
from charlm.config import load_config

WORDS = (
    "the cat sat on a mat and then it ran to see what was in the box; "
    "a dog came by, and they both looked at the sky. "
).split()
TINY_SETTINGS = [
    "model.cell=gru",
    "model.layers=1",
    "model.units=16",
    "model.embedding_dim=8",
    "train.batch_size=4",
    "train.seq_length=16",
    "train.steps=12",
    "train.eval_interval=6",
    "train.learning_rate=0.01",
    "data.val_max_chars=2000",
]

runner = CliRunner()


def generated_text(chars: int, seed: int = 0, extra: str = "") -> str:
    """Deterministic pseudo-English with line breaks (and `extra` characters sprinkled in)."""
    rng = random.Random(seed)
    words = list(WORDS) + list(extra)
    out, size = [], 0
    while size < chars:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + "\n"
        out.append(line)
        size += len(line)
    return "".join(out)[:chars]


def tiny_config(corpus: Path, run_dir: Path, *more: str):
    """The tiny model's Config on `corpus`, writing into `run_dir`, with `more` overrides."""
    return load_config(
        None, TINY_SETTINGS + [f"data.corpus={corpus}", f"train.run_dir={run_dir}", *more]
    )


def invoke(*args):
    """`charlm ARGS...` through the Typer app in this process."""
    return runner.invoke(app, [str(a) for a in args])


def sets(*settings):
    """`--set` options for each `key=value`."""
    return [part for s in settings for part in ("--set", s)]


def one_clean_error(result, fragment):
    """A user error: exit 2, one line on stderr naming the problem, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charlm: error:"), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
