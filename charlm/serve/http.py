"""The server's edge: what a request must be before a route reads it, and how long and how
many connections uvicorn keeps.

    a connection beyond --max-connections      503 error object, then closed
    no complete request head in --header-timeout    the connection is closed
    a POST body not sent in --body-timeout     408 error object (503 if the server stops)
    a POST body over --max-body-bytes          413 error object; the rest is not read
    a POST body not declared application/json  415 error object
    a body that is not JSON (or nested past the parser's depth)   400 error object
    no or a wrong API key, when one is set     401 error object

Every refusal is an OpenAI error object in ASCII JSON, whatever the request held (a field
name with a lone surrogate cannot be written as UTF-8, but can be escaped).
"""

from __future__ import annotations

import asyncio
import hmac
import json

import h11
import uvicorn
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

from charlm.serve.errors import RequestError
from charlm.serve.requests import Limits


class ErrorResponse(JSONResponse):
    """An error object, escaped to ASCII: its message may quote any text the client sent."""

    def __init__(self, error: RequestError, headers: dict | None = None):
        super().__init__(error.body(), status_code=error.status, headers=headers)

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def unauthorised(api_key: str | None, request: Request) -> RequestError | None:
    """The refusal of a request without the key (RFC 7235: the scheme's case does not
    matter), or None."""
    if not api_key:
        return None
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), api_key.encode()
    ):
        return None
    return RequestError(
        "a valid API key is needed (Authorization: Bearer KEY)",
        status=401,
        kind="authentication_error",
        code="invalid_api_key",
    )


async def read_json(request: Request, limits: Limits, stopping: asyncio.Event):
    """The decoded JSON body of a POST, or a RequestError: 415 unless it is declared JSON,
    413 once it passes the body cap (at once from its Content-Length, or while it is
    read), 408 if it takes longer than the body timeout, 503 if the server stops first."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise RequestError(
            "the request body must be JSON, sent with Content-Type: application/json",
            status=415,
            code="unsupported_media_type",
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise too_large(limits)
    body = await within_time(receive_body(request, limits), limits.body_timeout, stopping)
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested past the parser's depth
        raise RequestError("the request body is not valid JSON") from None


async def receive_body(request: Request, limits: Limits) -> bytes:
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limits.max_body_bytes:
            raise too_large(limits)
    return bytes(body)


async def within_time(reading, seconds: float, stopping: asyncio.Event):
    reader = asyncio.ensure_future(reading)
    stopper = asyncio.ensure_future(stopping.wait())
    try:
        done, _ = await asyncio.wait(
            {reader, stopper}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stopper.cancel()
    if reader not in done:
        reader.cancel()
        if stopping.is_set():
            raise shutting_down()
        raise RequestError(
            f"the request body did not arrive within {seconds:g} seconds",
            status=408,
            code="request_timeout",
        )
    try:
        return reader.result()
    except ClientDisconnect:
        raise RequestError("the client went away", status=400) from None


def shutting_down() -> RequestError:
    return RequestError(
        "the server is shutting down and its grace for this request ran out; try again",
        status=503,
        kind="server_error",
        code="server_shutting_down",
    )


def too_large(limits: Limits) -> RequestError:
    return RequestError(
        f"the request body is over {limits.max_body_bytes:,} bytes, the most this server "
        "reads (its --max-body-bytes)",
        status=413,
        code="request_too_large",
    )


class GuardedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, bounded: a connection beyond the server's limit is
    answered with a 503 error object; a request head must arrive within the head timeout
    of the connection's start (or of the last response); and a connection whose request
    body was not read (it was refused) is closed after the response, not read on."""

    def __init__(self, *args, header_timeout: float, max_connections: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.header_timeout, self.max_connections = header_timeout, max_connections
        self.head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self.app = too_many_connections
        self.wait_for_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.head_timer and self.conn.their_state is not h11.IDLE:
            self.head_timer.cancel()
            self.head_timer = None

    def connection_lost(self, exc) -> None:
        if self.head_timer:
            self.head_timer.cancel()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        if self.conn.their_state not in (h11.DONE, h11.IDLE) and not self.transport.is_closing():
            self.transport.close()  # a refused body: reading the rest would only cost
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self.wait_for_head()

    def wait_for_head(self) -> None:
        if self.head_timer:
            self.head_timer.cancel()
        self.head_timer = self.loop.call_later(self.header_timeout, self.head_too_slow)

    def head_too_slow(self) -> None:
        self.head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


async def too_many_connections(scope, receive, send) -> None:
    error = RequestError(
        "the server has as many connections as it keeps (its --max-connections); try again shortly",
        status=503,
        kind="server_error",
        code="too_many_connections",
    )
    await ErrorResponse(error, headers={"Connection": "close"})(scope, receive, send)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, which on SIGINT or SIGTERM stops taking connections and waits for
    the responses in flight; `drain(grace)` is called first, so that the app ends those
    still running when the grace runs out, each with an error object, before uvicorn's
    own deadline (a little later) would cancel them."""

    def __init__(self, config: uvicorn.Config, drain):
        super().__init__(config)
        self.drain = drain

    async def shutdown(self, sockets=None) -> None:
        self.drain()
        await super().shutdown(sockets)
