"""Consensus re-ranking (Devlin et al. 2015, "Exploring Nearest Neighbor Approaches for Image
Captioning"): of beam search's n-best captions, keep the one that agrees most with what people
wrote about the training photos most like this one.

    photo features --familiarity's projected cosine--> the K nearest training photos  (K = 20)
    their 5 K reference captions, pooled
    each candidate's CIDEr-D against the pool (training-split document frequencies, <end> counted,
    as the SCST reward; captioning.cider)  -->  candidates re-ordered by it, best first

The model still writes every word: re-ranking only chooses among the k captions beam search
finished (k = the beam width), so it cannot say what the beam did not.  What it changes is beam
search's own ranking, by log-probability, which favours the short, safe caption ("a man sitting on
a bench") over a more specific one the neighbours' captions support ("a man in a black jacket is
sitting on a bench"; the learned model on a Flickr8k test photo).

Why K = 20: ``python -m tools.consensus_k`` re-ranks the committed models' beam-3 n-best on the dev
split with K = 5, 10, 20 and 40; 20 had the best mean dev CIDEr over the three models (the table is
in the README, *Consensus re-ranking*).

The reference (:data:`NEIGHBOUR_CAPTIONS_FILE` beside the bundles, written by
``python -m training.build_familiarity``) is a JSON file of the training photos' reference
captions, keyed by file name; the nearest photos come from the familiarity reference
(``familiarity.h5``), whose training photos it must cover.  Loading checks its size and shape and
fails with a :class:`ConsensusError` that names the file.

    consensus = Consensus(Familiarity.load(), NeighbourCaptions.load("weights/neighbour_captions.json"))
    ranked, scores = consensus.rerank(features, hyps, vocab)   # hyps from Decoder.beam_search
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .cider import CiderDIndex
from .decoding import Hypothesis
from .familiarity import Familiarity
from .vocab import Vocabulary

NEIGHBOUR_CAPTIONS_FILE = "neighbour_captions.json"
FORMAT_VERSION = 1
NEIGHBOURS = 20  # training photos whose captions judge the candidates (chosen on dev: see the docstring)
MAX_FILE_BYTES = 32 * 2**20  # the committed file is about 2 MB; checked before anything is read


class ConsensusError(ValueError):
    """The neighbour-captions reference is missing, malformed or does not match the familiarity reference."""


class NeighbourCaptions:
    """The training photos' reference captions: file name -> cleaned captions (as in the corpus)."""

    def __init__(self, captions: Mapping[str, Sequence[str]]):
        self.captions = {name: list(refs) for name, refs in captions.items()}

    @classmethod
    def from_corpus(cls, corpus, split: str = "train") -> "NeighbourCaptions":
        return cls(corpus.captions_of(sorted(corpus.split(split))))

    def save(self, path: str | Path) -> None:
        """Write atomically; the same captions give the same bytes."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        body = {"format_version": FORMAT_VERSION, "captions": dict(sorted(self.captions.items()))}
        tmp.write_text(json.dumps(body, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "NeighbourCaptions":
        path = Path(path)

        def fail(message: str):
            raise ConsensusError(f"{path}: {message}")

        if not path.is_file():
            fail("file is missing (build it with python -m training.build_familiarity)")
        if path.stat().st_size > MAX_FILE_BYTES:
            fail(f"file is larger than {MAX_FILE_BYTES} bytes, the most a reference may hold")
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            fail(f"not a JSON file ({exc})")
        if not isinstance(body, dict) or body.get("format_version") != FORMAT_VERSION:
            fail(f"expected a JSON object with format_version {FORMAT_VERSION}")
        captions = body.get("captions")
        if not isinstance(captions, dict) or not captions:
            fail("'captions' must be a non-empty object of file name -> captions")
        for name, refs in captions.items():
            if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r.strip() for r in refs):
                fail(f"the captions of {name!r} must be a non-empty list of non-empty strings")
        return cls(captions)


class Consensus:
    """Re-ranks one photo's candidate captions by CIDEr-D against its nearest training photos' captions."""

    def __init__(self, familiarity: Familiarity, neighbour_captions: NeighbourCaptions, neighbours: int = NEIGHBOURS):
        missing = [name for name in familiarity.train_names if name not in neighbour_captions.captions]
        if missing:
            raise ConsensusError(f"the neighbour captions lack {len(missing)} of the familiarity reference's "
                                 f"training photos (e.g. {missing[0]}); rebuild both with python -m "
                                 "training.build_familiarity")
        if neighbours < 1:
            raise ConsensusError(f"neighbours must be at least 1, not {neighbours}")
        self.familiarity = familiarity
        self.captions = neighbour_captions
        self.neighbours = neighbours
        self._cider: CiderDIndex | None = None  # built on first use: vectorising 30,000 captions takes a second

    @property
    def cider(self) -> CiderDIndex:
        """CIDEr-D with the training split's document frequencies; every reference vectorised once."""
        if self._cider is None:
            self._cider = CiderDIndex({name: self.captions.captions[name] for name in self.familiarity.train_names})
        return self._cider

    def warm_up(self) -> None:
        """Vectorise the references now (the app does at start-up, so that no visitor waits for it)."""
        _ = self.cider

    @property
    def encoder(self) -> str:
        return self.familiarity.encoder

    def scores(self, features: np.ndarray, captions: Sequence[Sequence[str]], finished: Sequence[bool]) -> np.ndarray:
        """Consensus (n,) of each caption (a word list) for one photo's features (feature_dim,)."""
        nearest = self.familiarity.nearest(features, self.neighbours)
        return self.cider.against(nearest, captions, finished)

    def rerank(self, features: np.ndarray, hyps: Sequence[Hypothesis],
               vocab: Vocabulary) -> tuple[list[Hypothesis], list[float]]:
        """``hyps`` (beam search's n-best, best first) re-ordered by consensus, highest first, with
        their scores; ties keep beam search's order."""
        if not hyps:
            return [], []
        consensus = self.scores(features, [[vocab.words[i] for i in h.ids] for h in hyps], [h.finished for h in hyps])
        order = sorted(range(len(hyps)), key=lambda i: -consensus[i])  # sorted() is stable
        return [hyps[i] for i in order], [float(consensus[i]) for i in order]
