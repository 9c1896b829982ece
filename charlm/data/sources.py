"""Finding a corpus's files and reading them as Unicode code points, a buffer at a time.

A corpus spec is a file, a directory, a glob, `builtin:pydoc`, or a list of them.
Files are read a buffer (BUFFER_BYTES) at a time and decoded as UTF-8 (code points, not bytes), so
a corpus is never held in memory whatever its size.
"""

from __future__ import annotations

import codecs
import glob
import gzip
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from charlm.errors import CorpusError
from charlm.files import cache_dir, file_problem, write_atomic

# A buffer: the bytes of a corpus file read at once. Memory stays constant whatever the
# corpus's size (docs/decisions.md, streamed-corpus).
BUFFER_BYTES = 1 << 22
BYTE_ORDER_MARK = 0xFEFF
BUILTIN_PREFIX = "builtin:"
BUILTIN_CORPORA = ("pydoc",)


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
        return [builtin_corpus(spec[len(BUILTIN_PREFIX) :], what)]
    path = Path(spec).expanduser()
    problem = file_problem(path)
    if problem is None:
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
    raise CorpusError(
        f"{what}: {spec} {problem}; give a file, a directory or a glob (or builtin:pydoc)"
    )


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
        raise CorpusError(f"{path} looks like a binary file (it holds NUL bytes); give UTF-8 text")


def open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def builtin_corpus(name: str, what: str) -> Path:
    """Materialise a built-in corpus into the cache (it ships with Python itself)."""
    if name not in BUILTIN_CORPORA:
        raise CorpusError(
            f"{what}: unknown built-in corpus {name!r}; "
            f"available: {', '.join(BUILTIN_PREFIX + n for n in BUILTIN_CORPORA)}"
        )
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


def read_code_points(path: Path, errors: str = "strict") -> Iterator[tuple[np.ndarray, int]]:
    """Yield (code points of one buffer, bytes of the file on disk read so far).

    Invalid UTF-8 raises a CorpusError naming the byte offset (strict), or becomes
    U+FFFD (replace). A UTF-8 byte-order mark at the start is dropped. A buffer of
    pure ASCII skips decoding: its bytes are its code points.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors)
    consumed = 0  # bytes handed to the decoder so far
    with open_bytes(path) as stream:
        while True:
            try:
                data = stream.read(BUFFER_BYTES)
            except (OSError, EOFError) as error:
                raise CorpusError(f"{path}: cannot be read ({error})") from None
            held_back = len(decoder.getstate()[0])  # an incomplete character from the last buffer
            if consumed and data.isascii() and not held_back:
                points = np.frombuffer(data, dtype=np.uint8)
            else:
                try:
                    points = code_points(decoder.decode(data, final=not data))
                except UnicodeDecodeError as error:
                    offset = consumed - held_back + error.start
                    raise CorpusError(
                        f"{path}: invalid UTF-8 at byte offset {offset}; convert it "
                        f"(iconv -f cp1251 -t utf-8, say), or set data.encoding_errors: "
                        f"replace to read each bad byte as U+FFFD"
                    ) from None
            if not consumed and len(points) and points[0] == BYTE_ORDER_MARK:
                points = points[1:]
            consumed += len(data)
            if len(points):
                yield points, disk_position(stream)
            if not data:
                return


def code_points(text: str) -> np.ndarray:
    """The Unicode code points of `text` as uint32, without a Python loop."""
    # surrogatepass: a lone surrogate (from undecodable bytes in a command line, say)
    # becomes its code point, which no vocabulary holds, instead of an exception.
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def disk_position(stream) -> int:
    """How far into the file on disk a stream is (for gzip: the compressed position)."""
    raw = getattr(stream, "fileobj", None)
    return raw.tell() if raw is not None else stream.tell()
