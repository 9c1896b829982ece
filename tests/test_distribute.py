"""Distributed training on CPU: MirroredStrategy over two logical CPU devices and two
worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy). Each must reach the loss
of a single-process run with the same global batch and seed."""

import json
import os
import subprocess
import sys

import pytest

from charlm.training.distribute import is_chief
from tests.helpers import TINY_SETTINGS

# Losses agree to float32 round-off: the gradients are the same sums in another order.
TOLERANCE = 1e-4


def train_process(run_dir, corpus, *args, env=None, steps=10):
    command = [sys.executable, "-m", "charlm.cli", "train", *args]
    for setting in TINY_SETTINGS + [
        f"data.corpus={corpus}",
        f"train.run_dir={run_dir}",
        f"train.steps={steps}",
        "train.eval_interval=5",
        "train.batch_size=8",
    ]:
        command += ["--set", setting]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=dict(os.environ, **(env or {}))
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def history(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    corpus = root / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 400)
    train_process(root / "run", corpus, "--set", "train.distribute=none")
    return corpus, history(root / "run")


def assert_same_losses(got, expected):
    assert [h["step"] for h in got] == [h["step"] for h in expected] == [5, 10]
    for a, b in zip(got, expected):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=TOLERANCE)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=TOLERANCE)


def test_mirrored_over_two_logical_cpus_matches_one_process(tmp_path, single_process):
    corpus, expected = single_process
    completed = train_process(
        tmp_path / "run",
        corpus,
        "--set",
        "train.distribute=mirrored",
        env={"CHARLM_CPU_DEVICES": "2"},
    )
    assert "MirroredStrategy over 2 devices" in completed.stderr
    assert_same_losses(history(tmp_path / "run"), expected)


def test_two_workers_match_one_process_and_only_the_chief_writes(tmp_path, single_process):
    corpus, expected = single_process
    completed = train_process(tmp_path / "run", corpus, "--workers", "2")
    assert "MultiWorkerMirroredStrategy, 2 workers, 2 replicas" in completed.stderr
    assert_same_losses(history(tmp_path / "run"), expected)  # one line per evaluation
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-00000005", "step-00000010"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        ".lock",
        "checkpoints",
        "config.yaml",
        "history.jsonl",
        "model.keras",
        "tensorboard",
        "vocab.json",
    ]
    # Restarting all workers with --resume continues from the last checkpoint.
    completed = train_process(
        tmp_path / "run", corpus, "--workers", "2", "--resume", tmp_path / "run", steps=15
    )
    assert "resuming" in completed.stderr
    assert [h["step"] for h in history(tmp_path / "run")] == [5, 10, 15]


@pytest.mark.parametrize(
    "config, chief",
    [
        (None, True),
        ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}, True),
        ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}, False),
        (
            {
                "cluster": {"chief": ["a:1"], "worker": ["b:2"]},
                "task": {"type": "worker", "index": 0},
            },
            False,
        ),
        (
            {
                "cluster": {"chief": ["a:1"], "worker": ["b:2"]},
                "task": {"type": "chief", "index": 0},
            },
            True,
        ),
    ],
)
def test_only_one_task_is_the_chief(monkeypatch, config, chief):
    if config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert is_chief() is chief


def test_batch_must_split_evenly_across_replicas(tmp_path, single_process):
    corpus, _ = single_process
    command = [
        sys.executable,
        "-m",
        "charlm.cli",
        "train",
        "--set",
        f"data.corpus={corpus}",
        "--set",
        f"train.run_dir={tmp_path / 'run'}",
        "--set",
        "train.batch_size=7",
        "--set",
        "train.distribute=mirrored",
        "--set",
        "train.steps=2",
    ]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, CHARLM_CPU_DEVICES="2"),
    )
    assert completed.returncode == 2
    assert "train.batch_size 7 must be a multiple of the 2 replicas" in completed.stderr
