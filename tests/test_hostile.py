"""Sampling and evaluation under hostile input: each is handled in flat memory, or refused
in one line, never with a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tracemalloc

import pytest

from tests.helpers import generated_text, invoke, one_clean_error

CHARLM = [sys.executable, "-m", "charlm.cli"]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_a_prime_of_a_megabyte_is_read_in_pieces(trained_run):
    prime = generated_text(1 << 20, seed=3)
    started = time.perf_counter()
    result = invoke("sample", "-c", trained_run, "--prime", prime, "--length", 50, "--seed", 1)
    assert result.exit_code == 0, result.output[-2000:]
    assert result.stdout.startswith(prime) and len(result.stdout) == len(prime) + 50 + 1
    assert time.perf_counter() - started < 60


def test_a_prime_of_only_unknown_characters_starts_from_nothing(trained_run):
    result = invoke("sample", "-c", trained_run, "--prime", "🐍🐍", "--length", 20, "--seed", 1)
    assert result.exit_code == 0, result.output
    assert "not in the model's vocabulary" in result.stderr
    plain = invoke("sample", "-c", trained_run, "--length", 20, "--seed", 1)
    assert result.stdout == plain.stdout


def test_nul_bytes_in_a_prime_are_left_out_with_a_warning(trained_run):
    result = invoke("sample", "-c", trained_run, "--prime", "the\0cat", "--length", 5, "--seed", 1)
    assert result.exit_code == 0, result.output
    assert "'\\x00'" in result.stderr and result.stdout.startswith("thecat")


def test_undecodable_bytes_in_a_command_line_prime_are_left_out(trained_run):
    """Bytes that are not UTF-8 reach Python as lone surrogates (surrogateescape)."""
    completed = subprocess.run(
        [
            *CHARLM,
            "sample",
            "-c",
            str(trained_run),
            "--prime",
            b"the \xff\xfe cat",
            "--length",
            "5",
            "--seed",
            "1",
        ],
        capture_output=True,
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    assert b"Traceback" not in completed.stderr and b"not in the model's" in completed.stderr
    assert completed.stdout.startswith(b"the  cat")


@pytest.mark.parametrize("seed", ["-1", str(2**62), "12345678901234567890123"])
def test_a_seed_out_of_range_is_refused(trained_run, seed):
    one_clean_error(invoke("sample", "-c", trained_run, "--seed", seed), "--seed must be")


def test_a_large_seed_samples(trained_run):
    result = invoke("sample", "-c", trained_run, "--length", 20, "--seed", 2**62 - 1)
    assert result.exit_code == 0, result.output


def test_a_billion_characters_stream_and_stop_on_ctrl_c(trained_run):
    process = subprocess.Popen(
        [
            *CHARLM,
            "sample",
            "-c",
            str(trained_run),
            "--length",
            str(10**9),
            "--num-samples",
            "2",
            "--seed",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # As from a terminal: a shell starts background jobs with SIGINT ignored, and a
        # test suite launched that way would pass the ignore on to this process.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert len(process.stdout.read(20_000)) == 20_000  # streaming, not buffered
        process.send_signal(signal.SIGINT)
        process.stdout.read()
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=30) == 130
    finally:
        process.kill()
    assert "charlm: interrupted" in stderr and "Traceback" not in stderr


def endless_pieces(samples: int, length: int, chunk: int = 256):
    """What TextGenerator.pieces yields, made as fast as Python makes strings (no model):
    the (empty) prime, then a chunk of text per sample."""
    yield [""] * samples
    for start in range(0, length, chunk):
        yield ["abcdefg"[start % 7] * min(chunk, length - start)] * samples


class CountingStream:
    """A stdout that counts what is written and keeps none of it."""

    def __init__(self):
        self.chars = 0

    def write(self, text):
        self.chars += len(text)

    def flush(self):
        pass


def test_samples_are_written_in_flat_memory(monkeypatch):
    """However long the samples, what is held in memory stays the same: the first
    streams out, the others wait on disk."""
    from charlm.cli.sample import write_samples

    peaks = []
    for length in (200_000, 2_000_000):
        stdout = CountingStream()
        monkeypatch.setattr(sys, "stdout", stdout)
        tracemalloc.start()
        write_samples(endless_pieces(3, length), 3)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert stdout.chars == 3 * length + 2 * len("\n\n--- sample 2 ---\n") + 1
    assert peaks[1] < 1.5 * peaks[0] + 1_000_000, peaks


def test_eval_of_a_binary_or_empty_file_is_refused(trained_run, tmp_path):
    binary = tmp_path / "b.bin"
    binary.write_bytes(bytes(range(256)) * 10)
    one_clean_error(invoke("eval", "-c", trained_run, binary), "binary")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    one_clean_error(invoke("eval", "-c", trained_run, empty), "has 0 characters")


def peak_rss_of_eval(run, text_file) -> float:
    """Peak RSS (MB) of `charlm eval` in a child process, from wait4."""
    process = subprocess.Popen(
        [*CHARLM, "eval", "-c", str(run), str(text_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, process.stderr.read().decode()
    return usage.ru_maxrss / 1024


def test_eval_memory_does_not_grow_with_the_file(tmp_path, corpus_file):
    """A file 8 times larger is scored in the same memory: the text is encoded and read
    in pieces, and windows are numbered lazily."""
    from charlm.training.loop import train
    from tests.helpers import tiny_config

    run = tmp_path / "run"
    train(tiny_config(corpus_file, run, "train.steps=2", "train.eval_seq_length=1000"))
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_text(generated_text(1 << 19, seed=1))
    large.write_text(generated_text(1 << 22, seed=2))
    assert peak_rss_of_eval(run, large) - peak_rss_of_eval(run, small) < 60
