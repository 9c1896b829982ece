"""Continuous batching: every active stream advances together in one compiled sampling
call per chunk of characters, on one thread.

    submit() --> pending --(chunk boundary: prompts read, first character sent)--> lanes
    lanes --(one Sampler.generate call for all of them, a chunk of characters)--> emit()
    a stream leaves its lane when it has its length, hits a stop string, or is cancelled

A recurrent model makes this simple: a stream's whole state is a few vectors per layer,
so joining or leaving the batch is a gather of those vectors, with no cache that grows.
Each stream keeps its own seed, position and controls (charlm.generate.Lanes), so its
text is the one `charlm sample` gives for the same prompt, seed and options, however many
streams run beside it.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from charlm.generate import Lanes, Sampler, sampling_mode, stream_seed

# Characters per batched call. Each call costs a few milliseconds besides its steps, so
# long calls serve more characters per second; short ones let a waiting stream join
# sooner. Short while streams wait for a lane or joined just now, long otherwise.
SHORT_CHUNK, LONG_CHUNK = 8, 32


class Busy(Exception):
    """More streams waiting than the queue holds."""


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
    finish_reason: str | None = None
    position: int = 0  # characters drawn so far

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


class Engine:
    """Runs the sampling loop of one model for many streams; thread-safe submit().

    The active streams' logits and states live in batched tensors, row i for
    `self.active[i]`: a chunk is one call, and streams join (concat) or leave (gather)
    with a few tensor operations, whatever their number."""

    def __init__(self, sampler: Sampler, lanes: int = 64, queue_limit: int = 256):
        self.sampler = sampler
        self.vocab = sampler.vocab
        self.lane_count = lanes
        self.queue_limit = queue_limit
        self.pending: deque[Stream] = deque()
        self.active: list[Stream] = []
        self.logits = None  # (active streams, vocabulary)
        self.states: list = []  # per layer, per state: (active streams, units)
        self.wake = threading.Condition()
        self.running = False
        self.thread = threading.Thread(target=self.run, name="charlm-engine", daemon=True)

    # ------------------------------------------------------------ outside the thread
    def start(self) -> None:
        self.running = True
        self.thread.start()

    def stop(self) -> None:
        with self.wake:
            self.running = False
            self.wake.notify()
        self.thread.join(timeout=10)

    def submit(self, streams: list[Stream]) -> None:
        with self.wake:
            if len(self.pending) + len(streams) > self.queue_limit:
                raise Busy(f"{len(self.pending)} streams are waiting for a lane")
            self.pending.extend(streams)
            self.wake.notify()

    def load(self) -> dict:
        return {"lanes": self.lane_count, "active": len(self.active), "waiting": len(self.pending)}

    # ------------------------------------------------------------ the thread
    def run(self) -> None:
        while True:
            with self.wake:
                while self.running and not self.pending and not self.active:
                    self.wake.wait()
                if not self.running:
                    return
                joining = self.take_pending()
            self.admit(joining)
            self.drop_finished()
            if self.active:
                steps = SHORT_CHUNK if self.pending or joining else LONG_CHUNK
                ids, self.logits, self.states = self.draw(
                    self.active, self.logits, self.states, steps
                )
                self.hand_out(self.active, ids)

    def take_pending(self) -> list[Stream]:
        free = self.lane_count - len(self.active)
        joining = []
        while self.pending and len(joining) < free:
            stream = self.pending.popleft()
            if not stream.cancelled:
                joining.append(stream)
        return joining

    def admit(self, joining: list[Stream]) -> None:
        """Read the prompts (those of one length together) and draw each stream's first
        character at once, so a new stream waits for its prompt, not for a chunk."""

        def length(stream):
            return len(stream.prompt_ids)

        for _, group in itertools.groupby(sorted(joining, key=length), key=length):
            group = list(group)
            logits, states = self.sampler.feed_rows(np.stack([s.prompt_ids for s in group]))
            ids, logits, states = self.draw(group, logits, states, 1)
            self.join(group, logits, states)
            self.hand_out(group, ids)

    def join(self, streams: list[Stream], logits, states) -> None:
        if not self.active:
            self.active, self.logits, self.states = list(streams), logits, states
            return
        self.active += streams
        self.logits = tf.concat([self.logits, logits], axis=0)
        self.states = [
            [tf.concat([mine, theirs], axis=0) for mine, theirs in zip(a, b)]
            for a, b in zip(self.states, states)
        ]

    def drop_finished(self) -> None:
        """Free the lanes of streams that finished or whose client went away."""
        kept = [i for i, s in enumerate(self.active) if not s.cancelled and not s.finish_reason]
        if len(kept) == len(self.active):
            return
        self.active = [self.active[i] for i in kept]
        rows = tf.constant(kept, tf.int32)
        self.logits = tf.gather(self.logits, rows)
        self.states = [[tf.gather(state, rows) for state in layer] for layer in self.states]

    def draw(self, streams: list[Stream], logits, states, steps: int):
        """`steps` characters for `streams` (rows of logits and states)."""
        lanes = lanes_of(streams)
        ids, logits, states = self.sampler.generate(
            logits, states, lanes, steps, sampling_mode(lanes)
        )
        for stream in streams:
            stream.position += steps
        return ids, logits, states

    def hand_out(self, streams: list[Stream], ids: np.ndarray) -> None:
        for row, stream in enumerate(streams):
            if not stream.cancelled and not stream.finish_reason:
                stream.take(self.vocab.decode(ids[row]))


def lanes_of(streams: list[Stream]) -> Lanes:
    return Lanes(
        seeds=np.array([s.seed for s in streams], np.int64),
        positions=np.array([s.position for s in streams], np.int64),
        temperature=np.array([s.temperature for s in streams], np.float32),
        top_k=np.array([s.top_k for s in streams], np.int32),
        top_p=np.array([s.top_p for s in streams], np.float32),
    )


def request_streams(prompt_ids, n: int, seed: int, emitter, **controls) -> list[Stream]:
    """The streams of a request for `n` samples: sample k uses seed stream_seed(seed, k),
    as `charlm sample --num-samples n --seed seed` does, and emits through emitter(k)."""
    return [
        Stream(prompt_ids=prompt_ids, seed=stream_seed(seed, k), emit=emitter(k), **controls)
        for k in range(n)
    ]
