"""The `charlm` Typer application and what every command shares: one-line errors, exit
codes, and TensorFlow started quietly, and only by the commands that need it.

Every error a user can fix prints one line on stderr (`charlm: error: ...`) and
exits with code 2; nothing here prints a traceback for them.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Annotated

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

import charlm
from charlm.errors import INTERRUPTED, CharlmError

USER_ERROR = 2
BAD_VALUE = {  # what the pydantic error behind a refused option value means, in words
    "int_parsing": "is not a whole number",
    "int_from_float": "is not a whole number",
    "float_parsing": "is not a number",
    "bool_parsing": "is not true or false",
}


class OneLineErrors(TyperGroup):
    """The `charlm` group: a usage error (an unknown option, a value of the wrong type, a
    missing argument) is one line and exit code 2, like every other user error, instead
    of Typer's usage box. Parsing the group's and each command's options happens inside
    these two methods; `charlm` and `charlm data` with no arguments still print help."""

    def make_context(self, *args, **kwargs):
        with one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with one_line_usage_errors():
            return super().invoke(ctx)


class one_line_usage_errors:
    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if isinstance(error, UsageError) and not isinstance(error, NoArgsIsHelpError):
            fail(usage_error_line(error))
        return False


def usage_error_line(error: UsageError) -> str:
    """`--length: '1e3' is not a whole number; see charlm sample --help`."""
    param, ctx = getattr(error, "param", None), error.ctx
    see = f"; see {ctx.command_path} --help" if ctx is not None else ""
    if param is None or not error.message:  # a missing argument, an unknown command
        return error.format_message().rstrip(".") + see
    name = param.opts[0] if getattr(param, "opts", None) else param.human_readable_name
    cause = error.__cause__
    details = cause.errors() if hasattr(cause, "errors") else []
    if details and "input" in details[0]:
        value, kind = details[0]["input"], details[0].get("type")
        words = BAD_VALUE.get(kind, details[0].get("msg", "is not valid").lower())
        return f"{name}: {value!r} {words}{see}"
    return f"{name}: {error.message.rstrip('.')}{see}"


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """charlm's own warnings (a skipped history line, say) as `charlm: warning: ...`."""
    if category.__module__.startswith("charlm."):
        return f"charlm: warning: {message}\n"
    return PYTHON_FORMATWARNING(message, category, filename, lineno, line)


PYTHON_FORMATWARNING = warnings.formatwarning
warnings.formatwarning = one_line_warning

app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train character-level language models (SimpleRNN, LSTM, GRU) and sample from them.",
)
data_app = typer.Typer(
    no_args_is_help=True, help="Corpora: download the classic ones, count characters."
)
app.add_typer(data_app, name="data")

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
