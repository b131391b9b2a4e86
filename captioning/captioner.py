"""The user-facing object: a trained bundle plus the image encoder it was trained with.

    image -> ImageEncoder -> features -> StepDecoder (greedy | beam) -> caption
    image -> ImageEncoder -> features + ImageNet class probabilities
          -> concepts (captioning.concepts) -> constrained beam search (captioning.guided) -> caption

>>> from captioning import Captioner
>>> c = Captioner.load("weights/word2vec")
>>> c.caption("photo.jpg", method="beam", beam_width=3)
'a dog runs through the grass'

Several captioners can share one encoder (``Captioner.load(path, encoder=...)``):
the app encodes an image once and decodes it with three models.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bundle import Bundle, load_bundle
from .concepts import top_labels
from .decoding import Hypothesis, StepDecoder
from .guided import DEFAULT_MARGIN, DEFAULT_THRESHOLD, guided_caption
from .encoders import ImageEncoder, load_encoder
from .images import ImageSource
from .model import WORD_EMBEDDING

METHODS = ("greedy", "beam", "guided")
MAX_BEAM_WIDTH = 20
TOP_LABELS = 5  # ImageNet labels reported with a guided caption


@dataclass
class CaptionResult:
    caption: str
    words: list[str]
    word_probs: list[float]  # probability of each word of the caption, then of the end token
    candidates: list[tuple[str, float]] = field(default_factory=list)  # beam n-best: (caption, log-probability)
    seconds: float = 0.0  # decoding time (the image encoding is not included)
    # Guided decoding only (empty for greedy and beam):
    concepts: list[str] = field(default_factory=list)  # concept words the caption was guided to say
    fallback: bool = False  # concepts were found but their guided caption scored too poorly: plain beam
    rejected_concepts: list[str] = field(default_factory=list)  # the concepts dropped by that fallback
    labels: list[tuple[str, float]] = field(default_factory=list)  # encoder's top ImageNet classes: (name, p)


class Captioner:
    def __init__(self, bundle: Bundle, encoder: ImageEncoder):
        if encoder.name != bundle.config["encoder"]:
            raise ValueError(f"model {bundle.path} was trained on {bundle.config['encoder']} features, "
                             f"not {encoder.name}")
        self.bundle = bundle
        self.encoder = encoder
        self.vocab = bundle.vocab
        self.decoder = StepDecoder(bundle.model, bundle.vocab)
        self.max_length = int(bundle.config["max_length"])

    @classmethod
    def load(cls, path: str | Path, encoder: ImageEncoder | None = None) -> "Captioner":
        bundle = load_bundle(path)
        return cls(bundle, encoder or load_encoder(bundle.config["encoder"]))

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def config(self) -> dict:
        return self.bundle.config

    @property
    def metrics(self) -> dict:
        return self.bundle.metrics

    # -- image to caption -------------------------------------------------
    def features(self, image: ImageSource) -> np.ndarray:
        return self.encoder.features(image)

    def caption(self, image: ImageSource, method: str = "greedy", beam_width: int = 3,
                max_length: int | None = None) -> str:
        return self.describe(image, method, beam_width, max_length).caption

    def candidates(self, image: ImageSource, beam_width: int = 5,
                   max_length: int | None = None) -> list[tuple[str, float]]:
        """Beam search's n-best captions with their log-probabilities, best first."""
        return self.describe(image, "beam", beam_width, max_length).candidates

    def describe(self, image: ImageSource, method: str = "greedy", beam_width: int = 3,
                 max_length: int | None = None) -> CaptionResult:
        if method == "guided":  # features and ImageNet class probabilities from one encoder pass
            features, class_probs = self.encoder.analyse(image)
            return self.describe_features(features, method, beam_width, max_length, class_probs=class_probs)
        return self.describe_features(self.features(image), method, beam_width, max_length)

    # -- features to caption ----------------------------------------------
    def describe_features(self, features: np.ndarray, method: str = "greedy", beam_width: int = 3,
                          max_length: int | None = None, class_probs: np.ndarray | None = None,
                          threshold: float = DEFAULT_THRESHOLD, margin: float = DEFAULT_MARGIN) -> CaptionResult:
        """Caption of one image's features (feature_dim,).  ``method="guided"`` also takes the
        encoder's ImageNet class probabilities (1000,) (:meth:`ImageEncoder.analyse`); without
        them, or when no concept passes ``threshold``, it is plain beam search."""
        method, beam_width, max_length = self._check(method, beam_width, max_length)
        started = time.perf_counter()
        if method == "guided":
            result = self._guided(features, class_probs, beam_width, max_length, threshold, margin)
        elif method == "greedy" or beam_width == 1:
            result = self._result(self.decoder.greedy(features.reshape(1, -1), max_length)[0])
        else:
            hyps = self.decoder.beam_search(features, beam_width, max_length)
            result = self._result(hyps[0])
            result.candidates = [(self.vocab.decode(h.ids), h.logprob) for h in hyps]
        result.seconds = time.perf_counter() - started
        return result

    def _guided(self, features, class_probs, beam_width, max_length, threshold, margin) -> CaptionResult:
        outcome = guided_caption(self.decoder, features, class_probs, beam_width, max_length, threshold, margin)
        result = self._result(outcome.hyps[0])
        result.candidates = [(self.vocab.decode(h.ids), h.logprob) for h in outcome.hyps]
        result.concepts = [c.word for c in outcome.concepts]
        result.rejected_concepts = [c.word for c in outcome.rejected]
        result.fallback = not outcome.concepts and bool(outcome.rejected)
        result.labels = [] if class_probs is None else top_labels(class_probs, TOP_LABELS)
        return result

    def caption_features_batch(self, features: np.ndarray, method: str = "greedy", beam_width: int = 3,
                               max_length: int | None = None, class_probs: np.ndarray | None = None,
                               threshold: float = DEFAULT_THRESHOLD, margin: float = DEFAULT_MARGIN) -> list[str]:
        """Captions for many images' features (n, feature_dim); greedy runs them as one batch.
        ``method="guided"`` takes their class probabilities (n, 1000)."""
        method, beam_width, max_length = self._check(method, beam_width, max_length)
        if method == "guided":
            probs = [None] * len(features) if class_probs is None else class_probs
            return [self.describe_features(f, "guided", beam_width, max_length, p, threshold, margin).caption
                    for f, p in zip(features, probs)]
        if method == "greedy" or beam_width == 1:
            return [self.vocab.decode(h.ids) for h in self.decoder.greedy(features, max_length)]
        return [self.vocab.decode(self.decoder.beam_search(f, beam_width, max_length, n_best=1)[0].ids)
                for f in features]

    def _check(self, method: str, beam_width: int, max_length: int | None):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {method!r}")
        beam_width = int(beam_width)
        if not 1 <= beam_width <= MAX_BEAM_WIDTH:
            raise ValueError(f"beam_width must be between 1 and {MAX_BEAM_WIDTH}, not {beam_width}")
        max_length = self.max_length if max_length is None else int(max_length)
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, not {max_length}")
        return method, beam_width, max_length

    def _result(self, hyp: Hypothesis) -> CaptionResult:
        words = [self.vocab.words[i] for i in hyp.ids]
        return CaptionResult(" ".join(words), words, [float(np.exp(lp)) for lp in hyp.word_logprobs])

    # -- embeddings ---------------------------------------------------------
    @property
    def embeddings(self) -> np.ndarray:
        """(vocab size, dim) word vectors of the decoder's embedding layer."""
        return self.bundle.model.get_layer(WORD_EMBEDDING).get_weights()[0]

    def nearest_words(self, word: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` vocabulary words closest to ``word`` by cosine similarity."""
        word = word.strip().lower()
        if word not in self.vocab:
            raise KeyError(f"'{word}' is not in the {self.name} model's vocabulary")
        vectors = self.embeddings
        norms = np.linalg.norm(vectors, axis=1) + 1e-8
        sims = vectors @ vectors[self.vocab.index[word]] / (norms * norms[self.vocab.index[word]])
        sims[: 4] = -np.inf  # special tokens
        sims[self.vocab.index[word]] = -np.inf
        best = np.argsort(-sims)[:k]
        return [(self.vocab.words[i], float(sims[i])) for i in best]
