"""The body of `POST /v1/completions`, checked: OpenAI's fields, charlm's limits (the
`prompt` field's forms: charlm.serve.prompts).

Each sampling control is validated by its declaration in the config's sample section,
as `charlm sample`'s flags and a config file's sample keys are; an error names the field.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charlm.controls import bias_row
from charlm.errors import ConfigError, relabelled
from charlm.reading import LISTED
from charlm.serve.errors import RequestError
from charlm.serve.prompts import Prompt, parse_prompts

# Sent by OpenAI clients but with no effect here; accepted only at their neutral values.
NEUTRAL_FIELDS = {
    "frequency_penalty": 0,
    "presence_penalty": 0,
    "best_of": 1,
    "suffix": None,
    "stream_options": None,
}
MAX_STOPS = 16
MAX_LOGPROBS = LISTED  # the most likely characters `logprobs` may ask for (a reading lists them)


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
    queue: int = 256  # streams that may wait for a lane: the most choices of one request
    max_body_bytes: int | None = None  # None: body_bytes_for(max_prompt_chars)
    body_timeout: float = 30.0  # seconds a POST body may take to arrive

    def __post_init__(self):
        if self.max_body_bytes is None:
            self.max_body_bytes = body_bytes_for(self.max_prompt_chars)


@dataclass
class Completion:
    prompts: list[Prompt]
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
    echo: bool = False
    logprobs: int | None = None  # the most likely characters shown at each position
    bias: np.ndarray | None = None  # the logit_bias row (charlm.controls.bias_row)


def parse_completion(body, generator, limits: Limits) -> Completion:
    """A Completion from a decoded JSON body; RequestError naming the field otherwise.
    `generator` (a charlm.textgen.TextGenerator) checks the sampling fields and fills in
    the run's defaults."""
    fields = body_fields(body)
    prompts = parse_prompts(fields.pop("prompt", ""), generator, limits.max_prompt_chars)
    echo = flag(fields, "echo")
    logprobs = parse_logprobs(fields.pop("logprobs", None), generator.vocab.size)
    sampling = parse_sampling(fields, generator, limits, len(prompts))
    return Completion(prompts=prompts, echo=echo, logprobs=logprobs, **sampling)


def body_fields(body) -> dict:
    """The fields of a request body, without those every request may send with no
    effect (`model`: one model per server; `user`; the neutral values)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    fields = dict(body)
    fields.pop("model", None)
    if not isinstance(fields.pop("user", None), (str, type(None))):
        raise RequestError("user must be a string", "user")
    check_neutral(fields)
    fields["stream_options"] = body.get("stream_options")
    return fields


def parse_sampling(fields: dict, generator, limits: Limits, prompts: int) -> dict:
    """The sampling fields every generating request shares, checked against the server's
    limits; what remains in `fields` after them is unknown (a 400 naming it)."""
    settings = sampling_settings(fields, generator)
    controls = {
        "max_tokens": settings.length,
        "temperature": settings.temperature,
        "top_k": settings.top_k,
        "top_p": settings.top_p,
        "n": settings.n,
    }
    bias = fields.pop("logit_bias", None)
    stream = flag(fields, "stream")
    options = fields.pop("stream_options") or {}
    if fields:
        name = sorted(fields)[0]
        raise RequestError(f"unknown field {name!r}", name)
    check_limits(controls, limits, prompts)
    return {
        **controls,
        "seed": settings.seed,
        "seed_given": settings.seed_given,
        "stop": list(settings.stop),
        "stream": stream,
        "include_usage": bool(isinstance(options, dict) and options.get("include_usage")),
        "bias": parse_bias(bias, generator.vocab.size),
    }


def check_limits(controls: dict, limits: Limits, prompts: int) -> None:
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
    if prompts * controls["n"] > limits.queue:
        raise RequestError(
            f"{prompts} prompts with n {controls['n']} are {prompts * controls['n']:,} "
            f"choices; this server queues at most {limits.queue:,}",
            "prompt",
        )


def flag(fields: dict, name: str) -> bool:
    value = fields.pop(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(f"{name} must be true or false", name)
    return value


def parse_logprobs(value, vocab_size: int, name: str = "logprobs") -> int | None:
    """`logprobs` (chat's `top_logprobs`): null, or how many of the most likely
    characters to show (0 to 20)."""
    if value is None:
        return None
    most = min(MAX_LOGPROBS, vocab_size)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise RequestError(f"{name} must be null or an integer from 0 to {most}", name)
    return value


def parse_bias(value, vocab_size: int) -> np.ndarray | None:
    """`logit_bias`: null or {} (no bias), or {token id: bias from -100 to 100}."""
    if not value:
        if value not in (None, {}):
            raise RequestError("logit_bias must be an object of token ids to biases", "logit_bias")
        return None
    if not isinstance(value, dict):
        raise RequestError("logit_bias must be an object of token ids to biases", "logit_bias")
    try:
        return bias_row(value, vocab_size)
    except ValueError as error:
        raise RequestError(f"logit_bias: {error}", "logit_bias") from None


# The engine holds a stream's controls in fixed-width arrays (charlm.controls.Controls):
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
