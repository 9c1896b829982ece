"""Helpers shared by the test modules (test modules import from here, never from each
other): generated corpora, the tiny model's settings, running the CLI in process, a real
`charlm serve` process and reading its events, and interrupting a training."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from charlm.cli import app
from charlm.config import load_config
from charlm.training.reporter import SilentReporter

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
    # Off, as compiling its sampler is most of a tiny run's time; the tests of the
    # timeline (and the shared trained_run) turn it on.
    "train.timeline_length=0",
]

runner = CliRunner()

# Headless Chromium for the playground tests (the `browser` fixture in conftest.py).
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
INSTALL = "apt-get install chromium chromium-driver"
# Where the screenshot for the docs is written when asked (docs/playground.png).
SCREENSHOT_ENV = "CHARLM_PLAYGROUND_SCREENSHOT"


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


class InterruptAt(SilentReporter):
    """Sends this process SIGINT after step `step`, like a user pressing Ctrl-C."""

    def __init__(self, step):
        self.at = step

    def advance(self, step, loss, chars_per_s):
        if step == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A `charlm serve` process on 127.0.0.1, stopped when the test ends."""

    def __init__(self, run, *flags, stderr=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "charlm.cli",
                "serve",
                "-c",
                str(run),
                "--port",
                str(self.port),
                *map(str, flags),
            ],
            stderr=stderr,
        )  # its output goes to the tests' own: pytest shows it beside a failure
        deadline = time.time() + 300  # compiling is slow on a busy machine
        while time.time() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError("the server did not start; its output is in the captured stderr")

    def post(self, body: dict, **kwargs) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/completions", json=body, timeout=60, **kwargs)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def cli_sample(run, prompt, length, seed, temperature, top_k=0, num_samples=1) -> list[str]:
    """What `charlm sample` prints for these options, one text per sample (prompt removed)."""
    result = invoke(
        "sample",
        "-c",
        run,
        "--prime",
        prompt,
        "--length",
        length,
        "--seed",
        seed,
        "--temperature",
        temperature,
        "--top-k",
        top_k,
        "--num-samples",
        num_samples,
    )
    assert result.exit_code == 0, result.output
    texts = result.stdout[:-1].split("\n\n--- sample ")
    return [text.split("---\n", 1)[-1][len(prompt) :] for text in texts]


def events(response) -> list:
    """The data of each server-sent event, up to and including `[DONE]`."""
    found = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            found.append(data if data == "[DONE]" else json.loads(data))
    return found
