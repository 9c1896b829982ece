"""`charlm serve` and `charlm export`: a trained run for other programs."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm.cli.app import CheckpointOption, app, fail, quiet_tensorflow_start, say, user_errors

API_KEY_ENV = "CHARLM_API_KEY"


@app.command()
def serve(
    checkpoint: CheckpointOption,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    lanes: Annotated[int, typer.Option(help="Streams generated at once.")] = 64,
    queue: Annotated[
        int, typer.Option(help="Streams that may wait for a lane; more get HTTP 429.")
    ] = 256,
    max_tokens: Annotated[
        int, typer.Option(help="The most characters a choice may ask for.")
    ] = 4096,
    max_prompt_chars: Annotated[int, typer.Option(help="The longest prompt read.")] = 100_000,
    api_key: Annotated[
        Optional[str],
        typer.Option(help=f"Require `Authorization: Bearer KEY` (or set {API_KEY_ENV})."),
    ] = None,
    grace: Annotated[
        float,
        typer.Option(help="Seconds in-flight responses get to finish after SIGINT or SIGTERM."),
    ] = 30.0,
):
    """Serve a run over HTTP: OpenAI-compatible /v1/completions and a playground page."""
    for name, value, low in (
        ("--port", port, 1),
        ("--lanes", lanes, 1),
        ("--queue", queue, 0),
        ("--max-tokens", max_tokens, 1),
        ("--max-prompt-chars", max_prompt_chars, 1),
    ):
        if value < low:
            fail(f"{name} must be at least {low}; got {value}")
    if port > 65535:
        fail(f"--port must be at most 65535; got {port}")
    check_can_listen(host, port)
    quiet_tensorflow_start()
    import uvicorn

    from charlm.generate import Sampler
    from charlm.run.load import load_checkpoint
    from charlm.serve.app import Service, create_app
    from charlm.serve.engine import Engine
    from charlm.serve.requests import Limits

    with user_errors():
        loaded = load_checkpoint(checkpoint)
    engine = Engine(Sampler(loaded.model, loaded.vocab), lanes=lanes, queue_limit=queue)
    limits = Limits(max_tokens=max_tokens, max_prompt_chars=max_prompt_chars, lanes=lanes)
    key = api_key or os.environ.get(API_KEY_ENV) or None
    service = Service(engine, loaded, limits, key)
    say(f"compiling the sampling loop for 1 to {lanes} streams, then serving")  # Engine.start
    say(
        f"serving {loaded.run_dir} on http://{host}:{port} ({lanes} lanes"
        f"{', API key required' if key else ''}); playground at http://{host}:{port}/"
    )
    # uvicorn finishes the responses in flight on SIGINT or SIGTERM, then raises the
    # signal again for the handler it found: a no-op one makes that a clean exit 0.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    uvicorn.run(
        create_app(service),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=grace,
    )
    say("stopped")


@app.command()
def export(
    checkpoint: CheckpointOption,
    out: Annotated[Path, typer.Option(help="Directory to write the SavedModel into.")],
):
    """Write a TensorFlow SavedModel with a `generate` signature (and vocab.json beside it)."""
    quiet_tensorflow_start()
    from charlm.export import export_saved_model

    with user_errors():
        export_saved_model(checkpoint, out)
    say(f"wrote {out} (signature generate; vocabulary {out / 'vocab.json'})")


def check_can_listen(host: str, port: int) -> None:
    """Refuse, before the model is loaded, an address that cannot be listened on."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as error:
        fail(f"cannot listen on {host}:{port} ({error.strerror}); choose another --port or --host")
