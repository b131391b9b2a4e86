"""The user-facing object: a trained bundle plus the image encoder it was trained with.

    image -> ImageEncoder -> features -> StepDecoder (greedy | beam) -> caption
    image -> ImageEncoder -> features -> beam search's n-best
          -> re-ranked by the nearest training photos' captions (captioning.consensus) -> caption
    image -> ImageEncoder -> features + ImageNet class probabilities
          -> concepts (captioning.concepts) -> constrained beam search (captioning.guided) -> caption

>>> from captioning import Captioner
>>> c = Captioner.load("weights/word2vec")
>>> c.caption("photo.jpg", method="beam", beam_width=3)
'a dog runs through the grass'

Several captioners can share one encoder (``Captioner.load(path, encoder=...)``):
the app encodes an image once and decodes it with three models.

Guided decoding is bolder on photos unlike the training photos (:func:`captioning.guided.concept_threshold`):
``Captioner.load`` also loads the familiarity reference (:mod:`captioning.familiarity`) that lies
beside the bundles, ``<bundle folder>/../familiarity.h5``, when there is one.  Without it guided
decoding uses the strict threshold on every photo.  Consensus re-ranking needs that reference and
the training photos' captions beside it (``neighbour_captions.json``); without them the method
"consensus" is refused with a message that says which file is missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bundle import Bundle, load_bundle
from .concepts import top_labels
from .consensus import NEIGHBOUR_CAPTIONS_FILE, Consensus, NeighbourCaptions
from .decoding import LENGTH_PENALTY, Hypothesis, StepDecoder
from .guided import DEFAULT_MARGIN, concept_threshold, guided_caption
from .encoders import ImageEncoder, load_encoder
from .familiarity import Familiarity, FamiliarityResult
from .images import ImageSource
from .model import WORD_EMBEDDING
from .settings import SettingsError, parse_settings
from .vocab import N_SPECIAL

FAMILIARITY_FILE = "familiarity.h5"  # beside the bundle folders (weights/familiarity.h5)
REFERENCE_FILES = (FAMILIARITY_FILE, NEIGHBOUR_CAPTIONS_FILE)  # what Captioner.load reads beside the bundles


@dataclass
class CaptionResult:
    caption: str
    words: list[str]
    word_probs: list[float]  # probability of each word of the caption, then of the end token
    candidates: list[tuple[str, float]] = field(default_factory=list)  # beam n-best: (caption, log-probability)
    candidate_scores: list[float] = field(default_factory=list)  # each one's length-normalised ranking score
    seconds: float = 0.0  # decoding time (the image encoding is not included)
    # Guided decoding only (empty for greedy and beam):
    concepts: list[str] = field(default_factory=list)  # concept words the caption was guided to say
    fallback: bool = False  # concepts were found but their guided caption scored too poorly: plain beam
    rejected_concepts: list[str] = field(default_factory=list)  # the concepts dropped by that fallback
    labels: list[tuple[str, float]] = field(default_factory=list)  # encoder's top ImageNet classes: (name, p)
    familiarity: FamiliarityResult | None = None  # how familiar the photo is (None: no reference file)
    threshold: float | None = None  # the concept threshold used (it depends on the familiarity)

    def ranked_candidates(self) -> list[tuple[str, float, float]]:
        """The n-best list as (caption, log-probability, ranking score), best score first."""
        ranked = [(caption, logprob, score) for (caption, logprob), score in zip(self.candidates, self.candidate_scores)]
        return sorted(ranked, key=lambda candidate: -candidate[2])


class Captioner:
    def __init__(self, bundle: Bundle, encoder: ImageEncoder, familiarity: Familiarity | None = None,
                 consensus: Consensus | None = None):
        if encoder.name != bundle.config["encoder"]:
            raise ValueError(f"model {bundle.path} was trained on {bundle.config['encoder']} features, "
                             f"not {encoder.name}")
        if familiarity is not None and familiarity.encoder != encoder.name:
            raise ValueError(f"the familiarity reference was built from {familiarity.encoder} features, "
                             f"not {encoder.name}")
        if consensus is not None and consensus.encoder != encoder.name:
            raise ValueError(f"the consensus reference ranks photos by {consensus.encoder} features, not {encoder.name}")
        self.bundle = bundle
        self.encoder = encoder
        self.familiarity = familiarity  # None: guided decoding uses the strict threshold
        self.consensus = consensus  # None: the method "consensus" is refused
        self.vocab = bundle.vocab
        self.decoder = StepDecoder(bundle.model, bundle.vocab)
        self.max_length = int(bundle.config["max_length"])

    @classmethod
    def load(cls, path: str | Path, encoder: ImageEncoder | None = None,
             familiarity: Familiarity | str | Path | bool | None = None,
             consensus: Consensus | bool | None = None) -> "Captioner":
        """``familiarity``: a loaded reference (several captioners can share one), the path of
        one, False for none, or None (default) for ``<path>/../familiarity.h5`` when that file
        exists.  A reference that exists but cannot be read raises
        :class:`~captioning.familiarity.FamiliarityError` (a ValueError).  ``consensus``: a
        loaded :class:`~captioning.consensus.Consensus`, False for none, or None (default) for
        one built from the familiarity reference and ``<path>/../neighbour_captions.json`` when
        both exist (:class:`~captioning.consensus.ConsensusError` if that file cannot be read)."""
        bundle = load_bundle(path)
        beside = Path(path).absolute().parent  # the folder holding the bundles ("." names one too)
        if familiarity is None:
            default = beside / FAMILIARITY_FILE
            familiarity = Familiarity.load(default) if default.is_file() else False
        elif isinstance(familiarity, (str, Path)):
            familiarity = Familiarity.load(familiarity)
        if consensus is None:
            captions = beside / NEIGHBOUR_CAPTIONS_FILE
            consensus = Consensus(familiarity, NeighbourCaptions.load(captions)) if familiarity and captions.is_file() \
                else False
        return cls(bundle, encoder or load_encoder(bundle.config["encoder"]), familiarity or None, consensus or None)

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

    def familiarity_of(self, features: np.ndarray) -> FamiliarityResult | None:
        """How familiar one image's features (feature_dim,) are; None without a reference."""
        return None if self.familiarity is None else self.familiarity.score(features)

    # -- features to caption ----------------------------------------------
    def describe_features(self, features: np.ndarray, method: str = "greedy", beam_width: int = 3,
                          max_length: int | None = None, class_probs: np.ndarray | None = None,
                          threshold: float | None = None, margin: float = DEFAULT_MARGIN,
                          familiarity: FamiliarityResult | None = None, searched: dict | None = None) -> CaptionResult:
        """Caption of one image's features (feature_dim,).  ``method="guided"`` also takes the
        encoder's ImageNet class probabilities (1000,) (:meth:`ImageEncoder.analyse`); without
        them, or when no concept passes the threshold, it is plain beam search.  The threshold
        is ``threshold`` if given, else :func:`~captioning.guided.concept_threshold` of the
        photo's familiarity: ``familiarity`` if given (a caller that has scored it already),
        else scored here from ``features`` with the captioner's reference (none: the strict
        threshold).  Greedy and beam ignore all three.  ``searched``: a dict the caller keeps
        for one image's features and one beam width and length, so that asking for "beam" and
        "guided" runs the plain beam search once (guided decoding starts from it)."""
        method, beam_width, max_length = self._check(method, beam_width, max_length)
        started = time.perf_counter()
        if method == "guided":
            if familiarity is None:
                familiarity = self.familiarity_of(features)
            if threshold is None:
                threshold = concept_threshold(familiarity)
            result = self._guided(features, class_probs, beam_width, max_length, threshold, margin, searched)
            result.familiarity, result.threshold = familiarity, threshold
        elif method == "greedy":
            result = self._result(self.decoder.greedy(features.reshape(1, -1), max_length)[0])
        else:
            searched = {} if searched is None else searched
            if "plain" not in searched:  # the key guided_caption keeps the plain beam's n-best under
                searched["plain"] = self.decoder.beam_search(features, beam_width, max_length)
            hyps = searched["plain"]
            scores = None
            if method == "consensus":
                hyps, scores = self._consensus().rerank(features, hyps, self.vocab)
            result = self._result(hyps[0])
            self._add_candidates(result, hyps, scores)
        result.seconds = time.perf_counter() - started
        return result

    def _guided(self, features, class_probs, beam_width, max_length, threshold, margin,
                searched: dict | None = None) -> CaptionResult:
        outcome = guided_caption(self.decoder, features, class_probs, beam_width, max_length, threshold, margin,
                                 searched=searched)
        result = self._result(outcome.hyps[0])
        self._add_candidates(result, outcome.hyps)
        result.concepts = [c.word for c in outcome.concepts]
        result.rejected_concepts = [c.word for c in outcome.rejected]
        result.fallback = not outcome.concepts and bool(outcome.rejected)
        result.labels = top_labels(class_probs)
        return result

    def caption_features_batch(self, features: np.ndarray, method: str = "greedy", beam_width: int = 3,
                               max_length: int | None = None, class_probs: np.ndarray | None = None,
                               threshold: float | None = None, margin: float = DEFAULT_MARGIN) -> list[str]:
        """Captions for many images' features (n, feature_dim); greedy runs them as one batch.
        ``method="guided"`` takes their class probabilities (n, 1000) and, without ``threshold``,
        scores each image's familiarity (see :meth:`describe_features`)."""
        method, beam_width, max_length = self._check(method, beam_width, max_length)
        if method == "guided":
            probs = [None] * len(features) if class_probs is None else class_probs
            return [self.describe_features(f, "guided", beam_width, max_length, p, threshold, margin).caption
                    for f, p in zip(features, probs)]
        if method == "greedy" or beam_width == 1:
            return [self.vocab.decode(h.ids) for h in self.decoder.greedy(features, max_length)]
        if method == "consensus":
            return [self.describe_features(f, "consensus", beam_width, max_length).caption for f in features]
        return [self.vocab.decode(self.decoder.beam_search(f, beam_width, max_length, n_best=1)[0].ids)
                for f in features]

    def _check(self, method: str, beam_width: int, max_length: int | None):
        """The settings every door checks the same way (captioning.settings); SettingsError (a ValueError)."""
        settings = parse_settings(method, beam_width, max_length, longest=self.max_length)
        return settings.method, settings.beam_width, settings.max_length

    def _consensus(self) -> Consensus:
        if self.consensus is None:
            raise SettingsError(f"consensus re-ranking needs {FAMILIARITY_FILE} and {NEIGHBOUR_CAPTIONS_FILE} beside "
                                "the models (python -m training.build_familiarity writes both)")
        return self.consensus

    def _add_candidates(self, result: CaptionResult, hyps: list[Hypothesis], scores: list[float] | None = None) -> None:
        """The n-best list and the score it is ranked by: length-normalised log-probability, or ``scores``."""
        result.candidates = [(self.vocab.decode(h.ids), h.logprob) for h in hyps]
        result.candidate_scores = scores if scores is not None else [h.score(LENGTH_PENALTY) for h in hyps]

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
        sims[:N_SPECIAL] = -np.inf  # <pad>, <unk>, <start>, <end>
        sims[self.vocab.index[word]] = -np.inf
        best = np.argsort(-sims)[:k]
        return [(self.vocab.words[i], float(sims[i])) for i in best]
