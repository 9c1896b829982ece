"""The HTTP face of `charlm serve`: OpenAI's completions protocol, the run's facts, the
playground page, on Starlette (served by uvicorn).

    POST /v1/completions   prompt, max_tokens, temperature, top_p, top_k, n, seed, stop,
                           stream (server-sent events ending with `data: [DONE]`)
    POST /v1/inspect       a text's inspection, for the playground's inspect tab
    GET  /v1/models        the loaded run
    GET  /v1/run           its facts and validation history (for the playground)
    GET  /health           liveness and lane use (open without the API key)
    GET  /                 the playground page (open: it asks for the key, if one is set)

What a request must be before a route reads it (a JSON body under a cap, sent in time,
the API key) is charlm.serve.http's; no CORS headers are sent, so a web page of another
origin cannot read a reply, and a JSON POST from it needs a preflight, which fails.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import warnings
from contextlib import asynccontextmanager
from importlib import resources

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from charlm.sampling_rules import UnknownCharactersWarning
from charlm.serve.engine import Busy, Engine
from charlm.serve.facts import facts
from charlm.serve.http import ErrorResponse, read_json, shutting_down, unauthorised
from charlm.serve.inspect import Inspector
from charlm.serve.requests import Completion, Limits, RequestError, parse_completion
from charlm.serve.streams import request_streams
from charlm.textgen import TextGenerator

STATIC = resources.files("charlm.serve") / "static"
# What a request's queue of (choice index, text, finish reason) receives, besides its
# streams' text, when it must end early: its client went away, or the server's grace ran out.
GONE = (None, "", "gone")
STOPPING = (None, "", "stopping")


class Service:
    """What the routes share: the engine, the loaded run, the limits and the key."""

    def __init__(self, engine: Engine, loaded, limits: Limits, api_key: str | None):
        self.engine, self.loaded, self.limits, self.api_key = engine, loaded, limits, api_key
        # The library's rules of reading and sampling, on the engine's own sampler.
        self.generator = TextGenerator(
            loaded.model, loaded.vocab, loaded.config.sample, sampler=engine.sampler
        )
        self.model_id = loaded.run_dir.name
        self.created = int(time.time())
        self.stopping = asyncio.Event()  # set when the shutdown grace has run out
        self.queues: set[asyncio.Queue] = set()  # of the requests being answered

    def drain(self, grace: float) -> None:
        """The server stops: what is still being answered in `grace` seconds ends then,
        each with an error object (called on the server's loop)."""
        asyncio.get_running_loop().call_later(grace, self.stop_answering)

    def stop_answering(self) -> None:
        self.stopping.set()
        for events in self.queues:
            events.put_nowait(STOPPING)


def create_app(service: Service) -> Starlette:
    @asynccontextmanager
    async def lifespan(app):
        service.engine.start()
        yield
        service.engine.stop()

    def guarded(route):
        """The route, for clients with the API key (if one is set); its refusals as
        error objects."""

        async def guarded_route(request: Request) -> Response:
            try:
                refusal = unauthorised(service.api_key, request)
                if refusal:
                    raise refusal
                return await route(request)
            except RequestError as error:
                return ErrorResponse(error)

        return guarded_route

    async def completions(request: Request) -> Response:
        body = await read_json(request, service.limits, service.stopping)
        completion = parse_completion(body, service.generator, service.limits)
        return await complete(service, completion, request)

    async def models(request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": service.model_id,
                        "object": "model",
                        "created": service.created,
                        "owned_by": "charlm",
                    }
                ],
            }
        )

    async def run_facts(request: Request) -> Response:
        return JSONResponse(facts(service))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", **service.engine.load()})

    async def page(request: Request) -> Response:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/v1/completions", guarded(completions), methods=["POST"]),
            Route("/v1/inspect", guarded(Inspector(service).route), methods=["POST"]),
            Route("/v1/models", guarded(models)),
            Route("/v1/run", guarded(run_facts)),
            Route("/health", health),
            Route("/", page),
            Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
        ],
    )


def readable_prompt(service: Service, prompt: str) -> str:
    """The part of a prompt the model reads, as `charlm sample` reads a prime (a server
    answers; it does not warn)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownCharactersWarning)
        return service.generator.readable(prompt)


async def complete(service: Service, completion: Completion, request: Request) -> Response:
    """Submit the request's streams; answer with one JSON body or a stream of events."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    prompt_ids = service.generator.prompt_ids(readable_prompt(service, completion.prompt))

    def emitter(index):
        return lambda text, finish: loop.call_soon_threadsafe(
            events.put_nowait, (index, text, finish)
        )

    streams = request_streams(
        prompt_ids,
        completion.n,
        completion.seed,
        length=completion.max_tokens,
        temperature=completion.temperature,
        top_k=completion.top_k,
        top_p=completion.top_p,
        stop=completion.stop,
        emitter=emitter,
    )
    try:
        service.engine.submit(streams)
    except Busy as busy:
        raise RequestError(
            f"the server is busy ({busy}); try again shortly",
            status=429,
            kind="rate_limit_error",
            code="rate_limit_exceeded",
        ) from None
    envelope = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": service.model_id,
    }
    usage = {"prompt_tokens": len(completion.prompt)}
    if completion.stream:
        return StreamingResponse(
            sse(service, events, streams, envelope, usage, completion),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    service.queues.add(events)
    # Starlette notices a streaming client's going; this one's is watched for here.
    watcher = asyncio.ensure_future(report_disconnect(request, events))
    try:
        return JSONResponse(await gathered(events, streams, envelope, usage))
    finally:
        watcher.cancel()
        service.queues.discard(events)


async def report_disconnect(request: Request, events: asyncio.Queue) -> None:
    """Put GONE in the request's queue when its client disconnects (its body is read:
    what receive() gives now is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    events.put_nowait(GONE)


async def gathered(events, streams, envelope, usage) -> dict:
    """The whole completion; a RequestError if the client went away (nobody reads it)
    or the server stops before it is done."""
    texts = [""] * len(streams)
    reasons: list = [None] * len(streams)
    try:
        while not all(reasons):
            index, text, finish = await events.get()
            if index is None:
                raise shutting_down() if finish == "stopping" else client_gone()
            texts[index] += text
            reasons[index] = reasons[index] or finish
    finally:
        cancel(streams)
    if "error" in reasons:
        raise generation_failed()
    completion_chars = sum(len(t) for t in texts)
    return {
        **envelope,
        "choices": [
            {"text": text, "index": i, "logprobs": None, "finish_reason": reason}
            for i, (text, reason) in enumerate(zip(texts, reasons))
        ],
        "usage": {
            **usage,
            "completion_tokens": completion_chars,
            "total_tokens": usage["prompt_tokens"] + completion_chars,
        },
    }


async def sse(service, events, streams, envelope, usage, completion):
    """OpenAI's chunk format: one event per choice with the text that came since the
    last one, the finish reason in the last event of each choice, then `data: [DONE]`;
    or, if the server fails a choice or stops, an event with an error object instead of
    the rest (and, on stopping, `data: [DONE]`).
    A client that goes away cancels its streams: their lanes are freed when the running
    chunk ends (or, while a long prompt is read, at its turn for a piece)."""
    finished = 0
    generated = 0
    service.queues.add(events)
    if service.stopping.is_set():  # the grace ran out before this stream began
        events.put_nowait(STOPPING)
    try:
        while finished < len(streams):
            pieces = [await events.get()]
            while not events.empty():  # whatever else arrived meanwhile, in one write
                pieces.append(events.get_nowait())
            if STOPPING in pieces:
                yield event(shutting_down().body()) + "data: [DONE]\n\n"
                return
            out = []
            for index, text, finish in merged(pieces):
                if finish == "error":  # OpenAI's clients raise on an event with an error
                    yield "".join(out) + event(generation_failed().body())
                    return
                finished += finish is not None
                generated += len(text)
                choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
                out.append(event({**envelope, "choices": [choice]}))
            yield "".join(out)
        if completion.include_usage:
            yield event(
                {
                    **envelope,
                    "choices": [],
                    "usage": {
                        **usage,
                        "completion_tokens": generated,
                        "total_tokens": usage["prompt_tokens"] + generated,
                    },
                }
            )
        yield "data: [DONE]\n\n"
    finally:
        cancel(streams)
        service.queues.discard(events)


def generation_failed() -> RequestError:
    return RequestError(
        "the server failed while generating this completion (its log says why); try again",
        status=500,
        kind="server_error",
    )


def client_gone() -> RequestError:
    return RequestError("the client went away before its completion was done")


def merged(pieces: list) -> list:
    """(index, text, finish) pieces with each choice's texts joined, in order."""
    by_choice: dict = {}
    for index, text, finish in pieces:
        old_text, old_finish = by_choice.get(index, ("", None))
        by_choice[index] = (old_text + text, old_finish or finish)
    return [(index, text, finish) for index, (text, finish) in by_choice.items()]


def event(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def cancel(streams) -> None:
    for stream in streams:
        stream.cancelled = True
