"""Caption text: cleaning and the special tokens shared by vocabulary and decoder."""

from __future__ import annotations

import re

PAD = "<pad>"
UNK = "<unk>"
START = "<start>"
END = "<end>"

_NOT_LETTERS = re.compile(r"[^a-z\s]+")
_SPACES = re.compile(r"\s+")


def clean_caption(text: str) -> str:
    """Lowercase, drop punctuation and digits, collapse whitespace.

    >>> clean_caption("A dog , 2 cats!  Run.")
    'a dog cats run'
    """
    text = _NOT_LETTERS.sub(" ", text.lower())
    return _SPACES.sub(" ", text).strip()


def tokenize(text: str) -> list[str]:
    """Words of an already cleaned caption."""
    return text.split()
