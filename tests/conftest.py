"""Shared fixtures: a private cache, generated corpora and a tiny trained run."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

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


def pytest_configure(config):
    """Two logical CPU devices for the whole session, so MirroredStrategy can be tried in
    process (they must exist before TensorFlow starts; nothing else uses the second)."""
    from charlm.training.distribute import split_cpu

    split_cpu(2)


def pytest_terminal_summary(terminalreporter):
    """How many cases of the combination matrix (tests/test_matrix.py) ran."""
    cases = getattr(terminalreporter.config, "charlm_matrix_cases", [])
    if cases:
        terminalreporter.write_line(
            f"combination matrix: {len(cases)} cases ran ({cases.count('trained')} trained, "
            f"resumed, sampled and evaluated; {cases.count('refused')} refused in one line)"
        )


@pytest.fixture(autouse=True)
def float32_policy():
    """A test that trains in mixed precision leaves Keras's global policy float32 again."""
    yield
    import keras

    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Every test gets a cache of its own: no test sees another's cached vocabulary."""
    monkeypatch.setenv("CHARLM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


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


@pytest.fixture
def corpus_file(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(generated_text(20_000, extra="éλ"), encoding="utf-8")
    return path


def tiny_config(corpus: Path, run_dir: Path, *more: str):
    return load_config(
        None, TINY_SETTINGS + [f"data.corpus={corpus}", f"train.run_dir={run_dir}", *more]
    )


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One tiny run shared by the sampling, eval and info tests (they only read it)."""
    from charlm.training.loop import train

    root = tmp_path_factory.mktemp("trained")
    import os

    os.environ.setdefault("CHARLM_CACHE_DIR", str(root / "cache"))
    corpus = root / "corpus.txt"
    corpus.write_text(generated_text(20_000, extra="éλ"), encoding="utf-8")
    train(tiny_config(corpus, root / "run", "train.steps=30", "train.eval_interval=15"))
    return root / "run"
