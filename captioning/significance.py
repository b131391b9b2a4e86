"""Paired bootstrap over test images: is one captioner's corpus score really higher than another's?

The corpus scores of two systems captioning the same test images are paired: an easy image is
easy for both.  Resampling the *images* with replacement (the same resample for both systems)
and recomputing both corpus scores on every resample gives the sampling distribution of the
difference (Koehn 2004; Efron & Tibshirani 1993).  :func:`paired_bootstrap` covers the
uncertainty that comes from the choice of test images only, not the one from training (seeds);
:func:`seed_bootstrap` covers both, from several trained models (seeds) per system: each resample
draws the test images (paired) and, per system, its runs, and compares the means over the drawn
runs.

Per-image statistics (:class:`ImageStats`) are what makes the corpus score recomputable:

* CIDEr-D -- pycocoevalcap's ``Cider`` (which is CIDEr-D: clipped counts, length penalty,
  x10) returns one score per image; the corpus score is their mean.  The IDF weights come
  from the references of *all* the evaluated images and are kept fixed on every resample
  (recomputing them per resample would mostly measure the IDF's own noise).
* BLEU-4 -- corpus BLEU is not a mean of per-image BLEU: it sums clipped n-gram matches,
  n-gram counts and lengths over the corpus first.  The counts per image are read from
  pycocoevalcap's own ``BleuScorer`` (its ``ctest`` list: ``correct``, ``guess``,
  ``testlen`` and the reference lengths), with the "closest" reference length that
  ``Bleu.compute_score`` uses, and :func:`corpus_bleu` applies the scorer's formula (same
  ``tiny``/``small`` constants and brevity penalty) to their sums -- so on the full set it
  reproduces ``Bleu(4)`` exactly, and on a resample it is the BLEU that set would get.

Both sides are PTB-tokenized first, as in :func:`captioning.evaluation.coco_scores` (needs Java).

    a = image_statistics(predictions_a, references)
    b = image_statistics(predictions_b, references)          # same images, same order
    result = paired_bootstrap(a, b, resamples=10_000, seed=0)
    result["CIDEr"].difference, result["CIDEr"].low, result["CIDEr"].high, result["CIDEr"].p_value
    across = seed_bootstrap([a_seed0, a_seed1, a_seed2], [b_seed0, b_seed1, b_seed2])   # same Comparison type
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

N = 4  # BLEU order
# pycocoevalcap.bleu.bleu_scorer.BleuScorer.compute_score's constants
_TINY = 1e-15
_SMALL = 1e-9
METRICS = ("CIDEr", "BLEU-4")


@dataclass(frozen=True)
class ImageStats:
    """One system's per-image statistics, row i = image ``ids[i]``.

    ``cider``: (n,) CIDEr-D per image; ``correct``/``guess``: (n, 4) clipped n-gram matches and
    n-gram counts of the caption for n = 1..4; ``testlen``: (n,) caption length in tokens;
    ``reflen``: (n,) the closest reference length (ties: the shorter).
    """

    ids: tuple[str, ...]
    cider: np.ndarray
    correct: np.ndarray
    guess: np.ndarray
    testlen: np.ndarray
    reflen: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def corpus(self) -> dict[str, float]:
        """The corpus scores over all images: ``{"CIDEr": ..., "BLEU-4": ...}``."""
        return {"CIDEr": float(self.cider.mean()),
                "BLEU-4": float(corpus_bleu(self.correct.sum(0), self.guess.sum(0),
                                            self.testlen.sum(), self.reflen.sum()))}


@dataclass(frozen=True)
class Comparison:
    """Score of system A minus score of system B, with its bootstrap interval.

    ``low``/``high``: percentile interval at ``confidence``; ``p_value``: two-sided share,
    ``min(1, 2 * min(P*(d <= 0), P*(d >= 0)))`` over the resamples, with the +1 correction
    ((count + 1) / (resamples + 1)) so it is never exactly 0.
    """

    metric: str
    a: float
    b: float
    difference: float
    low: float
    high: float
    p_value: float
    confidence: float
    resamples: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def corpus_bleu(correct, guess, testlen, reflen, n: int = N):
    """pycocoevalcap's corpus BLEU-n from summed counts; vectorised over leading axes.

    ``correct``/``guess``: (..., >=n) summed clipped matches / n-gram counts; ``testlen``/
    ``reflen``: (...) summed caption / closest-reference lengths.
    """
    correct = np.asarray(correct, dtype=float)[..., :n]
    guess = np.asarray(guess, dtype=float)[..., :n]
    testlen = np.asarray(testlen, dtype=float)
    reflen = np.asarray(reflen, dtype=float)
    precision = np.prod((correct + _TINY) / (guess + _SMALL), axis=-1)
    bleu = precision ** (1.0 / n)
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    penalty = np.where(ratio < 1, np.exp(1 - 1 / np.maximum(ratio, _TINY)), 1.0)
    return bleu * penalty


def statistics_from_tokenized(gts: Mapping[str, Sequence[str]], res: Mapping[str, Sequence[str]]) -> ImageStats:
    """Per-image statistics from already tokenized captions, in pycocoevalcap's input format
    (image id -> list of space-joined tokenized captions; one caption per image in ``res``)."""
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer
    from pycocoevalcap.cider.cider import Cider

    if set(gts) != set(res):
        raise ValueError("references and predictions must cover the same images")
    ids = tuple(res)
    if not ids:
        raise ValueError("no predictions")
    gts = {i: list(gts[i]) for i in ids}
    res = {i: list(res[i]) for i in ids}
    _, cider = Cider().compute_score(gts, res)  # iterates gts.keys(): same order as ids
    scorer = BleuScorer(n=N)
    for i in ids:
        if len(res[i]) != 1 or not gts[i]:
            raise ValueError(f"image {i}: need one prediction and at least one reference")
        scorer += (res[i][0], gts[i])
    comps = scorer.ctest
    testlen = np.array([c["testlen"] for c in comps], dtype=float)
    reflen = np.array([scorer._single_reflen(c["reflen"], "closest", c["testlen"]) for c in comps], dtype=float)
    return ImageStats(ids=ids, cider=np.asarray(cider, dtype=float),
                      correct=np.array([c["correct"] for c in comps], dtype=float),
                      guess=np.array([c["guess"] for c in comps], dtype=float),
                      testlen=testlen, reflen=reflen)


def tokenize_references(references: Mapping[str, Sequence[str]], ids: Sequence[str]) -> dict[str, list[str]]:
    """PTB-tokenize the references of ``ids`` (as ``coco_scores`` does); needs Java."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from .evaluation import JAVA_HINT

    if shutil.which("java") is None:
        raise RuntimeError(JAVA_HINT)
    missing = [i for i in ids if not references.get(i)]
    if missing:
        raise ValueError(f"{len(missing)} image(s) have no references, e.g. {missing[0]}")
    return PTBTokenizer().tokenize({i: [{"caption": c} for c in references[i]] for i in ids})


def image_statistics(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                     tokenized_references: Mapping[str, Sequence[str]] | None = None) -> ImageStats:
    """Per-image CIDEr-D and BLEU counts of ``predictions`` (image id -> caption), both sides
    PTB-tokenized like :func:`captioning.evaluation.coco_scores`.  Pass the result of
    :func:`tokenize_references` as ``tokenized_references`` to tokenize them only once."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    ids = list(predictions)
    gts = tokenized_references if tokenized_references is not None else tokenize_references(references, ids)
    res = PTBTokenizer().tokenize({i: [{"caption": predictions[i]}] for i in ids})
    return statistics_from_tokenized({i: gts[i] for i in ids}, {i: res[i] for i in ids})


def _aligned(a: ImageStats, b: ImageStats) -> ImageStats:
    """``b`` reordered to ``a``'s image order (the pairing is by image id)."""
    if a.ids == b.ids:
        return b
    if set(a.ids) != set(b.ids):
        raise ValueError("the two systems must be scored on the same images")
    position = {i: k for k, i in enumerate(b.ids)}
    order = np.array([position[i] for i in a.ids])
    return ImageStats(a.ids, b.cider[order], b.correct[order], b.guess[order], b.testlen[order], b.reflen[order])


def _columns(s: ImageStats) -> np.ndarray:
    """(n, 11): cider, correct 1-4, guess 1-4, testlen, reflen -- everything resampling sums."""
    return np.column_stack([s.cider, s.correct[:, :N], s.guess[:, :N], s.testlen, s.reflen])


def _scores(sums: np.ndarray, n_images: int) -> dict[str, np.ndarray]:
    """Corpus scores from column sums (..., 11)."""
    return {"CIDEr": sums[..., 0] / n_images,
            "BLEU-4": corpus_bleu(sums[..., 1:1 + N], sums[..., 1 + N:1 + 2 * N], sums[..., -2], sums[..., -1])}


def resample_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n): how often each image is drawn in each bootstrap resample of n images."""
    idx = rng.integers(0, n, size=(resamples, n))
    flat = (idx + (np.arange(resamples) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n)


def paired_bootstrap(a: ImageStats, b: ImageStats, resamples: int = 10_000, seed: int = 0,
                     confidence: float = 0.95, chunk: int = 1000) -> dict[str, Comparison]:
    """Score of ``a`` minus score of ``b`` for CIDEr(-D) and BLEU-4, with a paired bootstrap
    over images: every resample draws n images with replacement and recomputes both systems'
    corpus scores on *the same* draw.  Deterministic for a given ``seed``
    (``numpy.random.default_rng``); vectorised (resample counts times the per-image table), in
    chunks of ``chunk`` resamples to bound memory."""
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError("need resamples >= 1 and 0 < confidence < 1")
    b = _aligned(a, b)
    n = len(a)
    table = np.hstack([_columns(a), _columns(b)])  # (n, 22)
    width = table.shape[1] // 2
    rng = np.random.default_rng(seed)
    diffs = {m: [] for m in METRICS}
    for start in range(0, resamples, chunk):
        counts = resample_counts(n, min(chunk, resamples - start), rng).astype(float)
        sums = counts @ table
        sa, sb = _scores(sums[:, :width], n), _scores(sums[:, width:], n)
        for m in METRICS:
            diffs[m].append(sa[m] - sb[m])
    observed_a, observed_b = a.corpus(), b.corpus()
    alpha = (1 - confidence) / 2
    out = {}
    for m in METRICS:
        d = np.concatenate(diffs[m])
        low, high = np.quantile(d, [alpha, 1 - alpha])
        below = (np.count_nonzero(d <= 0) + 1) / (resamples + 1)
        above = (np.count_nonzero(d >= 0) + 1) / (resamples + 1)
        out[m] = Comparison(metric=m, a=observed_a[m], b=observed_b[m],
                            difference=observed_a[m] - observed_b[m], low=float(low), high=float(high),
                            p_value=float(min(1.0, 2 * min(below, above))), confidence=confidence,
                            resamples=resamples)
    return out


def pairwise_table(systems: Mapping[str, ImageStats], resamples: int = 10_000, seed: int = 0,
                   confidence: float = 0.95, label: str = "") -> str:
    """A Markdown table: for each pair of systems (in the given order, first minus second),
    the CIDEr-D and BLEU-4 differences with their bootstrap interval and p-value."""
    names = list(systems)
    rows = [(first, second, paired_bootstrap(systems[first], systems[second], resamples, seed, confidence))
            for i, first in enumerate(names) for second in names[i + 1:]]
    return comparison_table(rows, label, confidence)


# -- across training seeds -------------------------------------------------------------------
def seed_bootstrap(a: Sequence[ImageStats], b: Sequence[ImageStats], resamples: int = 10_000, seed: int = 0,
                   confidence: float = 0.95, chunk: int = 1000) -> dict[str, Comparison]:
    """Mean score over the training runs (seeds) of system ``a`` minus that of ``b``, for CIDEr(-D)
    and BLEU-4, with a bootstrap over test images *and* seeds: every resample draws n test images
    with replacement (the same draw for both systems: paired) and, independently for each system,
    as many of its runs as it has, with replacement; the statistic is the difference of the two
    means over the drawn runs of their corpus scores on the drawn images.  So the interval covers
    both the choice of test images and the run-to-run variation of training (which a single run
    per system cannot show); with one run per system it is :func:`paired_bootstrap` (the image
    draws use the same generator; the run draws a separate one, seeded from ``seed``).  Every run
    must cover the same images (paired by id).  ``Comparison.a``/``.b`` are the mean corpus scores
    over the runs."""
    if not a or not b:
        raise ValueError("need at least one run of each system")
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError("need resamples >= 1 and 0 < confidence < 1")
    first = a[0]
    runs = [first, *(_aligned(first, s) for s in (*a[1:], *b))]
    ka, kb, n = len(a), len(b), len(first)
    width = _columns(first).shape[1]
    table = np.hstack([_columns(s) for s in runs])  # (n, width * (ka + kb))
    image_rng = np.random.default_rng(seed)
    run_rng = np.random.default_rng([seed, 1])
    diffs = {m: [] for m in METRICS}
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        counts = resample_counts(n, size, image_rng).astype(float)
        scores = _scores((counts @ table).reshape(size, ka + kb, width), n)  # metric -> (size, ka + kb)
        pick_a = run_rng.integers(0, ka, size=(size, ka))
        pick_b = ka + run_rng.integers(0, kb, size=(size, kb))
        for m in METRICS:
            diffs[m].append(np.take_along_axis(scores[m], pick_a, 1).mean(1)
                            - np.take_along_axis(scores[m], pick_b, 1).mean(1))
    observed = [s.corpus() for s in runs]
    alpha = (1 - confidence) / 2
    out = {}
    for m in METRICS:
        mean_a = float(np.mean([o[m] for o in observed[:ka]]))
        mean_b = float(np.mean([o[m] for o in observed[ka:]]))
        d = np.concatenate(diffs[m])
        low, high = np.quantile(d, [alpha, 1 - alpha])
        below = (np.count_nonzero(d <= 0) + 1) / (resamples + 1)
        above = (np.count_nonzero(d >= 0) + 1) / (resamples + 1)
        out[m] = Comparison(metric=m, a=mean_a, b=mean_b, difference=mean_a - mean_b, low=float(low),
                            high=float(high), p_value=float(min(1.0, 2 * min(below, above))),
                            confidence=confidence, resamples=resamples)
    return out


def seed_pairwise(systems: Mapping[str, Sequence[ImageStats]], resamples: int = 10_000, seed: int = 0,
                  confidence: float = 0.95) -> list[tuple[str, str, dict[str, Comparison]]]:
    """:func:`seed_bootstrap` for each pair of systems (in the given order, first minus second);
    ``systems``: name -> its runs' statistics."""
    names = list(systems)
    return [(first, second, seed_bootstrap(systems[first], systems[second], resamples, seed, confidence))
            for i, first in enumerate(names) for second in names[i + 1:]]


def comparison_table(rows: Sequence[tuple[str, str, Mapping[str, Comparison]]], label: str = "",
                     confidence: float = 0.95) -> str:
    """A Markdown table of (first, second, {metric: Comparison}) rows: the CIDEr-D and BLEU-4
    differences with their interval, p-value and whether the interval excludes 0."""
    pct = f"{confidence:.0%}"
    lines = [f"| {label or 'comparison'} | ΔCIDEr-D [{pct} CI] | p | excl. 0 | ΔBLEU-4 [{pct} CI] | p | excl. 0 |",
             "|---|---|---|---|---|---|---|"]
    for first, second, result in rows:
        cells = []
        for m in METRICS:
            c = result[m]
            cells += [f"{c.difference:+.3f} [{c.low:+.3f}, {c.high:+.3f}]", f"{c.p_value:.3f}",
                      "yes" if c.excludes_zero else "no"]
        lines.append(f"| {first} − {second} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
