"""Consensus re-ranking: the candidate the nearest training photos' captions agree with wins; the
reference file's round trip and its refusals; the decoding method in a Captioner; the committed
reference against the committed familiarity reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from captioning.consensus import (MAX_FILE_BYTES, NEIGHBOUR_CAPTIONS_FILE, Consensus, ConsensusError,
                                  NeighbourCaptions)
from captioning.decoding import Hypothesis
from captioning.encoders import ENCODERS
from captioning.familiarity import Familiarity
from captioning.settings import SettingsError
from captioning.vocab import Vocabulary

ROOT = Path(__file__).resolve().parents[1]
FEATURE_DIM = ENCODERS["efficientnet_lite0"].feature_dim
DOG = "a dog runs through the grass"
MAN = "a man rides a bike down the street"
CHILD = "a child plays in the water"


@pytest.fixture(scope="module")
def world():
    """(consensus over 60 training photos in three groups, one direction per group, each group's
    photos captioned about its subject; the three directions; the vocabulary)."""
    rng = np.random.default_rng(0)
    directions = np.abs(rng.normal(0, 1, (3, FEATURE_DIM))) * (rng.random((3, FEATURE_DIM)) < 0.2)  # (3, F)
    names, features, captions = [], [], {}
    for group, subject in enumerate((DOG, MAN, CHILD)):
        for i in range(20):
            name = f"g{group}-{i}.jpg"
            names.append(name)
            features.append(directions[group] + rng.normal(0, 0.05, FEATURE_DIM) ** 2)
            captions[name] = [subject, subject.replace("a ", "the ", 1), f"{subject} quickly", subject, subject]
    features = np.array(features, np.float32)                      # (60, F)
    familiarity = Familiarity.fit("efficientnet_lite0", features, names, features[::3], k=5, dims=8)
    vocab = Vocabulary.build([c for refs in captions.values() for c in refs], min_count=1)
    return Consensus(familiarity, NeighbourCaptions(captions), neighbours=10), directions, vocab


def hyp(vocab: Vocabulary, caption: str, logprob: float) -> Hypothesis:
    ids = vocab.encode(caption)
    return Hypothesis(ids, [logprob / (len(ids) + 1)] * (len(ids) + 1), True)


@pytest.mark.parametrize("group, expected", [(0, DOG), (1, MAN), (2, CHILD)])
def test_the_caption_the_neighbours_agree_with_wins(world, group, expected):
    consensus, directions, vocab = world
    # Beam search ranked them in this order; the photo looks like training group `group`.
    beam = [hyp(vocab, MAN, -3.0), hyp(vocab, CHILD, -3.5), hyp(vocab, DOG, -4.0)]
    ranked, scores = consensus.rerank(directions[group], beam, vocab)
    assert vocab.decode(ranked[0].ids) == expected
    assert sorted(vocab.decode(h.ids) for h in ranked) == sorted([MAN, CHILD, DOG])  # the same candidates
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[1]
    assert all(a is b for a, b in zip(sorted(ranked, key=id), sorted(beam, key=id)))  # nothing rewritten


def test_ties_keep_beam_order_and_empty_input_is_fine(world):
    consensus, directions, vocab = world
    same_words = [hyp(vocab, MAN, -1.0), hyp(vocab, MAN, -2.0), hyp(vocab, DOG, -3.0)]
    ranked, scores = consensus.rerank(directions[0], same_words, vocab)
    assert ranked[0] is same_words[2] and ranked[1:] == same_words[:2]  # the tie keeps beam search's order
    assert scores[1] == scores[2] < scores[0]
    assert consensus.rerank(directions[0], [], vocab) == ([], [])


def test_reference_round_trip_and_deterministic_bytes(tmp_path):
    captions = NeighbourCaptions({"b.jpg": [MAN], "a.jpg": [DOG, CHILD]})
    captions.save(tmp_path / "one.json")
    NeighbourCaptions(dict(reversed(list(captions.captions.items())))).save(tmp_path / "two.json")
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()
    assert NeighbourCaptions.load(tmp_path / "one.json").captions == {"a.jpg": [DOG, CHILD], "b.jpg": [MAN]}


@pytest.mark.parametrize("content, words", [
    ("{not json", "not a JSON file"),
    ('{"format_version": 2, "captions": {"a.jpg": ["x"]}}', "format_version 1"),
    ('{"format_version": 1, "captions": {}}', "non-empty object"),
    ('{"format_version": 1, "captions": {"a.jpg": []}}', "non-empty list"),
    ('{"format_version": 1, "captions": {"a.jpg": ["ok", 3]}}', "non-empty list of non-empty strings"),
    ('[1, 2]', "JSON object"),
])
def test_damaged_reference_names_the_file(tmp_path, content, words):
    path = tmp_path / NEIGHBOUR_CAPTIONS_FILE
    path.write_text(content)
    with pytest.raises(ConsensusError, match=words) as caught:
        NeighbourCaptions.load(path)
    assert str(path) in str(caught.value)


def test_missing_or_oversized_reference_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ConsensusError, match="missing.*build_familiarity"):
        NeighbourCaptions.load(tmp_path / "nothing.json")
    path = tmp_path / NEIGHBOUR_CAPTIONS_FILE
    NeighbourCaptions({"a.jpg": [DOG]}).save(path)
    monkeypatch.setattr("captioning.consensus.MAX_FILE_BYTES", path.stat().st_size - 1)
    with pytest.raises(ConsensusError, match="larger than"):
        NeighbourCaptions.load(path)
    assert MAX_FILE_BYTES > (ROOT / "weights" / NEIGHBOUR_CAPTIONS_FILE).stat().st_size


def test_captions_must_cover_the_familiarity_photos(world):
    consensus, _, _ = world
    partial = {name: refs for name, refs in consensus.captions.captions.items() if name != "g1-7.jpg"}
    with pytest.raises(ConsensusError, match="lack 1 .*g1-7.jpg"):
        Consensus(consensus.familiarity, NeighbourCaptions(partial))


def test_committed_reference_covers_the_committed_familiarity_photos():
    familiarity = Familiarity.load(ROOT / "weights" / "familiarity.h5")
    captions = NeighbourCaptions.load(ROOT / "weights" / NEIGHBOUR_CAPTIONS_FILE)
    assert set(captions.captions) == set(familiarity.train_names)
    assert len(captions.captions) == 6000 and all(len(refs) == 5 for refs in captions.captions.values())


def test_captioner_consensus_method(tiny_weights, tmp_path, sample_images, flickr8k):
    """Without the reference the method is refused with a message naming the files; with one
    (built here from the tiny models' own training photos) its caption is one of beam search's
    n-best and its candidates are the beam's, re-ordered by consensus."""
    import shutil

    from captioning import Captioner
    from captioning.corpus import load_corpus
    from captioning.features import extract_features

    weights = Path(shutil.copytree(tiny_weights, tmp_path / "weights"))
    plain = Captioner.load(weights / "learned", familiarity=False)
    features = plain.features(sample_images[0])
    with pytest.raises(SettingsError, match="familiarity.h5 and neighbour_captions.json"):
        plain.describe_features(features, "consensus", beam_width=3)

    corpus = load_corpus(flickr8k)
    train = sorted(corpus.split("train"))[:40]
    cached = extract_features(plain.encoder, corpus.image_dir, train, cache_path=tmp_path / "cache.npz")
    matrix = np.stack([cached[name] for name in train])
    Familiarity.fit(plain.encoder.name, matrix, train, matrix[:10], k=3, dims=8).save(weights / "familiarity.h5")
    NeighbourCaptions(corpus.captions_of(train)).save(weights / NEIGHBOUR_CAPTIONS_FILE)

    captioner = Captioner.load(weights / "learned")
    assert captioner.consensus is not None
    beam = captioner.describe_features(features, "beam", beam_width=3)
    chosen = captioner.describe_features(features, "consensus", beam_width=3)
    assert chosen.caption in [c for c, _ in beam.candidates]
    assert sorted(chosen.candidates) == sorted(beam.candidates)
    assert chosen.candidate_scores == sorted(chosen.candidate_scores, reverse=True)
    hyps = captioner.decoder.beam_search(features, 3, captioner.max_length)
    ranked, scores = captioner.consensus.rerank(features, hyps, captioner.vocab)
    assert chosen.caption == captioner.vocab.decode(ranked[0].ids) and chosen.candidate_scores == scores
    batch = captioner.caption_features_batch(features[None], method="consensus", beam_width=3)
    assert batch == [chosen.caption]
