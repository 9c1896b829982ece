"""`charlm compare`: runs side by side (configs trained first), in a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm.cli.app import app, quiet_tensorflow_start, say, user_errors


@app.command()
def compare(
    runs: Annotated[
        list[Path],
        typer.Argument(help="Run directories, or YAML configs to train first (one after another)."),
    ],
    out: Annotated[Path, typer.Option(help="Directory for report.md, report.html, charts.")],
    set_: Annotated[
        Optional[list[str]],
        typer.Option(
            "--set", help="Override a key of every config: --set train.time_budget_s=300."
        ),
    ] = None,
    runs_dir: Annotated[
        Optional[Path],
        typer.Option(help="Where configs are trained (default: runs/compare-<timestamp>)."),
    ] = None,
    prime: Annotated[str, typer.Option(help="Each run's sample starts from this.")] = "",
    length: Annotated[int, typer.Option(min=0, help="Characters of each run's sample.")] = 300,
    seed: Annotated[int, typer.Option(min=0, help="Seed of each run's sample.")] = 0,
):
    """Compare runs: a table (loss in nats and bits per character, speed, size), charts of
    validation loss and gradient norm, each run's sample from the same prime and seed."""
    with user_errors():
        quiet_tensorflow_start()
        from charlm.compare import compare as compare_runs
        from charlm.training.progress import RichReporter

        def reporter(name: str):
            say(f"training {name}")
            return RichReporter()

        result = compare_runs(
            runs,
            out,
            overrides=set_ or [],
            runs_dir=runs_dir,
            prime=prime,
            sample_length=length,
            seed=seed,
            make_reporter=reporter,
        )
    if result.warning:
        say(f"charlm: warning: {result.warning}")
    typer.echo(result.report.read_text(encoding="utf-8").split("\n![")[0].strip())
    say(f"report: {result.report} and {result.html}")
