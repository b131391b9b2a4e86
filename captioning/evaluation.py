"""Caption evaluation: COCO metrics, NLTK corpus BLEU and simple caption statistics.

All functions are pure: they take predicted captions keyed by image id and return
flat dictionaries of numbers. Captions are expected to be already cleaned (see
``captioning.text.clean_caption``): lowercase words separated by single spaces.

* ``coco_scores`` -- the standard COCO caption metrics from ``pycocoevalcap``
  (BLEU-1..4, METEOR, ROUGE-L, CIDEr). Needs Java for the PTB tokenizer and METEOR.
* ``nltk_corpus_bleu`` -- cumulative corpus BLEU-1..4 from NLTK, pure Python.
* ``caption_statistics`` -- vocabulary size, length, diversity and how often the
  model just repeats a training caption.
* ``evaluate_predictions`` -- all of the above merged into one flat dict.
"""

from __future__ import annotations

import shutil
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence

from nltk.translate.bleu_score import corpus_bleu
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

Predictions = Mapping[str, str]
References = Mapping[str, Sequence[str]]

JAVA_HINT = (
    "Java is required by pycocoevalcap (PTB tokenizer and METEOR) but `java` is not "
    "on PATH. Install it, e.g. on Debian/Ubuntu: `apt-get install default-jre-headless`. "
    "Passing meteor=False skips METEOR (the slow, memory-hungry part), but the PTB "
    "tokenizer still needs Java."
)


def _check_inputs(predictions: Predictions, references: References) -> None:
    """Every predicted image needs at least one reference caption."""
    if not predictions:
        raise ValueError("no predictions to evaluate")
    missing = sorted(str(i) for i in predictions if not references.get(i))
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ValueError(f"{len(missing)} predicted image(s) have no references: {shown}")


def _normalise(caption: str) -> str:
    return " ".join(caption.split())


def _close_meteor(meteor: Meteor) -> None:
    """Stop the Meteor java subprocess now instead of waiting for ``Meteor.__del__``.

    pycocoevalcap 1.2 has no ``close()``; its ``__del__`` acquires ``meteor.lock``,
    which ``compute_score`` never releases if it raised (e.g. java died), so relying
    on ``__del__`` can leak the process or deadlock at garbage collection.
    """
    proc = meteor.meteor_p
    try:
        proc.stdin.close()
    except OSError:  # broken pipe if java already exited
        pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    # Fresh lock so the later __del__ cannot block; its kill()/wait() are then no-ops.
    meteor.lock = threading.Lock()


class MeteorScorer:
    """One METEOR Java process for several scorings: starting it (2 GB of heap, the paraphrase
    tables) is most of a scoring's time, and an evaluation scores several decoding settings.  Use
    it as a context manager; the process stops on exit (or :meth:`close`) and after a failure."""

    def __init__(self):
        self._meteor: Meteor | None = None

    def __enter__(self) -> "MeteorScorer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def score(self, gts: dict, res: dict) -> float:
        """Corpus METEOR of PTB-tokenized ``res`` against ``gts`` (as pycocoevalcap's ``compute_score``)."""
        if self._meteor is None:
            self._meteor = Meteor()
        try:
            score, _ = self._meteor.compute_score(gts, res)
        except (ValueError, OSError) as exc:  # empty/garbled output or broken pipe
            self.close()
            raise RuntimeError("METEOR java subprocess failed (it needs ~2 GB of heap: -Xmx2G)") from exc
        return float(score)

    def close(self) -> None:
        if self._meteor is not None:
            _close_meteor(self._meteor)
            self._meteor = None


def coco_scores(
    predictions: Predictions, references: References, meteor: bool = True,
    meteor_scorer: MeteorScorer | None = None,
) -> dict[str, float]:
    """Corpus-level COCO caption metrics via ``pycocoevalcap``.

    ``predictions`` maps image id -> predicted caption, ``references`` maps image id ->
    list of reference captions (extra reference images are ignored). Both sides are
    PTB-tokenized as in the official COCO evaluation. Returns keys "BLEU-1".."BLEU-4",
    "METEOR" (only if ``meteor``; by ``meteor_scorer`` when given, else by a Java process
    started for this call), "ROUGE-L", "CIDEr".

    CIDEr's IDF weights come from the references of the evaluated images, so it is
    only meaningful over several images (a single image always scores 0).

    Raises ValueError if a predicted image has no references and RuntimeError if
    ``java`` is not installed.
    """
    _check_inputs(predictions, references)
    if shutil.which("java") is None:
        raise RuntimeError(JAVA_HINT)

    ids = list(predictions)
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in references[i]] for i in ids})
    res = tokenizer.tokenize({i: [{"caption": predictions[i]}] for i in ids})

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"BLEU-{n}": float(b) for n, b in enumerate(bleu, start=1)}
    if meteor and meteor_scorer is not None:
        scores["METEOR"] = meteor_scorer.score(gts, res)
    elif meteor:
        with MeteorScorer() as scorer:
            scores["METEOR"] = scorer.score(gts, res)
    scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return scores


def nltk_corpus_bleu(predictions: Predictions, references: References) -> dict[str, float]:
    """Cumulative corpus BLEU-1..4 with NLTK (keys "NLTK-BLEU-1".."NLTK-BLEU-4").

    BLEU-n uses uniform weights 1/n over 1..n-grams. Captions are split on
    whitespace (no NLTK data needed). No smoothing is applied, as is standard for
    corpus BLEU: if the corpus has no matching n-grams of some order, that score is 0.
    NLTK's brevity penalty uses the closest reference length, like pycocoevalcap,
    but the two implementations can still differ slightly.
    """
    _check_inputs(predictions, references)
    ids = list(predictions)
    hyps = [predictions[i].split() for i in ids]
    refs = [[r.split() for r in references[i]] for i in ids]
    weights = [tuple([1.0 / n] * n) for n in range(1, 5)]
    with warnings.catch_warnings():  # NLTK warns about zero n-gram overlaps
        warnings.simplefilter("ignore", UserWarning)
        bleu = corpus_bleu(refs, hyps, weights=weights)
    return {f"NLTK-BLEU-{n}": float(b) for n, b in enumerate(bleu, start=1)}


def caption_statistics(
    predictions: Predictions, training_captions: Iterable[str]
) -> dict[str, float | int]:
    """Diversity statistics of the predicted captions.

    * "vocabulary_used": number of distinct words across all predicted captions
    * "copied_from_training": share (0..1) of predictions that appear verbatim among
      the training captions (compared after whitespace normalisation)
    * "mean_length": mean number of words per predicted caption
    * "distinct_captions": number of distinct predicted caption strings
    * "distinct_share": distinct_captions / number of predictions
    """
    if not predictions:
        raise ValueError("no predictions to evaluate")
    captions = [_normalise(c) for c in predictions.values()]
    training = {_normalise(c) for c in training_captions}
    words = [c.split() for c in captions]
    total = len(captions)
    distinct = len(set(captions))
    return {
        "vocabulary_used": len({w for ws in words for w in ws}),
        "copied_from_training": sum(c in training for c in captions) / total,
        "mean_length": sum(len(ws) for ws in words) / total,
        "distinct_captions": distinct,
        "distinct_share": distinct / total,
    }


def evaluate_predictions(
    predictions: Predictions,
    references: References,
    training_captions: Iterable[str],
    meteor: bool = True,
    meteor_scorer: MeteorScorer | None = None,
) -> dict[str, float | int]:
    """``coco_scores`` + ``nltk_corpus_bleu`` + ``caption_statistics`` in one flat dict."""
    return {
        **coco_scores(predictions, references, meteor=meteor, meteor_scorer=meteor_scorer),
        **nltk_corpus_bleu(predictions, references),
        **caption_statistics(predictions, training_captions),
    }
