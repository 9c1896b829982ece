"""`POST /v1/chat/completions`: a chat answered by a model that continues text. The
messages become a transcript (charlm.serve.transcript), the model continues it as the
assistant, and its reply ends before the next speaker's line; the sampling fields, their
checks and errors, streaming and batching are the completions endpoint's. The model was
not tuned to follow instructions: it writes what its training text would have the
assistant say next.
"""

from __future__ import annotations

from charlm.serve.completions import Shape
from charlm.serve.errors import RequestError
from charlm.serve.prompts import one_prompt
from charlm.serve.requests import Completion, Limits, body_fields, parse_sampling
from charlm.serve.transcript import checked_messages, render, speaker_stops

# OpenAI's chat fields with no effect here, accepted at these values only.
NEUTRAL_CHAT_FIELDS = {"logprobs": False, "top_logprobs": None}


class ChatShape(Shape):
    """The chat endpoint's choices (a message) and chunks (a delta)."""

    object, chunk_object, id_prefix = "chat.completion", "chat.completion.chunk", "chatcmpl"

    def choice(self, index: int, text: str, finish, logprobs) -> dict:
        message = {"role": "assistant", "content": text}
        return {"index": index, "message": message, "logprobs": None, "finish_reason": finish}

    def chunk(self, index: int, text: str, finish, logprobs, first: bool) -> dict:
        delta = {"role": "assistant", "content": text} if first else {"content": text}
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


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
    for name, neutral in NEUTRAL_CHAT_FIELDS.items():
        if fields.pop(name, None) not in (None, neutral):
            raise RequestError(f"{name} is not supported in charlm's chat (only {neutral})", name)
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
    return Completion(prompts=[prompt], **sampling)
