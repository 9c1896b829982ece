"""Continuous batching: every active stream advances together in one compiled sampling
call per chunk of characters, while another thread reads the prompts of new streams.

    submit() --> pending --(reader: prompts read, first character drawn and sent)--> ready
    ready --(decoder, at the next chunk boundary)--> lanes
    lanes --(one Sampler.generate call for all of them, a chunk of characters)--> emit()
    a stream leaves its lane when it has its length, hits a stop string, or is cancelled

Reading a prompt takes a model step per character, as generating does. Short prompts
(under SHORT_PROMPT characters to read past the longest prefix of them the prefix cache
holds, one compiled call) come first: no chunk starts while one
is being read or could be, so a read shares the cores only with the chunk running when
its request came, and its first character is sent at once; prompts that arrive together
are read in one batch, which makes reading cheap (docs/decisions.md, short-prompts-first).
A long prompt is read a piece at a time beside the running streams (a very long one would
otherwise stop them for seconds), and short prompts that arrive meanwhile are read between pieces.
A read or a chunk that fails (TensorFlow out of memory, say) is tried again for each of
its streams alone, so that one stream that cannot be served ends no other; a stream that
fails alone ends with finish reason "error" and is logged; both threads go on serving
the others.

A prompt is read from the longest prefix of it read before, if the prefix cache
(charlm.serve.prefix_cache) still holds that prefix's state. The prompt of a request that
asks for logprobs is read with the scores of its characters, which its stream hands to
the request's scoring (charlm.serve.logprobs): the prompt is read once, for both.

A recurrent model makes this simple: a stream's whole state is a few vectors per layer,
so joining or leaving the batch is a gather of those vectors, with no cache that grows.
Each stream keeps its own seed, position and controls (charlm.controls.Controls), so its
text is the one `charlm sample` gives for the same prompt, seed and options, however many
streams run beside it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from charlm.controls import sampling_mode
from charlm.generate import Sampler
from charlm.sampling_rules import CHUNK_STEPS
from charlm.serve.prefix_cache import CachedReading, PrefixCache
from charlm.serve.streams import EMPTY, Batch, Stream, controls_of, prompts_of

log = logging.getLogger("charlm.serve")

SHORT_PROMPT = 128  # shorter prompts are read first, together (see by_prompt_length)


class Busy(Exception):
    """More streams waiting than the queue holds."""


class Engine:
    """Runs the sampling loop of one model for many streams; thread-safe submit().

    Two threads: the reader reads new prompts and sends each stream's first character;
    the decoder advances the active streams, whose logits and states live in batched
    tensors, a chunk of characters per call. Streams join (concat) or leave (gather)
    with a few tensor operations, whatever their number."""

    def __init__(
        self,
        sampler: Sampler,
        lanes: int = 64,
        queue_limit: int = 256,
        prefix_cache_bytes: int = 0,
        chunk_steps: int = CHUNK_STEPS,
    ):
        # A request's text must not depend on whether it ran alone (see charlm.batching).
        self.sampler = sampler.batch_invariant()
        self.vocab = sampler.vocab
        self.lane_count = lanes
        # Characters per batched call. Each call has a fixed cost besides its steps, so
        # long calls serve more characters per second; but a new stream joins only when
        # the running call ends, and its prompt is read beside it, sharing the cores.
        self.chunk_steps = chunk_steps
        self.prefix_cache = PrefixCache(prefix_cache_bytes)  # the reader's alone
        self.queue_limit = queue_limit
        self.pending: deque[Stream] = deque()  # prompt not read yet
        self.reading = 0  # streams whose prompts are being read
        self.reading_short = False  # short prompts are being read: no chunk starts
        self.long_reads: deque[tuple[list[Stream], CachedReading]] = deque()  # reader's own
        self.ready: list[Batch] = []  # prompt read, waiting for a chunk boundary
        self.active = EMPTY  # advanced by the decoder
        self.wake = threading.Condition()
        self.running = False
        self.threads = [
            threading.Thread(target=self.read_prompts, name="charlm-reader", daemon=True),
            threading.Thread(target=self.decode, name="charlm-decoder", daemon=True),
        ]

    def start(self) -> None:
        self.sampler.compile(self.lane_count)
        self.running = True
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        with self.wake:
            self.running = False
            self.wake.notify_all()
        for thread in self.threads:
            thread.join(timeout=10)

    def submit(self, streams: list[Stream]) -> None:
        with self.wake:
            if len(self.pending) + len(streams) > self.queue_limit:
                raise Busy(f"{len(self.pending)} streams are waiting for a lane")
            self.pending.extend(streams)
            self.wake.notify_all()

    def load(self) -> dict:
        with self.wake:
            return {
                "lanes": self.lane_count,
                "active": self.lanes_taken(),
                "waiting": len(self.pending),
                "prefix_cache": self.prefix_cache.facts(),
            }

    def read_prompts(self) -> None:
        """Short prompts are read as soon as a lane is free, in one call; long ones a
        piece per turn, so that short prompts arriving meanwhile are read between pieces."""
        while True:
            with self.wake:
                self.wake.wait_for(lambda: not self.running or self.can_read() or self.long_reads)
                if not self.running:
                    return
                groups = by_prompt_length(self.looked_up(self.take_pending()))
                short = groups.pop(0) if groups and is_short(groups[0][0]) else []
                for group in groups:
                    self.long_reads.append((group, self.reading_of(group)))
                self.reading += len(short) + sum(map(len, groups))
                self.reading_short = bool(short)
                self.wake.notify_all()  # unless short prompts are read, the decoder goes on
            if short:
                self.read(short, self.reading_of(short), whole=True)
            elif self.long_reads and self.read(*self.long_reads[0]):
                self.long_reads.popleft()

    def read(self, group: list[Stream], reading: CachedReading, whole: bool = False) -> bool:
        """Read a piece of a group's prompts, or all of them if `whole`. Once they are read,
        draw each stream's first character at once (it waits for its prompt, not for a
        chunk) and hand the streams to the decoder. Returns whether the group is done
        with: read, dropped because all its clients have gone, failed, or (if it failed
        with several streams) handed on to be read again a stream at a time."""
        batch = None
        try:
            if not all(stream.cancelled for stream in group):
                reading.read_piece()
                while whole and not reading.done:
                    reading.read_piece()
                if not reading.done:
                    return False
                for row, stream in enumerate(group):
                    stream.read_strides = reading.handed(row)
                batch = self.advance(Batch(group, *reading.result()), 1)
        except Exception:
            if len(group) > 1:
                log.warning("reading %d prompts together failed; reading each alone", len(group))
                self.read_alone(group, whole)
                return True
            log.exception("reading a prompt failed; its request ends in error")
            group[0].fail()
        with self.wake:
            if batch is not None:
                self.ready.append(batch)
            self.reading -= len(group)
            self.reading_short = False
            self.wake.notify_all()
        return True

    def read_alone(self, group: list[Stream], whole: bool) -> None:
        """Read each stream of a group that failed as a group of its own: short prompts
        now, long ones as the reader's next pieces (still counted as being read)."""
        for stream in group:
            alone = ([stream], self.reading_of([stream]))
            if whole:
                self.read(*alone, whole=True)
            else:
                self.long_reads.append(alone)

    def reading_of(self, group: list[Stream]) -> CachedReading:
        scored = [row for row, stream in enumerate(group) if stream.scored]
        return self.prefix_cache.reading(self.sampler, prompts_of(group), scored)

    def looked_up(self, streams: list[Stream]) -> list[Stream]:
        """`streams`, each knowing how much of its prompt the prefix cache spares it."""
        for stream in streams:
            stream.unread = self.prefix_cache.unread(stream.prompt_ids)
        return streams

    def can_read(self) -> bool:
        return bool(self.pending) and self.lanes_taken() < self.lane_count

    def lanes_taken(self) -> int:
        return len(self.active.streams) + self.reading + sum(len(b.streams) for b in self.ready)

    def take_pending(self) -> list[Stream]:
        free = self.lane_count - self.lanes_taken()
        joining = []
        while self.pending and len(joining) < free:
            stream = self.pending.popleft()
            if not stream.cancelled:
                joining.append(stream)
        return joining

    def decode(self) -> None:
        while True:
            with self.wake:
                self.wake.wait_for(lambda: not self.running or self.may_decode())
                if not self.running:
                    return
                # Joined under the lock: a stream always counts in lanes_taken().
                active = self.active
                for batch in self.ready:
                    active = active.extend(batch)
                self.active, self.ready = active.without_done(), []
                active = self.active
                self.wake.notify_all()  # lanes of streams done on joining are free
            if active.streams:
                active = self.advance_or_fail(active)
            with self.wake:
                # Finished streams leave now, not at the next chunk: their lanes are
                # free for the requests their clients send next.
                self.active = active.without_done()
                self.wake.notify_all()

    def may_decode(self) -> bool:
        """Whether to start a chunk: there are streams, and no short prompt is being
        read or could be read now (short prompts first, see the module's docstring)."""
        has_streams = bool(self.ready or self.active.streams)
        short_readable = self.can_read() and any(map(is_short, self.pending))
        return has_streams and not (self.reading_short or short_readable)

    def advance_or_fail(self, batch: Batch) -> Batch:
        """A chunk for the running streams; if it fails, a chunk for each of them alone
        (the text of each is the same, see charlm.batching), and those that fail alone
        end in error; the decoder goes on with the others and the streams that join next."""
        try:
            return self.advance(batch, self.chunk_steps)
        except Exception:
            if len(batch.streams) == 1:
                log.exception("a chunk of a stream failed; its request ends in error")
                batch.streams[0].fail()
                return EMPTY
        log.warning("a chunk of %d streams failed; advancing each alone", len(batch.streams))
        survivors = EMPTY
        for row in range(len(batch.streams)):
            survivors = survivors.extend(self.advance_or_fail(batch.row(row)))
        return survivors

    def advance(self, batch: Batch, steps: int) -> Batch:
        """`steps` characters for the streams of `batch`, handed to them. A stream whose
        client cannot take its text (its `emit` raises) ends in error alone."""
        controls = controls_of(batch.streams, self.vocab.size)
        ids, logits, states = self.sampler.generate(
            batch.logits, batch.states, controls, steps, sampling_mode(controls)
        )
        for row, stream in enumerate(batch.streams):
            stream.position += steps
            if not stream.done:
                try:
                    stream.take(self.vocab.decode(ids[row]))
                except Exception:
                    log.exception("a stream's text could not be sent; it ends in error")
                    stream.fail()
        return Batch(batch.streams, logits, states)


def is_short(stream: Stream) -> bool:
    return stream.unread < SHORT_PROMPT


def by_prompt_length(streams: list[Stream]) -> list[list[Stream]]:
    """Streams whose prompts are read together, shortest first (by what is left to read
    of them): under SHORT_PROMPT characters in one group, longer ones by their power of two
    (128-255, 256-511, ...), as a group takes a step per character of its longest."""
    groups: dict[int, list[Stream]] = {}
    for stream in streams:
        groups.setdefault((stream.unread // SHORT_PROMPT).bit_length(), []).append(stream)
    return [groups[key] for key in sorted(groups)]
