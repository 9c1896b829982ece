"""`GET /openapi.json`: the server's OpenAPI 3.1 document, every endpoint with its request
and response (schemas in JSON Schema 2020-12). tests/test_serve_openapi.py validates real
responses against it, and the fuzz test every response it provokes, so that it stays true.
"""

from __future__ import annotations

from charlm.serve.requests import MAX_LOGPROBS, MAX_STOPS

STRING, INTEGER, NUMBER, BOOLEAN = ({"type": t} for t in ("string", "integer", "number", "boolean"))
NULL = {"type": "null"}
ID_LIST = {"type": "array", "items": {"type": "integer", "minimum": 0}}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict) -> dict:
    return {"anyOf": [schema, NULL]}


def closed(properties: dict, required: list[str] | None = None, **more) -> dict:
    """An object of these properties and no others (`required`: all of them by default)."""
    needed = list(properties) if required is None else required
    return {
        "type": "object",
        "properties": properties,
        "required": needed,
        "additionalProperties": False,
        **more,
    }


FINISH = {"enum": ["stop", "length", None]}
STOP = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": MAX_STOPS},
        NULL,
    ]
}
SAMPLING = {
    "max_tokens": {**nullable(INTEGER), "description": "characters per choice"},
    "temperature": {**nullable(NUMBER), "description": "0: the most likely character"},
    "top_p": nullable(NUMBER),
    "top_k": {**nullable(INTEGER), "description": "charlm's extension; 0: no limit"},
    "n": nullable(INTEGER),
    "seed": nullable(INTEGER),
    "stop": STOP,
    "stream": nullable(BOOLEAN),
    "stream_options": nullable({"type": "object"}),
    "logit_bias": {
        **nullable({"type": "object", "additionalProperties": {"type": "number"}}),
        "description": "token id -> bias from -100 to 100 (-100 removes the token)",
    },
    "user": nullable(STRING),
    "model": {**STRING, "description": "any name: one model per server"},
    "frequency_penalty": {"enum": [0, None]},
    "presence_penalty": {"enum": [0, None]},
    "best_of": {"enum": [1, None]},
    "suffix": NULL,
}
PROMPT = {
    "anyOf": [
        STRING,
        {"type": "array", "items": STRING, "minItems": 1},
        {**ID_LIST, "minItems": 1},
        {"type": "array", "items": ID_LIST, "minItems": 1},
    ]
}
USAGE = closed({"prompt_tokens": INTEGER, "completion_tokens": INTEGER, "total_tokens": INTEGER})
LOGPROBS = closed(
    {
        "tokens": {"type": "array", "items": STRING},
        "token_logprobs": {"type": "array", "items": nullable(NUMBER)},
        "top_logprobs": {
            "type": "array",
            "items": nullable({"type": "object", "additionalProperties": NUMBER}),
        },
        "text_offset": {"type": "array", "items": INTEGER},
    }
)


def envelope(object_name: str, choice: dict, usage_required: bool = True) -> dict:
    properties = {
        "id": STRING,
        "object": {"const": object_name},
        "created": INTEGER,
        "model": STRING,
        "choices": {"type": "array", "items": choice},
        "usage": ref("Usage"),
    }
    required = list(properties) if usage_required else list(properties)[:-1]
    return closed(properties, required)


MESSAGE = closed(
    {
        "role": {"enum": ["system", "developer", "user", "assistant"]},
        "content": {
            "anyOf": [
                STRING,
                {"type": "array", "items": {"type": "object", "required": ["type", "text"]}},
            ]
        },
        "name": STRING,
    },
    ["role", "content"],
)
SCHEMAS = {
    "Error": closed(
        {
            "error": closed(
                {
                    "message": STRING,
                    "type": STRING,
                    "param": nullable(STRING),
                    "code": nullable(STRING),
                }
            )
        }
    ),
    "Usage": USAGE,
    "Logprobs": LOGPROBS,
    "CompletionRequest": closed(
        {
            "prompt": PROMPT,
            "echo": nullable(BOOLEAN),
            "logprobs": nullable({"type": "integer", "minimum": 0, "maximum": MAX_LOGPROBS}),
            **SAMPLING,
        },
        [],
    ),
    "Completion": envelope(
        "text_completion",
        closed(
            {
                "text": STRING,
                "index": INTEGER,
                "logprobs": nullable(ref("Logprobs")),
                "finish_reason": FINISH,
            }
        ),
    ),
    "CompletionChunk": envelope(
        "text_completion",
        closed(
            {
                "text": STRING,
                "index": INTEGER,
                "logprobs": nullable(ref("Logprobs")),
                "finish_reason": FINISH,
            }
        ),
        usage_required=False,
    ),
    "ChatRequest": closed(
        {
            "messages": {"type": "array", "items": MESSAGE, "minItems": 1},
            "max_completion_tokens": nullable(INTEGER),
            "logprobs": {"enum": [False, None]},
            "top_logprobs": NULL,
            **SAMPLING,
        },
        ["messages"],
    ),
    "ChatCompletion": envelope(
        "chat.completion",
        closed(
            {
                "index": INTEGER,
                "logprobs": NULL,
                "finish_reason": FINISH,
                "message": closed({"role": {"const": "assistant"}, "content": STRING}),
            }
        ),
    ),
    "ChatCompletionChunk": envelope(
        "chat.completion.chunk",
        closed(
            {
                "index": INTEGER,
                "logprobs": NULL,
                "finish_reason": FINISH,
                "delta": closed({"role": {"const": "assistant"}, "content": STRING}, ["content"]),
            }
        ),
        usage_required=False,
    ),
    "TokenizerInfo": closed(
        {
            "tokenizer_class": STRING,
            "eos_token": STRING,
            "bos_token": STRING,
            "unk_token": STRING,
            "pad_token": NULL,
            "vocab_size": INTEGER,
            "model_max_length": INTEGER,
        }
    ),
    "TokenizeRequest": closed(
        {"prompt": STRING, "add_special_tokens": BOOLEAN, "model": STRING}, ["prompt"]
    ),
    "Tokens": closed({"tokens": ID_LIST, "count": INTEGER, "max_model_len": INTEGER}),
    "DetokenizeRequest": closed({"tokens": ID_LIST, "model": STRING}, ["tokens"]),
    "Text": closed({"prompt": STRING}),
    "Models": closed(
        {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": closed(
                    {
                        "id": STRING,
                        "object": {"const": "model"},
                        "created": INTEGER,
                        "owned_by": STRING,
                    }
                ),
            },
        }
    ),
    "Health": closed(
        {
            "status": {"const": "ok"},
            **dict.fromkeys(("lanes", "active", "waiting"), INTEGER),
            **dict.fromkeys(("prefix_cache", "score_cache"), ref("CacheFacts")),
        }
    ),
    "CacheFacts": closed(
        dict.fromkeys(("limit_bytes", "bytes", "entries", "read_chars", "saved_chars"), INTEGER)
    ),
    "Facts": {"type": "object", "required": ["model", "cell", "history"]},
    "InspectRequest": closed({"text": STRING, "model": STRING}, ["text"]),
    "Inspection": {"type": "object"},
}
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
