"""The rules of sampling that need no model: how sampling settings are resolved and checked,
the default seed, which characters of a prime are read, and where a stop string ends a
sample. Every front end (`charlm sample`, `charlm serve`, `charlm export`, the Python API)
comes here through charlm.textgen; this module imports no TensorFlow, so the command line
can refuse a bad option before it loads a model.

    >>> settings = resolve_settings(SampleConfig(), temperature=0.5, seed=7)
    >>> settings.temperature, settings.seed, settings.length
    (0.5, 7, 500)
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

from charlm.config import SampleConfig, check_setting
from charlm.errors import ConfigError

# Characters generated per compiled call: CHUNK at most (its columns are compiled in),
# CHUNK_STEPS per call in a server (`charlm serve --chunk-chars`): requests join between
# calls, so a shorter call lets a new one start sooner and a longer one spreads each
# call's fixed cost over more characters.
CHUNK = 256  # hides Python's cost per call, and text still streams
CHUNK_STEPS = 32


class UnknownCharactersWarning(UserWarning):
    """A prime held characters the model never saw; they were left out."""


# The controls a caller may give, each validated by its declaration in the config's sample
# section (sample.<name>); `n` is sample.num_samples.
SETTING_NAMES = {
    "length": "length",
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "seed": "seed",
    "n": "num_samples",
}


@dataclass(frozen=True)
class Settings:
    """Sampling settings, resolved (every value set) and checked."""

    length: int
    temperature: float  # 0 means argmax
    top_k: int  # 0: no limit
    top_p: float
    seed: int  # sample k uses charlm.controls.stream_seed(seed, k)
    n: int
    stop: tuple[str, ...]
    seed_given: bool  # False: `seed` was drawn by random_seed()


def random_seed() -> int:
    """The seed used when none is given: a fresh one per call (the caller may print it).

    Returns:
        An int in [0, 2**31).
    """
    return time.time_ns() % 2**31


def resolve_settings(
    defaults: SampleConfig,
    *,
    argmax: bool = False,
    stop=None,
    vocab_size: int | None = None,
    **given,
) -> Settings:
    """Resolve and check a caller's sampling settings.

    Args:
        defaults: the run's sample section; it fills every setting given as None (n: 1).
        argmax: take the most likely character each time (temperature 0).
        stop: None, a stop string or a list of them (check_stop).
        vocab_size: the model's vocabulary size; top_k may not exceed it.
        **given: length, temperature, top_k, top_p, seed, n, each None or a value.

    Returns:
        Settings, every value set; `seed` drawn by random_seed() when none was given.

    Raises:
        charlm.errors.ConfigError: a value out of range, naming its setting (`sample.top_p`).
        TypeError: a setting name that is not one of the above.
    """
    unknown = sorted(set(given) - set(SETTING_NAMES))
    if unknown:
        raise TypeError(f"unknown sampling setting {unknown[0]!r}")
    values = {}
    for name, key in SETTING_NAMES.items():
        value = given.get(name)
        if value is None:
            value = 1 if name == "n" else getattr(defaults, key)
        values[name] = value if value is None else check_sample_key(key, value)
    if vocab_size is not None and values["top_k"] > vocab_size:
        raise ConfigError(
            f"sample.top_k must be at most the model's vocabulary size ({vocab_size}); "
            f"got {values['top_k']}",
            setting="sample.top_k",
        )
    seed_given = values["seed"] is not None
    return Settings(
        length=values["length"],
        temperature=0.0 if argmax else values["temperature"],
        top_k=values["top_k"],
        top_p=values["top_p"],
        seed=values["seed"] if seed_given else random_seed(),
        n=values["n"],
        stop=check_stop(stop),
        seed_given=seed_given,
    )


def check_sample_key(key: str, value):
    """Check `value` against the declaration of sample.`key`; returns it (ConfigError if not)."""
    return check_setting("sample", key, value, f"sample.{key}")


def check_stop(stop) -> tuple[str, ...]:
    """Stop strings as a tuple.

    Args:
        stop: None, one string, or a list or tuple of them.

    Returns:
        The strings, () for None.

    Raises:
        charlm.errors.ConfigError: an empty string or something not a string.
    """
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) and s for s in stops):
        raise ConfigError(
            "sample.stop must be a non-empty string or a list of them", setting="sample.stop"
        )
    return tuple(stops)


def readable_prime(prime: str, known) -> str:
    """The part of `prime` the model reads. Characters the model never saw are left out,
    with an UnknownCharactersWarning naming them.

    Args:
        prime: the text a caller gave.
        known: the vocabulary's known_part: text -> (the known characters, the others).

    Returns:
        `prime` without its unknown characters.
    """
    kept, unknown = known(prime)
    if unknown:
        warnings.warn(
            f"the prime's characters {''.join(unknown)!r} are not in the model's vocabulary; "
            f"they are left out",
            UnknownCharactersWarning,
            stacklevel=3,
        )
    return kept


class StopScan:
    """One sample's generated text as it arrives, cut before the first stop string or at
    `length` characters. `take` returns the text that is final so far: until the sample
    ends, a tail that may begin a stop string is held back."""

    def __init__(self, length: int, stop: tuple[str, ...] = ()):
        self.length, self.stop = length, stop
        self.hold = max((len(s) for s in stop), default=1) - 1
        self.text = ""  # generated so far (cut at a stop string once one is found)
        self.sent = 0  # characters of `text` already returned by take()
        self.finish_reason: str | None = None  # "stop" or "length" once ended

    def take(self, new_text: str) -> str:
        """Add generated text; return what became final (possibly "").

        Args:
            new_text: the characters generated since the last call.

        Returns:
            The text now known to be part of the sample, in order; after the sample ended
            (`finish_reason` set), always "".
        """
        if self.finish_reason:
            return ""
        searched_from = max(0, len(self.text) - self.hold)
        self.text = (self.text + new_text)[: self.length]  # nothing past the length counts
        found = [i for i in (self.text.find(s, searched_from) for s in self.stop) if i != -1]
        if found:
            self.text = self.text[: min(found)]
            self.finish_reason = "stop"
        elif len(self.text) >= self.length:
            self.finish_reason = "length"
        ready = len(self.text) if self.finish_reason else max(self.sent, len(self.text) - self.hold)
        piece = self.text[self.sent : ready]
        self.sent = max(self.sent, ready)
        return piece
