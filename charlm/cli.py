"""The `charlm` command: parse options, call one library function, map errors to exit codes.

Every error a user can fix prints one line on stderr (`charlm: error: ...`) and
exits with code 2; nothing here prints a traceback for them.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

import charlm

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train character-level language models (SimpleRNN, LSTM, GRU) and "
                       "sample from them.")
data_app = typer.Typer(no_args_is_help=True, help="Corpora: download the classic ones, "
                                                  "count characters.")
app.add_typer(data_app, name="data")

USER_ERROR = 2
CheckpointOption = Annotated[Path, typer.Option("--checkpoint", "-c",
                                                help="A run directory (or a checkpoint in it).")]


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
        from charlm.errors import USER_ERRORS
        if kind is not None and issubclass(kind, USER_ERRORS):
            fail(str(error))
        if kind is KeyboardInterrupt:
            say("charlm: interrupted")
            raise typer.Exit(130)
        return False


# ---------------------------------------------------------------- train

@app.command()
def train(
    config: Annotated[Optional[Path], typer.Argument(
        help="YAML config (see configs/). Omit with --resume to reuse the run's own.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a key: --set model.cell=gru (repeatable).")] = None,
    resume: Annotated[Optional[Path], typer.Option(
        help="Continue the run in this directory from its latest checkpoint.")] = None,
    workers: Annotated[int, typer.Option(
        help="Start this many local worker processes (MultiWorkerMirroredStrategy on "
             "127.0.0.1) to try distributed training on one machine.")] = 1,
):
    """Train a model: stream the corpus, fit, evaluate and checkpoint into train.run_dir."""
    from charlm.config import load_config
    from charlm.distribute import is_chief, launch_local_workers
    from charlm.progress import RichReporter
    from charlm.train import SilentReporter
    from charlm.train import train as run_training

    with user_errors():
        if config is None and resume is not None:
            config = resume / "config.yaml"
        settings = load_config(config, set_ or [])
        if workers < 1:
            fail(f"--workers must be at least 1; got {workers}")
        if workers > 1:
            forwarded = [str(config)] if config else []
            forwarded += [part for item in set_ or [] for part in ("--set", item)]
            forwarded += ["--resume", str(resume)] if resume else []
            raise typer.Exit(launch_local_workers(workers, forwarded))
        if resume is not None:
            settings.train.run_dir = str(resume)
        reporter = RichReporter() if is_chief() else SilentReporter()
        result = run_training(settings, resume=resume, reporter=reporter)
    if not is_chief():
        return
    state = result.state
    best = f"{state.best_val_loss:.4f}" if state.best_val_loss is not None else "n/a"
    say(f"stopped by {result.stopped_by} at step {state.step}; best validation loss {best} "
        f"(step {state.best_step}); run directory {result.run_dir}")
    if result.stopped_by in ("interrupted", "time budget"):
        say(f"resume with: charlm train --resume {result.run_dir}")
    say(f"sample with: charlm sample --checkpoint {result.run_dir}")


# ---------------------------------------------------------------- sample

@app.command()
def sample(
    checkpoint: CheckpointOption,
    prime: Annotated[Optional[str], typer.Option(help="Text to start from.")] = None,
    length: Annotated[Optional[int], typer.Option(help="Characters to generate.")] = None,
    temperature: Annotated[Optional[float], typer.Option(
        help="Softmax temperature; 0 means argmax.")] = None,
    top_k: Annotated[Optional[int], typer.Option(
        help="Sample among the k most likely characters (0: all).")] = None,
    top_p: Annotated[Optional[float], typer.Option(
        help="Nucleus sampling mass, in (0, 1].")] = None,
    num_samples: Annotated[int, typer.Option(help="Independent samples, made together.")] = 1,
    seed: Annotated[Optional[int], typer.Option(
        help="Same seed, same text (default: a random seed, printed).")] = None,
    argmax: Annotated[bool, typer.Option(help="Always take the most likely character.")] = False,
):
    """Generate text from a trained run; text goes to stdout as it is made, status to stderr."""
    from charlm.checkpoint import load_checkpoint
    from charlm.generate import Sampler, SamplingOptions

    with user_errors():
        loaded = load_checkpoint(checkpoint)
        defaults = loaded.config.sample
        options = SamplingOptions(
            length=defaults.length if length is None else length,
            temperature=defaults.temperature if temperature is None else temperature,
            top_k=defaults.top_k if top_k is None else top_k,
            top_p=defaults.top_p if top_p is None else top_p,
            argmax=argmax, seed=seed if seed is not None else int(time.time_ns() % 2**31))
        check_sampling(options, num_samples)
        prime_text = defaults.prime if prime is None else prime
        unknown = loaded.vocab.unknown_chars(prime_text)
        if unknown:
            say(f"charlm: warning: the prime's characters {''.join(unknown)!r} are not in the "
                f"model's vocabulary; they are left out")
            prime_text = "".join(c for c in prime_text if c not in unknown)
        if seed is None:
            say(f"seed {options.seed}")
        write_samples(Sampler(loaded.model, loaded.vocab), loaded.vocab, prime_text,
                      num_samples, options)


def check_sampling(options, num_samples: int) -> None:
    from charlm.config import ConfigError
    if options.length < 0:
        raise ConfigError(f"--length must be 0 or more; got {options.length}")
    if options.temperature < 0:
        raise ConfigError(f"--temperature must be 0 (argmax) or more; got {options.temperature}")
    if options.top_k < 0:
        raise ConfigError(f"--top-k must be 0 (no limit) or more; got {options.top_k}")
    if not 0 < options.top_p <= 1:
        raise ConfigError(f"--top-p must be above 0 and at most 1; got {options.top_p}")
    if num_samples < 1:
        raise ConfigError(f"--num-samples must be at least 1; got {num_samples}")


def write_samples(sampler, vocab, prime_text: str, num_samples: int, options) -> None:
    """The first sample streams as it is made; the others follow it, separated."""
    prime_ids = vocab.encode(prime_text).tolist()
    started = time.perf_counter()
    chunks = []
    sys.stdout.write(prime_text)
    for ids in sampler.sample(prime_ids, num_samples, options):
        sys.stdout.write(vocab.decode(ids[0]))
        sys.stdout.flush()
        chunks.append(ids)
    elapsed = time.perf_counter() - started
    for stream in range(1, num_samples):
        sys.stdout.write(f"\n\n--- sample {stream + 1} ---\n{prime_text}")
        sys.stdout.write("".join(vocab.decode(ids[stream]) for ids in chunks))
    sys.stdout.write("\n")
    sys.stdout.flush()
    say(f"{num_samples * options.length} characters in {elapsed:.2f} s "
        f"({num_samples * options.length / max(elapsed, 1e-9):,.0f} chars/s)")


# ---------------------------------------------------------------- eval, info

@app.command("eval")
def evaluate(
    checkpoint: CheckpointOption,
    file: Annotated[Path, typer.Argument(help="UTF-8 text to score.")],
):
    """Print the model's loss on FILE in nats and bits per character."""
    from charlm.evaluate import evaluate_file

    with user_errors():
        result = evaluate_file(checkpoint, file)
    typer.echo(f"{result.loss:.4f} nats/char  {result.bits:.4f} bits/char  "
               f"({result.chars:,} characters scored, {result.unknown:,} unknown)")


@app.command()
def info(checkpoint: CheckpointOption):
    """Print a run's config, vocabulary size, parameter count, steps and best validation."""
    import yaml

    from charlm.checkpoint import load_checkpoint
    from charlm.model import parameter_count

    with user_errors():
        loaded = load_checkpoint(checkpoint)
    state = loaded.state
    typer.echo(f"run directory: {loaded.run_dir}")
    typer.echo(f"model: {loaded.model_path} ({parameter_count(loaded.model):,} parameters)")
    typer.echo(f"vocabulary: {loaded.vocab.size} tokens ({len(loaded.vocab.chars)} characters "
               f"+ unknown)")
    if state:
        best = f"{state.best_val_loss:.4f} nats/char at step {state.best_step}" \
            if state.best_val_loss is not None else "n/a"
        typer.echo(f"steps: {state.step}; best validation loss: {best}; "
                   f"training time {state.elapsed_s:.0f} s")
    typer.echo("config:")
    typer.echo(yaml.safe_dump(loaded.config.to_dict(), sort_keys=False, allow_unicode=True))


# ---------------------------------------------------------------- bench

@app.command()
def bench(
    cells: Annotated[str, typer.Option(help="Comma-separated cells to time.")] =
        "simple_rnn,lstm,gru",
    steps: Annotated[int, typer.Option(help="Timed training steps per cell.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
):
    """Training chars/s per cell at the reference size (2x512, batch 64, 100 steps) through
    the code `charlm train` runs, the matmul ceiling, PyTorch if installed, sampling chars/s."""
    import json

    from charlm.bench import CELLS, format_results, run_benchmark

    chosen = [c.strip() for c in cells.split(",") if c.strip()]
    if not chosen or any(c not in CELLS for c in chosen):
        fail(f"--cells takes a comma-separated list of {', '.join(CELLS)}; got {cells!r}")
    if steps < 2:
        fail(f"--steps must be at least 2; got {steps}")
    results = run_benchmark(chosen, steps)
    typer.echo(json.dumps(results, indent=2) if as_json else format_results(results))


# ---------------------------------------------------------------- data

@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="Corpus name: tinyshakespeare.")],
    dest: Annotated[Path, typer.Option(help="Directory to write into.")] = Path("data"),
    url: Annotated[Optional[str], typer.Option(help="Download from here instead.")] = None,
):
    """Download a classic corpus and verify its sha256."""
    from charlm.fetch import fetch

    with user_errors():
        path = fetch(name, dest, url)
    say(f"wrote {path}")


@data_app.command("stats")
def data_stats(
    path: Annotated[list[str], typer.Argument(help="File(s), directory or glob.")],
    top: Annotated[int, typer.Option(help="How many of the most frequent characters.")] = 10,
):
    """Count characters, distinct characters, files and bytes of a corpus."""
    from charlm.corpus import resolve_files, scan_corpus
    from charlm.progress import RichReporter

    reporter = RichReporter()
    with user_errors():
        try:
            stats = scan_corpus(resolve_files(path, "PATH"), progress=reporter.corpus_progress)
        finally:
            reporter.close()
    typer.echo(f"files: {len(stats.files):,}")
    typer.echo(f"size: {stats.bytes:,} bytes")
    typer.echo(f"characters: {stats.chars:,}")
    typer.echo(f"distinct characters: {len(stats.counts):,}")
    typer.echo("most frequent: " + ", ".join(f"{c!r} {n:,}" for c, n in stats.most_common(top)))


def main():
    quiet_tensorflow_start()
    app(prog_name="charlm")


def quiet_tensorflow_start():
    """Import TensorFlow and probe for GPUs with stderr muted: its C++ start-up notices
    (oneDNN, CUDA probing on machines without a GPU) are printed before its log level
    applies. What it printed is shown if the import fails, and all of it when the user
    sets TF_CPP_MIN_LOG_LEVEL themselves."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") != charlm.DEFAULT_TF_LOG_LEVEL:
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


if __name__ == "__main__":
    main()
