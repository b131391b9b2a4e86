"""Guided decoding: constrained beam search (Anderson et al., 2017, "Guided Open Vocabulary
Image Captioning with Constrained Beam Search").

Each constraint is a set of word ids, any of which satisfies it ({cat, cats, kitten}).  With
``C`` constraints a hypothesis is in one of ``2**C`` satisfaction states (a bit mask of the
constraints its words have met); every state keeps its own beam of ``beam_width`` hypotheses.
A word moves a hypothesis from state ``s`` to ``s | bits(word)``.  The answer is the best
finished caption in the state where every constraint is met.

With no constraints there is one state and the search is exactly
:meth:`StepDecoder.beam_search` (same candidates, same finishing rule, same stop).

:func:`guided_caption` wraps it for one image: the concepts the encoder's ImageNet head sees
(:mod:`captioning.concepts`) that the plain beam caption does not already say become the
constraints, and a guided caption that the decoder finds far less likely than the plain one
(:data:`DEFAULT_MARGIN`, scaled by how sure the head is) is not used: forcing a word the
decoder cannot fit breaks the caption.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .concepts import Concept, concepts as find_concepts
from .decoding import (LENGTH_PENALTY, NO_REPEATS, Hypothesis, StepDecoder, _top_indices, forbid_end_at_first_step,
                       forbid_repeats)

# Tuned by training/evaluate_guided.py on the Flickr8k dev split and the out-of-domain photos,
# never on the test split: of the settings within 0.003 BLEU-4 and 0.006 CIDEr of plain beam on
# dev for all three models, this one names the main subject of the most out-of-domain photos.
DEFAULT_THRESHOLD = 0.9  # share of the things the ImageNet head sees that a concept needs
# Largest drop in mean per-word log-probability accepted for a guided caption, times the least
# sure concept's share: a concept the head is sure of may cost the decoder more.
DEFAULT_MARGIN = 1.5
MAX_CONCEPTS = 2

# Bolder guidance where the decoders are out of their depth.  On a photo unlike the training
# photos (familiarity percentile, captioning.familiarity, under UNFAMILIAR_PERCENTILE) the
# decoders' own words are most likely wrong (they know people and dogs outdoors), so a concept
# the ImageNet head sees needs only UNFAMILIAR_THRESHOLD of its share to be said; a familiar
# photo keeps the strict DEFAULT_THRESHOLD, where the decoders are good and a wrong forced word
# costs more than it gains.  The cut is at most the familiarity module's own UNFAMILIAR_BELOW,
# so a photo it calls familiar always gets the strict threshold.  Without a familiarity
# reference the strict threshold is used.  Tuned like the two above, with them held fixed
# (cuts 1, 2, 3, 5 x thresholds 0.3-0.8): every cut with a threshold of 0.3 or 0.4 names the
# rocket for all three models (22 of 36 out-of-domain subjects against 19) within the dev
# slack; cut 5 with 0.3 loses the least dev CIDEr (-0.0001 at worst, vs -0.0022 without the
# rule).  Only 4.8% of dev photos fall under the cut, so a lower threshold costs little there.
UNFAMILIAR_THRESHOLD = 0.3
UNFAMILIAR_PERCENTILE = 5.0


def concept_threshold(familiarity=None, unfamiliar_percentile: float = UNFAMILIAR_PERCENTILE,
                      unfamiliar_threshold: float = UNFAMILIAR_THRESHOLD,
                      strict_threshold: float = DEFAULT_THRESHOLD) -> float:
    """The concept share a photo needs (see :data:`UNFAMILIAR_THRESHOLD`): ``familiarity`` is a
    :class:`~captioning.familiarity.FamiliarityResult`, its percentile, or None (no reference:
    the strict threshold).  Never stricter for a less familiar photo."""
    percentile = getattr(familiarity, "percentile", familiarity)
    if percentile is None or percentile >= unfamiliar_percentile:
        return strict_threshold
    return min(unfamiliar_threshold, strict_threshold)


def constrained_beam_search(decoder: StepDecoder, features: np.ndarray, constraints: Sequence[Sequence[int]],
                            beam_width: int, max_length: int, length_penalty: float = LENGTH_PENALTY,
                            n_best: int | None = None, no_repeats: bool = NO_REPEATS) -> list[Hypothesis]:
    """The ``n_best`` (default ``beam_width``) captions of one image (feature_dim,) that contain
    a word of every constraint, best first by length-normalised log-probability; [] if none
    was found within ``max_length`` words.  ``no_repeats`` as in beam search."""
    n_best = n_best or beam_width
    vocab_size = len(decoder.vocab)
    end_id = decoder.vocab.end_id
    word_bits = np.zeros(vocab_size, dtype=np.int64)  # (V,) which constraints each word meets
    for bit, word_ids in enumerate(constraints):
        word_bits[np.asarray(list(word_ids), dtype=np.int64)] |= 1 << bit
    word_bits[end_id] = 0
    n_states = 1 << len(constraints)
    full = n_states - 1

    projection = decoder.project_image(features.reshape(1, -1))  # (1, units)
    state = decoder.initial_state(1)
    alive = [Hypothesis([], [], False)]
    alive_states = np.zeros(1, dtype=np.int64)  # (rows,) satisfaction state of each alive hypothesis
    last_words = np.array([decoder.vocab.start_id])
    finished: list[Hypothesis] = []  # those that meet every constraint
    for t in range(max_length):
        logprobs, (h, c) = decoder.step(last_words, state, np.repeat(projection, len(alive), axis=0))  # (rows, V)
        forbid_end_at_first_step(logprobs, t, end_id)
        if no_repeats:
            forbid_repeats(logprobs, [hyp.ids for hyp in alive], decoder.once_only)
        totals = np.array([hyp.logprob for hyp in alive])[:, None] + logprobs  # (rows, V)
        targets = alive_states[:, None] | word_bits[None, :]  # (rows, V) state each continuation enters
        next_alive, next_states, rows = [], [], []
        for target in range(n_states):
            scores = np.where(targets == target, totals, -np.inf)
            # As in beam_search: the best 2k continuations into this state; an <end> finishes a
            # caption only if it ranks among the best k.
            kept = 0
            for rank, index in enumerate(_top_indices(scores, 2 * beam_width)):
                row, word = divmod(int(index), vocab_size)
                if not np.isfinite(scores[row, word]):
                    break
                parent = alive[row]
                lp = parent.word_logprobs + [float(logprobs[row, word])]
                if word == end_id:
                    if rank < beam_width and target == full:
                        finished.append(Hypothesis(parent.ids, lp, True))
                elif kept < beam_width:
                    next_alive.append(Hypothesis(parent.ids + [word], lp, False))
                    next_states.append(target)
                    rows.append(row)
                    kept += 1
        if len(finished) >= max(beam_width, n_best) or not next_alive:
            break
        alive, alive_states = next_alive, np.array(next_states, dtype=np.int64)
        last_words = np.array([hyp.ids[-1] for hyp in next_alive])
        state = (h[rows], c[rows])
    else:
        finished.extend(hyp for hyp, s in zip(alive, alive_states) if s == full)  # out of length
    finished.sort(key=lambda hyp: -hyp.score(length_penalty))
    return finished[:n_best]


def mentions(ids: Sequence[int], word_ids: Sequence[int]) -> bool:
    return not set(ids).isdisjoint(word_ids)


def per_word_logprob(hyp: Hypothesis) -> float:
    """Mean log-probability per predicted token (words and <end>): comparable across lengths."""
    return hyp.logprob / max(1, len(hyp.word_logprobs))


@dataclass
class GuidedOutcome:
    hyps: list[Hypothesis]  # the n-best list used (guided, or the plain beam's)
    concepts: list[Concept] = field(default_factory=list)  # the concepts that guided it
    rejected: list[Concept] = field(default_factory=list)  # concepts tried and dropped (score too poor)
    labels: list[Concept] = field(default_factory=list)  # every concept above the threshold


def guided_caption(decoder: StepDecoder, features: np.ndarray, class_probs: np.ndarray | None,
                   beam_width: int, max_length: int, threshold: float = DEFAULT_THRESHOLD,
                   margin: float = DEFAULT_MARGIN, max_concepts: int = MAX_CONCEPTS,
                   searched: dict | None = None) -> GuidedOutcome:
    """Plain beam search, then constrained beam search with the concepts it missed.

    Tries all missed concepts together, then the most probable one alone; keeps the first
    guided caption whose mean per-word log-probability is within ``margin`` times the concepts'
    least share (:class:`~captioning.concepts.Concept`) of the plain caption's, else the plain
    beam's n-best list.  ``searched`` (a dict kept by the caller for
    one image and settings) memoises the searches, so that tuning ``threshold`` and ``margin``
    does not repeat them.
    """
    vocab = decoder.vocab
    searched = {} if searched is None else searched
    if "plain" not in searched:
        searched["plain"] = decoder.beam_search(features, beam_width, max_length)
    plain = searched["plain"]
    found = find_concepts(class_probs, vocab, threshold, max_concepts)
    missing = [c for c in found if not mentions(plain[0].ids, [vocab.index[w] for w in c.synonyms])]
    outcome = GuidedOutcome(plain, labels=found)
    attempts = [missing] + ([missing[:1]] if len(missing) > 1 else [])
    for attempt in attempts if missing else []:
        key = tuple(c.word for c in attempt)
        if key not in searched:
            constraints = [[vocab.index[w] for w in c.synonyms] for c in attempt]
            searched[key] = constrained_beam_search(decoder, features, constraints, beam_width, max_length)
        hyps = searched[key]
        allowed = margin * min(c.share for c in attempt)
        if hyps and per_word_logprob(plain[0]) - per_word_logprob(hyps[0]) <= allowed:
            outcome.hyps, outcome.concepts = hyps, attempt
            break
    outcome.rejected = [c for c in missing if c not in outcome.concepts]
    return outcome
