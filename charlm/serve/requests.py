"""The body of `POST /v1/completions`, checked: OpenAI's fields, charlm's limits.

Each sampling control is validated by its declaration in the config's sample section,
as `charlm sample`'s flags and a config file's sample keys are; an error names the field.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from charlm.config import check_setting
from charlm.errors import ConfigError

# Sent by OpenAI clients but with no effect here; accepted only at their neutral values.
NEUTRAL_FIELDS = {
    "echo": False,
    "logprobs": None,
    "frequency_penalty": 0,
    "presence_penalty": 0,
    "best_of": 1,
    "suffix": None,
    "user": None,
    "logit_bias": None,
    "stream_options": None,
}
MAX_STOPS = 4


class RequestError(Exception):
    """A request the server refuses: an HTTP status and an OpenAI-style error object."""

    def __init__(
        self,
        message: str,
        param: str | None = None,
        status: int = 400,
        kind: str = "invalid_request_error",
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.param, self.kind, self.code = status, param, kind, code

    def body(self) -> dict:
        return {
            "error": {
                "message": str(self),
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass
class Limits:
    max_tokens: int = 4096  # the most characters one choice may ask for
    max_prompt_chars: int = 100_000
    lanes: int = 64


@dataclass
class Completion:
    prompt: str
    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    n: int
    seed: int
    seed_given: bool
    stop: list[str]
    stream: bool
    include_usage: bool


def parse_completion(body, defaults, limits: Limits) -> Completion:
    """A Completion from a decoded JSON body; RequestError naming the field otherwise.
    `defaults` is the run's sample section (length, temperature, top_k, top_p)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    fields = dict(body)
    fields.pop("model", None)  # one model per server: any name is accepted
    check_neutral(fields)
    prompt = fields.pop("prompt", "")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise RequestError("prompt must be a string", "prompt")
    if len(prompt) > limits.max_prompt_chars:
        raise RequestError(
            f"prompt has {len(prompt):,} characters; this server reads at most "
            f"{limits.max_prompt_chars:,}",
            "prompt",
        )
    controls = {
        "max_tokens": setting("length", fields.pop("max_tokens", defaults.length), "max_tokens"),
        "temperature": setting("temperature", fields.pop("temperature", defaults.temperature)),
        "top_k": setting("top_k", fields.pop("top_k", defaults.top_k)),
        "top_p": setting("top_p", fields.pop("top_p", defaults.top_p)),
        "n": setting("num_samples", fields.pop("n", 1), "n"),
    }
    seed = fields.pop("seed", None)
    seed_given = seed is not None
    seed = setting("seed", seed) if seed_given else time.time_ns() % 2**31
    stop = parse_stop(fields.pop("stop", None))
    stream = fields.pop("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("stream must be true or false", "stream")
    options = body.get("stream_options") or {}
    if fields:
        name = sorted(fields)[0]
        raise RequestError(f"unknown field {name!r}", name)
    if controls["max_tokens"] > limits.max_tokens:
        raise RequestError(
            f"max_tokens is {controls['max_tokens']:,}; this server gives at most "
            f"{limits.max_tokens:,} characters per choice",
            "max_tokens",
        )
    if controls["n"] > limits.lanes:
        raise RequestError(
            f"n is {controls['n']}; this server runs {limits.lanes} streams at once", "n"
        )
    return Completion(
        prompt=prompt,
        seed=seed,
        seed_given=seed_given,
        stop=stop,
        stream=stream,
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        **controls,
    )


def setting(name: str, value, field: str | None = None):
    try:
        return check_setting("sample", name, value, field or name)
    except ConfigError as error:
        raise RequestError(str(error), field or name) from None


def check_neutral(fields: dict) -> None:
    for name, neutral in NEUTRAL_FIELDS.items():
        if name in fields:
            value = fields.pop(name)
            if value not in (neutral, None) and name != "stream_options":
                raise RequestError(f"{name} is not supported by charlm (only {neutral!r})", name)


def parse_stop(stop) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(stops, list)
        or not all(isinstance(s, str) and s for s in stops)
        or len(stops) > MAX_STOPS
    ):
        raise RequestError(
            f"stop must be a non-empty string or a list of up to {MAX_STOPS}", "stop"
        )
    return stops
