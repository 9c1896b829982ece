"""End to end through the real `charlm` command (Typer app in-process, or a subprocess
where signals and process death are the point)."""

import hashlib
import http.server
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest

from charlm.data import fetch
from tests.helpers import TINY_SETTINGS, generated_text, invoke, one_clean_error, sets


@pytest.mark.slow
@pytest.mark.parametrize(
    "cell", ["simple_rnn", pytest.param("lstm", marks=pytest.mark.slow), "gru"]
)
def test_train_resume_sample_eval_info_for_each_cell(tmp_path, corpus_file, cell):
    run = tmp_path / "run"
    settings = sets(
        *TINY_SETTINGS,
        f"model.cell={cell}",
        f"data.corpus={corpus_file}",
        f"train.run_dir={run}",
        "train.steps=6",
    )
    result = invoke("train", *settings)
    assert result.exit_code == 0, result.output
    assert "parameters" in result.stderr and "stopped by steps at step 6" in result.stderr

    result = invoke("train", "--resume", run, *sets("train.steps=12"))
    assert result.exit_code == 0, result.output
    assert "resuming" in result.stderr and "at step 12" in result.stderr

    result = invoke("sample", "--checkpoint", run, "--length", 50, "--seed", 3, "--prime", "the")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("the") and len(result.stdout) == 3 + 50 + 1
    assert "chars/s" in result.stderr
    again = invoke("sample", "--checkpoint", run, "--length", 50, "--seed", 3, "--prime", "the")
    assert again.stdout == result.stdout

    result = invoke("eval", "--checkpoint", run, corpus_file)
    assert result.exit_code == 0, result.output
    nats, bits = float(result.stdout.split()[0]), float(result.stdout.split()[2])
    assert 0 < nats < 6 and bits == pytest.approx(nats / 0.693147, rel=1e-3)

    result = invoke("info", "--checkpoint", run)
    assert result.exit_code == 0 and f"cell: {cell}" in result.stdout
    assert "steps: 12" in result.stdout


@pytest.mark.slow
def test_sample_options(trained_run):
    result = invoke(
        "sample",
        "-c",
        trained_run,
        "--length",
        30,
        "--num-samples",
        3,
        "--top-k",
        5,
        "--top-p",
        0.9,
        "--temperature",
        1.2,
        "--seed",
        1,
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.count("--- sample") == 2
    argmax = invoke("sample", "-c", trained_run, "--length", 30, "--argmax")
    zero = invoke("sample", "-c", trained_run, "--length", 30, "--temperature", 0)
    assert argmax.stdout == zero.stdout


def test_unknown_prime_characters_warn(trained_run):
    result = invoke("sample", "-c", trained_run, "--length", 10, "--prime", "the 🐍", "--seed", 1)
    assert result.exit_code == 0 and "warning" in result.stderr and "🐍" in result.stderr
    assert result.stdout.startswith("the ")


@pytest.mark.parametrize(
    "option, value, fragment",
    [
        ("--length", -1, "--length must be 0 or more"),
        ("--top-p", 2, "--top-p must be above 0 and at most 1"),
        ("--top-p", 0, "--top-p must be above 0"),
        ("--top-k", -2, "--top-k must be 0"),
        ("--temperature", -1, "--temperature must be 0"),
        ("--num-samples", 0, "--num-samples must be between 1 and"),
    ],
)
def test_bad_sampling_options(trained_run, option, value, fragment):
    one_clean_error(invoke("sample", "-c", trained_run, option, value), fragment)


def test_missing_and_corrupt_checkpoints(tmp_path, trained_run):
    one_clean_error(invoke("sample", "-c", tmp_path / "nowhere"), "does not exist")
    (tmp_path / "empty").mkdir()
    one_clean_error(invoke("info", "-c", tmp_path / "empty"), "holds no model.keras")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.keras").write_bytes(b"not a zip file")
    (corrupt / "vocab.json").write_text((trained_run / "vocab.json").read_text())
    one_clean_error(invoke("sample", "-c", corrupt), "not a loadable charlm model")


def test_checkpoint_from_a_different_vocabulary(tmp_path, trained_run):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(trained_run, other)
    (other / "vocab.json").write_text('{"chars": ["a", "b"]}')
    one_clean_error(invoke("sample", "-c", other), "different vocabulary")


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("model:\n  cell: [lstm\n", "not valid YAML"),
        ("model:\n  units: -5\n", "model.units must be between 1"),
        ("model:\n  cells: lstm\n", "did you mean model.cell"),
        ("train:\n  batch_size: lots\n", "train.batch_size must be a whole number"),
    ],
)
def test_bad_config_files(tmp_path, content, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(content)
    one_clean_error(invoke("train", path), fragment)


def bad_corpus_cases(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("too short")
    (tmp_path / "binary.bin").write_bytes(b"\x7fELF\0\0\0\x01")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (tmp_path / "nodir").mkdir()
    return [
        ("empty.txt", "is empty"),
        ("short.txt", "fewer than one sequence"),
        ("binary.bin", "binary"),
        ("latin1.txt", "invalid UTF-8 at byte offset 3"),
        ("nodir", "holds no text files"),
        ("absent.txt", "does not exist"),
    ]


def test_bad_corpora(tmp_path):
    for name, fragment in bad_corpus_cases(tmp_path):
        result = invoke(
            "train",
            *sets(
                *TINY_SETTINGS,
                f"data.corpus={tmp_path / name}",
                f"train.run_dir={tmp_path / 'run'}",
            ),
        )
        one_clean_error(result, fragment)


def test_set_on_a_key_that_does_not_exist():
    one_clean_error(invoke("train", "--set", "model.unitz=5"), "did you mean model.units")


def test_eval_of_missing_file(trained_run, tmp_path):
    one_clean_error(invoke("eval", "-c", trained_run, tmp_path / "none.txt"), "does not exist")


def test_data_stats(tmp_path):
    (tmp_path / "a.txt").write_text("hello λλ")
    result = invoke("data", "stats", tmp_path / "a.txt", "--top", 2)
    assert result.exit_code == 0
    assert "characters: 8" in result.stdout and "distinct characters: 6" in result.stdout
    assert "'l' 2" in result.stdout and "'λ' 2" in result.stdout


@pytest.fixture
def local_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def fetch_served(base: str, dest):
    """`charlm data fetch tinyshakespeare` from the local server's input.txt."""
    return invoke("data", "fetch", "tinyshakespeare", "--dest", dest, "--url", f"{base}/input.txt")


def test_data_fetch_verifies_the_download(tmp_path, local_server, monkeypatch):
    served, base = local_server
    text = generated_text(5000).encode()
    (served / "input.txt").write_bytes(text)
    known = dict(fetch.KNOWN_CORPORA["tinyshakespeare"], sha256=hashlib.sha256(text).hexdigest())
    monkeypatch.setitem(fetch.KNOWN_CORPORA, "tinyshakespeare", known)
    result = fetch_served(base, tmp_path / "data")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "tinyshakespeare.txt").read_bytes() == text


def test_data_fetch_refuses_a_wrong_file(tmp_path, local_server):
    served, base = local_server
    (served / "input.txt").write_text("not shakespeare")
    result = fetch_served(base, tmp_path / "data")
    one_clean_error(result, "has sha256")
    assert not (tmp_path / "data" / "tinyshakespeare.txt").exists()
    one_clean_error(invoke("data", "fetch", "nosuch"), "unknown corpus")


# ---------------------------------------------------------------- real processes


def charlm_process(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "charlm.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
@pytest.mark.slow
def test_signal_saves_and_prints_the_resume_command(tmp_path, corpus_file, signum):
    import signal

    run = tmp_path / "run"
    process = endless_training(corpus_file, run)
    wait_for(
        lambda: (
            (run / "history.jsonl").exists()
            or process.poll() is not None
            or (run / "config.yaml").exists()
        )
    )
    time.sleep(3)  # let it train some steps
    process.send_signal(getattr(signal, signum))
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert f"resume with: charlm train --resume {run}" in err
    assert "Traceback" not in err
    from charlm.run.rundir import RunDir

    assert RunDir(run).latest_checkpoint() is not None


@pytest.mark.slow
def test_kill_9_while_saving_leaves_a_loadable_checkpoint(tmp_path, corpus_file):
    """kill -9 while a checkpoint or model.keras is half written (its temporary file is
    there): the latest checkpoint and model.keras still load, and the run resumes,
    cleaning up what the killed save left."""
    import keras

    from charlm.run.rundir import RunDir, read_state

    run = tmp_path / "run"
    settings = sets(
        *TINY_SETTINGS,
        f"data.corpus={corpus_file}",
        f"train.run_dir={run}",
        "train.steps=1000000",
        "train.eval_interval=1",
    )
    left = []
    for attempt in range(4):
        args = ["train", *settings] if attempt == 0 else ["train", "--resume", run]
        left = kill_while_saving(charlm_process(*args), run)
        if left:
            break
    assert left, "no kill landed while a save was under way"
    latest = RunDir(run).latest_checkpoint()
    step = read_state(latest).step
    keras.saving.load_model(latest / "model.keras")
    keras.saving.load_model(run / "model.keras")
    result = invoke("train", "--resume", run, *sets(f"train.steps={step + 2}"))
    assert result.exit_code == 0, result.output
    assert not partial_saves(run)
    assert RunDir(run).latest_checkpoint().name == f"step-{step + 2:08d}"


@pytest.mark.slow
def test_second_writer_is_refused_while_the_first_runs(tmp_path, corpus_file):
    run = tmp_path / "run"
    process = endless_training(corpus_file, run)
    try:
        wait_for(lambda: (run / "config.yaml").exists())
        result = invoke("train", "--resume", run)
        one_clean_error(result, "is in use by charlm train (pid")
    finally:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_a_user_error_from_the_real_command_has_no_traceback(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "charlm.cli", "sample", "--checkpoint", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        f"charlm: error: run {tmp_path / 'nothing'} does not exist; give a run "
        f"directory (train.run_dir of a finished run)"
    ]


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once(tmp_path, corpus_file, monkeypatch):
    """The first SIGINT asks for a stop at the next step; a second one, sent while that
    stop is still saving, leaves at once, even from code that catches every exception
    (as Keras's saving does): exit 130, "charlm: interrupted", no traceback, and whatever
    checkpoint is there loads."""
    import os
    import signal

    import keras

    from charlm.run.rundir import RunDir
    from charlm.training.callbacks import StopRequest

    exits = []
    monkeypatch.setattr(os, "_exit", lambda code: exits.append(code))
    stop = StopRequest(exit_on_second_interrupt=True)  # as `charlm train` makes it
    stop.handle_signal(signal.SIGINT, None)
    assert stop.reason == "interrupted" and exits == []
    stop.handle_signal(signal.SIGINT, None)
    assert exits == [130]
    monkeypatch.undo()
    # From Python (charlm.train) a second interrupt raises instead: the process lives on.
    library_stop = StopRequest()
    library_stop.handle_signal(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):
        library_stop.handle_signal(signal.SIGINT, None)

    run = tmp_path / "run"
    process = endless_training(corpus_file, run, save_delay=60)
    err = collected_stderr(process)
    wait_for(lambda: "parameters" in "".join(err) or process.poll() is not None)
    time.sleep(1)  # the start-up line comes just before the signal handlers and step 1
    process.send_signal(signal.SIGINT)
    wait_for(lambda: sleeping_marker(run).exists() or process.poll() is not None, timeout=60)
    assert process.poll() is None and partial_saves(run), "".join(err)
    process.send_signal(signal.SIGINT)
    # The save sleeps for a minute: only the second Ctrl-C can end it within 30 s.
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        code = None
    assert code == 130, "".join(err)
    assert "charlm: interrupted" in "".join(err)
    assert "Traceback" not in "".join(err)
    latest = RunDir(run).latest_checkpoint()
    if latest:
        keras.saving.load_model(latest / "model.keras")


def test_eval_counts_characters_outside_the_vocabulary(trained_run, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat 🐍 on the mat 🐍\n" * 20)
    result = invoke("eval", "-c", trained_run, text)
    assert result.exit_code == 0, result.output
    assert "40 unknown" in result.stdout


@pytest.mark.slow
def test_bench_times_a_cell_through_the_cli_and_prints_json(monkeypatch):
    """The real benchmark on a small model, one cell, two timed steps (PyTorch left
    out so the test does not depend on it being installed)."""
    import json

    from charlm.bench import reference, report, training

    monkeypatch.setattr(report, "importable_torch", lambda threads: None)
    # A small model in place of the reference: the test is of the command, not the figures.
    for key, value in {"units": 32, "embedding_dim": 8, "batch_size": 8, "seq_length": 20}.items():
        monkeypatch.setitem(reference.REFERENCE, key, value)
    monkeypatch.setattr(training, "VALIDATION_CHARS", 2_000)
    result = invoke("bench", "--cells", "simple_rnn", "--steps", "2", "--json")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    entry = figures["cells"]["simple_rnn"]
    assert figures["matmul_gflops"] > 0
    rates = entry["train_chars_per_s"]
    assert rates["fastest"] >= rates["median"] > 0 and rates["segment"] > 0
    # A segment includes its evaluation and checkpoint: never faster than its fastest step.
    assert rates["segment"] < rates["fastest"]
    assert entry["stock_keras_chars_per_s"] > 0
    assert entry["gradient_health_chars_per_s"]["ratio"] > 0
    cost = entry["timeline_cost"]
    assert cost["step_s"] > 0 and cost["sample_s"] > 0 and 0 < cost["fraction"] < 1
    assert 0 < entry["fraction_of_matmul_ceiling"] < 2 and "torch_chars_per_s" not in entry
    assert figures["machine"]["instruction_set"] in ("AMX", "AVX-512", "AVX2", "below AVX2")
    assert figures["machine"]["cpu"] != "unknown" and figures["machine"]["tensorflow_threads"] >= 1
    printed = report.format_results(figures)
    assert "simple_rnn" in printed and f"CPU: {figures['machine']['cpu']}" in printed
    assert "timeline's cost" in printed


def test_the_bench_alternates_with_pytorch_by_whole_segments_then_by_steps():
    """PyTorch's whole segment runs after charlm's second and third, its steps after each
    of charlm's in the fourth, and none of PyTorch's time counts as charlm's."""
    from charlm.bench.training import ThroughputRecorder

    order = []

    def pytorch_segment():
        order.append("pytorch segment")
        time.sleep(0.3)
        return 1.0

    recorder = ThroughputRecorder(lambda: order.append("pytorch step"), pytorch_segment)
    for segment in (1, 2, 3, 4):
        for _ in range(2):
            order.append(f"charlm {segment}")
            recorder.advance(0, 0.0, 0.0)
        recorder.evaluated(0, 0.0)
    assert order == [
        *["charlm 1"] * 2,
        *["charlm 2"] * 2,
        "pytorch segment",
        *["charlm 3"] * 2,
        "pytorch segment",
        *["charlm 4", "pytorch step"] * 2,
    ]
    assert len(recorder.segment_times) == 2 and max(recorder.segment_times) < 0.2
    assert recorder.other_segment_rates == [1.0, 1.0] and len(recorder.step_times) == 2


def test_the_bench_table_carries_every_figure():
    """PyTorch's rates, the ratios and the sampling bounds all reach the printed table."""
    from charlm.bench import report

    rates = {"fastest": 3000.0, "median": 2000.0, "segment": 1000.0}
    figures = {
        "machine": {
            "cpu": "Some CPU",
            "instruction_set": "AVX2",
            "onednn_isa_limit": "AVX2",
            "xla_isa_limit": "AVX2",
            "tensorflow_threads": 2,
            "torch_threads": 2,
        },
        "matmul_gflops": 100.0,
        "cells": {
            "lstm": {
                "train_chars_per_s": rates,
                "train_gflops": 50.0,
                "fraction_of_matmul_ceiling": 0.5,
                "stock_keras_chars_per_s": 900.0,
                "torch_chars_per_s": {k: v / 2 for k, v in rates.items()},
                "ratio_to_torch": {k: 2.0 for k in rates},
                "gradient_health_chars_per_s": {"with": 2970.0, "without": 3000.0, "ratio": 0.99},
                "timeline_cost": {
                    "step_s": 0.2,
                    "first_sample_s": 2.5,
                    "sample_s": 0.1,
                    "fraction": 0.002,
                },
            }
        },
        "sampling": {
            "1_stream": 1234.0,
            "64_streams": 9876.0,
            "1_stream_floor": 4321.0,
            "1_stream_of_floor": 0.29,
            "64_streams_gflops": 65.0,
            "64_streams_ceiling_gflops": 100.0,
            "64_streams_of_ceiling": 0.65,
            "torch_1_stream": {"onednn_on": 144.0, "onednn_off": 632.0},
            "torch_64_streams": {"onednn_on": 5645.0, "onednn_off": 10493.0},
            "1_stream_ratio_to_torch": 1.95,
            "64_streams_ratio_to_torch": 0.94,
        },
    }
    printed = report.format_results(figures)
    assert "oneDNN limited to AVX2" in printed and "XLA limited to AVX2" in printed
    assert "PyTorch 2 (set equal)" in printed
    assert "| lstm | 3,000 / 2,000 / 1,000 | 50 (50%) | 900 | 1,500 / 1,000 / 500 " in printed
    assert "2.00x / 2.00x / 2.00x" in printed
    assert "| lstm | 2,970 | 3,000 | 0.990 |" in printed  # gradient health's cost
    assert "| lstm | 0.200 s | 2.50 s | 0.10 s | 0.2% |" in printed  # the timeline's
    assert (
        "| 1 | 1,234 | 0.29 of the floor (4,321" in printed and "| 144 / 632 | 1.95x |" in printed
    )
    assert "65 GFLOP/s = 0.65 of the matmul ceiling (100 GFLOP/s) | 5,645 / 10,493 | 0.94x |" in (
        printed
    )


def test_the_bench_reads_each_sampling_rate_in_turn_with_its_bound_and_pytorch(monkeypatch):
    """Sampler, bound and PyTorch's two samplers take turns, three rounds, and each
    fraction divides by the best readings of those same turns."""
    from charlm.bench import report

    order, readings = [], iter(range(1, 100))

    def measure(name):
        def reading(*args):
            order.append(name)
            return float(next(readings))

        return reading

    monkeypatch.setattr(report, "SamplingRate", lambda run, streams, length: measure(streams))
    monkeypatch.setattr(report, "OneStreamFloor", lambda run: measure("floor"))
    monkeypatch.setattr(report, "matmul_gflops", measure("ceiling"))
    monkeypatch.setattr(
        report, "torch_sampling_chars_per_s", lambda torch, n, length, on: measure(on)()
    )
    found = report.sampling(Path("run"), torch=object())
    assert order == [1, "floor", True, False] * 3 + [64, "ceiling", True, False] * 3
    assert found["1_stream"] == 9 and found["1_stream_floor"] == 10
    assert found["1_stream_of_floor"] == 9 / 10 and found["1_stream_ratio_to_torch"] == 9 / 12
    assert found["64_streams"] == 21 and found["64_streams_ceiling_gflops"] == 22
    gflops = 21 * report.forward_flops_per_char("lstm") / 1e9
    assert found["64_streams_of_ceiling"] == gflops / 22
    assert found["torch_64_streams"] == {"onednn_on": 23, "onednn_off": 24}


@pytest.mark.parametrize(
    "args, fragment", [(["--cells", "transformer"], "--cells"), (["--steps", "1"], "--steps")]
)
def test_bench_refuses_bad_options(args, fragment):
    one_clean_error(invoke("bench", *args), fragment)


def partial_saves(run):
    """The temporary files of saves under way (or cut short) in a run directory."""
    return [*(run / "checkpoints").glob(".tmp-*"), *run.glob(".tmp-model.keras*")]


def kill_while_saving(process, run, timeout=30):
    """Let a `charlm train` process train until it saves, kill -9 it the moment a
    temporary save file appears (polling every millisecond), and return the temporary
    files the kill left: none if it missed the save."""
    from charlm.run.rundir import RunDir

    before = RunDir(run).latest_checkpoint()
    try:
        wait_for(
            lambda: (
                process.poll() is not None
                or (
                    RunDir(run).latest_checkpoint() not in (None, before)
                    and (run / "model.keras").exists()
                )
            )
        )
        assert process.poll() is None, process.communicate()[1]
        deadline = time.time() + timeout
        while not partial_saves(run) and time.time() < deadline:
            time.sleep(0.001)
    finally:
        process.kill()
        process.communicate()
    return partial_saves(run)


def collected_stderr(process):
    """A list that a thread fills with the process's stderr lines as they come."""
    lines = []

    def read():
        for line in process.stderr:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def endless_training(corpus, run, save_delay=0):
    """A `charlm train` process that would run for a million steps (one evaluation).
    With a `save_delay`, every model file the process saves is followed by that many
    seconds' sleep inside the save, in code that swallows any exception; the sleep begins
    when sleeping_marker(run) appears, so that a test can signal it mid-save for sure."""
    settings = sets(
        *TINY_SETTINGS,
        f"data.corpus={corpus}",
        f"train.run_dir={run}",
        "train.steps=1000000",
        "train.eval_interval=100000",
    )
    if not save_delay:
        return charlm_process("train", *settings)
    slowed = SLOW_SAVES.format(delay=save_delay, marker=str(sleeping_marker(run)))
    return subprocess.Popen(
        [sys.executable, "-c", slowed, "train", *map(str, settings)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def sleeping_marker(run):
    return run.parent / f"{run.name}-save-sleeping"


SLOW_SAVES = """
import pathlib, time, keras
save = keras.Model.save
def slow_save(self, *args, **kwargs):
    save(self, *args, **kwargs)
    try:  # catching everything, as Keras's saving does while it opens its weights file
        pathlib.Path({marker!r}).touch()
        time.sleep({delay})
    except BaseException:
        pass
keras.Model.save = slow_save
from charlm.cli import main
main()
"""
