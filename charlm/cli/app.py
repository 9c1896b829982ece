"""The `charlm` Typer application and what every command shares: one-line errors, exit
codes, and TensorFlow started quietly, and only by the commands that need it.

Every error a user can fix prints one line on stderr (`charlm: error: ...`) and
exits with code 2; nothing here prints a traceback for them.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

import charlm
from charlm.errors import INTERRUPTED, CharlmError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train character-level language models (SimpleRNN, LSTM, GRU) and sample from them.",
)
data_app = typer.Typer(
    no_args_is_help=True, help="Corpora: download the classic ones, count characters."
)
app.add_typer(data_app, name="data")

USER_ERROR = 2
CheckpointOption = Annotated[
    Path, typer.Option("--checkpoint", "-c", help="A run directory (or a checkpoint in it).")
]


def fail(message: str, code: int = USER_ERROR):
    typer.echo(f"charlm: error: {message}", err=True)
    raise typer.Exit(code)


def say(message: str) -> None:
    typer.echo(message, err=True)


class user_errors:
    """Turn the library's user-facing errors into one stderr line and exit code 2."""

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if kind is not None and issubclass(kind, CharlmError):
            fail(str(error))
        if kind is KeyboardInterrupt:
            say("charlm: interrupted")
            raise typer.Exit(INTERRUPTED)
        return False


def quiet_tensorflow_start():
    """Import TensorFlow and probe for GPUs with stderr muted: its C++ start-up notices
    (oneDNN, CUDA probing on machines without a GPU) are printed before its log level
    applies. What it printed is shown if the import fails, and all of it when the user
    sets TF_CPP_MIN_LOG_LEVEL themselves. Only commands that need TensorFlow call this:
    help, `data` and config errors answer without loading it."""
    if (
        "tensorflow" in sys.modules
        or os.environ.get("TF_CPP_MIN_LOG_LEVEL") != charlm.DEFAULT_TF_LOG_LEVEL
    ):
        return
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
