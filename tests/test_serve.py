"""`charlm serve` through a real server on 127.0.0.1 (a `charlm serve` process), spoken to
with an HTTP client and with the official `openai` client; `charlm export` loaded by a
process that never imports charlm."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from tests.test_cli import invoke

PROMPT = "the cat sat"
OPTIONS = {"max_tokens": 300, "temperature": 0.9, "top_k": 6, "seed": 11}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A `charlm serve` process on 127.0.0.1, stopped when the test ends."""

    def __init__(self, run, *flags):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "charlm.cli",
                "serve",
                "-c",
                str(run),
                "--port",
                str(self.port),
                *map(str, flags),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.process.kill()
        raise AssertionError(f"the server did not start: {self.process.stderr.read()}")

    def post(self, body: dict, **kwargs) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/completions", json=body, timeout=60, **kwargs)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture(scope="module")
def server(trained_run):
    running = Server(
        trained_run, "--lanes", 8, "--queue", 8, "--max-tokens", 10**7, "--max-prompt-chars", 1000
    )
    yield running
    running.stop()


def cli_sample(run, prompt, length, seed, temperature, top_k=0, num_samples=1) -> list[str]:
    """What `charlm sample` prints for these options, one text per sample (prompt removed)."""
    result = invoke(
        "sample",
        "-c",
        run,
        "--prime",
        prompt,
        "--length",
        length,
        "--seed",
        seed,
        "--temperature",
        temperature,
        "--top-k",
        top_k,
        "--num-samples",
        num_samples,
    )
    assert result.exit_code == 0, result.output
    texts = result.stdout[:-1].split("\n\n--- sample ")
    return [text.split("---\n", 1)[-1][len(prompt) :] for text in texts]


def events(response) -> list:
    """The data of each server-sent event, up to and including `[DONE]`."""
    found = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            found.append(data if data == "[DONE]" else json.loads(data))
    return found


def test_a_completion_is_the_text_charlm_sample_gives(server, trained_run):
    """Same prompt, seed and options, same text, even while other requests run beside it."""
    expected = cli_sample(trained_run, PROMPT, 300, 11, 0.9, top_k=6, num_samples=2)
    others = [
        threading.Thread(
            target=server.post, args=({"prompt": "a dog", "max_tokens": 400, "seed": k},)
        )
        for k in range(5)
    ]
    for thread in others:
        thread.start()
    response = server.post({"prompt": PROMPT, "n": 2, **OPTIONS})
    for thread in others:
        thread.join()
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["text"] for c in body["choices"]] == expected
    assert [c["finish_reason"] for c in body["choices"]] == ["length", "length"]
    assert body["object"] == "text_completion" and body["usage"] == {
        "prompt_tokens": len(PROMPT),
        "completion_tokens": 600,
        "total_tokens": 600 + len(PROMPT),
    }


def test_streaming_sends_openai_chunks_ending_with_done(server):
    with httpx.stream(
        "POST",
        f"{server.url}/v1/completions",
        timeout=60,
        json={"prompt": PROMPT, "stream": True, **OPTIONS},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        received = events(response)
    assert received[-1] == "[DONE]" and len(received) > 3
    chunks = received[:-1]
    assert all(c["object"] == "text_completion" and len(c["choices"]) == 1 for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
    streamed = "".join(c["choices"][0]["text"] for c in chunks)
    assert streamed == server.post({"prompt": PROMPT, **OPTIONS}).json()["choices"][0]["text"]


def test_a_stop_string_ends_the_text_before_it(server):
    whole = server.post({"prompt": PROMPT, **OPTIONS}).json()["choices"][0]["text"]
    stop = whole[40:43]
    cut = server.post({"prompt": PROMPT, "stop": [stop, "\x01"], **OPTIONS}).json()
    assert cut["choices"][0]["text"] == whole[: whole.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"
    with httpx.stream(
        "POST",
        f"{server.url}/v1/completions",
        timeout=60,
        json={"prompt": PROMPT, "stop": stop, "stream": True, **OPTIONS},
    ) as reply:
        streamed = "".join(e["choices"][0]["text"] for e in events(reply)[:-1])
    assert streamed == whole[: whole.index(stop)]


def test_the_openai_client_works_unchanged(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    options = {key: value for key, value in OPTIONS.items() if key != "top_k"}
    top_k = {"top_k": OPTIONS["top_k"]}  # charlm's extension, sent as OpenAI clients send one
    reply = client.completions.create(model="any", prompt=PROMPT, extra_body=top_k, **options)
    assert reply.choices[0].finish_reason == "length" and len(reply.choices[0].text) == 300
    assert (
        reply.choices[0].text
        == server.post({"prompt": PROMPT, **OPTIONS}).json()["choices"][0]["text"]
    )
    pieces = client.completions.create(
        model="any", prompt=PROMPT, stream=True, extra_body=top_k, **options
    )
    assert "".join(p.choices[0].text for p in pieces) == reply.choices[0].text
    assert [m.id for m in client.models.list().data] == ["run"]


def test_models_health_run_facts_and_page(server):
    assert httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"] == "run"
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["lanes"] == 8
    facts = httpx.get(f"{server.url}/v1/run").json()
    assert facts["cell"] == "gru" and facts["steps"] == 30 and len(facts["history"]) == 2
    page = httpx.get(server.url)
    assert page.status_code == 200 and "charlm playground" in page.text
    assert httpx.get(f"{server.url}/static/playground.js").status_code == 200


@pytest.mark.parametrize(
    "body, status, param, fragment",
    [
        ("{not json", 400, None, "not valid JSON"),
        ("[1, 2]", 400, None, "JSON object"),
        ({"prompt": "a", "temprature": 1}, 400, "temprature", "unknown field"),
        ({"prompt": 5}, 400, "prompt", "prompt must be a string"),
        ({"temperature": "hot"}, 400, "temperature", "must be a number"),
        ({"top_p": 0}, 400, "top_p", "above 0"),
        ({"top_k": -1}, 400, "top_k", "0 or more"),
        ({"n": 0}, 400, "n", "between 1"),
        ({"n": 9}, 400, "n", "8 streams"),
        ({"max_tokens": 10**7 + 1}, 400, "max_tokens", "at most 10,000,000"),
        ({"prompt": "a" * 1001}, 400, "prompt", "at most 1,000"),
        ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "up to 4"),
        ({"stream": "yes"}, 400, "stream", "true or false"),
        ({"logprobs": 3}, 400, "logprobs", "not supported"),
        ({"seed": -2}, 400, "seed", "between 0 and"),
    ],
)
def test_bad_requests_get_an_error_object(server, body, status, param, fragment):
    content = body if isinstance(body, str) else json.dumps(body)
    response = httpx.post(f"{server.url}/v1/completions", content=content, timeout=30)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert fragment in error["message"]


def test_more_streams_than_lanes_and_queue_get_429(trained_run):
    busy = Server(trained_run, "--lanes", 1, "--queue", 1)
    try:
        long = {"prompt": PROMPT, "max_tokens": 4000, "stream": True}
        holders = [
            httpx.stream("POST", f"{busy.url}/v1/completions", json=long, timeout=60)
            for _ in range(2)
        ]
        replies = [holder.__enter__() for holder in holders]
        deadline = time.time() + 30
        while httpx.get(f"{busy.url}/health").json()["waiting"] < 1 and time.time() < deadline:
            time.sleep(0.05)
        refused = busy.post(long)
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_error"
        for holder in holders:
            holder.__exit__(None, None, None)
        assert all(reply.status_code == 200 for reply in replies)
    finally:
        busy.stop()


def test_a_client_that_disconnects_frees_its_lane(server):
    """Ten million characters would take minutes: the lane must be freed long before."""
    with httpx.stream(
        "POST",
        f"{server.url}/v1/completions",
        timeout=60,
        json={"prompt": PROMPT, "max_tokens": 10**7, "stream": True},
    ) as response:
        lines = response.iter_lines()  # kept: a dropped iterator closes the stream
        next(lines)
        assert httpx.get(f"{server.url}/health").json()["active"] >= 1
    deadline = time.time() + 10
    while httpx.get(f"{server.url}/health").json()["active"] and time.time() < deadline:
        time.sleep(0.05)
    assert httpx.get(f"{server.url}/health").json()["active"] == 0


def test_an_api_key_is_required_when_set(trained_run):
    guarded = Server(trained_run, "--api-key", "sesame")
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = guarded.post({"prompt": "a", "max_tokens": 3}, headers=headers)
            assert refused.status_code == 401
            assert refused.json()["error"]["type"] == "authentication_error"
        allowed = guarded.post(
            {"prompt": "a", "max_tokens": 3}, headers={"Authorization": "Bearer sesame"}
        )
        assert allowed.status_code == 200
    finally:
        guarded.stop()


def test_sigterm_lets_responses_in_flight_finish_and_exits_0(trained_run):
    ending = Server(trained_run)
    result = {}

    def long_request():
        result["reply"] = ending.post({"prompt": PROMPT, "max_tokens": 3000, "seed": 1})

    thread = threading.Thread(target=long_request)
    thread.start()
    deadline = time.time() + 30
    while httpx.get(f"{ending.url}/health").json()["active"] < 1 and time.time() < deadline:
        time.sleep(0.02)
    ending.process.send_signal(signal.SIGTERM)
    thread.join(timeout=60)
    assert ending.process.wait(timeout=60) == 0
    reply = result["reply"]
    assert reply.status_code == 200 and len(reply.json()["choices"][0]["text"]) == 3000


def test_bad_serve_options_are_refused_in_one_line(trained_run):
    result = invoke("serve", "-c", trained_run, "--lanes", 0)
    assert result.exit_code == 2 and "--lanes must be at least 1" in result.stderr


def test_a_port_in_use_is_refused_in_one_line(server, trained_run):
    result = invoke("serve", "-c", trained_run, "--port", server.port)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{server.port}" in result.stderr


def test_the_exported_saved_model_gives_charlm_samples_text(trained_run, tmp_path):
    """Loaded with tf.saved_model.load by a process that never imports charlm."""
    out = tmp_path / "export"
    result = invoke("export", "-c", trained_run, "--out", out)
    assert result.exit_code == 0, result.output
    script = f"""
import json, sys
import tensorflow as tf
model = tf.saved_model.load({str(out)!r})
chars = json.load(open({str(out / "vocab.json")!r}, encoding="utf-8"))["chars"]
ids = model.generate(prompt_ids=tf.constant([chars.index(c) for c in {PROMPT!r}], tf.int32),
                     length=tf.constant(300), temperature=tf.constant(0.9),
                     top_k=tf.constant(6), top_p=tf.constant(1.0),
                     seed=tf.constant(11, tf.int64))["ids"].numpy()
assert "charlm" not in sys.modules
print(json.dumps("".join(chars[i] for i in ids)))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout) == cli_sample(trained_run, PROMPT, 300, 11, 0.9, 6)[0]
    refused = invoke("export", "-c", trained_run, "--out", out)
    assert refused.exit_code == 2 and "is not empty" in refused.stderr


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
    from charlm.serve.engine import Stream

    events = []
    stream = Stream(
        prompt_ids=None,
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


def test_prompts_read_together_give_the_texts_charlm_sample_gives(trained_run):
    """Streams submitted at once have their prompts read together, whatever their
    lengths (short ones in one group, a long one in its own): each text is the one
    `charlm sample` prints for its prompt."""
    from charlm.generate import Sampler
    from charlm.run.load import load_checkpoint
    from charlm.serve.engine import Engine, request_streams

    loaded = load_checkpoint(trained_run)
    engine = Engine(Sampler(loaded.model, loaded.vocab), lanes=8)
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
            loaded.vocab.encode(prompt),
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
    expected = {prompt: cli_sample(trained_run, prompt, 120, 11, 0.9, 6)[0] for prompt in prompts}
    assert texts == expected


def test_a_stream_holds_its_lane_while_the_decoder_advances_it(trained_run):
    """A stream that joins the decoder counts as active while its chunks are computed,
    not only between them: /health reports it and no lane is given twice."""
    from charlm.serve.engine import request_streams

    loaded, sampler, engine = new_engine(trained_run, lanes=2)
    seen = []
    on_each_chunk(sampler, lambda: seen.append(engine.load()["active"]))
    finished = threading.Event()
    streams = request_streams(
        loaded.vocab.encode("the cat"),
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


def new_engine(trained_run, lanes: int):
    """(the loaded run, its Sampler, an Engine on it), not started."""
    from charlm.generate import Sampler
    from charlm.run.load import load_checkpoint
    from charlm.serve.engine import Engine

    loaded = load_checkpoint(trained_run)
    sampler = Sampler(loaded.model, loaded.vocab)
    return loaded, sampler, Engine(sampler, lanes=lanes)


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
    from charlm.generate import PromptReading

    read_piece = PromptReading.read_piece

    def slow_read_piece(reading):
        started = time.perf_counter()
        time.sleep(0.3)
        read_piece(reading)
        pieces.append((started, time.perf_counter()))

    return slow_read_piece


def engine_streams(vocab, prompt: str, length: int, on_finish=lambda: None):
    from charlm.serve.engine import request_streams

    def emit(text, reason):
        if reason:
            on_finish()

    return request_streams(
        vocab.encode(prompt),
        1,
        5,
        lambda _: emit,
        length=length,
        temperature=0.9,
        top_k=0,
        top_p=1.0,
        stop=[],
    )


@pytest.mark.parametrize(
    "prompt, chunks_beside",
    [("the dog", False), ("the dog ran. " * 50, True)],
    ids=["short prompt", "long prompt"],
)
def test_short_prompts_are_read_first_long_ones_beside_the_streams(
    trained_run, monkeypatch, prompt, chunks_beside
):
    """While a short prompt is read, the running streams wait (the chunk already running
    may end, but no other starts), so the read has the cores. A long prompt is read
    beside them: it would stop them for as long as it takes to read."""
    from charlm.generate import PromptReading

    loaded, sampler, engine = new_engine(trained_run, lanes=4)
    pieces, chunk_starts = [], []
    monkeypatch.setattr(PromptReading, "read_piece", slow_pieces(pieces))
    on_each_chunk(sampler, lambda: chunk_starts.append(time.perf_counter()))
    second_done = threading.Event()
    engine.start()
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
    from charlm.generate import PromptReading

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
    from charlm.generate import PromptReading

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


def test_a_failed_read_does_not_stop_the_running_streams(trained_run):
    """If reading a prompt fails, the streams already running still finish."""
    loaded, _, engine = new_engine(trained_run, lanes=4)
    running_done = threading.Event()
    engine.start()
    engine.submit(engine_streams(loaded.vocab, "the cat", 400, running_done.set))
    while not engine.active.streams:
        time.sleep(0.01)

    def failing_emit(text, reason):
        raise RuntimeError("the client's event loop is closed")

    broken = engine_streams(loaded.vocab, "the dog", 40)
    broken[0].emit = failing_emit
    engine.submit(broken)
    assert running_done.wait(60)
    engine.stop()


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
    from charlm.serve.engine import Stream, by_prompt_length

    def stream(length):
        return Stream(np.zeros(length, np.int32), 1, 0, 1.0, 0, 1.0, [], None)

    short, medium, doubled = stream(5), stream(127), stream(200)
    long, longer = stream(300), stream(5000)
    groups = by_prompt_length([longer, short, long, doubled, medium])
    assert groups == [[short, medium], [doubled], [long], [longer]]
