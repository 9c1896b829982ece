"""`GET /openapi.json` describes the server as it answers: every endpoint is in it, and
real responses of a real `charlm serve` (bodies, stream chunks, error objects) validate
against its schemas; the requests the other tests send validate against its request
schemas."""

from __future__ import annotations

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.helpers import Server, events

ENDPOINTS = {
    ("post", "/v1/completions"),
    ("post", "/v1/chat/completions"),
    ("get", "/tokenizer_info"),
    ("post", "/tokenize"),
    ("post", "/detokenize"),
    ("get", "/v1/models"),
    ("get", "/v1/run"),
    ("post", "/v1/inspect"),
    ("get", "/health"),
    ("get", "/openapi.json"),
    ("get", "/"),
}


@pytest.fixture(scope="module")
def server(trained_run):
    running = Server(trained_run, "--lanes", 2, "--max-tokens", 500)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def document(server) -> dict:
    reply = httpx.get(f"{server.url}/openapi.json")
    assert reply.status_code == 200
    return reply.json()


def check(document: dict, name: str, instance) -> None:
    """`instance` validates against the document's schema `name`."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    errors = sorted(Draft202012Validator(schema).iter_errors(instance), key=str)
    assert not errors, f"{name}: {errors[0].message} at {list(errors[0].absolute_path)}"


def test_every_endpoint_is_described_with_valid_schemas(document):
    assert document["openapi"].startswith("3.1")
    described = {(method, path) for path, item in document["paths"].items() for method in item}
    assert described == ENDPOINTS
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def send(server, document, path: str, body: dict, answer: str, request: str) -> dict:
    check(document, request, body)
    reply = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    check(document, answer, reply.json())
    return reply.json()


def streamed(server, path: str, body: dict) -> list:
    with httpx.stream("POST", f"{server.url}{path}", json=body, timeout=60) as reply:
        received = events(reply)
    assert received[-1] == "[DONE]"
    return received[:-1]


def test_completions_and_their_chunks_match_the_document(server, document):
    for body in (
        {"prompt": "the cat", "max_tokens": 20, "seed": 1},
        {"prompt": ["a", "b"], "n": 2, "max_tokens": 5, "echo": True, "logprobs": 3},
        {"prompt": [[1, 2], [3]], "max_tokens": 0, "echo": True, "logprobs": 0},
        {"prompt": "x", "stop": ["a"] * 16, "logit_bias": {"3": -100}, "user": "u"},
    ):
        send(server, document, "/v1/completions", body, "Completion", "CompletionRequest")
    body = {"prompt": "the", "max_tokens": 30, "logprobs": 2, "echo": True, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    check(document, "CompletionRequest", body)
    chunks = streamed(server, "/v1/completions", body)
    assert "usage" in chunks[-1]
    for chunk in chunks:
        check(document, "CompletionChunk", chunk)


def test_chat_and_its_chunks_match_the_document(server, document):
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 20, "n": 2,
            "logprobs": True, "top_logprobs": 2}  # fmt: skip
    send(server, document, "/v1/chat/completions", body, "ChatCompletion", "ChatRequest")
    for chunk in streamed(server, "/v1/chat/completions", {**body, "stream": True}):
        check(document, "ChatCompletionChunk", chunk)


def test_tokenizer_models_and_health_match_the_document(server, document):
    tokens = send(server, document, "/tokenize", {"prompt": "the"}, "Tokens", "TokenizeRequest")
    send(server, document, "/detokenize", {"tokens": tokens["tokens"]}, "Text", "DetokenizeRequest")
    for path, name in [
        ("/tokenizer_info", "TokenizerInfo"),
        ("/v1/models", "Models"),
        ("/health", "Health"),
        ("/v1/run", "Facts"),
    ]:
        check(document, name, httpx.get(f"{server.url}{path}").json())


@pytest.mark.parametrize(
    "path, content, content_type, status",
    [
        ("/v1/completions", '{"top_p": 0}', "application/json", 400),
        ("/v1/completions", "{", "application/json", 400),
        ("/v1/chat/completions", '{"messages": []}', "application/json", 400),
        ("/tokenize", '{"prompt": "a"}', "text/plain", 415),
        ("/detokenize", '{"tokens": [-1]}', "application/json", 400),
    ],
)
def test_refusals_are_the_documented_error_object(
    server, document, path, content, content_type, status
):
    reply = httpx.post(
        f"{server.url}{path}", content=content, headers={"Content-Type": content_type}
    )
    assert reply.status_code == status
    assert str(status) in document["paths"][path]["post"]["responses"]
    check(document, "Error", reply.json())
