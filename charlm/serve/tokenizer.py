"""The tokenizer endpoints vLLM serves, which clients use to count and build token-id
prompts (lm-evaluation-harness's `tokenizer_backend=remote`). A token is a character; its
id is its index in the run's vocab.json.

    GET  /tokenizer_info   {"eos_token", "bos_token", "unk_token", "vocab_size", ...}
    POST /tokenize         {"prompt": "text"} -> {"tokens": [ids], "count", "max_model_len"}
    POST /detokenize       {"tokens": [ids]} -> {"prompt": "text"}

The begin and end tokens are both the character generation starts after (a newline when
the vocabulary has one): a text is read from the state after it, so a client that puts it
before a text scores the text as the model reads it. `/tokenize` gives a character the
model never saw the unknown token's id (as LanguageModel.score reads it), where a text
prompt of a completion leaves it out (as `charlm sample` reads a prime).
"""

from __future__ import annotations

from charlm.generate import start_token
from charlm.serve.errors import RequestError
from charlm.serve.prompts import token_ids


def tokenizer_info(service) -> dict:
    vocab = service.generator.vocab
    start = vocab.table[start_token(vocab)]
    return {
        "tokenizer_class": "charlm.Vocabulary",
        "eos_token": start,
        "bos_token": start,
        "unk_token": vocab.UNKNOWN_TEXT,
        "pad_token": None,
        "vocab_size": vocab.size,
        "model_max_length": service.limits.max_prompt_chars,
    }


def tokenize(service, body) -> dict:
    """`{"prompt": text}` (and vLLM's `add_special_tokens`, `model`: charlm adds no special
    tokens) as its ids."""
    fields = fields_of(body, "prompt", {"add_special_tokens", "model"})
    prompt = fields["prompt"]
    if not isinstance(prompt, str):
        raise RequestError("prompt must be a string: the text to tokenize", "prompt")
    most = service.limits.max_prompt_chars
    if len(prompt) > most:
        raise RequestError(
            f"prompt has {len(prompt):,} characters; this server reads at most {most:,}",
            "prompt",
        )
    tokens = service.generator.vocab.encode(prompt).tolist()
    return {"tokens": tokens, "count": len(tokens), "max_model_len": most}


def detokenize(service, body) -> dict:
    """`{"tokens": [ids]}` as the text they stand for."""
    tokens = fields_of(body, "tokens", {"model"})["tokens"]
    if not isinstance(tokens, list):
        raise RequestError("tokens must be a list of token ids", "tokens")
    vocab = service.generator.vocab
    return {"prompt": vocab.decode(token_ids(tokens, vocab.size, "tokens"))}


def fields_of(body, required: str, optional: set[str]) -> dict:
    """A body's fields: an object with `required` and only `optional` besides."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    unknown = sorted(set(body) - {required} - optional)
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r}", unknown[0])
    if required not in body:
        raise RequestError(f"{required} is required", required)
    return body
