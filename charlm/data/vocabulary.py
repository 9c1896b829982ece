"""The vocabulary: characters and their token ids, saved as vocab.json in a run.

>>> vocab = Vocabulary(["a", "b"])
>>> vocab.encode("abz").tolist(), vocab.decode([1, 0])
([0, 1, 2], 'ba')
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from charlm.data.sources import code_points
from charlm.errors import CorpusError
from charlm.files import write_atomic

UNICODE_SIZE = 0x110000
VOCAB_VERSION = 1


class Vocabulary:
    """Characters and their token ids; one extra id stands for every unseen character.

    Attributes:
        chars: the characters, token id i being chars[i].
        unknown_id: len(chars), the id of every character not in `chars`.
        size: len(chars) + 1, the model's input and output width.
        lookup: (0x110000,) int32, the token id of each Unicode code point.
    """

    UNKNOWN_TEXT = "\ufffd"  # how the unknown token prints

    def __init__(self, chars: list[str]):
        self.chars = list(chars)
        self.unknown_id = len(self.chars)
        self.size = len(self.chars) + 1
        self.lookup = np.full(UNICODE_SIZE, self.unknown_id, dtype=np.int32)
        self.lookup[[ord(c) for c in self.chars]] = np.arange(len(self.chars), dtype=np.int32)
        self.table = np.array(self.chars + [self.UNKNOWN_TEXT], dtype=object)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of `text`.

        Args:
            text: any string; a character outside the vocabulary becomes `unknown_id`.

        Returns:
            (len(text),) int32 ids.
        """
        return self.lookup[code_points(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of token ids.

        Args:
            ids: (n,) ids below `size`; `unknown_id` prints as U+FFFD.

        Returns:
            A string of n characters.
        """
        return "".join(self.table[np.asarray(ids, dtype=np.int64)])

    def extended(self, chars: Iterable[str]) -> Vocabulary:
        """This vocabulary with the characters of `chars` it lacks appended (sorted): each
        character keeps its id, and the unknown token moves to the new end.

        Args:
            chars: characters the new vocabulary must hold (a string or any iterable).

        Returns:
            A new Vocabulary; this one is unchanged.

        >>> Vocabulary(["b", "a"]).extended("abc").chars
        ['b', 'a', 'c']
        """
        return Vocabulary(self.chars + sorted(set(chars) - set(self.chars)))

    def unknown_chars(self, text: str) -> list[str]:
        """The distinct characters of `text` the vocabulary does not hold, sorted."""
        return sorted({c for c in text if self.lookup[ord(c)] == self.unknown_id})

    def known_part(self, text: str) -> tuple[str, list[str]]:
        """Split `text` into what the model can read and what it cannot.

        Args:
            text: any string.

        Returns:
            (`text` without the characters the vocabulary does not hold, those characters
            sorted and distinct).
        """
        unknown = self.unknown_chars(text)
        if not unknown:
            return text, []
        left_out = set(unknown)
        return "".join(c for c in text if c not in left_out), unknown

    def digest(self) -> str:
        """The sha256 hex digest of the characters in id order: equal digests, equal ids."""
        return hashlib.sha256("".join(self.chars).encode("utf-8", "surrogatepass")).hexdigest()

    def to_json(self) -> dict:
        """What vocab.json holds: {"version", "chars", "unknown_id"}."""
        return {"version": VOCAB_VERSION, "chars": self.chars, "unknown_id": self.unknown_id}

    @classmethod
    def from_json(cls, data, where: str = "vocab.json") -> Vocabulary:
        """The vocabulary `data` (parsed vocab.json) describes.

        Args:
            data: a dict with "chars", a list of distinct single characters.
            where: what an error calls the source.

        Returns:
            The Vocabulary.

        Raises:
            charlm.errors.CorpusError: `data` is not such a dict.
        """
        chars = data.get("chars") if isinstance(data, dict) else None
        if (
            not isinstance(chars, list)
            or not chars
            or not all(isinstance(c, str) and len(c) == 1 for c in chars)
            or len(set(chars)) != len(chars)
        ):
            raise CorpusError(
                f"{where} is not a charlm vocabulary (it needs a list of distinct "
                f"single characters under 'chars')"
            )
        return cls(chars)

    def save(self, path: Path) -> None:
        """Write vocab.json to `path`, atomically."""
        write_atomic(path, json.dumps(self.to_json(), ensure_ascii=False).encode("utf-8"))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        """Read a vocab.json file.

        Args:
            path: the file.

        Returns:
            The Vocabulary.

        Raises:
            charlm.errors.CorpusError: the file cannot be read or is not a vocabulary.
        """
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise CorpusError(f"{path} cannot be read as a vocabulary ({error})") from None
        return cls.from_json(data, str(path))
