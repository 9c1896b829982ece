"""The two streaming passes over a corpus: counting its characters, and encoding it into
a flat file of token ids that training reads by position.

Both passes are cached (in `charlm.files.cache_dir()`), keyed by each file's path, size
and modification time, so a changed file is noticed. Windows are read from the token
file with `os.pread`, so memory stays the same whatever the corpus size.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charlm.data.sources import read_code_points
from charlm.data.vocabulary import UNICODE_SIZE, Vocabulary
from charlm.files import cache_dir, open_atomic, write_atomic

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


@dataclass
class CorpusStats:
    files: list[Path]
    bytes: int
    chars: int
    counts: dict[str, int]  # character -> occurrences

    def vocabulary(self) -> Vocabulary:
        return Vocabulary(sorted(self.counts))

    def most_common(self, n: int) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))[:n]


def files_key(files: list[Path], *extra: str) -> str:
    """A cache key that changes when any file's path, size or modification time does."""
    identity = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps([identity, extra]).encode()).hexdigest()[:24]


def scan_corpus(
    files: list[Path], errors: str = "strict", progress: Progress | None = None
) -> CorpusStats:
    """Count every character of `files` in one streaming pass (cached)."""
    cache = cache_dir() / f"scan-{files_key(files, errors)}.json"
    if cache.exists():
        data = json.loads(cache.read_text(encoding="utf-8"))
        return CorpusStats(files, data["bytes"], data["chars"], data["counts"])
    counts = np.zeros(UNICODE_SIZE, dtype=np.int64)
    for points in stream_code_points(files, errors, progress):
        found = np.bincount(points)
        counts[: len(found)] += found
    present = np.flatnonzero(counts)
    stats = CorpusStats(
        files,
        sum(p.stat().st_size for p in files),
        int(counts.sum()),
        {chr(c): int(counts[c]) for c in present},
    )
    write_atomic(
        cache,
        json.dumps(
            {"bytes": stats.bytes, "chars": stats.chars, "counts": stats.counts}, ensure_ascii=False
        ).encode("utf-8"),
    )
    return stats


def stream_code_points(files: list[Path], errors: str, progress: Progress | None):
    """Yield the code points of all files a buffer at a time, reporting bytes read to
    `progress`."""
    total = sum(p.stat().st_size for p in files)
    done = 0
    for path in files:
        for points, position in read_code_points(path, errors):
            if progress:
                progress(done + position, total)
            yield points
        done += path.stat().st_size
    if progress:
        progress(total, total)


# ---------------------------------------------------------------- token files


@dataclass
class TokenFile:
    """A flat file of token ids, read by position without loading it."""

    path: Path
    dtype: str
    length: int

    def read(self, start: int, count: int) -> np.ndarray:
        return self.read_windows([start], count)[0]

    def read_windows(self, starts, count: int) -> np.ndarray:
        """Rows of `count` tokens from each start, as int32 (one open, one pread per row)."""
        itemsize = np.dtype(self.dtype).itemsize
        rows = np.empty((len(starts), count), dtype=np.int32)
        with open(self.path, "rb") as stream:
            for row, start in enumerate(starts):
                data = os.pread(stream.fileno(), count * itemsize, int(start) * itemsize)
                rows[row] = np.frombuffer(data, dtype=self.dtype)
        return rows


def token_dtype(vocab: Vocabulary) -> str:
    return "uint8" if vocab.size <= 256 else "uint16" if vocab.size <= 65536 else "uint32"


def encode_corpus(
    files: list[Path], vocab: Vocabulary, errors: str = "strict", progress: Progress | None = None
) -> TokenFile:
    """Encode `files` into a token file in the cache (made once per corpus and vocabulary)."""
    dtype = token_dtype(vocab)
    path = cache_dir() / f"tokens-{files_key(files, errors, vocab.digest())}.{dtype}"
    if not path.exists():
        with open_atomic(path) as out:
            for points in stream_code_points(files, errors, progress):
                out.write(vocab.lookup[points].astype(dtype).tobytes())
    return TokenFile(path, dtype, path.stat().st_size // np.dtype(dtype).itemsize)


def encode_text_file(path: Path, vocab: Vocabulary, errors: str = "strict") -> TokenFile:
    return encode_corpus([path.resolve()], vocab, errors)
