"""Finding and reading text, the vocabulary, and the token files training reads.

A corpus is never held in memory. It is read in chunks of bytes, decoded as
UTF-8 (code points, not bytes), counted in one streaming pass (the
vocabulary), then encoded once into a flat file of token ids in the cache
directory. Training reads windows from that file with `os.pread`, so memory
stays the same whatever the corpus size. Both passes are cached, keyed by each
file's path, size and modification time, so a changed file is noticed.

    >>> vocab = Vocabulary(["a", "b"])
    >>> vocab.encode("abz").tolist(), vocab.decode([1, 0])
    ([0, 1, 2], 'ba')
"""

from __future__ import annotations

import codecs
import glob
import gzip
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

CHUNK_BYTES = 1 << 22  # 4 MiB: large enough for speed, small enough for constant memory
UNICODE_SIZE = 0x110000
BYTE_ORDER_MARK = 0xFEFF
BUILTIN_PREFIX = "builtin:"
BUILTIN_CORPORA = ("pydoc",)
VOCAB_VERSION = 1

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


class CorpusError(ValueError):
    """A corpus problem a user can fix; the message names the file."""


# ---------------------------------------------------------------- finding files

def cache_dir() -> Path:
    root = os.environ.get("CHARLM_CACHE_DIR") or Path.home() / ".cache" / "charlm"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_files(spec, what: str = "data.corpus") -> list[Path]:
    """Turn a corpus spec (path, directory, glob, builtin name, or a list) into files."""
    specs = spec if isinstance(spec, list) else [spec]
    files: list[Path] = []
    for item in specs:
        for path in resolve_one(str(item), what):
            if path not in files:
                files.append(path)
    return files


def resolve_one(spec: str, what: str) -> list[Path]:
    if spec.startswith(BUILTIN_PREFIX):
        return [builtin_corpus(spec[len(BUILTIN_PREFIX):], what)]
    path = Path(spec).expanduser()
    if path.is_file():
        check_not_binary(path)
        return [path.resolve()]
    if path.is_dir():
        files = [p for p in sorted(path.rglob("*")) if is_text_file(p)]
        if not files:
            raise CorpusError(f"{what}: directory {spec} holds no text files")
        return [p.resolve() for p in files]
    if glob.has_magic(spec):
        matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True))
        files = [p.resolve() for p in matches if is_text_file(p)]
        if not files:
            raise CorpusError(f"{what}: glob {spec!r} matches no text files")
        return files
    raise CorpusError(f"{what}: {spec} does not exist; give a file, a directory or a glob "
                      f"(or builtin:pydoc)")


def is_text_file(path: Path) -> bool:
    """Regular, non-hidden files whose first bytes hold no NUL (binary files are skipped)."""
    if not path.is_file() or any(part.startswith(".") for part in path.parts[-1:]):
        return False
    return not looks_binary(path)


def looks_binary(path: Path) -> bool:
    with open_bytes(path) as stream:
        try:
            head = stream.read(8192)
        except (OSError, EOFError):
            return True
    return b"\0" in head


def check_not_binary(path: Path) -> None:
    if looks_binary(path):
        raise CorpusError(f"{path} looks like a binary file (it holds NUL bytes); "
                          f"give UTF-8 text")


def open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def builtin_corpus(name: str, what: str) -> Path:
    """Materialise a built-in corpus into the cache (it ships with Python itself)."""
    if name not in BUILTIN_CORPORA:
        raise CorpusError(f"{what}: unknown built-in corpus {name!r}; "
                          f"available: {', '.join(BUILTIN_PREFIX + n for n in BUILTIN_CORPORA)}")
    import sys
    from pydoc_data import topics

    path = cache_dir() / f"builtin-pydoc-{sys.version_info[0]}.{sys.version_info[1]}.v2.txt"
    if not path.exists():
        text = "\n\n".join(topics.topics[key] for key in sorted(topics.topics))
        # Its ASCII-art tables (long runs of "-" and " ") teach a small model little but
        # to draw borders; prose, grammar and code examples stay.
        text = TABLE_LINE.sub("", text)
        write_atomic(path, text.encode("utf-8"))
    return path


TABLE_LINE = re.compile(r"^[ \t]*(\+[-=+]+\+|\|.*\|)[ \t]*\n", re.MULTILINE)


def readable_mode(directory: bool = False) -> int:
    """The mode open() or mkdir() would give (mkstemp and mkdtemp make things private)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, readable_mode())
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- reading text

def read_code_points(path: Path, errors: str = "strict") -> Iterator[tuple[np.ndarray, int]]:
    """Yield (code points of a chunk, bytes of the file on disk read so far).

    Invalid UTF-8 raises a CorpusError naming the byte offset (strict), or becomes
    U+FFFD (replace). A UTF-8 byte-order mark at the start is dropped. Chunks of
    pure ASCII skip decoding: their bytes are their code points.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors)
    consumed = 0  # bytes handed to the decoder so far
    with open_bytes(path) as stream:
        while True:
            try:
                data = stream.read(CHUNK_BYTES)
            except (OSError, EOFError) as error:
                raise CorpusError(f"{path}: cannot be read ({error})") from None
            held_back = len(decoder.getstate()[0])  # an incomplete character from last chunk
            if consumed and data.isascii() and not held_back:
                points = np.frombuffer(data, dtype=np.uint8)
            else:
                try:
                    points = code_points(decoder.decode(data, final=not data))
                except UnicodeDecodeError as error:
                    offset = consumed - held_back + error.start
                    raise CorpusError(f"{path}: invalid UTF-8 at byte offset {offset}; fix "
                                      f"the file or set data.encoding_errors: replace") from None
            if not consumed and len(points) and points[0] == BYTE_ORDER_MARK:
                points = points[1:]
            consumed += len(data)
            if len(points):
                yield points, disk_position(stream)
            if not data:
                return


def code_points(text: str) -> np.ndarray:
    """The Unicode code points of `text` as uint32, without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def disk_position(stream) -> int:
    """How far into the file on disk a stream is (for gzip: the compressed position)."""
    raw = getattr(stream, "fileobj", None)
    return raw.tell() if raw is not None else stream.tell()


# ---------------------------------------------------------------- vocabulary

class Vocabulary:
    """Characters and their token ids; one extra id stands for every unseen character."""

    UNKNOWN_TEXT = "\ufffd"  # how the unknown token prints

    def __init__(self, chars: list[str]):
        self.chars = list(chars)
        self.unknown_id = len(self.chars)
        self.size = len(self.chars) + 1
        self.lookup = np.full(UNICODE_SIZE, self.unknown_id, dtype=np.int32)
        self.lookup[[ord(c) for c in self.chars]] = np.arange(len(self.chars), dtype=np.int32)
        self.table = np.array(self.chars + [self.UNKNOWN_TEXT], dtype=object)

    def encode(self, text: str) -> np.ndarray:
        return self.lookup[code_points(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.table[np.asarray(ids, dtype=np.int64)])

    def unknown_chars(self, text: str) -> list[str]:
        return sorted({c for c in text if self.lookup[ord(c)] == self.unknown_id})

    def digest(self) -> str:
        return hashlib.sha256("".join(self.chars).encode("utf-8", "surrogatepass")).hexdigest()

    def to_json(self) -> dict:
        return {"version": VOCAB_VERSION, "chars": self.chars, "unknown_id": self.unknown_id}

    @classmethod
    def from_json(cls, data, where: str = "vocab.json") -> "Vocabulary":
        chars = data.get("chars") if isinstance(data, dict) else None
        if not isinstance(chars, list) or not chars or \
                not all(isinstance(c, str) and len(c) == 1 for c in chars) or \
                len(set(chars)) != len(chars):
            raise CorpusError(f"{where} is not a charlm vocabulary (it needs a list of distinct "
                              f"single characters under 'chars')")
        return cls(chars)

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.to_json(), ensure_ascii=False).encode("utf-8"))

    @classmethod
    def load(cls, path: Path) -> "Vocabulary":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise CorpusError(f"{path} cannot be read as a vocabulary ({error})") from None
        return cls.from_json(data, str(path))


# ---------------------------------------------------------------- the counting pass

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


def scan_corpus(files: list[Path], errors: str = "strict",
                progress: Progress | None = None) -> CorpusStats:
    """Count every character of `files` in one streaming pass (cached)."""
    cache = cache_dir() / f"scan-{files_key(files, errors)}.json"
    if cache.exists():
        data = json.loads(cache.read_text(encoding="utf-8"))
        return CorpusStats(files, data["bytes"], data["chars"], data["counts"])
    counts = np.zeros(UNICODE_SIZE, dtype=np.int64)
    for points in stream_code_points(files, errors, progress):
        found = np.bincount(points)
        counts[:len(found)] += found
    present = np.flatnonzero(counts)
    stats = CorpusStats(files, sum(p.stat().st_size for p in files), int(counts.sum()),
                        {chr(c): int(counts[c]) for c in present})
    write_atomic(cache, json.dumps({"bytes": stats.bytes, "chars": stats.chars,
                                    "counts": stats.counts}, ensure_ascii=False).encode("utf-8"))
    return stats


def stream_code_points(files: list[Path], errors: str, progress: Progress | None):
    """Yield code-point chunks over all files, reporting bytes read to `progress`."""
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


def encode_corpus(files: list[Path], vocab: Vocabulary, errors: str = "strict",
                  progress: Progress | None = None) -> TokenFile:
    """Encode `files` into a token file in the cache (made once per corpus and vocabulary)."""
    dtype = token_dtype(vocab)
    path = cache_dir() / f"tokens-{files_key(files, errors, vocab.digest())}.{dtype}"
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                for points in stream_code_points(files, errors, progress):
                    out.write(vocab.lookup[points].astype(dtype).tobytes())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return TokenFile(path, dtype, path.stat().st_size // np.dtype(dtype).itemsize)


def encode_text_file(path: Path, vocab: Vocabulary, errors: str = "strict") -> TokenFile:
    return encode_corpus([path.resolve()], vocab, errors)


# ---------------------------------------------------------------- train / validation split

@dataclass
class Split:
    """A contiguous range [start, stop) of a token file."""
    tokens: TokenFile
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass
class PreparedCorpus:
    vocab: Vocabulary
    stats: CorpusStats
    train: Split
    val: Split | None


def prepare_corpus(data, seq_length: int, vocab: Vocabulary | None = None,
                   progress: Progress | None = None,
                   val_seq_length: int | None = None) -> PreparedCorpus:
    """Scan, encode and split the corpus a DataConfig names.

    The vocabulary is every character of `data.corpus` (unless a run's saved
    vocabulary is given); validation is the end of the corpus or `data.val_corpus`,
    bounded by `data.val_max_chars`, and must hold one window of `val_seq_length`
    (train.eval_seq_length; None: seq_length).
    """
    files = resolve_files(data.corpus, "data.corpus")
    stats = scan_corpus(files, data.encoding_errors, progress)
    if stats.chars == 0:
        raise CorpusError("data.corpus is empty: it holds no characters")
    vocab = vocab or stats.vocabulary()
    tokens = encode_corpus(files, vocab, data.encoding_errors, progress)
    if data.val_corpus is not None:
        val_files = resolve_files(data.val_corpus, "data.val_corpus")
        val_tokens = encode_corpus(val_files, vocab, data.encoding_errors, progress)
        train, val = Split(tokens, 0, tokens.length), Split(val_tokens, 0, val_tokens.length)
    else:
        # As nanoGPT splits: the first int(n * 0.9) characters train, the rest validate.
        n_train = int(tokens.length * (1 - data.val_fraction))
        train = Split(tokens, 0, n_train)
        val = Split(tokens, n_train, tokens.length) if n_train < tokens.length else None
    if val is not None:
        val.stop = min(val.stop, val.start + data.val_max_chars)
    check_long_enough(train, val, seq_length, val_seq_length)
    return PreparedCorpus(vocab, stats, train, val)


def check_long_enough(train: Split, val: Split | None, seq_length: int,
                      val_seq_length: int | None = None) -> None:
    need = seq_length + 1
    if len(train) < need:
        raise CorpusError(f"the training text has {len(train)} characters, fewer than one "
                          f"sequence (train.seq_length + 1 = {need}); give more text or lower "
                          f"train.seq_length")
    val_need = (val_seq_length or seq_length) + 1
    if val is not None and len(val) < val_need:
        raise CorpusError(f"the validation text has {len(val)} characters, fewer than one "
                          f"window ({val_need}); raise data.val_fraction, give data.val_corpus, "
                          f"or lower train.{'eval_' if val_seq_length else ''}seq_length")
