"""The serving engine in-process: streams finish and stop as they should, prompts are
read and chunks scheduled in the promised order, and a failure ends only its own
streams (also seen through the app, in-process). Everything else about the HTTP face is
tested through a real server in test_serve.py."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from tests.helpers import cli_sample


@pytest.mark.parametrize(
    "pieces, stop, length, sent, reason",
    [
        (["hello wor", "ld and more"], ["wo"], 100, "hello ", "stop"),
        (["ab", "cd", "ef"], ["cde", "zz"], 100, "ab", "stop"),
        (["abcdef"], ["xy"], 4, "abcd", "length"),
        (["abc", "def"], ["ef"], 4, "abcd", "length"),  # past the length, no stop counts
        (["abc", "def", "ghi"], [], 100, "abcdefghi", None),
    ],
)
def test_a_stream_stops_at_the_first_stop_string_or_its_length(pieces, stop, length, sent, reason):
    """What is sent never includes a stop string, even one split across chunks."""
    from charlm.serve.streams import Stream

    events = []
    stream = Stream(
        prompt_ids=np.zeros(1, np.int32),
        length=length,
        seed=0,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        stop=stop,
        emit=lambda text, finish: events.append((text, finish)),
    )
    for piece in pieces:
        if not stream.finish_reason:
            stream.take(piece)
    assert "".join(text for text, _ in events) == sent
    assert stream.finish_reason == reason
    finishes = [finish for _, finish in events if finish]
    assert finishes == ([reason] if reason else [])


@pytest.mark.parametrize("chunk_steps", [32, 5])
def test_prompts_read_together_give_the_texts_charlm_sample_gives(trained_run, chunk_steps):
    """Streams submitted at once have their prompts read together, whatever their
    lengths (short ones in one group, a long one in its own): each text is the one
    `charlm sample` prints for its prompt (as one of several samples), in chunks of
    any length (`--chunk-chars`)."""
    from charlm.generate import Sampler
    from charlm.run.load import load_checkpoint
    from charlm.serve.engine import Engine
    from charlm.serve.streams import request_streams

    loaded = load_checkpoint(trained_run)
    engine = Engine(Sampler(loaded.model, loaded.vocab), lanes=8, chunk_steps=chunk_steps)
    generate, chunks = engine.sampler.generate, []
    engine.sampler.generate = lambda *args: chunks.append(args[3]) or generate(*args)
    prompts = ["a", "the cat sat on the mat", "the dog ran. " * 20]
    finished = threading.Event()
    texts = {prompt: "" for prompt in prompts}

    def emitter(prompt):
        def emit(text, reason):
            texts[prompt] += text
            if reason and all(s.finish_reason for s in streams):
                finished.set()

        return lambda _: emit

    streams = [
        stream
        for prompt in prompts
        for stream in request_streams(
            [engine.sampler.prime_row(loaded.vocab.encode(prompt))],  # as a server reads it
            1,
            11,
            emitter(prompt),
            length=120,
            temperature=0.9,
            top_k=6,
            top_p=1.0,
            stop=[],
        )
    ]
    engine.submit(streams)  # before start: the reader takes all three at once
    engine.start()
    assert finished.wait(60)
    engine.stop()
    # A server runs a lone stream as it runs a batch: like a sample of several.
    expected = {
        prompt: cli_sample(trained_run, prompt, 120, 11, 0.9, 6, num_samples=2)[0]
        for prompt in prompts
    }
    assert texts == expected
    assert max(chunks) == chunk_steps  # after each prompt's first character, alone


def test_the_engine_runs_a_lone_stream_as_a_batch_runs_it(trained_run):
    """A request alone runs as two rows, as it would beside others, so its text never
    depends on the load (see charlm.batching); `charlm sample` runs a lone stream as one."""
    loaded, sampler, engine = new_engine(trained_run, lanes=2)
    assert sampler.rows_for(1) == 2 and engine.sampler is sampler


def test_a_stream_holds_its_lane_while_the_decoder_advances_it(trained_run):
    """A stream that joins the decoder counts as active while its chunks are computed,
    not only between them: /health reports it and no lane is given twice."""
    from charlm.serve.streams import request_streams

    loaded, sampler, engine = new_engine(trained_run, lanes=2)
    seen = []
    on_each_chunk(sampler, lambda: seen.append(engine.load()["active"]))
    finished = threading.Event()
    streams = request_streams(
        [loaded.vocab.encode("the cat")],
        1,
        3,
        lambda _: lambda text, reason: reason and finished.set(),
        length=100,
        temperature=0.9,
        top_k=0,
        top_p=1.0,
        stop=[],
    )
    engine.start()
    engine.submit(streams)
    assert finished.wait(60)
    engine.stop()
    assert seen and set(seen) == {1}


def new_engine(trained_run, lanes: int, cache_bytes: int = 0):
    """(the loaded run, the Sampler the engine runs, an Engine on it), not started."""
    from charlm.generate import Sampler
    from charlm.run.load import load_checkpoint
    from charlm.serve.engine import Engine

    loaded = load_checkpoint(trained_run)
    engine = Engine(
        Sampler(loaded.model, loaded.vocab), lanes=lanes, prefix_cache_bytes=cache_bytes
    )
    return loaded, engine.sampler, engine


def on_each_chunk(sampler, record) -> None:
    """Call record() whenever the decoder starts a chunk."""
    generate = sampler.generate

    def recording(*args):
        if threading.current_thread().name == "charlm-decoder":
            record()
        return generate(*args)

    sampler.generate = recording


def slow_pieces(pieces: list):
    """PromptReading.read_piece, slowed so that many chunks could start during a read,
    recording when each piece started and ended."""
    from charlm.reading import PromptReading

    read_piece = PromptReading.read_piece

    def slow_read_piece(reading):
        started = time.perf_counter()
        time.sleep(0.3)
        read_piece(reading)
        pieces.append((started, time.perf_counter()))

    return slow_read_piece


def engine_streams(vocab, prompt: str, length: int, on_finish=lambda: None):
    from charlm.serve.streams import request_streams

    def emit(text, reason):
        if reason:
            on_finish()

    return request_streams(
        [vocab.encode(prompt)],
        1,
        5,
        lambda _: emit,
        length=length,
        temperature=0.9,
        top_k=0,
        top_p=1.0,
        stop=[],
    )


LONG_PROMPT = "the dog ran. " * 50


@pytest.mark.parametrize(
    "prompt, read_before, chunks_beside",
    [
        ("the dog", None, False),
        (LONG_PROMPT, None, True),
        (LONG_PROMPT + "the end", LONG_PROMPT, False),
    ],
    ids=["short prompt", "long prompt", "long prompt, its prefix read before"],
)
def test_short_prompts_are_read_first_long_ones_beside_the_streams(
    trained_run, monkeypatch, prompt, read_before, chunks_beside
):
    """While a short prompt is read, the running streams wait (the chunk already running
    may end, but no other starts), so the read has the cores. A long prompt is read
    beside them: it would stop them for as long as it takes to read. A long prompt whose
    prefix the prefix cache holds, with a few characters left to read, is a short one."""
    from charlm.reading import PromptReading

    loaded, sampler, engine = new_engine(trained_run, lanes=4, cache_bytes=1 << 24)
    pieces, chunk_starts = [], []
    monkeypatch.setattr(PromptReading, "read_piece", slow_pieces(pieces))
    on_each_chunk(sampler, lambda: chunk_starts.append(time.perf_counter()))
    second_done = threading.Event()
    engine.start()
    if read_before:
        stored = threading.Event()
        engine.submit(engine_streams(loaded.vocab, read_before, 1, stored.set))
        assert stored.wait(60)
    engine.submit(engine_streams(loaded.vocab, "the cat", 3000))
    while not chunk_starts:
        time.sleep(0.01)
    pieces.clear()
    engine.submit(engine_streams(loaded.vocab, prompt, 40, second_done.set))
    assert second_done.wait(60)
    engine.stop()
    started, ended = pieces[0][0], pieces[-1][1]
    beside = [t for t in chunk_starts if started < t < ended]
    assert bool(beside) == chunks_beside
    assert any(t > ended for t in chunk_starts)  # and decoding went on after it


def test_a_short_prompt_is_read_between_the_pieces_of_a_long_one(trained_run, monkeypatch):
    """A long prompt is read a piece at a time; a short one that arrives meanwhile is
    read at the next piece's end and has its first character long before the long one."""
    from charlm.reading import PromptReading

    loaded, _, engine = new_engine(trained_run, lanes=4)
    pieces, finished = [], {}
    monkeypatch.setattr(PromptReading, "read_piece", slow_pieces(pieces))

    def finish(name):
        return lambda: finished.setdefault(name, time.perf_counter())

    engine.start()  # compiles, reading prompts of its own
    pieces.clear()
    engine.submit(engine_streams(loaded.vocab, "the dog ran. " * 50, 1, finish("long")))
    while not pieces:  # the long read has begun
        time.sleep(0.01)
    engine.submit(engine_streams(loaded.vocab, "the cat", 1, finish("short")))
    deadline = time.time() + 60
    while len(finished) < 2 and time.time() < deadline:
        time.sleep(0.01)
    engine.stop()
    assert finished["short"] < finished["long"] - 0.6  # at least two of its pieces earlier


def test_a_long_read_stops_when_its_client_leaves(trained_run, monkeypatch):
    """A client that disconnects while its long prompt is read frees its lane at the
    next piece's end; the rest of the prompt is not read."""
    from charlm.reading import PromptReading

    loaded, _, engine = new_engine(trained_run, lanes=4)
    pieces = []
    monkeypatch.setattr(PromptReading, "read_piece", slow_pieces(pieces))
    engine.start()
    pieces.clear()
    streams = engine_streams(loaded.vocab, "the dog ran. " * 50, 40)  # 6 pieces
    engine.submit(streams)
    while not pieces:
        time.sleep(0.01)
    streams[0].cancelled = True
    deadline = time.time() + 60
    while engine.load()["active"] and time.time() < deadline:
        time.sleep(0.01)
    engine.stop()
    assert engine.load()["active"] == 0 and len(pieces) <= 2


FAILURES = {
    "reading a prompt": {"running": "length", "broken": "error", "later": "length"},
    "sending a stream its text": {"running": "length", "broken": "error", "later": "length"},
    "a chunk": {"running": "error", "later": "length"},
}


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failure_ends_only_its_own_streams_and_the_engine_goes_on(
    trained_run, monkeypatch, failure
):
    """A failed read ends its streams in error, a stream whose client cannot be sent
    its text ends alone, a failed chunk ends the streams in it; the others run on, and requests
    that come later are served."""
    from charlm.reading import PromptReading
    from charlm.serve.streams import request_streams

    loaded, sampler, engine = new_engine(trained_run, lanes=4)
    armed = threading.Event()
    outcomes = {}

    def fail_once_armed(original, in_thread=None):
        def failing(*args):
            if armed.is_set() and threading.current_thread().name == (in_thread or "charlm-reader"):
                armed.clear()
                raise RuntimeError("out of memory")
            return original(*args)

        return failing

    monkeypatch.setattr(PromptReading, "read_piece", fail_once_armed(PromptReading.read_piece))
    sampler.generate = fail_once_armed(sampler.generate, in_thread="charlm-decoder")

    def submit(name, prompt, length, unreachable=False):
        finished = threading.Event()
        emits = []

        def emit(text, reason):
            emits.append(text)
            if reason:
                outcomes[name] = reason
                finished.set()
            if unreachable and len(emits) > 1:  # from its first chunk with the others on
                raise RuntimeError("the client's event loop is closed")

        controls = dict(temperature=0.9, top_k=0, top_p=1.0, stop=[], length=length)
        prompt_ids = loaded.vocab.encode(prompt)
        engine.submit(request_streams([prompt_ids], 1, 5, lambda _: emit, **controls))
        return finished

    engine.start()
    running = submit("running", "the cat", 4000)
    while not engine.active.streams:
        time.sleep(0.01)
    if failure != "sending a stream its text":
        armed.set()
    if failure != "a chunk":
        assert submit("broken", "the dog", 40, failure == "sending a stream its text").wait(60)
    assert running.wait(60)
    assert submit("later", "a", 40).wait(60)
    engine.stop()
    assert outcomes == FAILURES[failure]


def test_a_failed_generation_answers_500_or_an_error_event(trained_run):
    """Through the app (in-process): a request the server fails gets an OpenAI-style
    error object with status 500, or, streaming, an event carrying one (which OpenAI's
    clients raise on); the server stays up."""
    from starlette.testclient import TestClient

    from charlm.serve.app import Service, create_app
    from charlm.serve.requests import Limits

    loaded, sampler, engine = new_engine(trained_run, lanes=2)

    def failing_generate(*args):
        raise RuntimeError("out of memory")

    request = {"prompt": "the", "max_tokens": 20}
    with TestClient(create_app(Service(engine, loaded, Limits(lanes=2), None))) as client:
        sampler.generate = failing_generate  # after start-up, which compiles the loop
        answer = client.post("/v1/completions", json=request)
        assert answer.status_code == 500
        assert answer.json()["error"]["type"] == "server_error"
        streamed = client.post("/v1/completions", json={**request, "stream": True})
        last_event = streamed.text.strip().split("\n\n")[-1]
        assert json.loads(last_event.removeprefix("data: "))["error"]["type"] == "server_error"
        assert client.get("/health").status_code == 200


def test_a_finished_stream_frees_its_lane_before_the_next_chunk(trained_run):
    """A stream done in one chunk is out of the lanes before the next chunk starts, so
    the request its client sends next can be read during that chunk."""
    loaded, sampler, engine = new_engine(trained_run, lanes=2)
    done_while_advanced = []
    on_each_chunk(
        sampler, lambda: done_while_advanced.append(sum(s.done for s in engine.active.streams))
    )
    long_done = threading.Event()
    engine.start()
    engine.submit(
        engine_streams(loaded.vocab, "the cat", 300, long_done.set)
        + engine_streams(loaded.vocab, "the dog", 40)
    )
    assert long_done.wait(60)
    engine.stop()
    assert len(done_while_advanced) > 3 and set(done_while_advanced) == {0}


def test_prompts_are_grouped_by_length_shortest_first():
    from charlm.serve.engine import by_prompt_length
    from charlm.serve.streams import Stream

    def stream(length):
        return Stream(np.zeros(length, np.int32), 1, 0, 1.0, 0, 1.0, [], None)

    short, medium, doubled = stream(5), stream(127), stream(200)
    long, longer = stream(300), stream(5000)
    groups = by_prompt_length([longer, short, long, doubled, medium])
    assert groups == [[short, medium], [doubled], [long], [longer]]


def run_streams(engine, loaded, streams_controls, poison=None) -> dict:
    """Submit one stream per controls dict at once (their prompts are read as one group);
    `poison(stream)` is called on the fourth once it runs. Each stream's (finish reason,
    text)."""
    from charlm.serve.streams import request_streams

    outcomes, done = {}, threading.Event()
    texts = [""] * len(streams_controls)

    def emitter(index):
        def emit(text, reason):
            texts[index] += text
            if reason:
                outcomes[index] = (reason, texts[index])
                if len(outcomes) == len(streams_controls):
                    done.set()

        return lambda _: emit

    streams = [
        stream
        for index, controls in enumerate(streams_controls)
        for stream in request_streams(
            [loaded.vocab.encode("the cat")], 1, emitter=emitter(index), stop=[], **controls
        )
    ]
    engine.submit(streams)
    if poison:
        while not any(stream is streams[3] for stream in engine.active.streams):
            time.sleep(0.002)
        poison(streams[3])
    assert done.wait(60)
    return outcomes


GOOD = [dict(seed=seed, length=400, temperature=0.9, top_k=0, top_p=1.0) for seed in range(6)]


@pytest.mark.parametrize("stage", ["reading", "a chunk"])
def test_a_stream_that_cannot_be_held_ends_alone_and_the_others_keep_their_text(trained_run, stage):
    """A value the engine's lanes cannot hold (it should have been refused before) fails
    the group it was read or advanced in; each of the others is then run alone and gets
    the very text it gets without the bad stream beside it."""
    loaded, sampler, engine = new_engine(trained_run, lanes=8)
    engine.start()
    try:
        alone = run_streams(engine, loaded, GOOD)
        bad = dict(GOOD[0], length=10**6, top_k=2**31 if stage == "reading" else 0)

        def poison(stream):  # once it runs: the next chunk's controls cannot be held
            stream.top_k = 2**31

        beside = run_streams(
            engine, loaded, GOOD[:3] + [bad] + GOOD[3:], poison if stage != "reading" else None
        )
    finally:
        engine.stop()
    assert beside[3][0] == "error"
    assert [beside[i] for i in (0, 1, 2, 4, 5, 6)] == [alone[i] for i in range(6)]
    assert all(reason == "length" and len(text) == 400 for reason, text in alone.values())
