"""The body of `POST /v1/completions`, checked: OpenAI's fields, charlm's limits.

Each sampling control is validated by its declaration in the config's sample section,
as `charlm sample`'s flags and a config file's sample keys are; an error names the field.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charlm.errors import ConfigError, relabelled

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


# A body's cap follows from the longest prompt: a JSON encoder may write each of its
# characters as a \uXXXX escape (Python's json does, by default), and the other fields
# (stop strings, options, a model name) fit in the slack.
BODY_BYTES_PER_PROMPT_CHAR = 6
BODY_SLACK_BYTES = 64 * 1024


def body_bytes_for(max_prompt_chars: int) -> int:
    """The default body cap of a server that reads prompts of `max_prompt_chars`."""
    return BODY_BYTES_PER_PROMPT_CHAR * max_prompt_chars + BODY_SLACK_BYTES


@dataclass
class Limits:
    max_tokens: int = 4096  # the most characters one choice may ask for
    max_prompt_chars: int = 100_000
    lanes: int = 64
    max_body_bytes: int | None = None  # None: body_bytes_for(max_prompt_chars)
    body_timeout: float = 30.0  # seconds a POST body may take to arrive

    def __post_init__(self):
        if self.max_body_bytes is None:
            self.max_body_bytes = body_bytes_for(self.max_prompt_chars)


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


def parse_completion(body, generator, limits: Limits) -> Completion:
    """A Completion from a decoded JSON body; RequestError naming the field otherwise.
    `generator` (a charlm.textgen.TextGenerator) checks the sampling fields and fills in
    the run's defaults."""
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
    settings = sampling_settings(fields, generator)
    controls = {
        "max_tokens": settings.length,
        "temperature": settings.temperature,
        "top_k": settings.top_k,
        "top_p": settings.top_p,
        "n": settings.n,
    }
    seed, seed_given, stop = settings.seed, settings.seed_given, list(settings.stop)
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
    check_lane_widths(controls)
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


# The engine holds a stream's controls in fixed-width arrays (charlm.generate.Lanes):
# a value past these would fail the whole batch the stream joins, not only its request.
# (top_k is bounded by the vocabulary, seeds by SEED_LIMIT, n and max_tokens by Limits.)
LANE_MAXIMA = {"temperature": float(np.finfo(np.float32).max)}


def check_lane_widths(controls: dict) -> None:
    for name, most in LANE_MAXIMA.items():
        if controls[name] > most:
            shown = f"{most:,}" if isinstance(most, int) else f"{most:g}"
            raise RequestError(f"{name} must be at most {shown}; got {controls[name]!r}", name)


# The request field of each sampling setting, to name it in an error.
FIELDS = {
    "sample.length": "max_tokens",
    "sample.temperature": "temperature",
    "sample.top_k": "top_k",
    "sample.top_p": "top_p",
    "sample.seed": "seed",
    "sample.num_samples": "n",
    "sample.stop": "stop",
}


def sampling_settings(fields: dict, generator):
    """The request's sampling settings, checked by the library's rules (its defaults, its
    seed, the vocabulary's bound on top_k), taken out of `fields`."""
    given = {
        "length": fields.pop("max_tokens", None),
        "temperature": fields.pop("temperature", None),
        "top_k": fields.pop("top_k", None),
        "top_p": fields.pop("top_p", None),
        "seed": fields.pop("seed", None),
        "n": fields.pop("n", None),
    }
    try:
        return generator.settings(stop=parse_stop(fields.pop("stop", None)), **given)
    except ConfigError as error:
        raise RequestError(relabelled(error, FIELDS), FIELDS.get(error.setting)) from None


def check_neutral(fields: dict) -> None:
    for name, neutral in NEUTRAL_FIELDS.items():
        if name in fields:
            value = fields.pop(name)
            if value not in (neutral, None) and name != "stream_options":
                raise RequestError(f"{name} is not supported by charlm (only {neutral!r})", name)


def parse_stop(stop):
    """`stop` as given, refused past MAX_STOPS strings (the library checks the rest)."""
    if isinstance(stop, list) and len(stop) > MAX_STOPS:
        raise RequestError(f"stop takes up to {MAX_STOPS} strings; got {len(stop)}", "stop")
    return stop
