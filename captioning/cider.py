"""CIDEr-D of candidate captions against pools of training captions, each training caption's
tf-idf vectors computed once.

pycocoevalcap's scorer (the SCST reward, the evaluation) turns every reference into its tf-idf
vectors again for every candidate it meets: re-ranking beam search's 3 captions against the 100
captions of a photo's 20 nearest training photos vectorised those 100 captions 3 times (the page
re-ranks four times per photo).  :class:`CiderDIndex` vectorises every training caption once, when
it is built, into flat arrays, and scores a candidate against a whole pool with a few NumPy
operations (``python -m tools.benchmark``: the page's four re-rankings took 100 ms, now 7).

It is the COCO scorer's CIDEr-D, term for term (Vedantam et al. 2015 with the clipping and length
penalty of pycocoevalcap): n = 1..4, idf = log(images) - log(max(1, images whose references hold
the n-gram)) over the training split, the similarity of a candidate and a reference per n is
sum(min(w_cand, w_ref) * w_ref) / (|w_cand| |w_ref|) times exp(-delta^2 / (2 sigma^2)) with
sigma = 6 and delta the difference of their bigram counts (pycocoevalcap's "length"), and the
score is 10 x the mean over n of the mean over references.  ``tests/test_cider.py`` checks it
against :class:`captioning.scst.CiderDReward`, which calls pycocoevalcap itself.

N-grams are stored as one int64 each: their words' ids (1..V, V words) as digits in base V + 1, so
no two n-grams, of whatever length, share a key, and a pool's n-grams are matched to a candidate's
by a binary search.

    index = CiderDIndex({"1000268201.jpg": ["a child in a pink dress ...", ...], ...})
    index.against(["1000268201.jpg", ...], [["a", "girl", "climbs", "the", "stairs"]], [True])  # (1,)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from pycocoevalcap.cider.cider_scorer import precook

from .text import END, tokenize

ORDERS = 4  # n-grams of 1..4 words, as the COCO scorer
SIGMA = 6.0  # the COCO scorer's length penalty width
MAX_WORDS = 55_000  # (words + 1) ** ORDERS must fit in an int64 key


def _distinct(major: np.ndarray, minor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (major, minor) sorted by major, then minor: (the order that sorts them (N,), the sorted
    positions where a distinct pair begins (D,))."""
    order = np.lexsort((minor, major))
    major, minor = major[order], minor[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (major[1:] != major[:-1]) | (minor[1:] != minor[:-1])
    return order, np.flatnonzero(new)


def scored_text(words: Sequence[str], finished: bool) -> str:
    """A caption as CIDEr-D is computed on it in this project: its words, then ``<end>`` if it
    finished (so that a caption cut short loses the references' final n-grams)."""
    return " ".join([*words, END] if finished else words)


class CiderDIndex:
    """The training split's references, vectorised once; CIDEr-D of captions against any pool of them.

    ``references``: image name -> its reference captions (cleaned text, as in the corpus); they give
    the document frequencies too (one document per image)."""

    def __init__(self, references: Mapping[str, Sequence[str]]):
        if not references or not all(references.values()):
            raise ValueError("CIDEr-D needs at least one image, each with at least one reference caption")
        captions = [scored_text(tokenize(r), True).split() for refs in references.values() for r in refs]
        words = sorted({word for caption in captions for word in caption})
        if len(words) >= MAX_WORDS:
            raise ValueError(f"the references use {len(words)} distinct words; CiderDIndex keys the n-grams "
                             f"of at most {MAX_WORDS - 1}")
        self._word_ids = {word: i + 1 for i, word in enumerate(words)}  # digits 1..V: no two n-grams share a key
        self._base = len(words) + 1
        self._order_bounds = self._base ** np.arange(1, ORDERS, dtype=np.int64)    # keys of n + 1 words start here
        self._image_row = {image: i for i, image in enumerate(references)}
        per_image = np.array([len(refs) for refs in references.values()])
        self._first_caption = np.concatenate([[0], np.cumsum(per_image)])            # (images + 1,)
        caption_image = np.repeat(np.arange(len(references)), per_image)              # (C,)

        # One entry per (caption, distinct n-gram), sorted by caption, with its count in the caption.
        caption, keys, counts = self._count_ngrams(captions)                          # (E,) each
        self._first_entry = np.searchsorted(caption, self._first_caption)            # (images + 1,)

        # Document frequency: how many images' references hold the n-gram.
        by_key, firsts = _distinct(keys, caption_image[caption])
        in_images = keys[by_key][firsts]                                              # one key per (n-gram, image)
        self._known, document_frequency = np.unique(in_images, return_counts=True)   # (G,) sorted
        self._log_images = math.log(len(references))
        self._idf = self._log_images - np.log(np.maximum(1.0, document_frequency))   # (G,)

        self._keys, self._order, self._caption = keys, self._orders(keys).astype(np.int8), caption.astype(np.int32)
        self._weight = counts * self._idf[np.searchsorted(self._known, keys)]        # (E,) tf-idf
        squares = np.bincount(caption * ORDERS + self._order, weights=self._weight ** 2,
                              minlength=len(captions) * ORDERS)
        self._norm = np.sqrt(squares).reshape(-1, ORDERS)                            # (C, 4)
        bigrams = self._order == 1
        self._length = np.bincount(caption[bigrams], weights=counts[bigrams], minlength=len(captions))  # (C,)
        # pycocoevalcap's "length" of a caption is its number of bigrams; the length penalty compares those

    def _count_ngrams(self, captions: list[list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every caption's distinct n-grams (1..4 words, within the caption) as (caption (E,), key (E,),
        count (E,) float), sorted by caption, then key."""
        lengths = np.array([len(c) for c in captions])
        tokens = np.array([self._word_ids[w] for c in captions for w in c], dtype=np.int64)  # (T,)
        token_caption = np.repeat(np.arange(len(captions)), lengths)                          # (T,)
        caption_parts, key_parts = [], []
        for n in range(1, ORDERS + 1):
            starts = np.arange(len(tokens) - n + 1)
            starts = starts[token_caption[starts] == token_caption[starts + n - 1]]  # n-grams inside one caption
            key = np.zeros(len(starts), dtype=np.int64)
            for j in range(n):
                key = key * self._base + tokens[starts + j]
            caption_parts.append(token_caption[starts])
            key_parts.append(key)
        caption, key = np.concatenate(caption_parts), np.concatenate(key_parts)
        order, firsts = _distinct(caption, key)
        caption, key = caption[order], key[order]
        counts = np.diff(np.append(firsts, len(key))).astype(np.float64)
        return caption[firsts], key[firsts], counts

    def _key(self, ngram: tuple[str, ...]) -> int | None:
        """An n-gram's key (None if a word of it is in no reference)."""
        key = 0
        for word in ngram:
            digit = self._word_ids.get(word)
            if digit is None:
                return None
            key = key * self._base + digit
        return key

    def _orders(self, keys: np.ndarray) -> np.ndarray:
        """n - 1 of each key (its number of base-(V+1) digits, none of them 0, less one)."""
        return np.searchsorted(self._order_bounds, keys, side="right")

    def _idf_of(self, keys: np.ndarray) -> np.ndarray:
        """idf of n-gram keys (an n-gram no reference holds: log(images), as the COCO scorer's max(1, 0)).
        ``_known`` is never empty: every reference holds ``<end>``."""
        at = np.minimum(np.searchsorted(self._known, keys), len(self._known) - 1)
        return np.where(self._known[at] == keys, self._idf[at], self._log_images)

    def _candidate(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """A candidate's tf-idf vector: keys (H,) sorted and their weights (H,), of the n-grams whose
        words the references use (no other can match); its norm per n (4,), counting every n-gram;
        its number of bigrams."""
        keys, weights, norm, length = [], [], np.zeros(ORDERS), 0.0
        unmatched = []  # n-grams with a word no reference has: in the norm only
        for ngram, tf in precook(text, ORDERS).items():
            if len(ngram) == 2:
                length += tf
            key = self._key(ngram)
            if key is None:
                unmatched.append((len(ngram) - 1, tf))
            else:
                keys.append(key)
                weights.append(tf)
        keys = np.array(keys, dtype=np.int64)
        weights = np.array(weights, dtype=np.float64) * self._idf_of(keys)
        np.add.at(norm, self._orders(keys), weights ** 2)
        for order, tf in unmatched:
            norm[order] += (tf * self._log_images) ** 2
        by_key = np.argsort(keys)
        return keys[by_key], weights[by_key], np.sqrt(norm), length

    def against(self, images: Sequence[str], captions: Sequence[Sequence[str]],
                finished: Sequence[bool]) -> np.ndarray:
        """CIDEr-D (x10, as reported) of each caption (n,) against the references of all ``images``
        pooled, the same pool for every caption; ``finished`` says which captions ended with ``<end>``."""
        if not len(images):
            raise ValueError("CIDEr-D needs at least one image to pool references from")
        unknown = [image for image in images if image not in self._image_row]
        if unknown:
            raise KeyError(f"no references for {len(unknown)} image(s), e.g. {unknown[0]!r}")
        rows = np.array([self._image_row[image] for image in images])                   # (K,)
        first, stop = self._first_caption[rows], self._first_caption[rows + 1]          # (K,) caption rows
        first_entry, stop_entry = self._first_entry[rows], self._first_entry[rows + 1]  # (K,) their entries
        pool = np.concatenate([np.arange(a, b) for a, b in zip(first, stop)])             # (P,) caption rows
        entries = np.concatenate([np.arange(a, b) for a, b in zip(first_entry, stop_entry)])  # (E_pool,)
        # Each entry's row in the pool: its caption shifted from its image's first caption to the pool's.
        shift = np.cumsum(stop - first) - (stop - first) - first                          # (K,)
        local = self._caption[entries] + np.repeat(shift, stop_entry - first_entry)     # (E_pool,)
        pool_keys, pool_weights, pool_orders = self._keys[entries], self._weight[entries], self._order[entries]
        pool_norm, pool_length = self._norm[pool], self._length[pool]                     # (P, 4), (P,)

        scores = np.zeros(len(captions))
        for i, (words, done) in enumerate(zip(captions, finished)):
            keys, weights, norm, length = self._candidate(scored_text(words, done))
            similarity = np.zeros(len(pool) * ORDERS)
            if len(keys):
                at = np.minimum(np.searchsorted(keys, pool_keys), len(keys) - 1)
                hit = keys[at] == pool_keys                               # the pool's entries the candidate shares
                clipped = np.minimum(weights[at[hit]], pool_weights[hit]) * pool_weights[hit]
                similarity = np.bincount(local[hit] * ORDERS + pool_orders[hit], weights=clipped,
                                         minlength=len(pool) * ORDERS).astype(np.float64)  # int if no hit
            similarity = similarity.reshape(len(pool), ORDERS)                            # (P, 4)
            denominator = norm[None, :] * pool_norm
            similarity = np.divide(similarity, denominator, out=similarity, where=denominator != 0)
            penalty = np.e ** (-((length - pool_length) ** 2) / (2 * SIGMA ** 2))          # (P,)
            scores[i] = 10.0 * np.mean((similarity * penalty[:, None]).sum(axis=0)) / len(pool)
        return scores
