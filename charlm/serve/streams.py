"""The streams the engine serves: one sample of one request each, and batches of them
whose logits and recurrent states sit row by row in shared tensors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from charlm.controls import Controls, stream_seed
from charlm.sampling_rules import StopScan


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
    bias: np.ndarray | None = None  # (vocab,) added to the logits (charlm.controls.bias_row)
    scored: bool = False  # its request asks for logprobs: its prompt's scores are kept
    cancelled: bool = False
    finish_reason: str | None = None  # "stop", "length", or "error" (the server failed)
    position: int = 0  # characters drawn so far

    def __post_init__(self):
        self.scan = StopScan(self.length, tuple(self.stop))
        # Characters of the prompt to read: all, until the reader finds a prefix of it in
        # its prefix cache (Engine.looked_up).
        self.unread = len(self.prompt_ids)
        # If scored, the whole strides of its prompt's scores, once read (CachedReading).
        self.read_strides: list = []

    @property
    def done(self) -> bool:
        return self.cancelled or self.finish_reason is not None

    def take(self, new_text: str) -> None:
        """Append generated text and emit what is final of it (see StopScan)."""
        piece = self.scan.take(new_text)
        self.finish_reason = self.finish_reason or self.scan.finish_reason
        if piece or self.finish_reason:
            self.emit(piece, self.finish_reason)

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
        if not other.streams:
            return self
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

    def row(self, index: int) -> Batch:
        """The batch of one of these streams alone."""
        rows = tf.constant([index], tf.int32)
        return Batch(
            [self.streams[index]],
            tf.gather(self.logits, rows),
            [[tf.gather(state, rows) for state in layer] for layer in self.states],
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


def controls_of(streams: list[Stream], vocab_size: int) -> Controls:
    """The per-stream controls of the sampling loop, one row per stream."""
    no_bias = np.zeros(vocab_size, np.float32)
    return Controls(
        seeds=np.array([s.seed for s in streams], np.int64),
        positions=np.array([s.position for s in streams], np.int64),
        temperature=np.array([s.temperature for s in streams], np.float32),
        top_k=np.array([s.top_k for s in streams], np.int32),
        top_p=np.array([s.top_p for s in streams], np.float32),
        bias=np.stack([no_bias if s.bias is None else s.bias for s in streams]),
    )


def prompts_of(streams: list[Stream]) -> list[np.ndarray]:
    return [stream.prompt_ids for stream in streams]


def request_streams(
    prompts: list[np.ndarray], n: int, seed: int, emitter, scored: bool = False, **controls
) -> list[Stream]:
    """The streams of a request for `n` samples of each of `prompts` (the ids each is read
    as), prompt-major as OpenAI indexes choices: sample k of a prompt uses seed
    stream_seed(seed, k), as `charlm sample --num-samples n --seed seed` does for that
    prompt alone, and choice i emits through emitter(i). With `scored`, each prompt's
    first sample keeps its prompt's scores, for all n (see Stream.read_strides)."""
    return [
        Stream(
            prompt_ids=prompt_ids,
            seed=stream_seed(seed, k),
            emit=emitter(p * n + k),
            scored=scored and k == 0,
            **controls,
        )
        for p, prompt_ids in enumerate(prompts)
        for k in range(n)
    ]
