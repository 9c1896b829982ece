"""`POST /v1/chat/completions`: a chat answered by a model that continues text. The
messages become a transcript (charlm.serve.transcript), the model continues it as the
assistant, and its reply ends before the next speaker's line; the sampling fields, their
checks and errors, streaming and batching are the completions endpoint's. The model was
not tuned to follow instructions: it writes what its training text would have the
assistant say next.

With `logprobs: true`, each choice's log-probabilities are the completions endpoint's
(charlm.serve.logprobs), in chat's shape: a list of {token, logprob, bytes,
top_logprobs} for the characters of the reply, `top_logprobs` (0 to 20) of the most
likely characters at each.
"""

from __future__ import annotations

from charlm.serve.completions import Shape
from charlm.serve.errors import RequestError
from charlm.serve.prompts import one_prompt
from charlm.serve.requests import (
    Completion,
    Limits,
    body_fields,
    flag,
    parse_logprobs,
    parse_sampling,
)
from charlm.serve.transcript import checked_messages, render, speaker_stops


class ChatShape(Shape):
    """The chat endpoint's choices (a message) and chunks (a delta)."""

    object, chunk_object, id_prefix = "chat.completion", "chat.completion.chunk", "chatcmpl"

    def choice(self, index: int, text: str, finish, logprobs) -> dict:
        message = {"role": "assistant", "content": text}
        return {
            "index": index,
            "message": message,
            "logprobs": chat_logprobs(logprobs),
            "finish_reason": finish,
        }

    def chunk(self, index: int, text: str, finish, logprobs, first: bool) -> dict:
        delta = {"role": "assistant", "content": text} if first else {"content": text}
        return {
            "index": index,
            "delta": delta,
            "logprobs": chat_logprobs(logprobs),
            "finish_reason": finish,
        }


def chat_logprobs(logprobs: dict | None) -> dict | None:
    """The completions endpoint's logprobs object (of a reply: no position without
    context) in chat's shape."""
    if logprobs is None:
        return None
    content = [
        {
            **chat_token(token, logprob),
            "top_logprobs": [chat_token(char, value) for char, value in top.items()],
        }
        for token, logprob, top in zip(
            logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"]
        )
    ]
    return {"content": content, "refusal": None}


def chat_token(token: str, logprob: float) -> dict:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def parse_chat(body, generator, limits: Limits, names: dict[str, str]) -> Completion:
    """A Completion of the transcript of a chat request; RequestError naming the field
    otherwise."""
    fields = body_fields(body)
    try:
        messages = checked_messages(fields.pop("messages", None))
    except ValueError as error:
        raise RequestError(str(error), "messages") from None
    most = fields.pop("max_completion_tokens", None)
    if fields.get("max_tokens") is None and most is not None:
        fields["max_tokens"] = most
    logprobs = chat_top_logprobs(fields, generator.vocab.size)
    transcript = render(messages, names)
    if len(transcript) > limits.max_prompt_chars:
        raise RequestError(
            f"the messages' transcript has {len(transcript):,} characters; this server reads "
            f"at most {limits.max_prompt_chars:,}",
            "messages",
        )
    prompt = one_prompt(transcript, generator, limits.max_prompt_chars)
    sampling = parse_sampling(fields, generator, limits, 1)
    sampling["stop"] = sampling["stop"] + speaker_stops(names)
    return Completion(prompts=[prompt], logprobs=logprobs, **sampling)


def chat_top_logprobs(fields: dict, vocab_size: int) -> int | None:
    """How many of the most likely characters a reply's logprobs list at each position
    (`top_logprobs`, 0 by default), or None without `logprobs: true`."""
    wanted = flag(fields, "logprobs")
    top = parse_logprobs(fields.pop("top_logprobs", None), vocab_size, "top_logprobs")
    if top is not None and not wanted:
        raise RequestError("top_logprobs needs logprobs: true", "top_logprobs")
    return (top or 0) if wanted else None
