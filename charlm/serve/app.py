"""The HTTP face of `charlm serve`: OpenAI's completions protocol, the run's facts, the
playground page, on Starlette (served by uvicorn).

    POST /v1/completions   prompt (strings or token ids), max_tokens, temperature, top_p,
                           top_k, n, seed, stop, logprobs, echo, logit_bias, user, stream
                           (server-sent events ending with `data: [DONE]`): completions.py
    POST /v1/chat/completions   messages as a transcript the model continues: chat.py
    GET  /tokenizer_info   the vocabulary as vLLM describes a tokenizer: tokenizer.py
    POST /tokenize         text -> token ids
    POST /detokenize       token ids -> text
    POST /v1/inspect       a text's inspection, for the playground's inspect tab
    GET  /v1/models        the loaded run
    GET  /v1/run           its facts and validation history (for the playground)
    GET  /health           liveness and lane use (open without the API key)
    GET  /openapi.json     this API as an OpenAPI document (open): openapi.py
    GET  /                 the playground page (open: it asks for the key, if one is set)

What a request must be before a route reads it (a JSON body under a cap, sent in time,
the API key) is charlm.serve.http's; no CORS headers are sent, so a web page of another
origin cannot read a reply, and a JSON POST from it needs a preflight, which fails.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from importlib import resources

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from charlm.serve.chat import ChatShape, parse_chat
from charlm.serve.completions import STOPPING, Shape, answer
from charlm.serve.engine import Engine
from charlm.serve.errors import RequestError
from charlm.serve.facts import facts
from charlm.serve.http import ErrorResponse, read_json, unauthorised
from charlm.serve.inspect import Inspector
from charlm.serve.logprobs import Scoring
from charlm.serve.openapi import document
from charlm.serve.requests import Limits, parse_completion
from charlm.serve.tokenizer import detokenize, tokenize, tokenizer_info
from charlm.serve.transcript import ROLES
from charlm.textgen import TextGenerator

STATIC = resources.files("charlm.serve") / "static"


class Service:
    """What the routes share: the engine, the loaded run, the limits and the key."""

    def __init__(
        self,
        engine: Engine,
        loaded,
        limits: Limits,
        api_key: str | None,
        chat_roles: dict[str, str] = ROLES,
    ):
        self.engine, self.loaded, self.limits, self.api_key = engine, loaded, limits, api_key
        self.chat_roles = chat_roles  # each chat role's name in a transcript
        # The library's rules of reading and sampling, on the engine's own sampler.
        self.generator = TextGenerator(
            loaded.model, loaded.vocab, loaded.config.sample, sampler=engine.sampler
        )
        # Scoring's cache may take what the engine's may (--prefix-cache-mb).
        self.scoring = Scoring(self.generator, engine.prefix_cache.limit)
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
        return await answer(service, completion, request, Shape())

    async def chat(request: Request) -> Response:
        body = await read_json(request, service.limits, service.stopping)
        completion = parse_chat(body, service.generator, service.limits, service.chat_roles)
        return await answer(service, completion, request, ChatShape())

    def json_route(handler):
        """A route that answers `handler(service, body)` for a POST's JSON body."""

        async def route(request: Request) -> Response:
            body = await read_json(request, service.limits, service.stopping)
            return JSONResponse(handler(service, body))

        return route

    async def tokenizer(request: Request) -> Response:
        return JSONResponse(tokenizer_info(service))

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
        score_cache = service.scoring.cache.facts()
        return JSONResponse({"status": "ok", **service.engine.load(), "score_cache": score_cache})

    async def openapi(request: Request) -> Response:
        from charlm import __version__

        return JSONResponse(document(__version__))

    async def page(request: Request) -> Response:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/v1/completions", guarded(completions), methods=["POST"]),
            Route("/v1/inspect", guarded(Inspector(service).route), methods=["POST"]),
            Route("/v1/chat/completions", guarded(chat), methods=["POST"]),
            Route("/tokenizer_info", guarded(tokenizer)),
            Route("/tokenize", guarded(json_route(tokenize)), methods=["POST"]),
            Route("/detokenize", guarded(json_route(detokenize)), methods=["POST"]),
            Route("/v1/models", guarded(models)),
            Route("/v1/run", guarded(run_facts)),
            Route("/health", health),
            Route("/openapi.json", openapi),
            Route("/", page),
            Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
        ],
    )
