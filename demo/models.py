"""The three caption models behind the demo, loaded once and shared by every request.

    models = ModelSet.load("weights")          # or ModelSet.load(weights_dir_from_env())
    result = models.caption(image, "beam", 3)  # encode once, decode with all three models
    result.captions()                          # {"learned": ..., "fasttext": ..., "word2vec": ...}

Nothing here holds a model at module level: the app builds one ModelSet in its
factory and hands it to the UI and the HTTP routes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captioning import Captioner, CaptionResult, ImageError

from .admission import Admission

log = logging.getLogger("demo")

VARIANTS = ("learned", "fasttext", "word2vec")
LABELS = {"learned": "Learned embedding", "fasttext": "FastText", "word2vec": "Word2Vec"}
METHODS = ("greedy", "beam")
MAX_BEAM_WIDTH = 10
DEFAULT_BEAM_WIDTH = 3
FEATURE_CACHE_SIZE = 32

WEIGHTS_DIR_ENV = "CAPTION_WEIGHTS_DIR"
WEIGHTS_REPO_ENV = "CAPTION_WEIGHTS_REPO"
WEIGHTS_REVISION_ENV = "CAPTION_WEIGHTS_REVISION"


class SettingsError(ValueError):
    """A decoding setting (method, beam width, length) is not acceptable; the message says why."""


@dataclass(frozen=True)
class Settings:
    method: str
    beam_width: int
    max_length: int


@dataclass
class CaptionSet:
    """One image captioned by every model with the same settings."""

    settings: Settings
    results: dict[str, CaptionResult]
    encode_seconds: float
    features_cached: bool = False

    def captions(self) -> dict[str, str]:
        return {name: r.caption for name, r in self.results.items()}

    def as_json(self) -> dict:
        """The JSON answer of POST /api/caption: the three captions first, then the details."""
        return {
            **self.captions(),
            "method": self.settings.method,
            "beam_width": self.settings.beam_width,
            "max_length": self.settings.max_length,
            "timings": {"encode_seconds": round(self.encode_seconds, 4),
                        **{name: round(r.seconds, 4) for name, r in self.results.items()}},
            "details": {name: {"words": r.words, "word_probs": [round(p, 4) for p in r.word_probs],
                               "candidates": [{"caption": c, "logprob": round(lp, 4)} for c, lp in r.candidates]}
                        for name, r in self.results.items()},
        }


def weights_dir_from_env(default: str | Path = "weights") -> Path:
    """The folder holding learned/, fasttext/ and word2vec/.

    With CAPTION_WEIGHTS_REPO=user/name set, the bundles are downloaded from that
    Hugging Face Hub repository (once: later starts reuse the local Hub cache);
    otherwise CAPTION_WEIGHTS_DIR, else ``default``.
    """
    repo = os.environ.get(WEIGHTS_REPO_ENV, "").strip()
    if repo:
        return download_weights(repo, revision=os.environ.get(WEIGHTS_REVISION_ENV) or None)
    return Path(os.environ.get(WEIGHTS_DIR_ENV) or default)


def download_weights(repo_id: str, revision: str | None = None) -> Path:
    from huggingface_hub import snapshot_download

    log.info("downloading caption models from the Hub repository %s", repo_id)
    path = snapshot_download(repo_id=repo_id, revision=revision,
                             allow_patterns=[f"{v}/*" for v in VARIANTS])
    return Path(path)


def _whole_number(value, name: str, top: int) -> int:
    """``value`` (a number or a form string) as an int in 1..top, else SettingsError."""
    problem = SettingsError(f"{name} must be a whole number from 1 to {top}, not {value!r}")
    if isinstance(value, bool) or (isinstance(value, str) and not value.isascii()):  # True, '７'
        raise problem
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise problem from None
    if not number.is_integer() or not 1 <= number <= top:
        raise problem
    return int(number)


def check_settings(method, beam_width, max_length, longest: int) -> Settings:
    """Validate user-supplied decoding settings (strings from a form are fine)."""
    method = str(method or "").strip().lower()
    if method not in METHODS:
        raise SettingsError(f"method must be 'greedy' or 'beam', not {method!r}")
    width = _whole_number(beam_width, "beam_width", MAX_BEAM_WIDTH)
    length = longest if max_length is None or max_length == "" else _whole_number(max_length, "max_length", longest)
    return Settings(method, width, length)


class ModelSet:
    """The shared image encoder and the three captioners, plus a small cache of image features
    (a control change re-decodes the current image without encoding it again)."""

    def __init__(self, captioners: dict[str, Captioner], source: Path | None = None,
                 admission: Admission | None = None):
        missing = [v for v in VARIANTS if v not in captioners]
        if missing:
            raise ValueError(f"missing model(s): {', '.join(missing)}")
        self.captioners = {v: captioners[v] for v in VARIANTS}
        self.encoder = self.captioners[VARIANTS[0]].encoder
        self.source = source
        self.admission = admission or Admission()  # one image at a time, a bounded queue behind it
        self._features: OrderedDict[str, np.ndarray] = OrderedDict()
        self._projections: dict[tuple[str, int], tuple[list[str], np.ndarray, np.ndarray]] = {}

    @classmethod
    def load(cls, weights_dir: str | Path) -> "ModelSet":
        weights_dir = Path(weights_dir)
        started = time.perf_counter()
        missing = [v for v in VARIANTS if not (weights_dir / v / "config.json").is_file()]
        if missing:
            raise FileNotFoundError(
                f"no trained model(s) {', '.join(missing)} under {weights_dir.resolve()}: train them with "
                f"`python -m training.train --variant all`, point {WEIGHTS_DIR_ENV} at a weights folder, "
                f"or set {WEIGHTS_REPO_ENV} to a Hub repository holding them")
        encoder = None
        captioners = {}
        for variant in VARIANTS:
            captioner = Captioner.load(weights_dir / variant, encoder=encoder)
            encoder = captioner.encoder  # one encoder shared by the three
            captioners[variant] = captioner
        models = cls(captioners, weights_dir)
        models.warm_up()
        log.info("loaded %s from %s in %.1f s", ", ".join(VARIANTS), weights_dir, time.perf_counter() - started)
        return models

    def warm_up(self) -> None:
        """Trace the encoder's graph now so the first user does not wait for it."""
        blank = np.full((self.encoder.spec.input_size,) * 2 + (3,), 128, dtype=np.uint8)
        features = self.encoder.features(blank)
        for captioner in self.captioners.values():
            captioner.describe_features(features, "greedy", max_length=2)

    # -- captions -------------------------------------------------------------
    @property
    def max_length(self) -> int:
        """The longest caption (in words) every model can be asked for."""
        return min(c.max_length for c in self.captioners.values())

    def settings(self, method="greedy", beam_width=DEFAULT_BEAM_WIDTH, max_length=None) -> Settings:
        return check_settings(method, beam_width, max_length, self.max_length)

    def caption(self, image, settings: Settings) -> CaptionSet:
        """Encode ``image`` (encoded bytes, a PIL image or an RGB array) once and caption it with
        the three models, with ``settings`` from :meth:`settings`.

        Raises ImageError (with a message fit for users) for anything that is not a usable
        image, including no image, and admission.Busy when too many requests wait already.
        """
        if image is None or (isinstance(image, bytes) and not image):
            raise ImageError("no image: upload a photo (or take one with the webcam)" if image is None
                             else "the file is empty")
        with self.admission.turn():
            started = time.perf_counter()
            features, cached = self._encode(image)
            encode_seconds = time.perf_counter() - started
            results = {name: c.describe_features(features, settings.method, settings.beam_width, settings.max_length)
                       for name, c in self.captioners.items()}
        return CaptionSet(settings, results, encode_seconds, cached)

    def _encode(self, data) -> tuple[np.ndarray, bool]:
        if not isinstance(data, bytes):
            return self.encoder.features(data), False
        key = hashlib.sha1(data).hexdigest()
        if key in self._features:
            self._features.move_to_end(key)
            return self._features[key], True
        features = self.encoder.features(data)
        self._features[key] = features
        while len(self._features) > FEATURE_CACHE_SIZE:
            self._features.popitem(last=False)
        return features, False

    # -- embeddings -------------------------------------------------------------
    def neighbours(self, word: str, k: int = 10) -> dict[str, list[tuple[str, float]] | None]:
        """Each model's ``k`` nearest words to ``word``; None for a model that does not know it."""
        found: dict[str, list[tuple[str, float]] | None] = {}
        for name, captioner in self.captioners.items():
            try:
                found[name] = captioner.nearest_words(word, k)
            except KeyError:
                found[name] = None
        return found

    def projection(self, name: str, n_words: int = 60) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The ``n_words`` most frequent caption words of model ``name`` projected to 2-D with PCA.

        Returns (words, (n, 2) coordinates, explained variance ratio of the two axes).
        """
        key = (name, n_words)
        if key not in self._projections:
            captioner = self.captioners[name]
            first = 4  # ids 0-3 are <pad>, <unk>, <start>, <end>
            words = captioner.vocab.words[first:first + n_words]
            vectors = captioner.embeddings[first:first + len(words)].astype(np.float64)
            self._projections[key] = (words, *pca_2d(vectors))
        return self._projections[key]


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) -> ((n, 2) coordinates on the two principal axes, their explained variance ratio)."""
    centred = vectors - vectors.mean(axis=0)
    if len(centred) < 2:
        return np.zeros((len(centred), 2)), np.zeros(2)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ axes[:2].T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    variance = singular ** 2
    ratio = variance[:2] / variance.sum() if variance.sum() > 0 else np.zeros(2)
    # A fixed sign per axis, so the picture does not flip between runs.
    signs = np.sign(coords[np.abs(coords).argmax(axis=0), range(2)])
    signs[signs == 0] = 1
    return coords * signs, np.pad(ratio, (0, 2 - len(ratio)))
