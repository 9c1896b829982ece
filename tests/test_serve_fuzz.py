"""Property-based fuzzing of `POST /v1/completions` (and of chat and the tokenizer
endpoints) on a real `charlm serve` process: hypothesis writes bodies from the request
schema (every form of prompt, echo, logprobs, logit_bias) and mutates them (values of
every JSON type and width, unknown and unencodable field names, deep nesting, broken
encodings, other content types). Whatever it sends: never a 5xx, an OpenAI error object
with every 4xx, a well-formed answer with every 200, each as /openapi.json describes it;
and valid requests sent beside the fuzzed ones, all the while, all get their text.
Bounded (a fixed number of examples, derived deterministically) so that it runs in CI in
seconds."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.helpers import Server  # noqa: E402

MAX_TOKENS = 40
LANES = 4

IDS = st.integers(0, 20)  # token ids the tiny model's vocabulary holds
# Values of the request's fields that the server must accept.
VALID = st.fixed_dictionaries(
    {},
    optional={
        "prompt": st.text(max_size=60)
        | st.lists(st.text(max_size=20), min_size=1, max_size=3)
        | st.lists(IDS, min_size=1, max_size=30)
        | st.lists(st.lists(IDS, max_size=20), min_size=1, max_size=3),
        "max_tokens": st.integers(0, MAX_TOKENS),
        "temperature": st.floats(0, 3),
        "top_k": st.integers(0, 10),
        "top_p": st.floats(0.01, 1),
        "n": st.integers(1, 3),
        "seed": st.integers(0, 2**62 - 1),
        "stop": st.lists(st.text(min_size=1, max_size=4), max_size=4) | st.text(min_size=1),
        "stream": st.booleans(),
        "model": st.text(max_size=10),
        "echo": st.booleans(),
        "logprobs": st.none() | st.integers(0, 5),
        "logit_bias": st.dictionaries(IDS.map(str), st.integers(-100, 100), max_size=3),
        "user": st.none() | st.text(max_size=5),
    },
)
SURROGATES = st.text(st.sampled_from("\ud800\udbff\udc00\udfff"), min_size=1, max_size=3)
NAMES = st.sampled_from(["prompt", "max_tokens", "temperature", "top_k", "top_p", "n", "seed"])
EXTREMES = st.sampled_from(
    [2**31, 2**63, -(2**63) - 1, 10**400, -1, 1e308, -1e308, 1e-320, float("nan"), float("inf")]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | EXTREMES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@st.composite
def mutated(draw) -> dict:
    """A valid body with a few of its fields changed to any JSON value or an extreme one,
    and perhaps a field of an unknown (or unencodable) name added."""
    body = draw(VALID)
    for name in draw(st.lists(NAMES, max_size=3)):
        body[name] = draw(JSON | EXTREMES)
    if draw(st.booleans()):
        body[draw(st.text(max_size=6) | SURROGATES)] = draw(JSON)
    return body


@st.composite
def sent(draw) -> tuple[bytes, str]:
    """(the bytes of a body, its content type)."""
    body = draw(st.one_of(VALID, mutated(), JSON))
    text = json.dumps(body, ensure_ascii=draw(st.booleans()))
    shape = draw(st.sampled_from(["plain", "nested", "truncated", "bytes"]))
    if shape == "nested":  # deeper than the parser's recursion limit
        depth = draw(st.integers(500, 20_000))
        text = '{"prompt": ' + "[" * depth + text + "]" * depth + "}"
    content = text.encode("utf-8", "surrogatepass")
    if shape == "truncated":
        content = content[: draw(st.integers(0, max(0, len(content) - 1)))]
    if shape == "bytes":
        content = draw(st.binary(max_size=40))
    declared = ["application/json"] * 6 + ["application/json; charset=utf-8", "text/plain"]
    content_type = draw(st.sampled_from(declared))
    return content, content_type


@pytest.fixture(scope="module")
def server(trained_run):
    running = Server(
        trained_run, "--lanes", LANES, "--queue", 64, "--max-tokens", MAX_TOKENS,
        "--max-prompt-chars", 20_000,
    )  # fmt: skip
    yield running
    running.stop()


@pytest.fixture
def valid_beside(server):
    """Valid requests sent back to back while the test runs; their replies."""
    replies, running = [], threading.Event()
    running.set()

    def send():
        with httpx.Client(timeout=60) as client:
            while running.is_set():
                body = {"prompt": "the cat", "max_tokens": 30, "seed": len(replies)}
                replies.append(client.post(f"{server.url}/v1/completions", json=body))

    sender = threading.Thread(target=send)
    sender.start()
    yield replies
    running.clear()
    sender.join()


def schema_check(server):
    """A function that asserts a reply body is the server's OpenAPI schema `name`."""
    from jsonschema import Draft202012Validator

    components_of = {"components": httpx.get(f"{server.url}/openapi.json").json()["components"]}
    validators = {
        name: Draft202012Validator({"$ref": f"#/components/schemas/{name}", **components_of})
        for name in components_of["components"]["schemas"]
    }

    def check(name: str, body) -> None:
        error = next(validators[name].iter_errors(body), None)
        assert error is None, f"{name}: {error.message} at {list(error.absolute_path)}"

    return check


def check_reply(response: httpx.Response, content: bytes, schema) -> None:
    assert response.status_code < 500, (content[:300], response.text[:300])
    if response.status_code >= 400:
        schema("Error", response.json())
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, response.text[:300]
        assert isinstance(error["message"], str) and error["message"]
        return
    assert response.status_code == 200
    if response.headers["content-type"].startswith("text/event-stream"):
        assert response.text.rstrip().endswith("data: [DONE]"), response.text[-300:]
        return
    body = response.json()
    schema("Completion", body)
    assert body["object"] == "text_completion" and body["choices"]
    for choice in body["choices"]:
        if choice["logprobs"] is not None:
            assert len(choice["logprobs"]["tokens"]) == len(choice["text"])
    generated = body["usage"]["completion_tokens"]
    assert generated <= MAX_TOKENS * len(body["choices"])


def test_no_body_gets_a_5xx_and_valid_requests_beside_all_succeed(server, valid_beside):
    schema = schema_check(server)
    with httpx.Client(timeout=60) as client:

        @settings(
            max_examples=150,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(sent())
        def fuzz(request):
            content, content_type = request
            response = client.post(
                f"{server.url}/v1/completions",
                content=content,
                headers={"Content-Type": content_type},
            )
            check_reply(response, content, schema)

        fuzz()
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    assert len(valid_beside) > 5
    assert all(reply.status_code == 200 for reply in valid_beside), [
        reply.text[:200] for reply in valid_beside if reply.status_code != 200
    ]
    assert all(len(reply.json()["choices"][0]["text"]) == 30 for reply in valid_beside)


MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant"]), "content": st.text()}
)
# The other POST endpoints: the schema of their answer, and bodies they must accept.
OTHERS = {
    "/v1/chat/completions": (
        "ChatCompletion",
        st.fixed_dictionaries(
            {"messages": st.lists(MESSAGE, min_size=1, max_size=3)},
            optional={
                "max_tokens": st.integers(0, MAX_TOKENS),
                "temperature": st.floats(0, 3),
                "n": st.integers(1, 3),
                "stop": st.lists(st.text(min_size=1, max_size=4), max_size=4),
                "stream": st.booleans(),
                "logit_bias": st.dictionaries(IDS.map(str), st.integers(-100, 100), max_size=3),
            },
        ),
    ),
    "/tokenize": (
        "Tokens",
        st.fixed_dictionaries(
            {"prompt": st.text()}, optional={"add_special_tokens": st.booleans()}
        ),
    ),
    "/detokenize": ("Text", st.fixed_dictionaries({"tokens": st.lists(IDS, max_size=30)})),
}


@st.composite
def other_request(draw) -> tuple[str, dict]:
    """(a path of OTHERS, a body for it: valid, with fields changed, or any JSON)."""
    path = draw(st.sampled_from(sorted(OTHERS)))
    body = draw(OTHERS[path][1])
    for name in draw(st.lists(st.sampled_from(sorted(body)), max_size=2)):
        body[name] = draw(JSON | EXTREMES)
    return path, draw(st.just(body) | JSON)


def test_the_other_endpoints_answer_any_body_as_the_document_says(server):
    schema = schema_check(server)
    with httpx.Client(timeout=60) as client:

        @settings(max_examples=80, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(other_request())
        def fuzz(request):
            path, body = request
            content = json.dumps(body)  # NaN and Infinity too, as Python writes them
            response = client.post(
                f"{server.url}{path}", content=content, headers={"Content-Type": "application/json"}
            )
            assert response.status_code < 500, (path, body, response.text[:300])
            if response.status_code >= 400:
                schema("Error", response.json())
            elif response.headers["content-type"].startswith("text/event-stream"):
                assert response.text.rstrip().endswith("data: [DONE]"), response.text[-300:]
            else:
                schema(OTHERS[path][0], response.json())

        fuzz()
