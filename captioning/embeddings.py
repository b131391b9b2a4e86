"""Word vectors for the decoder's embedding layer.

Three kinds of embedding, the only difference between the three model variants:

- ``learned``: randomly initialised, trained with the decoder;
- ``word2vec`` / ``fasttext``: gensim vectors trained on the training captions (or read
  from a user-supplied vector file), copied into the embedding layer and frozen.
  FastText also gives vectors to words it never saw, from their character n-grams.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from .variants import VARIANTS
from .vocab import Vocabulary

log = logging.getLogger(__name__)

EMBEDDING_KINDS = VARIANTS  # one embedding kind per model variant


def train_vectors(kind: str, sentences: Sequence[Sequence[str]], dim: int, seed: int = 0,
                  epochs: int = 20, window: int = 5, min_count: int = 1):
    """Train gensim Word2Vec or FastText on tokenised captions; returns KeyedVectors.

    One worker thread keeps training reproducible for a fixed seed.
    """
    from gensim.models import FastText, Word2Vec

    cls = {"word2vec": Word2Vec, "fasttext": FastText}[kind]
    model = cls(sentences=sentences, vector_size=dim, window=window, min_count=min_count,
                sg=1, epochs=epochs, seed=seed, workers=1)
    return model.wv


def load_vectors(path: str | Path):
    """Read pretrained vectors: word2vec binary/text (``.bin``/``.txt``), fastText ``.vec``
    (text) or ``.bin`` (Facebook's format, with subwords).  Returns gensim KeyedVectors."""
    from gensim.models import KeyedVectors
    from gensim.models.fasttext import load_facebook_vectors

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vector file not found: {path}")
    if path.suffix == ".bin":
        try:
            return load_facebook_vectors(str(path))
        except Exception:  # not Facebook's format: try word2vec's binary layout
            return KeyedVectors.load_word2vec_format(str(path), binary=True)
    # word2vec/fastText text starts with a "<count> <dim>" line; GloVe text has none.
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline().split()
    if len(first) == 2 and all(part.isdigit() for part in first):
        return KeyedVectors.load_word2vec_format(str(path), binary=False)
    return _load_headerless_text(path)


def _load_headerless_text(path: Path):
    """GloVe's text format, "word v1 v2 ..." per line. Read here rather than by gensim's
    ``no_header=True``, which leaves the file open."""
    from gensim.models import KeyedVectors

    words, rows = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            word, *values = line.rstrip("\n").rstrip().split(" ")
            if not values:
                continue
            if rows and len(values) != len(rows[0]):
                raise ValueError(f"{path}:{number}: {len(values)} numbers where earlier lines have {len(rows[0])}")
            words.append(word)
            rows.append(np.asarray(values, dtype=np.float32))
    if not rows:
        raise ValueError(f"{path}: no word vectors in it")
    vectors = KeyedVectors(vector_size=len(rows[0]))
    vectors.add_vectors(words, np.stack(rows))
    return vectors


def embedding_matrix(vocab: Vocabulary, vectors, seed: int = 0) -> tuple[np.ndarray, int]:
    """(len(vocab), dim) matrix of ``vectors`` for each vocabulary word.

    Words without a vector (and ``<unk>``/``<start>``/``<end>``) get small random
    vectors; ``<pad>`` stays zero.  Returns the matrix and the number of words
    that had no vector.
    """
    rng = np.random.default_rng(seed)
    dim = vectors.vector_size
    matrix = rng.normal(0.0, 0.1, size=(len(vocab), dim)).astype(np.float32)
    matrix[vocab.pad_id] = 0.0
    missing = 0
    for i, word in enumerate(vocab.words):
        if word.startswith("<"):
            continue
        try:  # FastText KeyedVectors answer for unseen words too, through subwords
            matrix[i] = vectors[word]
        except KeyError:
            missing += 1
    if missing:
        log.info("%d of %d vocabulary words have no pretrained vector", missing, len(vocab))
    return matrix, missing
