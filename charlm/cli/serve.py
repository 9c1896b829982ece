"""`charlm serve` and `charlm export`: a trained run for other programs."""

from __future__ import annotations

import functools
import os
import signal
import socket
from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm.cli.app import CheckpointOption, app, fail, quiet_tensorflow_start, say, user_errors
from charlm.sampling_rules import CHUNK, CHUNK_STEPS

API_KEY_ENV = "CHARLM_API_KEY"
SHUTDOWN_MARGIN = 5.0  # seconds uvicorn waits past --grace for the app's last replies


@app.command()
def serve(
    checkpoint: CheckpointOption,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on. The default takes connections from this machine "
            "only; 0.0.0.0 takes them from any machine that can reach it: set --api-key "
            "then, as anyone who reaches the port can use the model."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    lanes: Annotated[int, typer.Option(help="Streams generated at once.")] = 64,
    queue: Annotated[
        int, typer.Option(help="Streams that may wait for a lane; more get HTTP 429.")
    ] = 256,
    max_tokens: Annotated[
        int, typer.Option(help="The most characters a choice may ask for.")
    ] = 4096,
    max_prompt_chars: Annotated[int, typer.Option(help="The longest prompt read.")] = 100_000,
    max_body_bytes: Annotated[
        Optional[int],
        typer.Option(
            help="The largest request body read; a larger one gets HTTP 413. "
            "Default: 6 bytes per --max-prompt-chars (a character escaped as \\uXXXX) "
            "plus 64 KiB."
        ),
    ] = None,
    header_timeout: Annotated[
        float,
        typer.Option(help="Seconds a connection may take to send a request's head; then closed."),
    ] = 10.0,
    body_timeout: Annotated[
        float,
        typer.Option(help="Seconds a request's body may take to arrive; then HTTP 408."),
    ] = 30.0,
    max_connections: Annotated[
        int,
        typer.Option(help="Connections kept at once; a request on one more gets HTTP 503."),
    ] = 512,
    prefix_cache_mb: Annotated[
        float,
        typer.Option(
            help="Memory for each of two caches: the states after prompt prefixes read "
            "before, so that a prompt extending one (a shared system prompt, a growing "
            "conversation) reads only its new characters, and the scores of texts scored "
            "before (logprobs, echo), so that one extending them is scored from there; "
            "least recently used out. 0 turns both off."
        ),
    ] = 256,
    chunk_chars: Annotated[
        int,
        typer.Option(
            help="Characters each batched call generates for every stream (1 to 256). "
            "Requests join between calls: fewer send a new request's first character "
            "sooner under load, more serve more characters per second."
        ),
    ] = CHUNK_STEPS,
    api_key: Annotated[
        Optional[str],
        typer.Option(
            help=f"Require `Authorization: Bearer KEY` on /v1/ (or set {API_KEY_ENV}); "
            "/health and the playground page stay open (the page asks for the key)."
        ),
    ] = None,
    chat_roles: Annotated[
        str,
        typer.Option(
            help="Each chat role's name in the transcript /v1/chat/completions writes, as "
            "ROLE=NAME pairs (roles: system, user, assistant), e.g. user=ROMEO,assistant=JULIET."
        ),
    ] = "",
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
        ("--max-body-bytes", 1 if max_body_bytes is None else max_body_bytes, 1),
        ("--max-connections", max_connections, 1),
        ("--header-timeout", header_timeout, 0.1),
        ("--body-timeout", body_timeout, 0.1),
        ("--grace", grace, 0),
        ("--prefix-cache-mb", prefix_cache_mb, 0),
        ("--chunk-chars", chunk_chars, 1),
    ):
        if not value >= low:  # also refuses nan
            fail(f"{name} must be at least {low}; got {value}")
    if port > 65535:
        fail(f"--port must be at most 65535; got {port}")
    if chunk_chars > CHUNK:
        fail(f"--chunk-chars must be at most {CHUNK}; got {chunk_chars}")
    if not prefix_cache_mb <= 2**20:
        fail(f"--prefix-cache-mb must be at most {2**20} (a TiB); got {prefix_cache_mb}")
    from charlm.serve.transcript import parse_chat_roles

    try:
        roles = parse_chat_roles(chat_roles)
    except ValueError as error:
        fail(str(error))
    check_can_listen(host, port)
    quiet_tensorflow_start()
    import uvicorn

    from charlm.generate import Sampler
    from charlm.run.load import load_checkpoint
    from charlm.serve.app import Service, create_app
    from charlm.serve.engine import Engine
    from charlm.serve.http import DrainingServer, GuardedH11
    from charlm.serve.requests import Limits

    with user_errors():
        loaded = load_checkpoint(checkpoint)
    engine = Engine(
        Sampler(loaded.model, loaded.vocab),
        lanes=lanes,
        queue_limit=queue,
        prefix_cache_bytes=int(prefix_cache_mb * 2**20),
        chunk_steps=chunk_chars,
    )
    limits = Limits(
        max_tokens=max_tokens,
        max_prompt_chars=max_prompt_chars,
        lanes=lanes,
        queue=queue,
        max_body_bytes=max_body_bytes,
        body_timeout=body_timeout,
    )
    key = api_key or os.environ.get(API_KEY_ENV) or None
    service = Service(engine, loaded, limits, key, roles)
    say(f"compiling the sampling loop for 1 to {lanes} streams, then serving")  # Engine.start
    say(
        f"serving {loaded.run_dir} on http://{host}:{port} ({lanes} lanes"
        f"{', API key required' if key else ''}); playground at http://{host}:{port}/"
    )
    # uvicorn finishes the responses in flight on SIGINT or SIGTERM, then raises the
    # signal again for the handler it found: a no-op one makes that a clean exit 0.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    config = uvicorn.Config(
        create_app(service),
        host=host,
        port=port,
        log_level="warning",
        http=functools.partial(
            GuardedH11, header_timeout=header_timeout, max_connections=max_connections
        ),
        # The app ends what runs at `grace` with error objects (Service.drain); uvicorn
        # cancels only what is left a little later.
        timeout_graceful_shutdown=grace + SHUTDOWN_MARGIN,
    )
    DrainingServer(config, drain=lambda: service.drain(grace)).run()
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
