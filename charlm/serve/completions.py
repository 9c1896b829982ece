"""Answering a generating request (`POST /v1/completions`, `POST /v1/chat/completions`):
its streams submitted to the engine, their text gathered into one body or sent as
server-sent events in OpenAI's chunk format, each choice's logprobs computed as its text
arrives (charlm.serve.logprobs). What differs between the two endpoints, the shape of a
choice and of a chunk, is a `Shape`.

Choices are indexed as OpenAI indexes them, prompt-major then `n`; with `echo` each
choice's text starts with its prompt; `max_tokens: 0` generates nothing (with `echo` and
`logprobs`, it scores the prompt alone).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from charlm.serve.engine import Busy
from charlm.serve.errors import RequestError
from charlm.serve.http import shutting_down
from charlm.serve.requests import Completion
from charlm.serve.streams import request_streams

# What a request's queue of (choice index, text, finish reason) receives, besides its
# streams' text, when it must end early: its client went away, or the server's grace ran out.
GONE = (None, "", "gone")
STOPPING = (None, "", "stopping")


class Shape:
    """`/v1/completions`' choices and chunks."""

    object, chunk_object, id_prefix = "text_completion", "text_completion", "cmpl"

    def choice(self, index: int, text: str, finish, logprobs) -> dict:
        return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}

    def chunk(self, index: int, text: str, finish, logprobs, first: bool) -> dict:
        return self.choice(index, text, finish, logprobs)


class Reply:
    """A request's choices as they arrive: their prompts, generated text and finish."""

    def __init__(self, service, completion: Completion, shape: Shape, streams: list):
        self.service, self.completion, self.shape = service, completion, shape
        self.streams = streams  # each choice's (none with `max_tokens: 0`)
        self.prompts = [p for p in completion.prompts for _ in range(completion.n)]
        self.texts = [""] * len(self.prompts)
        self.reasons: list = [None] * len(self.prompts)
        self.envelope = {
            "id": f"{shape.id_prefix}-{uuid.uuid4().hex}",
            "object": shape.object,
            "created": int(time.time()),
            "model": service.model_id,
        }

    async def logprobs(self, index: int, start: int):
        """Choice `index`'s logprobs object from character `start` of its prompt and text
        so far, or None when the request asked for none."""
        if self.completion.logprobs is None:
            return None
        prompt, top = self.prompts[index], self.completion.logprobs
        # The prompt's first choice read it for all its choices (request_streams).
        first = index - index % self.completion.n
        handed = self.streams[first].read_strides if self.streams else ()
        return await self.service.scoring.logprobs(prompt, self.texts[index], start, top, handed)

    def usage(self) -> dict:
        prompt = sum(len(p.ids) for p in self.completion.prompts)
        generated = sum(len(text) for text in self.texts)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": generated,
            "total_tokens": prompt + generated,
        }

    async def body(self) -> dict:
        """The whole answer, once every choice has finished."""
        echo = self.completion.echo
        # Asked for all at once: the scorer reads them together (see charlm.serve.logprobs).
        every_logprobs = await asyncio.gather(
            *(
                self.logprobs(index, 0 if echo else len(prompt.text))
                for index, prompt in enumerate(self.prompts)
            )
        )
        choices = []
        for index, (prompt, text) in enumerate(zip(self.prompts, self.texts)):
            shown = prompt.text + text if echo else text
            choices.append(
                self.shape.choice(index, shown, self.reasons[index], every_logprobs[index])
            )
        return {**self.envelope, "choices": choices, "usage": self.usage()}

    async def chunk(self, index: int, text: str, finish, first: bool) -> str:
        """The event of choice `index`'s new `text` (and its finish, if it finished)."""
        before = len(self.prompts[index].text) + len(self.texts[index])
        self.texts[index] += text
        self.reasons[index] = self.reasons[index] or finish
        logprobs = await self.logprobs(index, before)
        return self.event(self.shape.chunk(index, text, finish, logprobs, first))

    async def echoed(self, index: int) -> str:
        """The first event of choice `index` with `echo`: its prompt."""
        text = self.prompts[index].text
        logprobs = await self.logprobs(index, 0)
        return self.event(self.shape.chunk(index, text, None, logprobs, True))

    def event(self, choice: dict) -> str:
        return event({**self.envelope, "object": self.shape.chunk_object, "choices": [choice]})


async def answer(service, completion: Completion, request: Request, shape: Shape) -> Response:
    """Submit the request's streams; answer with one JSON body or a stream of events."""
    events: asyncio.Queue = asyncio.Queue()
    streams = submit(service, completion, events)
    reply = Reply(service, completion, shape, streams)
    if completion.stream:
        return StreamingResponse(
            sse(service, events, streams, reply),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    service.queues.add(events)
    # Starlette notices a streaming client's going; this one's is watched for here.
    watcher = asyncio.ensure_future(report_disconnect(request, events))
    try:
        await gathered(events, streams, reply)
        return JSONResponse(await reply.body())
    finally:
        watcher.cancel()
        service.queues.discard(events)


def submit(service, completion: Completion, events: asyncio.Queue) -> list:
    """The request's streams, handed to the engine; their text goes to `events`. With
    `max_tokens: 0` there are none, and every choice finishes at once."""
    loop = asyncio.get_running_loop()
    choices = len(completion.prompts) * completion.n
    if completion.max_tokens == 0:
        for index in range(choices):
            events.put_nowait((index, "", "length"))
        return []

    def emitter(index):
        return lambda text, finish: loop.call_soon_threadsafe(
            events.put_nowait, (index, text, finish)
        )

    streams = request_streams(
        [service.generator.sampler.prime_row(p.ids) for p in completion.prompts],
        completion.n,
        completion.seed,
        length=completion.max_tokens,
        temperature=completion.temperature,
        top_k=completion.top_k,
        top_p=completion.top_p,
        stop=completion.stop,
        bias=completion.bias,
        scored=completion.logprobs is not None,
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
    return streams


async def report_disconnect(request: Request, events: asyncio.Queue) -> None:
    """Put GONE in the request's queue when its client disconnects (its body is read:
    what receive() gives now is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    events.put_nowait(GONE)


async def gathered(events, streams, reply: Reply) -> None:
    """Every choice's text in `reply`; a RequestError if the client went away (nobody
    reads it) or the server stops before it is done."""
    try:
        while not all(reply.reasons):
            index, text, finish = await events.get()
            if index is None:
                raise shutting_down() if finish == "stopping" else client_gone()
            reply.texts[index] += text
            reply.reasons[index] = reply.reasons[index] or finish
    finally:
        cancel(streams)
    if "error" in reply.reasons:
        raise generation_failed()


async def sse(service, events, streams, reply: Reply):
    """OpenAI's chunk format: one event per choice with the text that came since the
    last one, the finish reason in the last event of each choice, then `data: [DONE]`;
    or, if the server fails a choice or stops, an event with an error object instead of
    the rest (and, on stopping, `data: [DONE]`).
    A client that goes away cancels its streams: their lanes are freed when the running
    chunk ends (or, while a long prompt is read, at its turn for a piece)."""
    choices = len(reply.prompts)
    started = [False] * choices
    service.queues.add(events)
    if service.stopping.is_set():  # the grace ran out before this stream began
        events.put_nowait(STOPPING)
    try:
        while not all(reply.reasons):
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
                if reply.completion.echo and not started[index]:
                    # Its prompt once it is read: its scores are the engine's reading's.
                    out.append(await reply.echoed(index))
                    started[index] = True
                out.append(await reply.chunk(index, text, finish, not started[index]))
                started[index] = True
            yield "".join(out)
        if reply.completion.include_usage:
            usage = {**reply.envelope, "object": reply.shape.chunk_object, "usage": reply.usage()}
            yield event({**usage, "choices": []})
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
