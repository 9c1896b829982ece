"""The schemas of every request and response of the server (JSON Schema 2020-12), for its
OpenAPI document (charlm.serve.openapi)."""

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


TOKEN = {"token": STRING, "logprob": NUMBER, "bytes": {"type": "array", "items": INTEGER}}
CHAT_TOKEN = closed({**TOKEN, "top_logprobs": {"type": "array", "items": closed(TOKEN)}})


COMPLETION_CHOICE = closed(
    {
        "text": STRING,
        "index": INTEGER,
        "logprobs": nullable(ref("Logprobs")),
        "finish_reason": FINISH,
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
        COMPLETION_CHOICE,
    ),
    "CompletionChunk": envelope(
        "text_completion",
        COMPLETION_CHOICE,
        usage_required=False,
    ),
    "ChatRequest": closed(
        {
            "messages": {"type": "array", "items": MESSAGE, "minItems": 1},
            "max_completion_tokens": nullable(INTEGER),
            "logprobs": nullable({"type": "boolean"}),
            "top_logprobs": nullable({"type": "integer", "minimum": 0, "maximum": MAX_LOGPROBS}),
            **SAMPLING,
        },
        ["messages"],
    ),
    "ChatCompletion": envelope(
        "chat.completion",
        closed(
            {
                "index": INTEGER,
                "logprobs": nullable(ref("ChatLogprobs")),
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
                "logprobs": nullable(ref("ChatLogprobs")),
                "finish_reason": FINISH,
                "delta": closed({"role": {"const": "assistant"}, "content": STRING}, ["content"]),
            }
        ),
        usage_required=False,
    ),
    "ChatLogprobs": closed({"content": {"type": "array", "items": CHAT_TOKEN}, "refusal": NULL}),
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
