"""The sampling controls each stream carries into the compiled loop (charlm.generate): its
seed, position, temperature, top-k, top-p and logit bias, one row per stream, so that a
batch can hold streams of unrelated requests; and the rule that turns a request's
`logit_bias` into its row. No TensorFlow here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from charlm.config.schema import SEED_LIMIT, SampleConfig

MODES = ("argmax", "plain", "filtered")  # see sampling_mode
BIAS_LIMIT = 100  # a logit bias lies in [-BIAS_LIMIT, BIAS_LIMIT], as OpenAI's does


@dataclass
class SamplingOptions:
    """One request's controls, as the sampling loop takes them (defaults: the config's)."""

    length: int = SampleConfig.length
    temperature: float = SampleConfig.temperature  # 0 means argmax
    top_k: int = SampleConfig.top_k  # 0: no limit
    top_p: float = SampleConfig.top_p
    argmax: bool = False
    seed: int = 0


@dataclass
class Controls:
    """Per-stream sampling controls, as arrays of one row per stream."""

    seeds: np.ndarray  # int64
    positions: np.ndarray  # int64: characters generated so far
    temperature: np.ndarray  # float32; 0 means argmax
    top_k: np.ndarray  # int32; 0 means no limit
    top_p: np.ndarray  # float32
    bias: np.ndarray  # float32 (streams, vocab): added to the logits before every draw

    @classmethod
    def of(cls, options: SamplingOptions, streams: int, vocab_size: int) -> Controls:
        temperature = 0.0 if options.argmax else options.temperature
        return cls(
            seeds=np.array([stream_seed(options.seed, k) for k in range(streams)], np.int64),
            positions=np.zeros(streams, np.int64),
            temperature=np.full(streams, temperature, np.float32),
            top_k=np.full(streams, options.top_k, np.int32),
            top_p=np.full(streams, options.top_p, np.float32),
            bias=np.zeros((streams, vocab_size), np.float32),
        )

    def arrays(self) -> tuple:
        """The arrays in the order the compiled loop unpacks them."""
        return (self.seeds, self.positions, self.temperature, self.top_k, self.top_p, self.bias)


def stream_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of a request made with `seed` (sample 0 uses `seed`)."""
    return (seed + index * 0x9E3779B97F4A7C15) % SEED_LIMIT


def sampling_mode(controls: Controls) -> str:
    """The cheapest graph that gives every stream the tokens the general one gives it: all
    argmax, no filtering, or per-stream filters (see charlm.draws.choose)."""
    if not controls.temperature.any():
        return "argmax"
    if not controls.top_k.any() and (controls.top_p >= 1).all():
        return "plain"
    return "filtered"


def bias_row(logit_bias: dict, vocab_size: int) -> np.ndarray:
    """A `logit_bias` ({token id: bias}, ids as integers or their decimal strings, as JSON
    sends them) as the row added to a stream's logits: each bias in [-100, 100], and -100
    removes the token (its logit becomes -inf: no draw can pick it). ValueError otherwise,
    naming the id or the value."""
    row = np.zeros(vocab_size, np.float32)
    for key, value in logit_bias.items():
        token = token_id(key, vocab_size)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not -BIAS_LIMIT <= value <= BIAS_LIMIT  # also refuses nan
        ):
            raise ValueError(
                f"the bias of token {key} must be a number from -{BIAS_LIMIT} to {BIAS_LIMIT}; "
                f"got {value!r}"
            )
        row[token] = -math.inf if value == -BIAS_LIMIT else value
    return row


def token_id(key, vocab_size: int) -> int:
    """A token id given as an integer or a decimal string, checked against the vocabulary."""
    text = str(key)
    if isinstance(key, bool) or not text.isdecimal() or not 0 <= int(text) < vocab_size:
        raise ValueError(f"token ids are 0 to {vocab_size - 1}; got {key!r}")
    return int(text)
