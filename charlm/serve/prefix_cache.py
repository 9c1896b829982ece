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
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

from charlm.generate import PromptReading, Start

STRIDE = 32  # characters between stored states; also the columns read per call
KEY_BYTES = 100  # a key's digest and tail, and the dictionaries' share, per entry


class PrefixCache:
    """States after prompt prefixes, least recently used out past `limit_bytes`."""

    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self.entries: OrderedDict[tuple[bytes, bytes], Start] = OrderedDict()
        self.tails: dict[bytes, set[bytes]] = {}  # stride digest -> tails stored after it
        self.size = 0  # bytes the entries take
        self.read_chars = 0  # prompt characters read since the start
        self.saved_chars = 0  # prompt characters not read, thanks to an entry

    def reading(self, sampler, prompts: list[np.ndarray]) -> CachedReading:
        return CachedReading(self, sampler, prompts)

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
                key = (digests[strides], tail)
                self.entries.move_to_end(key)
                return at + len(tail) // ids.itemsize, self.entries[key]
        return 0, None

    def store(self, key: tuple[bytes, bytes], start: Start) -> None:
        """Keep `start`, the state after the prefix of key `key` (see prefix_key),
        dropping the least recently used entries as the limit requires."""
        cost = start.nbytes + KEY_BYTES
        if cost > self.limit:
            return
        if key in self.entries:
            self.entries.move_to_end(key)
            return
        self.entries[key] = start
        self.tails.setdefault(key[0], set()).add(key[1])
        self.size += cost
        while self.size > self.limit:
            (digest, tail), dropped = self.entries.popitem(last=False)
            self.tails[digest].discard(tail)
            if not self.tails[digest]:
                del self.tails[digest]
            self.size -= dropped.nbytes + KEY_BYTES

    def facts(self) -> dict:
        return {
            "limit_bytes": self.limit,
            "bytes": self.size,
            "entries": len(self.entries),
            "read_chars": self.read_chars,
            "saved_chars": self.saved_chars,
        }


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
    placed so that every call ends on a STRIDE boundary of its prompt."""

    def __init__(self, cache: PrefixCache, sampler, prompts: list[np.ndarray]):
        self.cache = cache
        self.prompts = prompts = [np.asarray(ids, np.int32) for ids in prompts]
        self.digests = [stride_digests(ids) for ids in prompts]  # once per prompt
        found = [cache.longest(ids, digests) for ids, digests in zip(prompts, self.digests)]
        self.known = [length for length, _ in found]
        # Row r's prompt is read from character known[r], at column offsets[r]: the
        # columns a call ends on are then whole strides into its prompt.
        self.offsets = [length % STRIDE for length in self.known]
        self.reading = PromptReading(
            sampler,
            [ids[length:] for ids, length in zip(prompts, self.known)],
            starts=[start for _, start in found],
            offsets=self.offsets,
            piece=STRIDE,
        )
        cache.saved_chars += sum(self.known)
        cache.read_chars += sum(len(ids) for ids in prompts) - sum(self.known)

    @property
    def done(self) -> bool:
        return self.reading.done

    def read_piece(self) -> None:
        self.reading.read_piece()
        for row, ids in enumerate(self.prompts):
            read_to = self.known[row] - self.offsets[row] + self.reading.start
            if self.known[row] < read_to < len(ids) or (self.done and self.known[row] < len(ids)):
                key = prefix_key(ids, min(read_to, len(ids)), self.digests[row])
                self.cache.store(key, self.reading.row_start(row))

    def result(self):
        return self.reading.result()
