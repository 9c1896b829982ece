"""Issue #30, files and config: hostile or damaged input to the command line (a config
file, a run directory, a corpus path) gets one true line, never a traceback or a wrong
reason, and a damaged run is resumed from what is intact. Through the real `charlm`."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import fields
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charlm.cli import app
from charlm.config import load_config
from charlm.config.schema import SECTION_CLASSES
from charlm.run.rundir import HistoryWarning, RunDir
from tests.helpers import one_clean_error

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of the session's tiny trained run (30 steps, checkpoints at 15, 30)."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


def checkpoint(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:08d}"


# ------------------------------------------------------------ 10: exponent floats
def test_exponent_floats_are_numbers_in_files_and_overrides(tmp_path):
    config = tmp_path / "lr.yaml"
    config.write_text("train:\n  learning_rate: 3e-4\n  steps: 10\n  epochs: 2\n")
    # The steps/epochs clash is checked after every value: reaching it means 3e-4 passed.
    result = invoke("train", config)
    one_clean_error(result, "train.steps and train.epochs are both set")
    result = invoke("train", config, "--set", "train.learning_rate=1e-3")
    one_clean_error(result, "train.steps and train.epochs are both set")
    assert load_config(config, ["train.epochs=null"]).train.learning_rate == 3e-4


def float_keys():
    return [
        f"{section}.{f.name}"
        for section, cls in SECTION_CLASSES.items()
        for f in fields(cls)
        if f.metadata.get("kind") == "float"
    ]


@pytest.mark.parametrize("key", float_keys())
def test_every_float_key_takes_an_exponent(key):
    section, name = key.split(".")
    assert getattr(getattr(load_config(None, [f"{key}=5e-1"]), section), name) == 0.5


# ------------------------------------------------------------ 11: billion laughs
def laughs(levels: int) -> str:
    """A YAML list whose last item, fully expanded, holds 3 x 9**levels strings."""
    items = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    items += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return f"[{', '.join(items)}]"


@pytest.mark.parametrize("key", ["train.learning_rate", "data.corpus", "model.cell"])
def test_nested_anchors_in_a_config_value_give_a_short_line(tmp_path, key):
    section, name = key.split(".")
    config = tmp_path / "laughs.yaml"
    config.write_text(f"{section}:\n  {name}: {laughs(9)}\n")
    started = time.perf_counter()
    result = invoke("train", config)
    one_clean_error(result, key)
    assert len(result.stderr) < 300, result.stderr
    assert time.perf_counter() - started < 10
    result = invoke("train", "--set", f"{key}={laughs(9)}")
    one_clean_error(result, key)
    assert len(result.stderr) < 300, result.stderr


@pytest.mark.slow
# ------------------------------------------------------------ 12: a garbage history line
def test_a_garbage_history_line_is_skipped_with_one_warning(run_copy):
    with open(run_copy / "history.jsonl", "a", encoding="utf-8") as stream:
        stream.write('{"step": 31, "val_lo\n\x00\xff not json\n[1, 2]\n')
    with pytest.warns(HistoryWarning, match="3 line") as caught:
        result = invoke("train", "--resume", run_copy, "--set", "train.steps=31")
    assert result.exit_code == 0, result.output
    assert "stopped by steps at step 31" in result.stderr
    assert len([w for w in caught if w.category is HistoryWarning]) == 1  # once per file
    steps = [h["step"] for h in RunDir(run_copy).history()]
    assert steps == [15, 30, 31]


@pytest.mark.slow
def test_the_server_reports_a_history_with_a_garbage_line(run_copy):
    import httpx

    from tests.helpers import Server

    with open(run_copy / "history.jsonl", "a", encoding="utf-8") as stream:
        stream.write("garbage {\n")
    server = Server(run_copy, "--lanes", 2)
    try:
        response = httpx.get(f"{server.url}/v1/run", timeout=60)
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    assert [h["step"] for h in response.json()["history"]] == [15, 30]


def test_charlm_warnings_print_as_one_line():
    from charlm.cli.app import one_line_warning

    line = one_line_warning("x.jsonl: 1 line(s) skipped", HistoryWarning, "f.py", 3)
    assert line == "charlm: warning: x.jsonl: 1 line(s) skipped\n"


# ------------------------------------------------------------ 13: the vocabulary's digest
def swap_two_characters(run: Path) -> None:
    path = run / "vocab.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["chars"][3], data["chars"][4] = data["chars"][4], data["chars"][3]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def test_an_edited_vocabulary_is_refused_everywhere(run_copy):
    assert json.loads((checkpoint(run_copy, 30) / "state.json").read_text())["vocab_digest"]
    swap_two_characters(run_copy)
    vocab = f"a different vocabulary than {run_copy / 'vocab.json'} (edited"
    one_clean_error(invoke("sample", "--checkpoint", run_copy, "--length", 5), vocab)
    one_clean_error(invoke("info", "--checkpoint", run_copy), vocab)
    one_clean_error(invoke("train", "--resume", run_copy, "--set", "train.steps=31"), vocab)


def test_a_checkpoint_without_a_digest_still_loads(run_copy):
    for step in (15, 30):
        state_path = checkpoint(run_copy, step) / "state.json"
        state = json.loads(state_path.read_text())
        del state["vocab_digest"]  # as charlm wrote it before the digest
        state_path.write_text(json.dumps(state))
    result = invoke("sample", "--checkpoint", run_copy, "--length", 5, "--seed", 1)
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------ 14: resuming a damaged run
def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


@pytest.mark.slow
def test_resume_falls_back_to_the_newest_intact_checkpoint(run_copy):
    truncate(checkpoint(run_copy, 30) / "model.keras")
    result = invoke("train", "--resume", run_copy, "--set", "train.steps=31")
    assert result.exit_code == 0, result.output
    assert "damaged checkpoint step-00000030" in result.stderr
    assert "resuming from step-00000015" in result.stderr
    assert "stopped by steps at step 31" in result.stderr
    assert (run_copy / "checkpoints" / "damaged-step-00000030").is_dir()  # kept, set aside
    assert RunDir(run_copy).latest_checkpoint().name == "step-00000031"


def test_sampling_reads_the_newest_readable_state(run_copy):
    (checkpoint(run_copy, 30) / "state.json").write_text("{ damaged")
    result = invoke("info", "--checkpoint", run_copy / "model.keras")
    assert result.exit_code == 0, result.output
    assert "steps: 15;" in result.stdout


@pytest.mark.slow
def test_resume_from_a_named_checkpoint(run_copy):
    older = checkpoint(run_copy, 15)
    result = invoke("train", "--resume", older, "--set", "train.steps=31")
    one_clean_error(result, f"resume {run_copy}")  # what it advises is accepted:
    assert "earlier checkpoint" not in result.stderr
    result = invoke("train", "--resume", checkpoint(run_copy, 30), "--set", "train.steps=31")
    assert result.exit_code == 0, result.output
    assert "stopped by steps at step 31" in result.stderr
    assert f"run directory {run_copy}" in result.stderr


# ------------------------------------------------------------ 15: true one-liners
@pytest.fixture
def odd_paths(tmp_path) -> dict[str, Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    return {
        "does not exist": tmp_path / "missing.txt",
        "is a symlink loop": tmp_path / "loop-a",
        "is not a regular file": fifo,
    }


def test_each_unreadable_path_gets_its_true_reason(trained_run, odd_paths):
    for reason, path in odd_paths.items():
        one_clean_error(invoke("eval", "--checkpoint", trained_run, path), f"{path} {reason}")
        one_clean_error(
            invoke("train", "--set", f"data.corpus={path}"), f"data.corpus: {path} {reason}"
        )
        one_clean_error(invoke("train", path), f"config file {path} {reason}")
        one_clean_error(invoke("info", "--checkpoint", path), f"{path} {reason}")


def test_a_truncated_model_is_called_truncated(run_copy):
    truncate(run_copy / "model.keras")
    result = invoke("sample", "--checkpoint", run_copy / "model.keras", "--length", 5)
    one_clean_error(result, "(it is truncated or corrupt)")
    assert "not found" not in result.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["sample", "--checkpoint", "x", "--length", "1e3"], "--length: '1e3' is not a whole"),
        (["sample", "--checkpoint", "x", "--temperature", "hot"], "--temperature: 'hot' is not"),
        (["train", "--workers", "two"], "--workers: 'two' is not a whole number"),
        (["eval", "--checkpoint", "x"], "Missing argument"),
        (["trian"], "No such command 'trian'"),
    ],
)
def test_usage_errors_are_one_line(args, fragment):
    one_clean_error(invoke(*args), fragment)
