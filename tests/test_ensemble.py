"""The ensemble decoder: greedy and beam search over the members' averaged log-probabilities.

* On toy models: the ensemble's step is the mean of the members' log-probabilities (not of their
  probabilities: a case where the two disagree picks the log-mean's word), each member keeps its
  own state, an ensemble of one model is that model bit for bit, and different vocabularies
  are refused.
* On the tiny session bundles and the committed ones: an ensemble of one model gives exactly the
  model's captions (greedy, beam, guided), and the ensemble of three gives valid captions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from captioning import Captioner
from captioning.decoding import Decoder, Hypothesis
from captioning.ensemble import Ensemble, EnsembleDecoder, EnsembleError
from captioning.variants import VARIANTS
from captioning.vocab import SPECIAL_TOKENS, Vocabulary
from test_decoding import (LENGTH_PENALTY, BigramDecoder, forbid_said, random_features, random_table, table_from,
                           toy_vocab)

REAL_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


class CountingDecoder(Decoder):
    """A toy whose scores depend on the step number (kept in its state, ``width`` columns wide),
    the previous word and the image (its projection, ``projection_width`` columns): it fails
    if the ensemble hands it another member's state or projection."""

    def __init__(self, vocab: Vocabulary, seed: int, width: int, projection_width: int):
        rng = np.random.default_rng(seed)
        self.vocab, self.width, self.projection_width = vocab, width, projection_width
        self.tables = rng.normal(size=(8, len(vocab), len(vocab)))
        self.image_weights = rng.normal(size=(projection_width, len(vocab)))
        self.kernel = rng.normal(size=(2, projection_width))
        self.banned = np.array([vocab.pad_id, vocab.start_id, vocab.unk_id])

    def project_image(self, features):
        return np.tanh(features[:, :2] @ self.kernel)

    def initial_state(self, n):
        return np.zeros((n, self.width)), np.full((n, self.width), float(self.width))

    def step(self, word_ids, state, image_projection):
        h, c = state
        assert h.shape == c.shape == (len(word_ids), self.width), "a member got another member's state"
        assert image_projection.shape == (len(word_ids), self.projection_width)
        assert (c == self.width).all()
        t = h[:, 0].astype(int)
        logits = self.tables[t, word_ids] + image_projection @ self.image_weights
        logits[:, self.banned] = -np.inf
        logprobs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
            - logits.max(1, keepdims=True)
        return logprobs, (h + 1, c)


def toy_members(vocab: Vocabulary, n: int = 3) -> list[CountingDecoder]:
    return [CountingDecoder(vocab, seed=10 + i, width=i + 1, projection_width=3 - i % 2) for i in range(n)]


def same(a: list[Hypothesis], b: list[Hypothesis]) -> bool:
    return [(h.ids, h.word_logprobs, h.finished) for h in a] == [(h.ids, h.word_logprobs, h.finished) for h in b]


def test_step_is_the_mean_of_the_members_log_probabilities():
    vocab = toy_vocab()
    members = toy_members(vocab)
    ensemble = EnsembleDecoder(members)
    features = np.random.default_rng(0).normal(size=(4, 2))
    words = np.array([vocab.start_id] * 4)
    projection = ensemble.project_image(features)
    state = ensemble.initial_state(4)
    member_states = [m.initial_state(4) for m in members]
    for t in range(5):
        logprobs, state = ensemble.step(words, state, projection)
        expected = []
        for i, m in enumerate(members):
            lp, member_states[i] = m.step(words, member_states[i], m.project_image(features))
            expected.append(lp)
        np.testing.assert_allclose(logprobs, np.mean(expected, axis=0), rtol=0, atol=1e-12)
        assert np.isneginf(logprobs[:, [vocab.pad_id, vocab.start_id, vocab.unk_id]]).all()
        words = np.argmax(logprobs, axis=1)


def test_averages_log_probabilities_not_probabilities():
    """Model A: a 0.9, b 0.05; model B: a 0.01, b 0.5.  Mean probability prefers a (0.455 vs 0.275);
    mean log-probability prefers b (-1.84 vs -2.36): the ensemble must say b."""
    vocab = toy_vocab()
    a = BigramDecoder(table_from({"<start>": {"a": 0.9, "b": 0.05, "c": 0.05}, "a": {"<end>": 1.0},
                                  "b": {"<end>": 1.0}, "c": {"<end>": 1.0}}, vocab), vocab)
    b = BigramDecoder(table_from({"<start>": {"a": 0.01, "b": 0.5, "c": 0.49}, "a": {"<end>": 1.0},
                                  "b": {"<end>": 1.0}, "c": {"<end>": 1.0}}, vocab), vocab)
    ensemble = EnsembleDecoder([a, b])
    (greedy,) = ensemble.greedy(np.zeros((1, 1)), 4)
    assert vocab.decode(greedy.ids) == "b"
    assert greedy.word_logprobs == pytest.approx([(np.log(0.05) + np.log(0.5)) / 2, 0.0])
    (beam,) = ensemble.beam_search(np.zeros(1), 1, 4)
    assert vocab.decode(beam.ids) == "b"
    best = ensemble.beam_search(np.zeros(1), 3, 4)
    assert [vocab.decode(h.ids) for h in best] == ["b", "c", "a"]  # c: (log .05 + log .49) / 2 = -1.85


@pytest.mark.parametrize("seed", range(6))
def test_ensemble_of_one_is_the_model(seed):
    vocab = toy_vocab()
    bigram = BigramDecoder(random_table(vocab, seed), vocab)
    counting = CountingDecoder(vocab, seed, width=2, projection_width=3)
    features = np.random.default_rng(seed).normal(size=(5, 2))
    for model, feats in ((bigram, np.zeros((5, 1))), (counting, features)):
        alone = EnsembleDecoder([model])
        assert same(alone.greedy(feats, 6), model.greedy(feats, 6))
        for width in (1, 2, 3, 5):
            for f in feats:
                assert same(alone.beam_search(f, width, 6), model.beam_search(f, width, 6))


@pytest.mark.parametrize("seed", range(4))
def test_ensemble_of_three_toys_searches_its_mean(seed):
    """Greedy follows the argmax of the mean; width 1 is greedy; the n-best list is sorted."""
    vocab = toy_vocab()
    members = toy_members(vocab)
    ensemble = EnsembleDecoder(members)
    features = np.random.default_rng(seed).normal(size=(3, 2))
    for f, greedy in zip(features, ensemble.greedy(features, 6)):
        (beam,) = ensemble.beam_search(f, 1, 6)
        assert beam.ids == greedy.ids and beam.finished == greedy.finished
        np.testing.assert_allclose(beam.word_logprobs, greedy.word_logprobs, rtol=0, atol=1e-12)
        hyps = ensemble.beam_search(f, 4, 6)
        scores = [h.score(LENGTH_PENALTY) for h in hyps]
        assert scores == sorted(scores, reverse=True) and len({tuple(h.ids) for h in hyps}) == len(hyps)
        # Replay greedy's words through the members: each word is the mean's argmax.
        prev, states = vocab.start_id, [m.initial_state(1) for m in members]
        for t, word in enumerate(greedy.ids + ([vocab.end_id] if greedy.finished else [])):
            lps = []
            for i, m in enumerate(members):
                lp, states[i] = m.step(np.array([prev]), states[i], m.project_image(f[None]))
                lps.append(lp[0])
            mean = np.mean(lps, axis=0)
            if t == 0:
                mean[vocab.end_id] = -np.inf
            forbid_said(mean[None], greedy.ids[:t], vocab)  # no content word twice
            assert word == int(np.argmax(mean))
            assert greedy.word_logprobs[t] == pytest.approx(mean[word], abs=1e-12)
            prev = word


def test_different_vocabularies_are_refused():
    vocab = toy_vocab()
    other = Vocabulary(SPECIAL_TOKENS + ["a", "c", "b"])
    with pytest.raises(EnsembleError, match=r"different vocabularies: .*id 5 is 'c'"):
        EnsembleDecoder([BigramDecoder(random_table(vocab, 0), vocab), BigramDecoder(random_table(other, 0), other)])
    bigger = Vocabulary(SPECIAL_TOKENS + ["a", "b", "c", "d"])
    with pytest.raises(EnsembleError, match="8 words against 7"):
        EnsembleDecoder([BigramDecoder(random_table(vocab, 0), vocab), BigramDecoder(random_table(bigger, 0), bigger)],
                        names=["learned", "word2vec"])
    with pytest.raises(EnsembleError):
        EnsembleDecoder([])


# -- real bundles --------------------------------------------------------------------------------
def assert_ensemble_of_one_is_the_model(captioner: Captioner, features: np.ndarray, guided: bool = True) -> None:
    alone = Ensemble([captioner])
    assert alone.vocab is captioner.vocab and alone.max_length == captioner.max_length
    assert same(alone.decoder.greedy(features, captioner.max_length),
                captioner.decoder.greedy(features, captioner.max_length))
    for f in features:
        for width in (2, 3):
            assert same(alone.decoder.beam_search(f, width, captioner.max_length),
                        captioner.decoder.beam_search(f, width, captioner.max_length))
    assert alone.caption_features_batch(features) == captioner.caption_features_batch(features)
    assert (alone.caption_features_batch(features, "beam", 3) == captioner.caption_features_batch(features, "beam", 3))
    if guided:
        for f in features[:2]:
            a = alone.describe_features(f, "guided", 3, class_probs=None)
            b = captioner.describe_features(f, "guided", 3, class_probs=None)
            assert (a.caption, a.candidates) == (b.caption, b.candidates)


def assert_valid_ensemble_captions(ensemble: Ensemble, features: np.ndarray) -> None:
    vocab = ensemble.vocab
    banned = {vocab.pad_id, vocab.start_id, vocab.unk_id, vocab.end_id}
    for h in ensemble.decoder.greedy(features, ensemble.max_length):
        assert h.ids and not banned & set(h.ids) and all(lp <= 0 for lp in h.word_logprobs)
    batch = ensemble.caption_features_batch(features, "beam", 3)
    for f, caption in zip(features, batch):
        result = ensemble.describe_features(f, "beam", 3)
        assert result.caption == caption and caption.split() == result.words
        assert all(w in vocab for w in result.words)
        assert result.candidates[0][0] == caption
        assert result.candidate_scores == sorted(result.candidate_scores, reverse=True)
        assert all(0 < p <= 1 for p in result.word_probs)


@pytest.fixture(scope="module")
def tiny_captioners(tiny_weights, encoder) -> list[Captioner]:
    return [Captioner.load(tiny_weights / v, encoder=encoder) for v in VARIANTS]


def test_tiny_ensemble_of_one_is_the_model(tiny_captioners, encoder, sample_images):
    features = np.concatenate([encoder.encode(sample_images[:3]), random_features(3, encoder.feature_dim, seed=1)])
    for captioner in tiny_captioners:
        assert_ensemble_of_one_is_the_model(captioner, features)


def test_tiny_ensemble_of_three(tiny_captioners, tiny_weights, encoder, sample_images):
    ensemble = Ensemble(tiny_captioners)
    assert ensemble.config["members"] == list(VARIANTS) and ensemble.name == "ensemble"
    features = encoder.encode(sample_images[:3])
    assert_valid_ensemble_captions(ensemble, features)
    # The user's door: an image in, the same caption as from its features.
    one = encoder.features(sample_images[0])
    assert ensemble.caption(sample_images[0], method="beam") == ensemble.describe_features(one, "beam").caption
    guided = ensemble.describe_features(features[0], "guided", 3, class_probs=encoder.analyse(sample_images[0])[1])
    assert guided.caption and guided.labels
    loaded = Ensemble.load([tiny_weights / v for v in VARIANTS], encoder=encoder)
    assert loaded.caption_features_batch(features) == ensemble.caption_features_batch(features)


def _real(variant: str) -> Path:
    path = REAL_WEIGHTS / variant
    if not (path / "decoder.weights.h5").is_file():
        pytest.skip(f"no trained bundle at {path}")
    return path


def test_committed_ensemble(encoder, sample_images):
    captioners = [Captioner.load(_real(v), encoder=encoder) for v in VARIANTS]
    features = encoder.encode(sample_images[:4])
    for captioner in captioners:  # the three bundles share one vocabulary, so they can be ensembled
        assert captioner.vocab.words == captioners[0].vocab.words
        assert_ensemble_of_one_is_the_model(captioner, features[:2], guided=False)
    ensemble = Ensemble(captioners)
    assert_valid_ensemble_captions(ensemble, features)


def test_evaluate_ensemble_writes_another_split_beside_the_test_files(tmp_path):
    """The test split's files are what the app and the report read: a --split dev run goes beside them."""
    from captioning.ensemble import ENSEMBLE_METRICS_FILE, ENSEMBLE_SAMPLES_FILE
    from training.evaluate_ensemble import output_paths

    assert output_paths(tmp_path, "test") == (tmp_path / ENSEMBLE_METRICS_FILE, tmp_path / ENSEMBLE_SAMPLES_FILE)
    assert output_paths(tmp_path, "dev") == (tmp_path / "ensemble_dev_metrics.json",
                                             tmp_path / "ensemble_dev_samples.json")
