"""`charlm inspect`: a page showing a text as a model reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charlm.cli.app import CheckpointOption, app, fail, quiet_tensorflow_start, say, user_errors
from charlm.inspect import MAX_CHARS, MAX_VALUES


@app.command("inspect")
def inspect_command(
    checkpoint: CheckpointOption,
    file: Annotated[Path, typer.Argument(help="UTF-8 text to look at.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML page to write.")],
    max_chars: Annotated[int, typer.Option(help="Refuse a longer text.")] = MAX_CHARS,
    max_values: Annotated[
        int,
        typer.Option(
            help="Most unit values the page holds (characters x units x quantities, a byte "
            "each): the units find_units found first, then the most varied."
        ),
    ] = MAX_VALUES,
):
    """Write a self-contained HTML page of FILE as the model reads it: each character
    coloured by the model's surprise, the likeliest characters on hover, and any unit's
    hidden state or gates on demand, with the units that track quotes, brackets, line
    position and the like as shortcuts."""
    from charlm.files import write_atomic
    from charlm.inspect.text import read_text_file

    if max_chars < 1:
        fail(f"--max-chars must be at least 1; got {max_chars}")
    if max_values < 0:
        fail(f"--max-values must be at least 0; got {max_values}")
    if not out.parent.is_dir():
        fail(f"--out {out}: the directory {out.parent} does not exist")
    with user_errors():
        text = read_text_file(file, max_chars)  # before TensorFlow starts: a quick refusal
        quiet_tensorflow_start()
        import charlm
        from charlm.inspect.page import TOP, inspect_text, page_html

        language_model = charlm.load(checkpoint)
        scores = language_model.score(text, top=TOP)
        data = inspect_text(
            language_model.keras_model, language_model.vocabulary, text, scores, max_values
        )
        title = f"{file.name} read by {Path(language_model.info['run_dir']).name}"
        write_atomic(out, page_html(data, title).encode("utf-8"))
    found = sum(len(units) for units in data["found"].values())
    say(
        f"wrote {out}: {len(text):,} characters, {data['bits_per_char']:.3f} bits/char, "
        f"{found} units found; open it in a browser"
    )
