"""The streams the engine serves: one sample of one request each, and batches of them
whose logits and recurrent states sit row by row in shared tensors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from charlm.generate import Lanes, stream_seed


@dataclass(eq=False)
class Stream:
    """One sample of one request, from its prompt to its finish."""

    prompt_ids: np.ndarray
    length: int
    seed: int
    temperature: float
    top_k: int
    top_p: float
    stop: list[str]
    emit: Callable[[str, str | None], None]  # (new text, finish reason or None)
    cancelled: bool = False
    text: str = ""  # generated so far
    sent: int = 0  # characters of `text` already emitted
    finish_reason: str | None = None  # "stop", "length", or "error" (the server failed)
    position: int = 0  # characters drawn so far

    @property
    def done(self) -> bool:
        return self.cancelled or self.finish_reason is not None

    def take(self, new_text: str) -> None:
        """Append generated text; finish on a stop string or at the length."""
        hold = max((len(s) for s in self.stop), default=1) - 1
        searched_from = max(0, len(self.text) - hold)
        self.text = (self.text + new_text)[: self.length]  # nothing past the length counts
        for stop in self.stop:
            found = self.text.find(stop, searched_from)
            if found != -1:
                self.text = self.text[:found]
                self.finish_reason = "stop"
        if self.finish_reason is None and len(self.text) >= self.length:
            self.finish_reason = "length"
        # Until the stream ends, a tail that may begin a stop string is held back.
        ready = len(self.text) if self.finish_reason else max(self.sent, len(self.text) - hold)
        if ready > self.sent or self.finish_reason:
            self.emit(self.text[self.sent : ready], self.finish_reason)
            self.sent = ready

    def fail(self) -> None:
        """End the stream because the server failed it; its client is told if it can be
        (telling it is what may have failed)."""
        if self.done:
            return
        self.finish_reason = "error"
        try:
            self.emit("", "error")
        except Exception:
            pass


@dataclass
class Batch:
    """Streams and their rows of logits and states (per layer, per state)."""

    streams: list[Stream]
    logits: tf.Tensor
    states: list

    def extend(self, other: Batch) -> Batch:
        if not self.streams:
            return other
        return Batch(
            self.streams + other.streams,
            tf.concat([self.logits, other.logits], axis=0),
            [
                [tf.concat([mine, theirs], axis=0) for mine, theirs in zip(a, b)]
                for a, b in zip(self.states, other.states)
            ],
        )

    def without_done(self) -> Batch:
        kept = [i for i, stream in enumerate(self.streams) if not stream.done]
        if len(kept) == len(self.streams):
            return self
        if not kept:
            return EMPTY
        rows = tf.constant(kept, tf.int32)
        return Batch(
            [self.streams[i] for i in kept],
            tf.gather(self.logits, rows),
            [[tf.gather(state, rows) for state in layer] for layer in self.states],
        )


EMPTY = Batch([], None, [])


def lanes_of(streams: list[Stream]) -> Lanes:
    """The per-stream controls of the sampling loop, one row per stream."""
    return Lanes(
        seeds=np.array([s.seed for s in streams], np.int64),
        positions=np.array([s.position for s in streams], np.int64),
        temperature=np.array([s.temperature for s in streams], np.float32),
        top_k=np.array([s.top_k for s in streams], np.int32),
        top_p=np.array([s.top_p for s in streams], np.float32),
    )


def prompts_of(streams: list[Stream]) -> list[np.ndarray]:
    return [stream.prompt_ids for stream in streams]


def request_streams(prompt_ids, n: int, seed: int, emitter, **controls) -> list[Stream]:
    """The streams of a request for `n` samples: sample k uses seed stream_seed(seed, k),
    as `charlm sample --num-samples n --seed seed` does, and emits through emitter(k)."""
    return [
        Stream(prompt_ids=prompt_ids, seed=stream_seed(seed, k), emit=emitter(k), **controls)
        for k in range(n)
    ]
