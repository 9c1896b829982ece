"""Commands that need no model answer without importing TensorFlow or Keras (seconds of
start-up): help, `data`, and errors found before any model is touched. Each runs the
real command in a process where importing either fails loudly."""

from __future__ import annotations

import subprocess
import sys

import pytest

TRAPPED = ("tensorflow", "keras")


@pytest.fixture
def no_tensorflow(tmp_path):
    """A PYTHONPATH on which `import tensorflow` and `import keras` raise."""
    for name in TRAPPED:
        package = tmp_path / "trap" / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f"raise ImportError('{name} was imported')\n")
    return str(tmp_path / "trap")


def charlm(trap: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "charlm.cli", *args],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": trap, "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["train", "--help"],
        ["sample", "--help"],
        ["eval", "--help"],
        ["info", "--help"],
        ["bench", "--help"],
        ["data", "--help"],
        ["data", "fetch", "--help"],
        ["data", "stats", "--help"],
    ],
)
def test_help_does_not_import_tensorflow(no_tensorflow, args):
    completed = charlm(no_tensorflow, *args)
    assert completed.returncode == 0, completed.stderr
    assert "Usage" in completed.stdout


def test_data_commands_do_not_import_tensorflow(no_tensorflow, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("hello world\n")
    completed = charlm(no_tensorflow, "data", "stats", str(text))
    assert completed.returncode == 0, completed.stderr
    assert "characters: 12" in completed.stdout
    refused = charlm(no_tensorflow, "data", "fetch", "nothing-known")
    assert refused.returncode == 2 and "unknown corpus 'nothing-known'" in refused.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--set", "model.cell=transformer"], "model.cell must be one of"),
        (["train", "missing.yaml"], "config file missing.yaml does not exist"),
        (["sample", "-c", "anywhere", "--top-p", "2"], "--top-p must be above 0 and at most 1"),
    ],
)
def test_errors_found_before_any_model_do_not_import_tensorflow(no_tensorflow, args, fragment):
    completed = charlm(no_tensorflow, *args)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [completed.stderr.strip()]
    assert fragment in completed.stderr and "was imported" not in completed.stderr


def test_the_trap_works(no_tensorflow, tmp_path):
    """A command that needs TensorFlow does fail under the trap: the tests above could fail."""
    completed = charlm(no_tensorflow, "info", "-c", str(tmp_path))
    assert "tensorflow was imported" in completed.stderr
