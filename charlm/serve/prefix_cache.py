"""The prefix cache: the logits and states after prompt prefixes the server has read, so
that a prompt extending one read before (a shared system prompt, a conversation growing
turn by turn) is read from there, not from its first character.

    prompt ids:  [ STRIDE | STRIDE | STRIDE | tail ]
    entries:       ^0       ^32      ^64      ^96    ^end (the prompt's own end)

Reading a prompt stores the state at every STRIDE-th character of it and at its end;
a later prompt starts from its longest stored prefix, so it reads its new characters
and at most STRIDE - 1 it shares with an earlier one (where it parted from that one).
The numbers are exactly those of reading the whole prompt: a row is read by the same
compiled step whatever rows are beside it (charlm.batching), and starting from a stored
state is the step that would have followed it.

An entry's key is the chained digest of its prefix's STRIDE-character strides, plus the
characters past the last whole stride: a lookup walks a prompt's strides once. Entries
are dropped least recently used first past `limit_bytes` (what their arrays take);
0 keeps nothing. Only the engine's reader thread uses a cache.

Scoring keeps its own cache (ScoreCache), of states and scores: see its docstring.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from charlm.reading import PromptReading, Start, listed, next_targets

STRIDE = 32  # characters between stored states; also the columns read per call
KEY_BYTES = 100  # a key's digest and tail, and the dictionaries' share, per entry
# The most the strides one stream hands to its scoring may take: they are kept until its
# request is answered, outside the caches' limit, so a request of many long prompts would
# keep many. A prompt whose strides take more is read again by scoring.
HANDED_BYTES = 2**21


class ByteBoundedLru:
    """Entries kept least recently used last, the oldest dropped past `limit` bytes (what
    their arrays take, plus KEY_BYTES each); 0 keeps nothing."""

    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self.entries: OrderedDict = OrderedDict()
        self.size = 0  # bytes the entries take
        self.read_chars = 0  # characters read since the start
        self.saved_chars = 0  # characters not read, thanks to an entry

    def touch(self, key):
        """The entry of `key`, now the most recently used."""
        self.entries.move_to_end(key)
        return self.entries[key]

    def store(self, key, value) -> None:
        """Keep `value` (with an `nbytes`) under `key`, dropping the least recently used
        entries as the limit requires."""
        self.put(key, value)
        self.evict()

    def put(self, key, value) -> None:
        """Keep `value` under `key`, most recently used, not yet minding the limit."""
        if value.nbytes + KEY_BYTES > self.limit:
            return
        if key in self.entries:
            self.entries.move_to_end(key)
            return
        self.entries[key] = value
        self.stored(key)
        self.size += value.nbytes + KEY_BYTES

    def evict(self) -> None:
        """Drop the least recently used entries until the limit is kept."""
        while self.size > self.limit:
            dropped_key, dropped = self.entries.popitem(last=False)
            self.dropped(dropped_key)
            self.size -= dropped.nbytes + KEY_BYTES

    def stored(self, key) -> None:
        """Called when `key` is stored (for a subclass's index)."""

    def dropped(self, key) -> None:
        """Called when `key` is dropped."""

    def facts(self) -> dict:
        return {
            "limit_bytes": self.limit,
            "bytes": self.size,
            "entries": len(self.entries),
            "read_chars": self.read_chars,
            "saved_chars": self.saved_chars,
        }


class PrefixCache(ByteBoundedLru):
    """States after prompt prefixes, keyed by prefix_key."""

    def __init__(self, limit_bytes: int):
        super().__init__(limit_bytes)
        self.tails: dict[bytes, set[bytes]] = {}  # stride digest -> tails stored after it

    def reading(self, sampler, prompts: list[np.ndarray], scored=()) -> CachedReading:
        return CachedReading(self, sampler, prompts, scored)

    def longest(self, ids: np.ndarray, digests: list[bytes]) -> tuple[int, Start | None]:
        """The longest stored prefix of `ids` (whose stride_digests are `digests`): its
        length and state (0 and None if none)."""
        if self.limit == 0:
            return 0, None
        for strides in range(len(digests) - 1, -1, -1):
            at = strides * STRIDE
            rest = ids[at : at + STRIDE].tobytes()
            stored = [t for t in self.tails.get(digests[strides], ()) if rest.startswith(t)]
            if stored:
                tail = max(stored, key=len)
                start = self.touch((digests[strides], tail))
                return at + len(tail) // ids.itemsize, start
        return 0, None

    def unread(self, ids: np.ndarray) -> int:
        """How many characters of `ids` come after its longest stored prefix."""
        ids = np.asarray(ids, np.int32)
        return len(ids) - self.longest(ids, stride_digests(ids))[0]

    def stored(self, key: tuple[bytes, bytes]) -> None:
        self.tails.setdefault(key[0], set()).add(key[1])

    def dropped(self, key: tuple[bytes, bytes]) -> None:
        digest, tail = key
        self.tails[digest].discard(tail)
        if not self.tails[digest]:
            del self.tails[digest]


@dataclass
class ScoredStride:
    """A stride of a scored text: the scores of its STRIDE characters (see RowScores)
    and the point (logits and states) after reading the inputs that predicted them."""

    logprobs: np.ndarray
    top_ids: np.ndarray
    top_logprobs: np.ndarray
    start: Start

    @property
    def nbytes(self) -> int:
        arrays = [self.logprobs, self.top_ids, self.top_logprobs]
        return sum(a.nbytes for a in arrays) + self.start.nbytes


class ScoreCache(ByteBoundedLru):
    """The strides of texts scored before, each keyed by the stride_digests of the text
    up to its end: a text whose first k strides are all stored is scored from there,
    its first k * STRIDE scores taken from them. A stride's scores need the text before
    it, so a text's strides are looked up from the first on, and the earlier ones kept
    more recently used than the later (the later ones go first)."""

    def strides(self, digests: list[bytes], most: int) -> list[ScoredStride]:
        """The stored strides, from the first on (at most `most`), of the text whose
        stride_digests are `digests`."""
        found = 0
        while found < min(most, len(digests) - 1) and digests[found + 1] in self.entries:
            found += 1
        self.touch_first(digests, found)
        return [self.entries[digests[count]] for count in range(1, found + 1)]

    def store_strides(self, digests: list[bytes], strides: dict[int, ScoredStride]) -> None:
        """Keep a text's new strides (its count-th stride under its count), its earlier
        strides the more recently used; only then drop what the limit requires."""
        for count, stride in strides.items():
            self.put(digests[count], stride)
        self.touch_first(digests, max(strides, default=0))
        self.evict()

    def touch_first(self, digests: list[bytes], count: int) -> None:
        """Make the text's first `count` strides the most recently used, the first most."""
        for stride in range(count, 0, -1):
            if digests[stride] in self.entries:
                self.touch(digests[stride])


def stride_bytes(sampler) -> int:
    """What a ScoredStride of a text read by `sampler` takes."""
    states = [state for layer in sampler.initial_states(1) for state in layer]
    point = 4 * sampler.vocab.size + sum(state.dtype.size * state.shape[1] for state in states)
    return point + STRIDE * (4 + 8 * listed(sampler.vocab.size))


def stride_digests(ids: np.ndarray) -> list[bytes]:
    """The digest of each whole-stride prefix of `ids`: digests[k] is that of ids[:k*STRIDE]
    (digests[0] that of no text), each made from the one before and the next stride."""
    digests = [b""]
    for at in range(0, len(ids) - len(ids) % STRIDE, STRIDE):
        stride = ids[at : at + STRIDE].tobytes()
        digests.append(hashlib.blake2b(digests[-1] + stride, digest_size=16).digest())
    return digests


def prefix_key(ids: np.ndarray, length: int, digests: list[bytes]) -> tuple[bytes, bytes]:
    """The key of ids[:length]: the digest of its whole strides (`digests` are ids's
    stride_digests) and the ids past them."""
    strides = length // STRIDE
    return digests[strides], ids[strides * STRIDE : length].tobytes()


class CachedReading:
    """A PromptReading of each prompt's part past its longest stored prefix; it stores the
    state at each STRIDE-th character it reads and at each prompt's end. Each row is
    placed so that every call ends on a STRIDE boundary of its prompt.

    Rows in `scored` (prompts a newline starts, see Sampler.prime_row) are read with their
    scores, and one read from its start hands them on (`handed`) as a scoring reads the
    text after the newline: its whole strides, each with the point after it
    (charlm.serve.logprobs takes them instead of reading the prompt again), if they take
    at most HANDED_BYTES: they are kept until the request is answered."""

    def __init__(self, cache: PrefixCache, sampler, prompts: list[np.ndarray], scored=()):
        self.cache = cache
        self.prompts = prompts = [np.asarray(ids, np.int32) for ids in prompts]
        self.digests = [stride_digests(ids) for ids in prompts]  # once per prompt
        found = [cache.longest(ids, digests) for ids, digests in zip(prompts, self.digests)]
        self.known = [length for length, _ in found]
        # Row r's prompt is read from character known[r], at column offsets[r]: the
        # columns a call ends on are then whole strides into its prompt.
        self.offsets = [length % STRIDE for length in self.known]
        self.handing = self.rows_to_hand(scored, stride_bytes(sampler))
        self.kept = {row: [] for row in self.handing}  # the point after each whole stride
        rest = [ids[length:] for ids, length in zip(prompts, self.known)]
        self.reading = PromptReading(
            sampler,
            rest,
            starts=[start for _, start in found],
            offsets=self.offsets,
            piece=STRIDE,
            targets=[next_targets(ids) if r in self.kept else None for r, ids in enumerate(rest)],
        )
        cache.saved_chars += sum(self.known)
        cache.read_chars += sum(len(ids) for ids in prompts) - sum(self.known)

    @property
    def done(self) -> bool:
        return self.reading.done

    def read_piece(self) -> None:
        self.reading.read_piece()
        keys = {}  # row -> the key of the prefix it has read now, if one to store
        for row, ids in enumerate(self.prompts if self.cache.limit else ()):
            read_to = self.known[row] - self.offsets[row] + self.reading.start
            if self.known[row] < read_to < len(ids) or (self.done and self.known[row] < len(ids)):
                keys[row] = prefix_key(ids, min(read_to, len(ids)), self.digests[row])
        # A handed stride's last score is of the character after it: in the prompt.
        handed = [row for row in self.handing if self.reading.start < len(self.prompts[row])]
        starts = self.reading.row_starts(list(keys) + handed) if keys or handed else []
        for key, start in zip(keys.values(), starts):
            self.cache.store(key, start)
        for row, start in zip(handed, starts[len(keys) :]):
            self.kept[row].append(start)

    def rows_to_hand(self, scored, stride: int) -> list[int]:
        """The rows of `scored` read from their start whose strides (`stride` bytes each)
        fit in HANDED_BYTES."""
        return [
            row
            for row in scored
            if self.known[row] == 0 and len(self.prompts[row]) // STRIDE * stride <= HANDED_BYTES
        ]

    def handed(self, row: int) -> list[ScoredStride]:
        """Row `row`'s whole strides of scored text (none unless it is handed on)."""
        scores = self.reading.row_scores(row) if row in self.kept else ()
        return [
            ScoredStride(*(a[at * STRIDE : (at + 1) * STRIDE].copy() for a in scores), start)
            for at, start in enumerate(self.kept.get(row, ()))
        ]

    def result(self):
        return self.reading.result()
