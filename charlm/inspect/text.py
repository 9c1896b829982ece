"""The text an inspection reads, checked before any model is loaded: 1 to a cap of
characters of UTF-8 text (a page of every character's values grows with it)."""

from __future__ import annotations

from pathlib import Path

from charlm.data.sources import check_not_binary
from charlm.errors import CorpusError


def check_text(text: str, max_chars: int, what: str) -> None:
    """Refuse a text an inspection cannot read: empty, or more than `max_chars` long.

    Args:
        text: the text to inspect.
        max_chars: the most characters an inspection reads.
        what: what errors call the text (a file, a request field).

    Raises:
        charlm.errors.CorpusError: naming `what`.
    """
    if not text:
        raise CorpusError(f"{what} is empty; give some text to inspect")
    if len(text) > max_chars:
        raise CorpusError(
            f"{what} holds {len(text):,} characters, more than the {max_chars:,} an "
            f"inspection reads; inspect a part of it"
        )


def read_text_file(path: Path, max_chars: int) -> str:
    """Read the text to inspect from a file, refusing it before reading a large one.

    Args:
        path: a UTF-8 text file (a byte-order mark is dropped).
        max_chars: the most characters an inspection reads.

    Returns:
        The file's text, 1 to `max_chars` characters.

    Raises:
        charlm.errors.CorpusError: missing, binary, too long, invalid UTF-8, or empty.
    """
    if not path.is_file():
        raise CorpusError(f"{path} is not a file; give the text to inspect")
    check_not_binary(path)
    if path.stat().st_size > 4 * max_chars + 4:  # more than max_chars even in 4-byte UTF-8
        raise CorpusError(
            f"{path} holds more than the {max_chars:,} characters an inspection reads; "
            f"inspect a part of it"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise CorpusError(f"{path}: invalid UTF-8 at byte offset {error.start}") from None
    check_text(text, max_chars, str(path))
    return text
