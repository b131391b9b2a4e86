"""The three model variants and their names: the one place that lists them.

The variants differ only in their word embedding (see :mod:`captioning.embeddings`).
``VARIANTS`` is the canonical order, used everywhere they are listed (training, reports,
the demo's columns, tests).
"""

from __future__ import annotations

VARIANTS = ("learned", "fasttext", "word2vec")
PRETRAINED_VARIANTS = ("fasttext", "word2vec")  # gensim vectors, copied in and frozen
ENSEMBLE = "ensemble"  # the three together: their averaged next-word log-probabilities (captioning.ensemble)
LABELS = {"learned": "Learned embedding", "fasttext": "FastText", "word2vec": "Word2Vec",
          ENSEMBLE: "All three together"}
SHORT_LABELS = {"learned": "Learned", "fasttext": "FastText", "word2vec": "Word2Vec", ENSEMBLE: "Ensemble"}
