"""`charlm serve` against hostile clients, through a real server process: values the
engine cannot hold, bodies that are too deep, too large, too slow or not JSON, clients
that leave, too many connections, a shutdown whose grace runs out, and the API key on
every /v1/ route (issue 30, findings 1-8)."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import httpx
import pytest

from tests.helpers import Server, events

KEY = "sesame"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_PROMPT_CHARS = 40_000
BODY_CAP = 6 * MAX_PROMPT_CHARS + 64 * 1024  # the default derived from --max-prompt-chars
HEADER_TIMEOUT, BODY_TIMEOUT, MAX_CONNECTIONS = 1.0, 2.0, 24


@pytest.fixture(scope="module")
def server(trained_run):
    running = Server(
        trained_run,
        "--lanes",
        8,
        "--queue",
        64,
        "--max-tokens",
        10**7,
        "--max-prompt-chars",
        MAX_PROMPT_CHARS,
        "--header-timeout",
        HEADER_TIMEOUT,
        "--body-timeout",
        BODY_TIMEOUT,
        "--max-connections",
        MAX_CONNECTIONS,
        "--api-key",
        KEY,
    )
    yield running
    running.stop()


def post(server, content, headers=None, timeout=60) -> httpx.Response:
    """A POST of raw bytes or text, declared JSON and with the key unless told otherwise."""
    headers = {"Content-Type": "application/json", **AUTH, **(headers or {})}
    return httpx.post(
        f"{server.url}/v1/completions", content=content, headers=headers, timeout=timeout
    )


def assert_error_object(response: httpx.Response, status: int, param=None) -> dict:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    return error


def lanes_in_use(server) -> int:
    return httpx.get(f"{server.url}/health").json()["active"]


def wait_until_idle(server, seconds: float) -> float:
    started = time.time()
    while lanes_in_use(server) and time.time() - started < seconds:
        time.sleep(0.05)
    return time.time() - started


# 1. Values the engine cannot hold never reach it; a bad request ends no good one.


@pytest.mark.parametrize(
    "field, value",
    [
        ("top_k", 2**31),
        ("top_k", 2**64),
        ("n", 2**63),
        ("seed", 2**64),
        ("max_tokens", 2**70),
        ("temperature", 1e39),
    ],
)
def test_an_integer_or_float_too_wide_for_the_engine_is_a_400(server, field, value):
    response = post(server, json.dumps({"prompt": "the", field: value}))
    assert_error_object(response, 400, field)


def test_a_bad_request_sent_among_good_ones_ends_none_of_them(server):
    """1 bad and 6 good requests at once (their prompts would be read in one batch):
    the good ones all get their text."""
    bodies = [{"prompt": "the cat", "max_tokens": 200, "seed": k} for k in range(6)]
    bodies.insert(3, {"prompt": "the dog", "max_tokens": 200, "top_k": 2**31})
    start = threading.Barrier(len(bodies))
    replies = [None] * len(bodies)

    def send(index):
        start.wait()
        replies[index] = post(server, json.dumps(bodies[index]))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert_error_object(replies.pop(3), 400, "top_k")
    assert [r.status_code for r in replies] == [200] * 6
    assert all(len(r.json()["choices"][0]["text"]) == 200 for r in replies)


# 2. Every malformed body is a 400 error object.


@pytest.mark.parametrize(
    "content, param",
    [
        ("[" * 100_000 + "]" * 100_000, None),
        ('{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}", None),
        ('{"prompt": "a", "\\ud800": 1}', "\ud800"),
        ('{"stop": ["\\udfff"], "\\udc00x": [' + "[" * 500 + "]" * 500 + "]}", "\udc00x"),
        (b'{"prompt": "\xff\xfe"}', None),
        ("", None),
        ("null", None),
    ],
    ids=["deep", "deep-prompt", "surrogate-field", "surrogates", "not-utf8", "empty", "null"],
)
def test_a_malformed_body_is_a_400_error_object(server, content, param):
    error = assert_error_object(post(server, content), 400, param)
    assert error["type"] == "invalid_request_error"
    assert httpx.get(f"{server.url}/health").status_code == 200


# 3. A body over the cap is refused with 413 without being read whole.


def raw_request(server, head: bytes, body_pieces=(), read_timeout: float = 10) -> bytes:
    """Send a request head and body pieces on a socket of its own; what the server answers
    (everything until it closes the connection or `read_timeout` passes)."""
    with socket.create_connection(("127.0.0.1", server.port)) as connection:
        connection.settimeout(read_timeout)
        connection.sendall(head)
        for piece in body_pieces:
            try:
                connection.sendall(piece)
            except OSError:  # the server stopped reading and closed
                break
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return answer


def head(length: str | None = None, chunked: bool = False, more: str = "") -> bytes:
    lines = [
        "POST /v1/completions HTTP/1.1",
        "Host: localhost",
        "Content-Type: application/json",
        f"Authorization: Bearer {KEY}",
        *([f"Content-Length: {length}"] if length else []),
        *(["Transfer-Encoding: chunked"] if chunked else []),
        *([more] if more else []),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_and_error(answer: bytes) -> tuple[int, dict]:
    status_line, _, rest = answer.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(body)["error"]


def test_a_declared_length_over_the_cap_is_refused_before_the_body_is_sent(server):
    started = time.time()
    answer = raw_request(server, head(str(BODY_CAP + 1)))
    status, error = status_and_error(answer)
    assert status == 413 and error["code"] == "request_too_large"
    assert f"{BODY_CAP:,} bytes" in error["message"]
    assert time.time() - started < 2  # not after the body timeout: nothing was waited for


def test_a_chunked_body_is_refused_once_it_passes_the_cap(server):
    piece = b'{"prompt": "' + b"a" * 60_000
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece)] + [
        b"%x\r\n%s\r\n" % (60_000, b"a" * 60_000) for _ in range(200)
    ]  # 12 MB if it were all read
    status, error = status_and_error(raw_request(server, head(chunked=True), chunks))
    assert status == 413 and error["code"] == "request_too_large"


def test_the_longest_prompt_fits_the_cap_even_written_as_escapes(server):
    """The default cap leaves room for a prompt of --max-prompt-chars characters each
    sent as a \\uXXXX escape (as Python's json writes any non-ASCII character)."""
    body = json.dumps({"prompt": "é" * MAX_PROMPT_CHARS, "max_tokens": 1}, ensure_ascii=True)
    assert len(body) > 6 * MAX_PROMPT_CHARS
    assert post(server, body, timeout=120).status_code == 200


# 4. A client that leaves a non-streaming request frees its lanes.


def test_a_non_streaming_client_that_leaves_frees_its_lanes(server):
    """Ten million characters would take minutes: the lanes must be freed at once."""
    with pytest.raises(httpx.ReadTimeout):
        post(server, json.dumps({"prompt": "the", "max_tokens": 10**7, "n": 3}), timeout=1.5)
    assert wait_until_idle(server, 10) < 3
    assert lanes_in_use(server) == 0


# 5. Slow clients are cut off; connections are bounded.


def test_a_head_sent_a_byte_at_a_time_is_cut_off(server):
    request = head("2") + b"{}"
    started = time.time()
    with socket.create_connection(("127.0.0.1", server.port)) as connection:
        with pytest.raises(OSError):  # once the server has closed, a send fails
            for byte in request:
                connection.send(bytes([byte]))
                time.sleep(0.2)
    assert time.time() - started < HEADER_TIMEOUT + 1.5


def test_a_body_that_does_not_arrive_in_time_is_a_408(server):
    started = time.time()
    answer = raw_request(server, head("100") + b'{"prompt": "the')  # 85 bytes missing
    status, error = status_and_error(answer)
    assert status == 408 and error["code"] == "request_timeout"
    assert BODY_TIMEOUT <= time.time() - started < BODY_TIMEOUT + 2


def test_a_connection_beyond_the_limit_gets_a_503_error_object(server):
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)
        refused = httpx.get(f"{server.url}/health")
        assert assert_error_object(refused, 503)["code"] == "too_many_connections"
        assert refused.headers["connection"] == "close"
    finally:
        for connection in idle:
            connection.close()
    time.sleep(0.2)
    assert httpx.get(f"{server.url}/health").status_code == 200


# 7. The API key guards every /v1/ route; the page and the health check stay open.


def test_the_api_key_guards_every_v1_route(server):
    for path in ("/v1/models", "/v1/run", "/tokenizer_info"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            refused = httpx.get(f"{server.url}{path}", headers=headers)
            assert assert_error_object(refused, 401)["type"] == "authentication_error"
        for scheme in ("Bearer", "bearer", "BEARER"):
            headers = {"Authorization": f"{scheme} {KEY}"}
            assert httpx.get(f"{server.url}{path}", headers=headers).status_code == 200
    body = json.dumps({"prompt": "a", "max_tokens": 3})
    assert_error_object(post(server, body, {"Authorization": ""}), 401)
    assert post(server, body, {"Authorization": f"bearer {KEY}"}).status_code == 200
    for path, sent in [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}], "max_tokens": 3}),
        ("/tokenize", {"prompt": "a"}),
        ("/detokenize", {"tokens": [0]}),
    ]:
        refused = httpx.post(f"{server.url}{path}", json=sent)
        assert assert_error_object(refused, 401)["type"] == "authentication_error"
        assert httpx.post(f"{server.url}{path}", json=sent, headers=AUTH).status_code == 200
    for path in ("/health", "/", "/static/playground.js", "/openapi.json"):
        assert httpx.get(f"{server.url}{path}").status_code == 200


# 8. Only JSON is read; no CORS headers let another origin in.


def test_a_post_not_declared_json_is_a_415(server):
    body = json.dumps({"prompt": "a", "max_tokens": 3})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
        refused = post(server, body, {"Content-Type": content_type})
        assert assert_error_object(refused, 415)["code"] == "unsupported_media_type"
    allowed = post(server, body, {"Content-Type": "Application/JSON; charset=utf-8"})
    assert allowed.status_code == 200


def test_no_cors_headers_are_sent(server):
    origin = {"Origin": "https://elsewhere.example"}
    preflight = httpx.options(
        f"{server.url}/v1/completions",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    answer = post(server, json.dumps({"prompt": "a", "max_tokens": 3}), origin)
    for response in (preflight, answer, httpx.get(f"{server.url}/health", headers=origin)):
        assert not any(name.startswith("access-control-") for name in response.headers)


# 6. When the grace runs out, clients get an error object; the log has no traceback.


def test_when_the_grace_runs_out_clients_get_an_error_object(trained_run):
    import subprocess

    ending = Server(
        trained_run, "--lanes", 4, "--grace", 1, "--max-tokens", 10**7, stderr=subprocess.PIPE
    )
    replies = {}

    def plain():
        body = {"prompt": "the", "max_tokens": 10**7}
        replies["plain"] = httpx.post(f"{ending.url}/v1/completions", json=body, timeout=60)

    def streamed():
        body = {"prompt": "the", "max_tokens": 10**7, "stream": True}
        with httpx.stream("POST", f"{ending.url}/v1/completions", json=body, timeout=60) as reply:
            replies["streamed"] = events(reply)

    def slow_body():  # its body still on the way when the grace runs out
        replies["slow body"] = raw_request(ending, head("100") + b'{"prompt": "the')

    threads = [threading.Thread(target=f) for f in (plain, streamed, slow_body)]
    for thread in threads:
        thread.start()
    while lanes_in_use(ending) < 2:
        time.sleep(0.05)
    ending.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(timeout=30)
    assert ending.process.wait(timeout=60) == 0
    log = ending.process.stderr.read().decode()
    error = assert_error_object(replies["plain"], 503)
    assert error["code"] == "server_shutting_down"
    assert replies["streamed"][-1] == "[DONE]"
    assert replies["streamed"][-2]["error"]["code"] == "server_shutting_down"
    assert status_and_error(replies["slow body"]) == (503, error)
    assert "Traceback" not in log and "CancelledError" not in log, log


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--max-body-bytes", 0),
        ("--header-timeout", 0),
        ("--body-timeout", "nan"),
        ("--max-connections", 0),
        ("--prefix-cache-mb", -1),
        ("--prefix-cache-mb", "inf"),
    ],
)
def test_a_limit_out_of_range_is_refused_in_one_line(trained_run, flag, value):
    from tests.helpers import invoke

    result = invoke("serve", "-c", trained_run, flag, value)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert f"{flag} must be at" in result.stderr
