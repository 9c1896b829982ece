"""`charlm serve` through a real server on 127.0.0.1 (a `charlm serve` process), spoken to
with an HTTP client and with the official `openai` client; `charlm export` loaded by a
process that never imports charlm."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.helpers import Server, cli_sample, events, invoke

PROMPT = "the cat sat"
OPTIONS = {"max_tokens": 300, "temperature": 0.9, "top_k": 6, "seed": 11}


@pytest.fixture(scope="module")
def server(trained_run):
    running = Server(
        trained_run, "--lanes", 8, "--queue", 8, "--max-tokens", 10**7, "--max-prompt-chars", 1000
    )
    yield running
    running.stop()


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
        ({"stop": [str(i) for i in range(17)]}, 400, "stop", "up to 16"),
        ({"stream": "yes"}, 400, "stream", "true or false"),
        ({"logprobs": 21}, 400, "logprobs", "from 0 to 20"),
        ({"best_of": 3}, 400, "best_of", "not supported"),
        ({"seed": -2}, 400, "seed", "between 0 and"),
    ],
)
def test_bad_requests_get_an_error_object(server, body, status, param, fragment):
    content = body if isinstance(body, str) else json.dumps(body)
    response = httpx.post(
        f"{server.url}/v1/completions",
        content=content,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
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
    guarded = Server(trained_run, "--lanes", 2, "--api-key", "sesame")
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
    ending = Server(trained_run, "--lanes", 2)
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


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--lanes", 0, "--lanes must be at least 1"),
        ("--chunk-chars", 0, "--chunk-chars must be at least 1"),
        ("--chunk-chars", 257, "--chunk-chars must be at most 256"),
    ],
)
def test_bad_serve_options_are_refused_in_one_line(trained_run, option, value, message):
    result = invoke("serve", "-c", trained_run, option, value)
    assert result.exit_code == 2 and message in result.stderr
    assert result.stderr.count("\n") == 1


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
