"""`charlm sample`: text to stdout as it is generated, status to stderr."""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from typing import Annotated, Optional

import numpy as np
import typer

from charlm.cli.app import CheckpointOption, app, quiet_tensorflow_start, say, user_errors


@app.command()
def sample(
    checkpoint: CheckpointOption,
    prime: Annotated[Optional[str], typer.Option(help="Text to start from.")] = None,
    length: Annotated[Optional[int], typer.Option(help="Characters to generate.")] = None,
    temperature: Annotated[
        Optional[float], typer.Option(help="Softmax temperature; 0 means argmax.")
    ] = None,
    top_k: Annotated[
        Optional[int], typer.Option(help="Sample among the k most likely characters (0: all).")
    ] = None,
    top_p: Annotated[
        Optional[float], typer.Option(help="Nucleus sampling mass, in (0, 1].")
    ] = None,
    num_samples: Annotated[
        Optional[int], typer.Option(help="Independent samples, made together.")
    ] = None,
    seed: Annotated[
        Optional[int], typer.Option(help="Same seed, same text (default: a random seed, printed).")
    ] = None,
    argmax: Annotated[bool, typer.Option(help="Always take the most likely character.")] = False,
):
    """Generate text from a trained run; text goes to stdout as it is made, status to stderr."""
    with user_errors():
        flags = checked_flags(
            prime=prime,
            length=length,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            num_samples=num_samples,
            seed=seed,
        )
        quiet_tensorflow_start()
        from charlm.generate import Sampler, SamplingOptions
        from charlm.run.load import load_checkpoint

        loaded = load_checkpoint(checkpoint)
        settings = dataclasses.replace(loaded.config.sample, **flags)
        options = SamplingOptions(
            length=settings.length,
            temperature=settings.temperature,
            top_k=settings.top_k,
            top_p=settings.top_p,
            argmax=argmax,
            seed=settings.seed if settings.seed is not None else int(time.time_ns() % 2**31),
        )
        prime_text, unknown = loaded.vocab.known_part(settings.prime)
        if unknown:
            say(
                f"charlm: warning: the prime's characters {''.join(unknown)!r} are not in the "
                f"model's vocabulary; they are left out"
            )
        if settings.seed is None:
            say(f"seed {options.seed}")
        write_samples(
            Sampler(loaded.model, loaded.vocab),
            loaded.vocab,
            prime_text,
            settings.num_samples,
            options,
        )


def checked_flags(**given) -> dict:
    """The flags given, each validated by its declaration in the config's sample section
    (the same check a config file's sample.* keys get), errors naming the flag."""
    from charlm.config import check_setting

    return {
        name: check_setting("sample", name, value, "--" + name.replace("_", "-"))
        for name, value in given.items()
        if value is not None
    }


def write_samples(sampler, vocab, prime_text: str, num_samples: int, options) -> None:
    """The first sample streams as it is made; the others follow it, separated. They wait
    on disk meanwhile (as token ids), so memory stays flat however long the samples."""
    started = time.perf_counter()
    sys.stdout.write(prime_text)
    with tempfile.TemporaryFile() as spool:
        for ids in sampler.sample(vocab.encode(prime_text), num_samples, options):
            sys.stdout.write(vocab.decode(ids[0]))
            sys.stdout.flush()
            spool.write(ids[1:].astype(np.int32).tobytes())
        elapsed = time.perf_counter() - started
        for stream in range(1, num_samples):
            sys.stdout.write(f"\n\n--- sample {stream + 1} ---\n{prime_text}")
            for ids in spooled_stream(spool, stream - 1, num_samples - 1, options.length):
                sys.stdout.write(vocab.decode(ids))
    sys.stdout.write("\n")
    sys.stdout.flush()
    chars = num_samples * options.length
    say(f"{chars} characters in {elapsed:.2f} s ({chars / max(elapsed, 1e-9):,.0f} chars/s)")


def spooled_stream(spool, row: int, rows: int, length: int):
    """The token ids of one spooled stream, chunk by chunk (chunks of CHUNK characters,
    each written as `rows` rows)."""
    from charlm.generate import CHUNK

    spool.seek(0)
    for start in range(0, length, CHUNK):
        width = min(CHUNK, length - start)
        block = np.frombuffer(spool.read(rows * width * 4), np.int32).reshape(rows, width)
        yield block[row]
