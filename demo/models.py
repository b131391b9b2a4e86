"""The three caption models behind the demo, loaded once and shared by every request.

    models = ModelSet.load("weights")                 # or ModelSet.load(weights_dir_from_env())
    result = models.caption(image, models.page_settings(beam_width=3))   # one encoder pass, 4 decoders x 4 methods
    result.captions("beam")                           # {"learned": ..., "fasttext": ..., "word2vec": ...}

Nothing here holds a model at module level: the app builds one ModelSet in its
factory and hands it to the UI and the HTTP routes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captioning import Captioner, CaptionResult, ImageError
from captioning.captioner import FAMILIARITY_FILE, REFERENCE_FILES
from captioning.bundle import recover_bundle
from captioning.concepts import top_labels
from captioning.familiarity import Familiarity, FamiliarityResult
from captioning.settings import DEFAULT_BEAM_WIDTH, METHODS, SettingsError, parse_settings
from captioning.ensemble import ENSEMBLE_METRICS_FILE, Ensemble
from captioning.seed_runs import SEED_RUNS_FILE
from captioning.variants import ENSEMBLE, LABELS, VARIANTS
from captioning.vocab import N_SPECIAL

from .admission import Admission

log = logging.getLogger("demo")

MODELS = (*VARIANTS, ENSEMBLE)  # everything that captions a photo, in the page's and the API's order
# What the app reads beside the bundle folders: the familiarity and consensus references, the
# ensemble's scores and the multi-seed results (About tab). A model repository carries the same.
BESIDE_BUNDLES = (*REFERENCE_FILES, ENSEMBLE_METRICS_FILE, SEED_RUNS_FILE)
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")  # a Hub repository: USER/NAME
FEATURE_CACHE_SIZE = 32

WEIGHTS_DIR_ENV = "CAPTION_WEIGHTS_DIR"
WEIGHTS_REPO_ENV = "CAPTION_WEIGHTS_REPO"
WEIGHTS_REVISION_ENV = "CAPTION_WEIGHTS_REVISION"

__all__ = ["CaptionSet", "ModelSet", "Seen", "Settings", "SettingsError", "VARIANTS", "MODELS", "LABELS", "METHODS",
           "DEFAULT_BEAM_WIDTH", "check_settings", "weights_dir_from_env"]


@dataclass(frozen=True)
class Settings:
    """What to compute for one photo: the decoding methods (the page shows them all, an API
    call asks for one), with one beam width and caption limit for all of them."""

    methods: tuple[str, ...]
    beam_width: int
    max_length: int

    @property
    def method(self) -> str:
        return self.methods[0]


@dataclass
class Seen:
    """What the encoder saw, from its one forward pass over the photo."""

    features: np.ndarray  # (feature_dim,)
    class_probs: np.ndarray | None  # (1000,) ImageNet class probabilities; None for a headless encoder
    labels: list[tuple[str, float]] = field(default_factory=list)  # the top ImageNet classes: (name, p)
    familiarity: FamiliarityResult | None = None  # None when the reference file is not available


@dataclass
class CaptionSet:
    """One image captioned by every model with every requested method, from one encoder pass."""

    settings: Settings
    seen: Seen
    results: dict[str, dict[str, CaptionResult]]  # model -> method -> result
    encode_seconds: float
    features_cached: bool = False

    def captions(self, method: str | None = None) -> dict[str, str]:
        method = method or self.settings.method
        return {name: by_method[method].caption for name, by_method in self.results.items()}

    def as_json(self) -> dict:
        """The JSON answer of POST /api/caption (one method): the three captions first, then the details."""
        method = self.settings.method
        results = {name: by_method[method] for name, by_method in self.results.items()}
        return {
            **self.captions(method),
            "method": method,
            "beam_width": self.settings.beam_width,
            "max_length": self.settings.max_length,
            "timings": {"encode_seconds": round(self.encode_seconds, 4),
                        **{name: round(r.seconds, 4) for name, r in results.items()}},
            "details": {name: {"words": r.words, "word_probs": [round(p, 4) for p in r.word_probs],
                               "candidates": [{"caption": c, "logprob": round(lp, 4), "score": round(score, 4)}
                                              for c, lp, score in r.ranked_candidates()],
                               "concepts": r.concepts}
                        for name, r in results.items()},
            "encoder_labels": [{"label": label, "probability": round(p, 4)} for label, p in self.seen.labels],
            "familiarity": None if self.seen.familiarity is None else {
                "percentile": round(self.seen.familiarity.percentile, 1), "familiar": self.seen.familiarity.familiar},
        }


class WeightsSourceError(ValueError):
    """The environment names the models' source in a way that cannot work."""


def weights_dir_from_env(default: str | Path = "weights") -> Path:
    """The folder holding learned/, fasttext/ and word2vec/.

    With CAPTION_WEIGHTS_REPO=user/name set, the bundles are downloaded from that
    Hugging Face Hub repository (once: later starts reuse the local Hub cache);
    otherwise CAPTION_WEIGHTS_DIR, else ``default``.
    """
    repo = os.environ.get(WEIGHTS_REPO_ENV, "").strip()
    if repo:
        if not REPO_ID.match(repo):
            raise WeightsSourceError(f"{WEIGHTS_REPO_ENV} must name a Hub repository as USER/NAME, not {repo!r}")
        return download_weights(repo, revision=os.environ.get(WEIGHTS_REVISION_ENV) or None)
    return Path(os.environ.get(WEIGHTS_DIR_ENV) or default)


def download_weights(repo_id: str, revision: str | None = None) -> Path:
    from huggingface_hub import snapshot_download

    log.info("downloading caption models from the Hub repository %s", repo_id)
    path = snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=weights_patterns())
    return Path(path)


def weights_patterns(variants=VARIANTS) -> list[str]:
    """The files of a weights folder that a model repository holds: the bundles and BESIDE_BUNDLES."""
    return [f"{v}/*" for v in variants] + list(BESIDE_BUNDLES)


def check_settings(method, beam_width, max_length, longest: int) -> Settings:
    """One method's settings from a person (strings from a form are fine); SettingsError if unusable."""
    parsed = parse_settings(method, beam_width, max_length, longest)
    return Settings((parsed.method,), parsed.beam_width, parsed.max_length)


class ModelSet:
    """The shared image encoder and the three captioners, plus a small cache of image features
    (a control change re-decodes the current image without encoding it again)."""

    def __init__(self, captioners: dict[str, Captioner], source: Path | None = None,
                 admission: Admission | None = None, familiarity=None, ensemble_metrics: dict | None = None):
        missing = [v for v in VARIANTS if v not in captioners]
        if missing:
            raise ValueError(f"missing model(s): {', '.join(missing)}")
        self.captioners = {v: captioners[v] for v in VARIANTS}
        # Everything that captions a photo: the three models, then the three together (one more
        # decoder over the same features: their averaged next-word log-probabilities).
        self.decoders: dict[str, Captioner] = {**self.captioners, ENSEMBLE: Ensemble(list(self.captioners.values()))}
        self.ensemble_metrics = ensemble_metrics or {}  # weights/ensemble_metrics.json (training.evaluate_ensemble)
        self.encoder = self.captioners[VARIANTS[0]].encoder
        self.source = source
        self.admission = admission or Admission()  # one image at a time, a bounded queue behind it
        self.familiarity: Familiarity | None = familiarity  # None without its reference file
        self._seen: OrderedDict[str, Seen] = OrderedDict()
        self._projections: dict[tuple[str, int], tuple] = {}  # (model, n words) -> (words, PCA mean, axes, ratio)

    @classmethod
    def load(cls, weights_dir: str | Path) -> "ModelSet":
        weights_dir = Path(weights_dir)
        started = time.perf_counter()
        for variant in VARIANTS:  # put back a bundle that an interrupted publish left aside
            recover_bundle(weights_dir / variant)
        missing = [v for v in VARIANTS if not (weights_dir / v / "config.json").is_file()]
        if missing:
            raise FileNotFoundError(
                f"no trained model(s) {', '.join(missing)} under {weights_dir.resolve()}: train them with "
                f"`python -m training.train --variant all`, point {WEIGHTS_DIR_ENV} at a weights folder, "
                f"or set {WEIGHTS_REPO_ENV} to a Hub repository holding them")
        reference = weights_dir / FAMILIARITY_FILE
        familiarity = Familiarity.load(reference) if reference.is_file() else None
        if familiarity is None:
            log.warning("no %s: the page will not say how familiar a photo is to the training photos, "
                        "guided decoding uses its strict threshold on every photo, and there is no consensus "
                        "re-ranking", reference)
        encoder, consensus = None, None
        captioners = {}
        for variant in VARIANTS:  # one encoder, one familiarity and one consensus reference, shared by the three
            captioner = Captioner.load(weights_dir / variant, encoder=encoder, familiarity=familiarity or False,
                                       consensus=consensus)
            encoder, consensus = captioner.encoder, captioner.consensus or False
            captioners[variant] = captioner
        scored = weights_dir / ENSEMBLE_METRICS_FILE
        ensemble_metrics = json.loads(scored.read_text(encoding="utf-8")) if scored.is_file() else None
        models = cls(captioners, weights_dir, familiarity=familiarity, ensemble_metrics=ensemble_metrics)
        models.warm_up()
        log.info("loaded %s from %s in %.1f s", ", ".join(VARIANTS), weights_dir, time.perf_counter() - started)
        return models

    def warm_up(self) -> None:
        """Trace the encoder's graph and vectorise the consensus references now, so the first user does not wait."""
        blank = np.full((self.encoder.spec.input_size,) * 2 + (3,), 128, dtype=np.uint8)
        features, _ = self.encoder.analyse(blank)
        for captioner in self.captioners.values():
            captioner.describe_features(features, "greedy", max_length=2)
        if self.captioners[VARIANTS[0]].consensus is not None:  # one, shared by the three
            self.captioners[VARIANTS[0]].consensus.warm_up()

    # -- captions -------------------------------------------------------------
    @property
    def max_length(self) -> int:
        """The longest caption (in words) every model can be asked for."""
        return min(c.max_length for c in self.captioners.values())

    def settings(self, method="greedy", beam_width=DEFAULT_BEAM_WIDTH, max_length=None) -> Settings:
        """Settings of one method (the API); see page_settings for all of them."""
        return check_settings(method, beam_width, max_length, self.max_length)

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods these models can decode with: all of METHODS, less consensus without its reference."""
        has_consensus = self.captioners[VARIANTS[0]].consensus is not None
        return tuple(m for m in METHODS if m != "consensus" or has_consensus)

    def page_settings(self, beam_width=DEFAULT_BEAM_WIDTH, max_length=None) -> Settings:
        """Every method at once, as the page shows them."""
        one = check_settings(METHODS[0], beam_width, max_length, self.max_length)
        return Settings(self.methods, one.beam_width, one.max_length)

    def caption(self, image, settings: Settings) -> CaptionSet:
        """Encode ``image`` (encoded bytes, a PIL image or an RGB array) once and caption it with
        the three models and every method of ``settings`` (from :meth:`settings` or :meth:`page_settings`).

        Raises ImageError (with a message fit for users) for anything that is not a usable
        image, including no image, and admission.Busy when too many requests wait already.
        """
        if image is None or (isinstance(image, bytes) and not image):
            raise ImageError("no image: upload a photo (or take one with the webcam)" if image is None
                             else "the file is empty")
        with self.admission.turn():
            started = time.perf_counter()
            seen, cached = self._look(image)
            encode_seconds = time.perf_counter() - started
            results = {name: self._describe(c, seen, settings) for name, c in self.decoders.items()}
        return CaptionSet(settings, seen, results, encode_seconds, cached)

    @staticmethod
    def _describe(captioner: Captioner, seen: Seen, settings: Settings) -> dict[str, CaptionResult]:
        """One decoder's caption by every method of ``settings``; beam and guided share one plain beam search."""
        searched: dict = {}
        return {method: captioner.describe_features(seen.features, method, settings.beam_width, settings.max_length,
                                                    class_probs=seen.class_probs, familiarity=seen.familiarity,
                                                    searched=searched)
                for method in settings.methods}

    def _look(self, image) -> tuple[Seen, bool]:
        """The encoder's view of ``image`` (features, ImageNet labels, familiarity); repeats of the
        same bytes come from a small cache, so moving a slider only decodes again."""
        key = hashlib.sha1(image).hexdigest() if isinstance(image, bytes) else None
        if key in self._seen:
            self._seen.move_to_end(key)
            return self._seen[key], True
        features, class_probs = self.encoder.analyse(image)
        seen = Seen(features, class_probs, top_labels(class_probs),
                    None if self.familiarity is None else self.familiarity.score(features))
        if key is not None:
            self._seen[key] = seen
            while len(self._seen) > FEATURE_CACHE_SIZE:
                self._seen.popitem(last=False)
        return seen, False

    def test_scores(self) -> dict[str, dict]:
        """Each decoder's test-set scores (a bundle's metrics.json; the ensemble's own file)."""
        return {**{name: c.metrics for name, c in self.captioners.items()}, ENSEMBLE: self.ensemble_metrics}

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

    def projection(self, name: str, n_words: int = 60, extra: tuple[str, ...] = ()):
        """Model ``name``'s ``n_words`` most frequent caption words, plus the ``extra`` words it knows,
        placed on the two principal axes of the frequent words' embeddings (so the map does not
        move when extra words are added).

        Returns (words, (n, 2) coordinates, explained variance ratio of the two axes).
        """
        captioner = self.captioners[name]
        if (name, n_words) not in self._projections:
            first = N_SPECIAL  # skip <pad>, <unk>, <start>, <end>
            words = captioner.vocab.words[first:first + n_words]
            self._projections[(name, n_words)] = (words, *fit_pca_2d(captioner.embeddings[first:first + len(words)]))
        words, mean, axes, ratio = self._projections[(name, n_words)]
        words = words + [w for w in dict.fromkeys(extra) if w in captioner.vocab and w not in words]
        vectors = captioner.embeddings[[captioner.vocab.index[w] for w in words]].astype(np.float64)
        return words, (vectors - mean) @ axes.T, ratio


def fit_pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, d) -> (mean (d,), the two principal axes (2, d), their explained variance ratio (2,)).
    Each axis is signed so that the point farthest along it is positive: the picture does not
    flip between runs."""
    vectors = np.asarray(vectors, dtype=np.float64)
    mean = vectors.mean(axis=0)
    centred = vectors - mean
    axes = np.zeros((2, vectors.shape[1]))
    if len(centred) < 2:
        return mean, axes, np.zeros(2)
    _, singular, found = np.linalg.svd(centred, full_matrices=False)
    axes[:len(found[:2])] = found[:2]
    coords = centred @ axes.T
    signs = np.sign(coords[np.abs(coords).argmax(axis=0), range(2)])
    signs[signs == 0] = 1
    variance = singular ** 2
    ratio = variance[:2] / variance.sum() if variance.sum() > 0 else np.zeros(2)
    return mean, axes * signs[:, None], np.pad(ratio, (0, 2 - len(ratio)))


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) -> ((n, 2) coordinates on the two principal axes, their explained variance ratio)."""
    mean, axes, ratio = fit_pca_2d(vectors)
    return (np.asarray(vectors, dtype=np.float64) - mean) @ axes.T, ratio
