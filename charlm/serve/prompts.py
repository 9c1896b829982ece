"""A completion's `prompt`, in each form OpenAI's protocol allows, as the characters the
model reads: a string, a list of strings, a list of token ids (vocab.json's), or a list of
such lists. Each prompt of the list gets its own choices.

A string is read as `charlm sample` reads a prime: characters the model never saw are
left out. Token ids are read as given (the unknown token's id included), so that a client
that tokenized a text with POST /tokenize scores exactly that text.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from charlm.sampling_rules import UnknownCharactersWarning
from charlm.serve.errors import RequestError

FORMS = "a string, a list of strings, a list of token ids, or a list of lists of token ids"


@dataclass(frozen=True)
class Prompt:
    """One prompt as the model reads it."""

    ids: np.ndarray  # int32; empty: generation starts as after a newline
    text: str  # its characters, one per id (what `echo` shows)


def parse_prompts(prompt, generator, max_chars: int) -> list[Prompt]:
    """The prompts of a request's `prompt` field; RequestError naming `prompt` otherwise."""
    if isinstance(prompt, str):
        items = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        items = prompt
    elif isinstance(prompt, list) and prompt and all(is_id(p) for p in prompt):
        items = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, list) for p in prompt):
        items = prompt
    else:
        raise RequestError(f"prompt must be {FORMS}", "prompt")
    return [one_prompt(item, generator, max_chars) for item in items]


def one_prompt(item, generator, max_chars: int) -> Prompt:
    if len(item) > max_chars:
        kind = "characters" if isinstance(item, str) else "tokens"
        raise RequestError(
            f"prompt has {len(item):,} {kind}; this server reads at most {max_chars:,}",
            "prompt",
        )
    if isinstance(item, str):
        text = readable(generator, item)
        return Prompt(generator.vocab.encode(text).astype(np.int32), text)
    return Prompt(token_ids(item, generator.vocab.size), generator.vocab.decode(item))


def readable(generator, text: str) -> str:
    """The part of a prompt the model reads, as `charlm sample` reads a prime (a server
    answers; it does not warn)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownCharactersWarning)
        return generator.readable(text)


def token_ids(items: list, vocab_size: int, field: str = "prompt") -> np.ndarray:
    """A list of token ids, each checked against the vocabulary; RequestError naming
    `field` otherwise."""
    for item in items:
        if not is_id(item):
            raise RequestError(f"{field}: {item!r} is not a token id (an integer)", field)
        if not 0 <= item < vocab_size:
            raise RequestError(
                f"{field} holds token id {item}; this model's ids are 0 to {vocab_size - 1}",
                field,
            )
    return np.array(items, np.int32)


def is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
