"""`charlm train`, `eval`, `info` and `bench`: parse, call one library function, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm.cli.app import CheckpointOption, app, fail, quiet_tensorflow_start, say, user_errors


@app.command()
def train(
    config: Annotated[
        Optional[Path],
        typer.Argument(
            help="YAML config (see configs/). Omit with --resume to reuse the run's own."
        ),
    ] = None,
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Override a key: --set model.cell=gru (repeatable)."),
    ] = None,
    resume: Annotated[
        Optional[Path],
        typer.Option(help="Continue the run in this directory from its latest checkpoint."),
    ] = None,
    init_from: Annotated[
        Optional[Path],
        typer.Option(
            "--init-from",
            help="Fine-tune: start a new run from this trained run's best model (or a "
            "checkpoint directory or .keras file in it), on the config's corpus "
            "(train.init_from).",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            help="Start this many local worker processes (MultiWorkerMirroredStrategy on "
            "127.0.0.1) to try distributed training on one machine."
        ),
    ] = 1,
):
    """Train a model: stream the corpus, fit, evaluate and checkpoint into train.run_dir."""
    from charlm.config import load_config
    from charlm.run.rundir import RunDir
    from charlm.training.workers import launch_local_workers

    with user_errors():
        if init_from is not None and resume is not None:
            fail(
                "--init-from starts a new run from another run's weights and --resume "
                "continues a run from its own checkpoint; give only one of them"
            )
        if config is None and resume is not None:
            config = RunDir(resume).config_path
        settings = load_config(config, set_ or [])
        if workers < 1:
            fail(f"--workers must be at least 1; got {workers}")
        if init_from is not None:
            settings.train.init_from = str(init_from)
        if workers > 1:
            forwarded = [str(config)] if config else []
            forwarded += [part for item in set_ or [] for part in ("--set", item)]
            forwarded += ["--resume", str(resume)] if resume else []
            forwarded += ["--init-from", str(init_from)] if init_from else []
            raise typer.Exit(launch_local_workers(workers, forwarded))
        if resume is not None:
            settings.train.run_dir = str(resume)
        quiet_tensorflow_start()
        from charlm.training.distribute import is_chief
        from charlm.training.loop import train as run_training
        from charlm.training.progress import RichReporter
        from charlm.training.reporter import SilentReporter

        reporter = RichReporter() if is_chief() else SilentReporter()
        result = run_training(
            settings, resume=resume, reporter=reporter, exit_on_second_interrupt=True
        )
    if not is_chief():
        return
    state = result.state
    best = f"{state.best_val_loss:.4f}" if state.best_val_loss is not None else "n/a"
    say(
        f"stopped by {result.stopped_by} at step {state.step}; best validation loss {best} "
        f"(step {state.best_step}); run directory {result.run_dir}"
    )
    if result.stopped_by in ("interrupted", "time budget"):
        say(f"resume with: charlm train --resume {result.run_dir}")
    say(f"sample with: charlm sample --checkpoint {result.run_dir}")


@app.command("eval")
def evaluate(
    checkpoint: CheckpointOption,
    file: Annotated[Path, typer.Argument(help="UTF-8 text to score.")],
):
    """Print the model's loss on FILE in nats and bits per character."""
    quiet_tensorflow_start()
    from charlm.evaluate import evaluate_file

    with user_errors():
        result = evaluate_file(checkpoint, file)
    typer.echo(
        f"{result.loss:.4f} nats/char  {result.bits:.4f} bits/char  "
        f"({result.chars:,} characters scored, {result.unknown:,} unknown)"
    )


@app.command()
def info(checkpoint: CheckpointOption):
    """Print a run's config, vocabulary size, parameter count, steps and best validation."""
    import yaml

    quiet_tensorflow_start()
    from charlm.model.build import parameter_count
    from charlm.run.load import load_checkpoint
    from charlm.run.rundir import RunDir
    from charlm.training.timeline import timeline_of

    with user_errors():
        loaded = load_checkpoint(checkpoint)
    state = loaded.state
    typer.echo(f"run directory: {loaded.run_dir}")
    if loaded.config.train.init_from is not None:
        typer.echo(f"fine-tuned from: {loaded.config.train.init_from}")
    typer.echo(f"model: {loaded.model_path} ({parameter_count(loaded.model):,} parameters)")
    typer.echo(
        f"vocabulary: {loaded.vocab.size} tokens ({len(loaded.vocab.chars)} characters + unknown)"
    )
    if state:
        best = (
            f"{state.best_val_loss:.4f} nats/char at step {state.best_step}"
            if state.best_val_loss is not None
            else "n/a"
        )
        typer.echo(
            f"steps: {state.step}; best validation loss: {best}; "
            f"training time {state.elapsed_s:.0f} s"
        )
    timeline = timeline_of(RunDir(loaded.run_dir).history())
    if timeline:
        step, text = timeline[-1]
        typer.echo(f"timeline at step {step}:\n{text}")
    typer.echo("config:")
    typer.echo(yaml.safe_dump(loaded.config.to_dict(), sort_keys=False, allow_unicode=True))


@app.command()
def bench(
    cells: Annotated[
        str, typer.Option(help="Comma-separated cells to time.")
    ] = "simple_rnn,lstm,gru",
    steps: Annotated[int, typer.Option(help="Timed training steps per cell.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
):
    """Training chars/s per cell at the reference size (2x512, batch 64, 100 steps) through
    the code `charlm train` runs, the matmul ceiling, PyTorch if installed, sampling chars/s."""
    import json

    from charlm.bench.reference import CELLS
    from charlm.bench.report import format_results, run_benchmark

    chosen = [c.strip() for c in cells.split(",") if c.strip()]
    if not chosen or any(c not in CELLS for c in chosen):
        fail(f"--cells takes a comma-separated list of {', '.join(CELLS)}; got {cells!r}")
    if steps < 2:
        fail(f"--steps must be at least 2; got {steps}")
    quiet_tensorflow_start()
    results = run_benchmark(chosen, steps)
    typer.echo(json.dumps(results, indent=2) if as_json else format_results(results))
