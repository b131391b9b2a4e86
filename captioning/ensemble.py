"""Several caption models as one: greedy and beam search over their averaged log-probabilities.

    image -> ImageEncoder (once) -> features
          -> EnsembleDecoder: each member's LSTM step, side by side
             next-word score = mean over members of log p_m(word | prefix, image)
          -> Decoder.greedy / Decoder.beam_search (the same loops as a single model)

The score is the plain mean of the members' log-probabilities (a geometric mean of their
probabilities), not renormalised: the scores of one step sum to at most 1 in probability, and
a word that one member finds unlikely is held back by it.  An ensemble of one model is that
model, bit for bit.

The members must share the vocabulary (same words, same ids) and the image encoder;
:class:`EnsembleError` (a ValueError) says which differs.

>>> from captioning.ensemble import Ensemble
>>> ensemble = Ensemble.load(["weights/learned", "weights/fasttext", "weights/word2vec"])
>>> ensemble.caption("photo.jpg", method="beam", beam_width=3)
'a dog runs through the grass'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .captioner import Captioner
from .decoding import Decoder
from .encoders import ImageEncoder
from .familiarity import Familiarity
from .variants import ENSEMBLE

ENSEMBLE_NAME = ENSEMBLE
# Beside the bundle folders (weights/): the ensemble of the committed bundles, scored by
# training.evaluate_ensemble like a bundle's metrics.json and samples.json.
ENSEMBLE_METRICS_FILE = "ensemble_metrics.json"
ENSEMBLE_SAMPLES_FILE = "ensemble_samples.json"


class EnsembleError(ValueError):
    """The models cannot be combined (different vocabularies or encoders, or none at all)."""


def check_same_vocabulary(decoders: Sequence[Decoder], names: Sequence[str] | None = None) -> None:
    """Raise :class:`EnsembleError` unless every decoder has the first one's words with the same ids."""
    names = list(names or (f"model {i + 1}" for i in range(len(decoders))))
    first = decoders[0].vocab.words
    for decoder, name in zip(decoders[1:], names[1:]):
        words = decoder.vocab.words
        if words == first:
            continue
        if len(words) != len(first):
            detail = f"{len(words)} words against {len(first)}"
        else:
            i = next(i for i, (a, b) in enumerate(zip(words, first)) if a != b)
            detail = f"id {i} is '{words[i]}' there and '{first[i]}' in {names[0]}"
        raise EnsembleError(f"cannot ensemble models with different vocabularies: {name} differs from "
                            f"{names[0]} ({detail}); an ensemble averages next-word scores id by id")


class EnsembleDecoder(Decoder):
    """The members' step functions side by side, their next-word log-probabilities averaged.

    The state is one (h, c) pair whose columns hold each member's state in turn (and the image
    projection likewise), so that beam search and constrained beam search keep a hypothesis's
    state by indexing rows, as they do for a single :class:`~captioning.decoding.StepDecoder`.
    """

    def __init__(self, decoders: Sequence[Decoder], names: Sequence[str] | None = None):
        if not decoders:
            raise EnsembleError("an ensemble needs at least one model")
        check_same_vocabulary(decoders, names)
        self.decoders = list(decoders)
        self.vocab = self.decoders[0].vocab
        self._state_bounds = _bounds([d.initial_state(1)[0].shape[1] for d in self.decoders])
        self._projection_bounds: list[tuple[int, int]] | None = None  # known after the first projection

    def project_image(self, features: np.ndarray) -> np.ndarray:
        parts = [d.project_image(features) for d in self.decoders]
        self._projection_bounds = _bounds([p.shape[1] for p in parts])
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def initial_state(self, n: int):
        states = [d.initial_state(n) for d in self.decoders]
        return _join([s[0] for s in states]), _join([s[1] for s in states])

    def step(self, word_ids: np.ndarray, state, image_projection: np.ndarray):
        """Each member's step on its own columns; the mean of their log-probabilities (n, vocab)."""
        if self._projection_bounds is None:
            raise RuntimeError("project_image must be called before step")
        h, c = state
        total, hs, cs = None, [], []
        for decoder, (a, b), (p, q) in zip(self.decoders, self._state_bounds, self._projection_bounds):
            logprobs, (h_m, c_m) = decoder.step(word_ids, (_columns(h, a, b), _columns(c, a, b)),
                                                _columns(image_projection, p, q))
            total = logprobs if total is None else total + logprobs
            hs.append(h_m)
            cs.append(c_m)
        if len(self.decoders) > 1:
            total = total / len(self.decoders)
        return total, (_join(hs), _join(cs))


def _bounds(widths: Sequence[int]) -> list[tuple[int, int]]:
    ends = np.cumsum(widths).tolist()
    return [(end - width, end) for width, end in zip(widths, ends)]


def _columns(array: np.ndarray, a: int, b: int) -> np.ndarray:
    if a == 0 and b == array.shape[1]:
        return array  # a single member: its own array, untouched
    return np.ascontiguousarray(array[:, a:b])


def _join(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=1)


class Ensemble(Captioner):
    """A captioner whose decoder is an :class:`EnsembleDecoder` of several captioners' decoders.

    Everything a :class:`~captioning.captioner.Captioner` does from features on is inherited
    unchanged: ``describe_features`` (greedy, beam, and guided decoding: constrained beam search
    takes any decoder with the step interface), ``caption_features_batch``, ``describe``,
    ``caption``, ``candidates``.  The image is encoded once, by the first member's encoder;
    guided decoding uses the first member's familiarity reference, consensus re-ranking its
    consensus reference.  Embeddings are the
    members' own (``members[i].nearest_words``).
    """

    def __init__(self, captioners: Sequence[Captioner], name: str = ENSEMBLE_NAME):
        captioners = list(captioners)
        if not captioners:
            raise EnsembleError("an ensemble needs at least one model")
        first = captioners[0]
        for other in captioners[1:]:
            if other.encoder.name != first.encoder.name:
                raise EnsembleError(f"cannot ensemble models with different image encoders: {other.name} uses "
                                    f"{other.encoder.name}, {first.name} uses {first.encoder.name}")
        names = [c.name for c in captioners]
        if len(set(names)) < len(names):  # two bundles of one variant: their messages name their folders
            names = [str(c.bundle.path) if c.bundle is not None else c.name for c in captioners]
        self.members = captioners
        self.bundle = None  # no bundle of its own
        self.encoder = first.encoder
        self.familiarity = first.familiarity
        self.consensus = first.consensus
        self.decoder = EnsembleDecoder([c.decoder for c in captioners], names)
        self.vocab = self.decoder.vocab
        self.max_length = min(c.max_length for c in captioners)
        self._name = name

    @classmethod
    def load(cls, paths: Sequence[str | Path], encoder: ImageEncoder | None = None,
             familiarity: Familiarity | str | Path | bool | None = None, name: str = ENSEMBLE_NAME) -> "Ensemble":
        """The bundles at ``paths``, sharing one encoder and one familiarity reference
        (``familiarity`` as for :meth:`Captioner.load`, found beside the first bundle by default)."""
        if not paths:
            raise EnsembleError("an ensemble needs at least one model")
        first = Captioner.load(paths[0], encoder=encoder, familiarity=familiarity)
        shared = first.familiarity if first.familiarity is not None else False
        rest = [Captioner.load(p, encoder=first.encoder, familiarity=shared, consensus=first.consensus or False)
                for p in paths[1:]]
        return cls([first, *rest], name=name)

    @property
    def name(self) -> str:
        return self._name

    @property
    def config(self) -> dict:
        return {"name": self._name, "encoder": self.encoder.name, "max_length": self.max_length,
                "members": [c.name for c in self.members]}

    @property
    def metrics(self) -> dict:
        return {}

    @property
    def embeddings(self) -> np.ndarray:
        raise AttributeError("an ensemble has no embedding of its own; ask one of its members")

    def nearest_words(self, word: str, k: int = 10):
        raise AttributeError("an ensemble has no embedding of its own; ask one of its members")
