"""Multi-worker training patches two private Keras functions; it is allowed only on the
Keras they were verified on, and refused in one line anywhere else."""

from __future__ import annotations

import json

import keras
import pytest
from keras.src.backend.tensorflow import trainer

from charlm.errors import ConfigError
from charlm.training import keras_compat
from tests.helpers import tiny_config


def test_the_installed_keras_is_the_one_the_fixes_were_made_for():
    """Fails when a Keras upgrade changes either patched function (or its version): the
    fixes must then be checked again and their digests updated."""
    assert keras_compat.unsupported_reason() is None


@pytest.mark.parametrize("version", ["3.4.1", "3.16.0", "4.0.0"])
def test_a_keras_outside_the_tested_range_is_refused(version):
    assert "outside the tested range 3.15.x" in keras_compat.unsupported_reason(version)


def test_a_changed_private_function_is_refused(monkeypatch):
    def reduce_per_replica(values, strategy, reduction):  # same name, other code
        return values

    monkeypatch.setattr(trainer, "reduce_per_replica", reduce_per_replica)
    assert "reduce_per_replica is not the function" in keras_compat.unsupported_reason()
    monkeypatch.delattr(trainer.TensorFlowTrainer, "_maybe_symbolic_build")
    monkeypatch.setattr(trainer, "reduce_per_replica", reduce_per_replica)
    assert "is not the function" in keras_compat.unsupported_reason()


def test_multi_worker_on_another_keras_is_refused_before_any_work(
    tmp_path, corpus_file, monkeypatch
):
    from charlm.training.loop import train

    monkeypatch.setattr(keras, "__version__", "3.4.1")
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps(
            {
                "cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                "task": {"type": "worker", "index": 0},
            }
        ),
    )
    with pytest.raises(
        ConfigError,
        match=r"multi_worker needs Keras 3\.15\.x \(Keras 3\.4\.1 "
        r"is outside the tested range",
    ):
        train(tiny_config(corpus_file, tmp_path / "run", "train.distribute=multi_worker"))
    assert not (tmp_path / "run").exists()


def test_the_cli_refuses_it_in_one_line(tmp_path, corpus_file):
    """Through the real command: a fake Keras version, one `charlm: error:` line, exit 2."""
    import subprocess
    import sys

    script = (
        "from charlm.cli.app import quiet_tensorflow_start; quiet_tensorflow_start(); "
        "import keras; keras.__version__ = '3.4.1'; import sys; "
        "sys.argv = ['charlm'] + sys.argv[1:]; from charlm.cli import main; main()"
    )
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "train",
            "--set",
            f"data.corpus={corpus_file}",
            "--set",
            f"train.run_dir={tmp_path / 'run'}",
            "--set",
            "train.distribute=multi_worker",
        ],
        capture_output=True,
        text=True,
        env={
            "TF_CONFIG": json.dumps(
                {"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}
            ),
            "PATH": "/usr/bin:/bin",
            "CHARLM_CACHE_DIR": str(tmp_path / "cache"),
        },
    )
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "charlm: error: train.distribute: multi_worker needs Keras 3.15.x"
    )
