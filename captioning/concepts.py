"""What the encoder's ImageNet head sees, in caption words.

Reads the committed mapping ``resources/imagenet_concepts.json`` (generated once from WordNet by
:mod:`captioning.concepts_build`; nothing here needs WordNet):

>>> features, probs = encoder.analyse("cat.jpg")          # probs: (1000,)
>>> top_labels(probs, 3)
[('tabby cat', 0.41), ('tiger cat', 0.22), ('Egyptian Mau', 0.12)]
>>> concepts(probs, captioner.vocab, threshold=0.3)
[Concept(word='cat', prob=0.97, share=0.99, synonyms=('cat', 'cats'))]

A concept's probability is the sum over the classes mapped to its word, so eleven cat classes
at 0.07 each make a confident "cat".  Its *share* is that probability over the probability of
all classes mapped to any word: how sure the head is of this thing among the things it sees.
A rocket on its launch pad is "drilling rig" (a structure, mapped to no word) at 0.6 and the
rocket classes at 0.09, yet they are most of what the head sees as a thing.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

CONCEPTS_FILE = Path(__file__).resolve().parent / "resources" / "imagenet_concepts.json"


@dataclass(frozen=True)
class Concept:
    word: str  # the caption word, e.g. "cat"
    prob: float  # summed ImageNet probability of the classes mapped to it
    share: float  # prob / summed probability of every class mapped to some word
    synonyms: tuple[str, ...]  # caption words that say it (the word first), e.g. cat, cats, kitten


@dataclass(frozen=True)
class ConceptMap:
    class_names: tuple[str, ...]  # (1000,) readable ImageNet class names
    class_words: tuple[str | None, ...]  # (1000,) caption word of each class, None for scenes etc.
    synonyms: dict[str, tuple[str, ...]]  # caption word -> words that say it

    @property
    def words(self) -> list[str]:
        """Every concept word, sorted."""
        return sorted(self.synonyms)


@lru_cache(maxsize=4)
def load_concept_map(path: str | Path = CONCEPTS_FILE) -> ConceptMap:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return ConceptMap(tuple(data["class_names"]), tuple(data["class_words"]),
                      {w: tuple(s) for w, s in data["synonyms"].items()})


TOP_LABELS = 5  # ImageNet classes reported as "what the encoder sees"


def top_labels(probs: np.ndarray | None, k: int = TOP_LABELS,
               concept_map: ConceptMap | None = None) -> list[tuple[str, float]]:
    """The ``k`` most probable ImageNet classes of one image (probs (1000,)): [(name, p)], best first;
    [] for None (an encoder without a classifier head)."""
    if probs is None:
        return []
    names = (concept_map or load_concept_map()).class_names
    best = np.argsort(-np.asarray(probs), kind="stable")[:k]
    return [(names[i], float(probs[i])) for i in best]


def concept_probs(probs: np.ndarray, concept_map: ConceptMap | None = None) -> dict[str, float]:
    """Caption word -> summed probability of its classes (probs (1000,))."""
    concept_map = concept_map or load_concept_map()
    totals: dict[str, float] = {}
    for p, word in zip(np.asarray(probs, dtype=np.float64), concept_map.class_words):
        if word is not None:
            totals[word] = totals.get(word, 0.0) + float(p)
    return totals


MIN_PROB = 0.05  # however large its share, a concept needs this much probability of its own


def concepts(probs: np.ndarray | None, vocab: Collection[str], threshold: float, max_concepts: int = 2,
             concept_map: ConceptMap | None = None, min_prob: float = MIN_PROB) -> list[Concept]:
    """The at most ``max_concepts`` caption words whose share (see the module docstring) is at
    least ``threshold`` and probability at least ``min_prob``, most probable first, restricted
    to words in ``vocab`` (a model's :class:`~captioning.vocab.Vocabulary` or any collection of
    words); synonyms outside ``vocab`` are dropped, since the decoder could not say them.
    ``probs`` (1000,) may be None (an encoder without an ImageNet head): no concepts."""
    if probs is None:
        return []
    concept_map = concept_map or load_concept_map()
    totals = concept_probs(probs, concept_map)
    things = sum(totals.values())
    found = []
    for word, p in sorted(totals.items(), key=lambda item: (-item[1], item[0])):
        if p < min_prob or len(found) >= max_concepts:
            break
        if p / things >= threshold and word in vocab:
            found.append(Concept(word, p, p / things, tuple(s for s in concept_map.synonyms[word] if s in vocab)))
    return found
