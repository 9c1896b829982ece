"""`POST /v1/inspect`: the playground's inspect tab. Body `{"text": "..."}`; the answer is
the inspection of the text (charlm.inspect.page.inspection: the surprise at each
character, the likeliest characters, the units' values and the units find_units found),
which the tab draws with the page's own renderer (static/inspect.js).

The request is checked as a completion is (the route runs under app.py's `guarded`: the
API key; charlm.serve.http.read_json: JSON declared, the body cap and timeout), then the
text as `charlm inspect` checks it, under a cap of its own. The model runs in a worker
thread, one inspection at a time: the event loop keeps serving, the engine's thread keeps
sampling beside it (TensorFlow runs functions from several threads; every inspection call
only reads the weights), and a second inspection meanwhile is told to come back (429)
rather than queue behind the first and compete with the engine for the cores.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from charlm.errors import CharlmError
from charlm.serve.errors import RequestError
from charlm.serve.http import read_json

MAX_CHARS = 5_000  # characters one inspection reads (its answer grows with text x units)
MAX_VALUES = 2_000_000  # unit values one answer holds (one byte each, as base64)


class Inspector:
    """Runs inspections for a server, one at a time, in a thread of its own."""

    def __init__(self, service):
        self.service = service
        self.running = threading.Lock()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="charlm-inspect")

    def max_chars(self) -> int:
        return min(MAX_CHARS, self.service.limits.max_prompt_chars)

    async def route(self, request: Request) -> Response:
        body = await read_json(request, self.service.limits, self.service.stopping)
        text = self.parsed(body)
        if not self.running.acquire(blocking=False):
            raise RequestError(
                "the server is inspecting another text; try again shortly",
                status=429,
                kind="rate_limit_error",
                code="rate_limit_exceeded",
            )
        try:
            loop = asyncio.get_running_loop()
            data = await loop.run_in_executor(self.worker, self.inspect, text)
        finally:
            self.running.release()
        return JSONResponse(data)

    def parsed(self, body) -> str:
        """The text of a request body, checked; RequestError naming the field otherwise."""
        from charlm.inspect.text import check_text

        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        unknown = sorted(set(body) - {"text", "model"})
        if unknown:
            raise RequestError(f'unknown field {unknown[0]!r}; send {{"text": ...}}', unknown[0])
        text = body.get("text")
        if not isinstance(text, str):
            raise RequestError("text must be a string: the text to inspect", "text")
        try:
            check_text(text, self.max_chars(), "text")
        except CharlmError as error:
            raise RequestError(str(error), "text") from None
        return text

    def inspect(self, text: str) -> dict:
        """The inspection (in the worker thread)."""
        from charlm.inspect.page import TOP, inspect_text

        loaded = self.service.loaded
        scores = self.service.generator.score(text, TOP)
        return inspect_text(loaded.model, loaded.vocab, text, scores, MAX_VALUES)
