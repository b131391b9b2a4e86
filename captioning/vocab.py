"""Word <-> id mapping, built from the training captions only and saved as JSON."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

from .text import END, PAD, START, UNK, tokenize

SPECIAL_TOKENS = [PAD, UNK, START, END]  # PAD must stay id 0: the decoder masks it
N_SPECIAL = len(SPECIAL_TOKENS)  # ids below this are special tokens; words start here
DEFAULT_MIN_COUNT = 5  # a word joins the vocabulary when the training captions use it this often


def max_length_for(max_words: int) -> int:
    """Decoding steps for captions of at most ``max_words`` words: the words plus ``<end>``."""
    return max_words + 1


def max_words_for(max_length: int) -> int:
    """The inverse of :func:`max_length_for`: the most words a ``max_length`` leaves room for."""
    return max_length - 1


class Vocabulary:
    def __init__(self, words: list[str]):
        if not all(isinstance(w, str) and w for w in words):
            raise ValueError("every word must be a non-empty string")
        if words[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise ValueError(f"vocabulary must start with {SPECIAL_TOKENS}")
        if len(set(words)) != len(words):
            raise ValueError("vocabulary has duplicate words")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.pad_id, self.unk_id, self.start_id, self.end_id = (self.index[t] for t in SPECIAL_TOKENS)

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = DEFAULT_MIN_COUNT) -> "Vocabulary":
        """Words seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(w for caption in captions for w in tokenize(caption))
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(SPECIAL_TOKENS + [w for w in kept if w not in SPECIAL_TOKENS])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def encode(self, caption: str) -> list[int]:
        """``<start> w1 .. wn <end>`` as ids; unknown words map to ``<unk>``."""
        ids = [self.index.get(w, self.unk_id) for w in tokenize(caption)]
        return [self.start_id] + ids + [self.end_id]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids to text, stopping at ``<end>`` and skipping the other special tokens."""
        out = []
        for i in ids:
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            out.append(self.words[i])
        return " ".join(out)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"words": self.words}, indent=0))

    @classmethod
    def from_json(cls, path: str | Path) -> "Vocabulary":
        return cls.from_data(json.loads(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def from_data(cls, data) -> "Vocabulary":
        """From the parsed content of a vocab.json file ({"words": [...]})."""
        if not isinstance(data, dict) or not isinstance(data.get("words"), list):
            raise ValueError("expected an object with a 'words' list")
        return cls(data["words"])
