"""`GET /openapi.json`: the server's OpenAPI 3.1 document, every endpoint with its request
and response (schemas in charlm.serve.schemas). tests/test_serve_openapi.py validates real
responses against it, and the fuzz test every response it provokes, so that it stays true.
"""

from __future__ import annotations

from charlm.serve.schemas import SCHEMAS, STRING, ref

ERRORS = {
    str(status): {"description": why, "content": {"application/json": {"schema": ref("Error")}}}
    for status, why in [
        (400, "a bad field or value, named by error.param"),
        (401, "no or a wrong API key, when the server has one"),
        (408, "the body did not arrive in time"),
        (413, "the body is over the server's cap"),
        (415, "the body is not declared application/json"),
        (429, "every lane busy and the queue full"),
        (500, "generating failed inside the server"),
        (503, "too many connections, or the server is shutting down"),
    ]
}


def operation(summary: str, answer: str, request: str | None = None, events: str = "") -> dict:
    """One endpoint: its JSON request and answer (`events`: the chunk of its stream)."""
    content = {"application/json": {"schema": ref(answer)}}
    if events:
        content["text/event-stream"] = {
            "schema": STRING,
            "description": f"with stream: true, `data: ` lines of {events}, then `data: [DONE]`",
        }
    spec = {"summary": summary, "responses": {"200": {"description": "OK", "content": content}}}
    if request:
        body = {"application/json": {"schema": ref(request)}}
        spec["requestBody"] = {"required": True, "content": body}
        spec["responses"].update(ERRORS)
    return spec


def document(version: str) -> dict:
    """The OpenAPI document of a server of charlm `version`."""
    post, get = "post", "get"
    paths = {
        "/v1/completions": {
            post: operation(
                "Generate or score text", "Completion", "CompletionRequest", "CompletionChunk"
            )
        },
        "/v1/chat/completions": {
            post: operation(
                "Continue a chat transcript as the assistant",
                "ChatCompletion",
                "ChatRequest",
                "ChatCompletionChunk",
            )
        },
        "/tokenizer_info": {get: operation("The vocabulary as a tokenizer", "TokenizerInfo")},
        "/tokenize": {post: operation("Text to token ids", "Tokens", "TokenizeRequest")},
        "/detokenize": {post: operation("Token ids to text", "Text", "DetokenizeRequest")},
        "/v1/models": {get: operation("The served run", "Models")},
        "/v1/run": {get: operation("The run's facts and validation history", "Facts")},
        "/v1/inspect": {post: operation("A text's inspection", "Inspection", "InspectRequest")},
        "/health": {get: {**operation("Liveness and lane use", "Health"), "security": []}},
        "/openapi.json": {
            get: {
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "OK"}},
            }
        },
        "/": {
            get: {
                "summary": "The playground page",
                "security": [],
                "responses": {"200": {"description": "text/html"}},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "charlm serve", "version": version},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
    }
