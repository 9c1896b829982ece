"""`charlm data fetch` and `charlm data stats`: corpora, without TensorFlow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm.cli.app import data_app, say, user_errors


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="Corpus name: tinyshakespeare.")],
    dest: Annotated[Path, typer.Option(help="Directory to write into.")] = Path("data"),
    url: Annotated[Optional[str], typer.Option(help="Download from here instead.")] = None,
):
    """Download a classic corpus and verify its sha256."""
    from charlm.data.fetch import fetch

    with user_errors():
        path = fetch(name, dest, url)
    say(f"wrote {path}")


@data_app.command("stats")
def data_stats(
    path: Annotated[list[str], typer.Argument(help="File(s), directory or glob.")],
    top: Annotated[int, typer.Option(help="How many of the most frequent characters.")] = 10,
):
    """Count characters, distinct characters, files and bytes of a corpus."""
    from charlm.data.sources import resolve_files
    from charlm.data.tokens import scan_corpus
    from charlm.training.progress import RichReporter

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
