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

    def extended(self, chars: Iterable[str]) -> Vocabulary:
        """This vocabulary with the characters of `chars` it lacks appended (sorted): each
        character keeps its id, and the unknown token moves to the new end.

        >>> Vocabulary(["b", "a"]).extended("abc").chars
        ['b', 'a', 'c']
        """
        return Vocabulary(self.chars + sorted(set(chars) - set(self.chars)))

    def unknown_chars(self, text: str) -> list[str]:
        return sorted({c for c in text if self.lookup[ord(c)] == self.unknown_id})

    def known_part(self, text: str) -> tuple[str, list[str]]:
        """`text` without the characters the vocabulary does not hold, and those."""
        unknown = self.unknown_chars(text)
        if not unknown:
            return text, []
        left_out = set(unknown)
        return "".join(c for c in text if c not in left_out), unknown

    def digest(self) -> str:
        return hashlib.sha256("".join(self.chars).encode("utf-8", "surrogatepass")).hexdigest()

    def to_json(self) -> dict:
        return {"version": VOCAB_VERSION, "chars": self.chars, "unknown_id": self.unknown_id}

    @classmethod
    def from_json(cls, data, where: str = "vocab.json") -> Vocabulary:
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
        write_atomic(path, json.dumps(self.to_json(), ensure_ascii=False).encode("utf-8"))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise CorpusError(f"{path} cannot be read as a vocabulary ({error})") from None
        return cls.from_json(data, str(path))
