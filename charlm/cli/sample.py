"""`charlm sample`: text to stdout as it is generated, status to stderr."""

from __future__ import annotations

import struct
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm.cli.app import CheckpointOption, app, fail, quiet_tensorflow_start, say, user_errors

# The flag each sampling setting is given by, to name it in an error.
FLAGS = {
    "sample.length": "--length",
    "sample.temperature": "--temperature",
    "sample.top_k": "--top-k",
    "sample.top_p": "--top-p",
    "sample.seed": "--seed",
    "sample.num_samples": "--num-samples",
    "sample.stop": "--stop",
}


@app.command()
def sample(
    checkpoint: CheckpointOption,
    prime: Annotated[Optional[str], typer.Option(help="Text to start from.")] = None,
    prime_file: Annotated[
        Optional[Path], typer.Option(help="Start from the text of this UTF-8 file.")
    ] = None,
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
    stop: Annotated[
        Optional[list[str]],
        typer.Option(help="End each sample before this string (repeatable)."),
    ] = None,
    argmax: Annotated[bool, typer.Option(help="Always take the most likely character.")] = False,
):
    """Generate text from a trained run; text goes to stdout as it is made, status to stderr."""
    from charlm.config import SampleConfig
    from charlm.errors import ConfigError, relabelled
    from charlm.sampling_rules import UnknownCharactersWarning, resolve_settings

    given = dict(length=length, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    given["n"] = num_samples
    with user_errors():
        if prime is not None and prime_file is not None:
            fail("give --prime or --prime-file, not both")
        try:  # checked before a model is loaded, then again against the model's vocabulary
            resolve_settings(SampleConfig(), stop=stop, **given)
        except ConfigError as error:
            fail(relabelled(error, FLAGS))
        if prime_file is not None:
            prime = read_prime_file(prime_file)
        quiet_tensorflow_start()
        import charlm

        model = charlm.load(checkpoint)
        generator = model.generator
        try:
            settings = generator.settings(argmax=argmax, stop=stop, **given)
        except ConfigError as error:
            fail(relabelled(error, FLAGS))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UnknownCharactersWarning)
            readable = generator.readable(model.sample_defaults.prime if prime is None else prime)
        for warning in caught:
            say(f"charlm: warning: {warning.message}")
        if not settings.seed_given:
            say(f"seed {settings.seed}")
        started = time.perf_counter()
        chars = write_samples(generator.pieces(readable, settings), settings.n)
    elapsed = time.perf_counter() - started
    say(f"{chars} characters in {elapsed:.2f} s ({chars / max(elapsed, 1e-9):,.0f} chars/s)")


def read_prime_file(path: Path) -> str:
    """The text of a prime file, checked as a corpus file is (a clear line otherwise)."""
    from charlm.data.sources import check_not_binary
    from charlm.errors import CorpusError

    if not path.is_file():
        raise CorpusError(f"--prime-file {path} is not a file; give a UTF-8 text file")
    check_not_binary(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise CorpusError(
            f"--prime-file {path} is not UTF-8 (byte {error.start}); convert it, e.g. "
            f"iconv -f cp1251 -t utf-8"
        ) from None


def write_samples(pieces, num_samples: int) -> int:
    """Write the samples `pieces` yields (charlm.textgen.TextGenerator.pieces: a list of a
    piece per sample, the prime first). The first sample streams as it is made; the others
    follow it, separated, and wait on disk meanwhile, so memory stays flat however long
    the samples. Returns the characters generated."""
    generated = 0
    with tempfile.TemporaryFile() as spool:
        prime = None
        for chunk in pieces:
            if prime is None:
                prime = chunk[0]
            else:
                generated += sum(map(len, chunk))
            sys.stdout.write(chunk[0])
            sys.stdout.flush()
            spool_pieces(spool, chunk[1:])
        for sample in range(1, num_samples):
            sys.stdout.write(f"\n\n--- sample {sample + 1} ---\n")
            for piece in spooled(spool, sample - 1, num_samples - 1):
                sys.stdout.write(piece)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return generated


def spool_pieces(spool, pieces: list[str]) -> None:
    """A chunk's pieces as one record: their UTF-8 byte lengths, then their bytes."""
    encoded = [piece.encode("utf-8", "surrogatepass") for piece in pieces]
    spool.write(struct.pack(f"<{len(encoded)}q", *map(len, encoded)) + b"".join(encoded))


def spooled(spool, index: int, count: int):
    """Sample `index`'s pieces from a spool of records of `count` pieces each."""
    spool.seek(0, 2)
    end = spool.tell()
    spool.seek(0)
    while spool.tell() < end:
        lengths = struct.unpack(f"<{count}q", spool.read(8 * count))
        spool.seek(sum(lengths[:index]), 1)
        yield spool.read(lengths[index]).decode("utf-8", "surrogatepass")
        spool.seek(sum(lengths[index + 1 :]), 1)
