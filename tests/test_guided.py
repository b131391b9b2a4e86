"""Guided decoding: constrained beam search against facts that must hold on toy bigram models
(no constraints: exactly beam search; every answer meets every constraint; a wide beam finds the
best constrained caption that exhaustive search finds), the familiarity rule for the concept
threshold, and the committed models name what the encoder sees in the three demo photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from captioning.familiarity import UNFAMILIAR_BELOW, FamiliarityResult
from captioning.variants import VARIANTS
from captioning.guided import (DEFAULT_THRESHOLD, UNFAMILIAR_PERCENTILE, UNFAMILIAR_THRESHOLD, concept_threshold,
                               constrained_beam_search, guided_caption, per_word_logprob)
from test_decoding import LENGTH_PENALTY, BigramDecoder, exhaustive, random_table, toy_vocab

ROOT = Path(__file__).resolve().parents[1]


def toy(seed: int) -> BigramDecoder:
    vocab = toy_vocab()
    return BigramDecoder(random_table(vocab, seed), vocab)


def ids(decoder, *words) -> list[int]:
    return [decoder.vocab.index[w] for w in words]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("width", (1, 2, 3, 5))
def test_no_constraints_is_exactly_beam_search(seed, width):
    decoder = toy(seed)
    plain = decoder.beam_search(np.zeros(1), width, 6)
    guided = constrained_beam_search(decoder, np.zeros(1), [], width, 6)
    assert [(h.ids, h.word_logprobs, h.finished) for h in guided] == [(h.ids, h.word_logprobs, h.finished) for h in plain]


@pytest.mark.parametrize("seed", range(8))
def test_every_caption_meets_every_constraint(seed):
    decoder = toy(seed)
    constraints = [ids(decoder, "b"), ids(decoder, "c")]
    hyps = constrained_beam_search(decoder, np.zeros(1), constraints, 3, 6)
    assert hyps
    for h in hyps:
        assert all(set(h.ids) & set(c) for c in constraints), decoder.vocab.decode(h.ids)
    scores = [h.score(LENGTH_PENALTY) for h in hyps]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("words", (["a"], ["c"], ["a|b"], ["b", "c"]))
def test_wide_constrained_beam_is_exhaustive_search(seed, words):
    """With a beam wider than every prefix, the answer is the best of all captions that meet the
    constraints (a constraint "a|b" is met by either word)."""
    decoder = toy(seed)
    max_length = 4
    constraints = [ids(decoder, *w.split("|")) for w in words]
    meets = [h for h in exhaustive(decoder, max_length) if all(set(h.ids) & set(c) for c in constraints)]
    wide = 4 ** max_length
    hyps = constrained_beam_search(decoder, np.zeros(1), constraints, wide, max_length)
    np.testing.assert_allclose([h.score(LENGTH_PENALTY) for h in hyps],
                               [h.score(LENGTH_PENALTY) for h in meets[:len(hyps)]], rtol=0, atol=1e-9)
    assert len(hyps) == len(meets)
    # The constrained best is never better than the unconstrained best.
    (best,) = decoder.beam_search(np.zeros(1), wide, max_length, n_best=1)
    assert hyps[0].score(LENGTH_PENALTY) <= best.score(LENGTH_PENALTY) + 1e-12


def test_constraint_forces_an_unlikely_word():
    """A word plain beam search never picks is in the guided caption."""
    from test_decoding import table_from

    vocab = toy_vocab()
    table = table_from({"<start>": {"a": 0.9, "c": 0.1}, "a": {"<end>": 0.9, "b": 0.1},
                        "b": {"<end>": 1.0}, "c": {"<end>": 1.0}}, vocab)
    decoder = BigramDecoder(table, vocab)
    assert vocab.decode(decoder.beam_search(np.zeros(1), 2, 5)[0].ids) == "a"
    (best, *_) = constrained_beam_search(decoder, np.zeros(1), [ids(decoder, "b")], 2, 5)
    assert vocab.decode(best.ids) == "a b" and best.logprob == pytest.approx(np.log(0.9 * 0.1 * 1.0))
    assert constrained_beam_search(decoder, np.zeros(1), [ids(decoder, "b"), ids(decoder, "c")], 2, 5) == []


# -- the familiarity rule ---------------------------------------------------------------------------
def familiarity(percentile: float) -> FamiliarityResult:
    return FamiliarityResult(0.0, percentile, [], percentile >= UNFAMILIAR_BELOW, "")


def test_less_familiar_is_never_stricter():
    percentiles = np.linspace(0, 100, 401)
    thresholds = [concept_threshold(familiarity(p)) for p in percentiles]
    assert all(a <= b for a, b in zip(thresholds, thresholds[1:]))  # monotone in the percentile
    assert [concept_threshold(p) for p in percentiles] == thresholds  # a bare percentile works alike
    assert concept_threshold(familiarity(0.0)) == UNFAMILIAR_THRESHOLD < DEFAULT_THRESHOLD
    for p in (UNFAMILIAR_PERCENTILE, 50.0, 100.0):
        assert concept_threshold(familiarity(p)) == DEFAULT_THRESHOLD


def test_a_familiar_photo_gets_the_strict_threshold():
    assert UNFAMILIAR_PERCENTILE <= UNFAMILIAR_BELOW
    for p in np.linspace(0, 100, 1001):
        f = familiarity(float(p))
        if f.familiar:
            assert concept_threshold(f) == DEFAULT_THRESHOLD, p
    assert concept_threshold(None) == DEFAULT_THRESHOLD  # no familiarity reference: strict


# -- the committed models on the demo photos -------------------------------------------------------
DEMO = ROOT / "demo" / "examples"
NAMES = {"chelsea_cat.jpg": {"cat", "cats"}, "coffee.jpg": {"coffee", "cup", "cups", "mug"}, "rocket.jpg": {"rocket"}}
# Where a committed model's best caption with the concept word reads far worse per word than its
# plain beam caption, guided decoding falls back to the plain one (the margin rule): the Word2Vec
# model on the rocket.
FALLS_BACK = {("word2vec", "rocket.jpg")}


@pytest.fixture(scope="module")
def real_captioners(encoder):
    from captioning import Captioner

    if not all((ROOT / "weights" / v / "decoder.weights.h5").is_file() for v in VARIANTS):
        pytest.skip("no committed weights")
    return {v: Captioner.load(ROOT / "weights" / v, encoder=encoder) for v in VARIANTS}


@pytest.mark.parametrize("photo", sorted(NAMES))
@pytest.mark.parametrize("variant", VARIANTS)
def test_guided_names_what_the_encoder_sees(real_captioners, photo, variant):
    """The rocket needs the familiarity rule: the head sees the launch pad as 'drilling rig'; the
    rocket classes hold a 0.44 share of what it sees as things, under the strict threshold, but
    the photo is unlike the training photos, so the lower threshold applies."""
    captioner = real_captioners[variant]
    assert captioner.familiarity is not None  # weights/familiarity.h5, found beside the bundles
    result = captioner.describe(DEMO / photo, method="guided", beam_width=3)
    if (variant, photo) in FALLS_BACK:
        plain = captioner.describe(DEMO / photo, method="beam", beam_width=3)
        assert result.fallback and result.concepts == [] and result.caption == plain.caption
    else:
        assert set(result.words) & NAMES[photo], f"{variant} {photo}: {result.caption!r} ({result.concepts})"
        assert not result.fallback
    assert result.labels and result.labels[0][1] >= result.labels[-1][1]
    assert result.candidates[0][0] == result.caption
    assert result.familiarity is not None
    assert result.threshold == concept_threshold(result.familiarity)
    # Greedy and beam report no concepts.
    for method in ("greedy", "beam"):
        other = captioner.describe(DEMO / photo, method=method, beam_width=3)
        assert other.concepts == [] and other.fallback is False and other.labels == []


def test_familiarity_passed_in_is_used_and_none_means_strict(real_captioners, encoder):
    """describe_features takes a familiarity already scored (the demo scores it once per photo);
    a captioner without a reference uses the strict threshold, and the rocket is then missed."""
    from captioning import Captioner

    captioner = real_captioners["learned"]
    features, probs = encoder.analyse(DEMO / "rocket.jpg")
    scored = captioner.familiarity.score(features)
    given = captioner.describe_features(features, "guided", 3, class_probs=probs, familiarity=scored)
    own = captioner.describe_features(features, "guided", 3, class_probs=probs)
    assert given.caption == own.caption and given.threshold == own.threshold == concept_threshold(scored)
    assert own.familiarity == scored
    told_familiar = captioner.describe_features(features, "guided", 3, class_probs=probs, familiarity=familiarity(50.0))
    assert told_familiar.threshold == DEFAULT_THRESHOLD and "rocket" not in told_familiar.words

    bare = Captioner.load(ROOT / "weights" / "learned", encoder=encoder, familiarity=False)
    assert bare.familiarity is None
    strict = bare.describe_features(features, "guided", 3, class_probs=probs)
    assert strict.familiarity is None and strict.threshold == DEFAULT_THRESHOLD
    assert strict.caption == told_familiar.caption
    # Greedy and beam do not depend on familiarity.
    for method in ("greedy", "beam"):
        assert bare.describe_features(features, method, 3).caption == captioner.describe_features(features, method, 3).caption


def test_load_finds_the_reference_beside_the_bundles_or_goes_without(tmp_path, encoder):
    import shutil

    from captioning import Captioner
    from captioning.familiarity import Familiarity

    source = ROOT / "weights" / "learned"
    if not (source / "decoder.weights.h5").is_file():
        pytest.skip("no committed weights")
    shutil.copytree(source, tmp_path / "learned")
    assert Captioner.load(tmp_path / "learned", encoder=encoder).familiarity is None
    shutil.copy(ROOT / "weights" / "familiarity.h5", tmp_path / "familiarity.h5")
    assert Captioner.load(tmp_path / "learned", encoder=encoder).familiarity is not None
    shared = Familiarity.load(tmp_path / "familiarity.h5")
    assert Captioner.load(tmp_path / "learned", encoder=encoder, familiarity=shared).familiarity is shared


def test_guided_without_class_probs_is_plain_beam(real_captioners, encoder):
    captioner = real_captioners["learned"]
    features = encoder.features(DEMO / "chelsea_cat.jpg")
    beam = captioner.describe_features(features, "beam", 3)
    guided = captioner.describe_features(features, "guided", 3)
    assert guided.caption == beam.caption and guided.candidates == beam.candidates and guided.concepts == []


def test_fallback_keeps_the_plain_caption_when_the_guided_one_scores_far_worse(real_captioners, encoder):
    captioner = real_captioners["learned"]
    features, probs = encoder.analyse(DEMO / "chelsea_cat.jpg")
    plain = captioner.describe_features(features, "beam", 3)
    strict = captioner.describe_features(features, "guided", 3, class_probs=probs, margin=-1.0)  # nothing is close enough
    assert strict.caption == plain.caption and strict.fallback and strict.rejected_concepts == ["cat"]
    loose = captioner.describe_features(features, "guided", 3, class_probs=probs, margin=np.inf)
    assert loose.concepts == ["cat"] and not loose.fallback and "cat" in loose.words
    outcome = guided_caption(captioner.decoder, features, probs, 3, captioner.max_length, margin=np.inf)
    assert per_word_logprob(outcome.hyps[0]) <= per_word_logprob(captioner.decoder.beam_search(features, 3, captioner.max_length)[0])


@pytest.mark.parametrize("photo", ["chelsea_cat.jpg", "rocket.jpg", "motorcycle.jpg"])
def test_beam_and_guided_sharing_one_search_give_the_same_captions(real_captioners, encoder, photo):
    """describe_features(searched=...) runs the plain beam once for "beam" and "guided" (the page does);
    the captions, n-best lists and concepts are those of separate calls."""
    captioner = real_captioners["fasttext"]
    features, probs = encoder.analyse(DEMO / photo)
    shared: dict = {}
    together = [captioner.describe_features(features, m, 3, class_probs=probs, searched=shared) for m in ("beam", "guided")]
    alone = [captioner.describe_features(features, m, 3, class_probs=probs) for m in ("beam", "guided")]
    for a, b in zip(together, alone):
        assert (a.caption, a.candidates, a.concepts, a.rejected_concepts) == (b.caption, b.candidates, b.concepts,
                                                                               b.rejected_concepts)
    assert "plain" in shared  # the search was kept, so guided reused it
