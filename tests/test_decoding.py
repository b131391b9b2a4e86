"""The incremental NumPy decoder must be the Keras model, only faster.

* :class:`StepDecoder` carries the LSTM state word to word; its next-word
  log-probabilities must equal ``log(model.predict(...))`` on the full teacher-
  forced caption at every position, and its greedy captions must be exactly the
  textbook per-word ``model.predict`` decoder's (:func:`naive_greedy`).
* Beam search is checked against facts that must hold: width 1 is greedy, a beam
  wide enough to keep every prefix is exhaustive search, candidates are sorted,
  distinct, properly ended, and their log-probabilities are the model's.

Runs on the tiny session bundles, and on the real bundles in ``weights/`` when
they are there.  Nothing here is timed (see ``tools/benchmark.py``).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from captioning import Captioner
from captioning.decoding import Hypothesis, StepDecoder, naive_greedy
from captioning.diversity import STOPWORDS
from captioning.variants import VARIANTS
from captioning.vocab import SPECIAL_TOKENS, Vocabulary

LOGPROB_ATOL = 1e-4  # float32 matmuls summed in another order: ~1e-6 in practice
TIE = 1e-5  # two words this close in log-probability are a tie no float32 decoder can break consistently
LENGTH_PENALTY = 0.7  # beam_search's default
REAL_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


# -- helpers -------------------------------------------------------------------------------------
def content_words(vocab: Vocabulary) -> set[int]:
    """Ids a caption may say only once (the decoders' default): words that are neither function
    words nor special tokens."""
    return {i for i, w in enumerate(vocab.words) if w not in STOPWORDS and w not in SPECIAL_TOKENS}


def forbid_said(logprobs: np.ndarray, said: list[int], vocab: Vocabulary) -> None:
    """The plain way: -inf for each content word of ``said``, in the one row of ``logprobs``."""
    for word in set(said) & content_words(vocab):
        logprobs[0, word] = -np.inf


def random_features(n: int, dim: int, seed: int) -> np.ndarray:
    """Non-negative like pooled ReLU6 CNN features, of a similar scale."""
    return np.random.default_rng(seed).uniform(0.0, 1.5, (n, dim)).astype(np.float32)


def keras_logprobs(model, features: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """log of the full Keras model's next-word probabilities, (n, time, vocab)."""
    probs = model.predict({"image_features": features, "caption_in": tokens.astype(np.int32)}, verbose=0)
    with np.errstate(divide="ignore"):
        return np.log(probs.astype(np.float64))


def step_logprobs(decoder: StepDecoder, features: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """The step decoder's next-word log-probabilities fed ``tokens`` one column at a time."""
    projection = decoder.project_image(features)
    state = decoder.initial_state(len(features))
    out = []
    for t in range(tokens.shape[1]):
        logprobs, state = decoder.step(tokens[:, t], state, projection)
        out.append(logprobs)
    return np.stack(out, axis=1)


def allowed_words(vocab: Vocabulary) -> np.ndarray:
    banned = {vocab.pad_id, vocab.start_id, vocab.unk_id}
    return np.array([i for i in range(len(vocab)) if i not in banned])


def assert_same_logprobs(decoder: StepDecoder, model, features: np.ndarray, tokens: np.ndarray) -> None:
    ours = step_logprobs(decoder, features, tokens)
    reference = keras_logprobs(model, features, tokens)
    assert ours.shape == reference.shape
    ok = allowed_words(decoder.vocab)
    assert np.isneginf(np.delete(ours, ok, axis=-1)).all(), "banned words must get -inf"
    # Compare wherever Keras's float32 softmax has not underflowed towards 0 (log p > -60).
    ours, reference = ours[..., ok], reference[..., ok]
    visible = reference > -60
    assert visible.mean() > 0.99
    np.testing.assert_allclose(ours[visible], reference[visible], rtol=0, atol=LOGPROB_ATOL)
    assert (ours[~visible] < -50).all()


def caption_tokens(vocab: Vocabulary, hyp: Hypothesis) -> np.ndarray:
    """``<start> w1 .. wn`` (the model input that scores w1 .. wn and, if finished, <end>)."""
    return np.array([[vocab.start_id, *hyp.ids]], dtype=np.int32)


def targets(vocab: Vocabulary, hyp: Hypothesis) -> list[int]:
    return hyp.ids + ([vocab.end_id] if hyp.finished else [])


def assert_greedy_matches_naive(captioner: Captioner, features: np.ndarray) -> None:
    """StepDecoder.greedy and naive_greedy give the same word ids for every image.

    A difference is tolerated only at an exact tie (the two words' log-probabilities
    within float32 rounding), where either choice is right; it must then be a tie.
    """
    decoder, vocab, max_length = captioner.decoder, captioner.vocab, captioner.max_length
    ours = decoder.greedy(features, max_length)
    reference = naive_greedy(captioner.bundle.model, features, vocab, max_length)
    assert len(ours) == len(reference) == len(features)
    for row, (hyp, ref) in enumerate(zip(ours, reference)):
        if hyp.ids == ref:
            assert hyp.finished == (len(ref) < max_length)
            continue
        t = next(t for t, (a, b) in enumerate(itertools.zip_longest(hyp.ids, ref)) if a != b)
        prefix = np.array([[vocab.start_id, *hyp.ids[:t]]])
        lp = step_logprobs(decoder, features[row:row + 1], prefix)[0, -1]
        a = hyp.ids[t] if t < len(hyp.ids) else vocab.end_id
        b = ref[t] if t < len(ref) else vocab.end_id
        assert abs(lp[a] - lp[b]) < TIE, (
            f"image {row}: step decoder says {vocab.decode(hyp.ids)!r}, model.predict says "
            f"{vocab.decode(ref)!r}; they part at word {t} with log-probs {lp[a]:.6f} vs {lp[b]:.6f}")


def assert_beam_properties(captioner: Captioner, features: np.ndarray, beam_width: int) -> list[Hypothesis]:
    decoder, vocab, max_length = captioner.decoder, captioner.vocab, captioner.max_length
    hyps = decoder.beam_search(features, beam_width, max_length)
    assert 1 <= len(hyps) <= beam_width
    scores = [h.score(LENGTH_PENALTY) for h in hyps]
    assert scores == sorted(scores, reverse=True), "n-best list must be sorted by length-normalised score"
    assert len({tuple(h.ids) for h in hyps}) == len(hyps), "candidates must be distinct"
    assert len({vocab.decode(h.ids) for h in hyps}) == len(hyps)
    for h in hyps:
        banned = {vocab.pad_id, vocab.start_id, vocab.unk_id, vocab.end_id}
        assert not banned & set(h.ids)
        if h.finished:  # ended with <end> before the length limit
            assert len(h.ids) < max_length and len(h.word_logprobs) == len(h.ids) + 1
        else:  # ran out of length
            assert len(h.ids) == max_length and len(h.word_logprobs) == len(h.ids)
        assert h.logprob == pytest.approx(sum(h.word_logprobs))
        assert all(lp <= 0 for lp in h.word_logprobs)
        # Each word's log-probability is the full Keras model's, given the words before it.
        reference = keras_logprobs(captioner.bundle.model, features.reshape(1, -1), caption_tokens(vocab, h))[0]
        expected = [reference[t, w] for t, w in enumerate(targets(vocab, h))]
        np.testing.assert_allclose(h.word_logprobs, expected, rtol=0, atol=LOGPROB_ATOL)
        assert h.logprob == pytest.approx(sum(expected), abs=LOGPROB_ATOL * max_length)
    # Asking for fewer candidates does not change the search, only how many come back.
    best = decoder.beam_search(features, beam_width, max_length, n_best=1)
    assert len(best) == 1 and best[0].ids == hyps[0].ids
    return hyps


# -- the tiny session bundles ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def captioners(tiny_weights, encoder) -> dict[str, Captioner]:
    return {v: Captioner.load(tiny_weights / v, encoder=encoder) for v in VARIANTS}


@pytest.fixture(scope="module")
def sample_features(encoder, sample_images) -> np.ndarray:
    return encoder.encode(sample_images)


@pytest.mark.parametrize("variant", VARIANTS)
def test_step_logprobs_equal_keras_model(captioners, variant):
    captioner = captioners[variant]
    vocab, length = captioner.vocab, captioner.max_length
    rng = np.random.default_rng(1)
    features = random_features(6, captioner.encoder.feature_dim, seed=2)
    # Teacher-forced captions: <start> then any words (the model must match on any input).
    words = rng.integers(vocab.end_id, len(vocab), size=(len(features), length))
    tokens = np.concatenate([np.full((len(features), 1), vocab.start_id), words], axis=1)
    assert_same_logprobs(captioner.decoder, captioner.bundle.model, features, tokens)


@pytest.mark.parametrize("variant", VARIANTS)
def test_step_logprobs_on_a_real_caption_and_image(captioners, sample_features, variant):
    captioner = captioners[variant]
    tokens = np.array([captioner.vocab.encode("a dog runs through the grass")[:-1]] * len(sample_features))
    assert_same_logprobs(captioner.decoder, captioner.bundle.model, sample_features, tokens)


def test_image_projection_equals_keras_layer(captioners):
    import keras

    captioner = captioners["learned"]
    features = random_features(3, captioner.encoder.feature_dim, seed=3)
    layer = captioner.bundle.model.get_layer("image_projection")
    expected = keras.ops.convert_to_numpy(layer(features))
    np.testing.assert_allclose(captioner.decoder.project_image(features), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_greedy_equals_naive_model_predict_on_sample_images(captioners, sample_features, variant):
    assert_greedy_matches_naive(captioners[variant], sample_features)


@pytest.mark.parametrize("variant", VARIANTS)
def test_greedy_equals_naive_model_predict_on_random_features(captioners, variant):
    captioner = captioners[variant]
    assert_greedy_matches_naive(captioner, random_features(16, captioner.encoder.feature_dim, seed=4))


def test_greedy_batch_equals_one_at_a_time(captioners, sample_features):
    captioner = captioners["word2vec"]
    batch = captioner.decoder.greedy(sample_features, captioner.max_length)
    for f, hyp in zip(sample_features, batch):
        (single,) = captioner.decoder.greedy(f.reshape(1, -1), captioner.max_length)
        assert single.ids == hyp.ids
        np.testing.assert_allclose(single.word_logprobs, hyp.word_logprobs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_beam_width_one_is_greedy(captioners, sample_features, variant):
    captioner = captioners[variant]
    features = np.concatenate([sample_features, random_features(6, captioner.encoder.feature_dim, seed=5)])
    for f, greedy in zip(features, captioner.decoder.greedy(features, captioner.max_length)):
        (beam,) = captioner.decoder.beam_search(f, 1, captioner.max_length)
        assert beam.ids == greedy.ids and beam.finished == greedy.finished
        # Greedy ran the images as one batch: BLAS may round the last bit differently.
        np.testing.assert_allclose(beam.word_logprobs, greedy.word_logprobs, rtol=0, atol=1e-5)


def reference_beam_search(decoder: StepDecoder, features: np.ndarray, beam_width: int,
                          max_length: int, no_repeats: bool = True) -> list[Hypothesis]:
    """Beam search written the plain way, one hypothesis at a time with its own LSTM state, as the
    reference for the batched :meth:`StepDecoder.beam_search`.  The rules: every step ranks all
    continuations of all live captions by total log-probability (ties in (caption, word) order);
    of the best 2k, an <end> ranked within the best k finishes its caption, and the first k other
    words stay alive; stop once k captions have finished, or nothing is alive, or at max_length
    (the live ones then count as finished); best first by log p / length**0.7.  With
    ``no_repeats``, a caption's content words are not among its continuations."""
    vocab = decoder.vocab
    projection = decoder.project_image(features.reshape(1, -1))
    alive = [(Hypothesis([], [], False), decoder.initial_state(1), vocab.start_id)]
    finished: list[Hypothesis] = []
    for t in range(max_length):
        options = []  # (total log-prob, row, word, word log-prob, new state)
        for row, (hyp, state, last) in enumerate(alive):
            logprobs, new_state = decoder.step(np.array([last]), state, projection)
            if t == 0:
                logprobs[:, vocab.end_id] = -np.inf  # at least one word
            if no_repeats:
                forbid_said(logprobs, hyp.ids, vocab)
            for word in np.flatnonzero(np.isfinite(logprobs[0])):
                options.append((hyp.logprob + logprobs[0, word], row, int(word), float(logprobs[0, word]), new_state))
        options.sort(key=lambda o: (-o[0], o[1], o[2]))
        next_alive = []
        for rank, (_, row, word, lp, state) in enumerate(options[:2 * beam_width]):
            parent = alive[row][0]
            if word == vocab.end_id:
                if rank < beam_width:
                    finished.append(Hypothesis(parent.ids, parent.word_logprobs + [lp], True))
            elif len(next_alive) < beam_width:
                next_alive.append((Hypothesis(parent.ids + [word], parent.word_logprobs + [lp], False), state, word))
        if len(finished) >= beam_width or not next_alive:
            break
        alive = next_alive
    else:
        finished.extend(hyp for hyp, _, _ in alive)
    finished = finished or [hyp for hyp, _, _ in alive]
    return sorted(finished, key=lambda h: -h.score(LENGTH_PENALTY))[:beam_width]


@pytest.mark.parametrize("variant", VARIANTS)
def test_beam_search_properties(captioners, sample_features, variant):
    """Beam search's n-best list has the properties it must, and is exactly what the plain,
    unbatched reference beam search finds (same captions, same order, same log-probabilities)."""
    captioner = captioners[variant]
    features = np.concatenate([sample_features, random_features(4, captioner.encoder.feature_dim, seed=9)])
    for f in features[:len(sample_features)]:
        assert_beam_properties(captioner, f, beam_width=5)
    for width in (2, 5):
        for f in features:
            hyps = captioner.decoder.beam_search(f, width, captioner.max_length)
            expected = reference_beam_search(captioner.decoder, f, width, captioner.max_length)
            assert [(h.ids, h.finished) for h in hyps] == [(h.ids, h.finished) for h in expected]
            for h, e in zip(hyps, expected):
                np.testing.assert_allclose(h.word_logprobs, e.word_logprobs, rtol=0, atol=1e-5)


def test_describe_word_probs(captioners, sample_images):
    captioner = captioners["fasttext"]
    for method in ("greedy", "beam"):
        result = captioner.describe(sample_images[0], method=method, beam_width=3)
        assert result.caption == " ".join(result.words)
        # Each word's probability, then the end token's (absent only if the caption ran out of length).
        if len(result.words) < captioner.max_length:
            assert len(result.word_probs) == len(result.words) + 1
        else:
            assert len(result.words) == captioner.max_length and len(result.word_probs) == len(result.words)
        assert all(0.0 < p <= 1.0 for p in result.word_probs)
        if method == "beam":
            assert result.candidates[0][0] == result.caption
            assert result.candidates[0][1] == pytest.approx(float(np.sum(np.log(result.word_probs))), abs=1e-5)


def test_shared_encoder_features_decode_the_same(captioners, sample_images):
    """One feature extraction serves all three decoders: describe() equals describe_features()."""
    for captioner in captioners.values():
        assert captioner.encoder is captioners["learned"].encoder
        direct = captioner.describe(sample_images[1]).caption
        assert direct == captioner.describe_features(captioner.encoder.features(sample_images[1])).caption


# -- a toy bigram "model": beam search against exhaustive search -----------------------------------
TOY_WORDS = ["a", "b", "c"]


class BigramDecoder(StepDecoder):
    """StepDecoder whose next-word log-probabilities depend only on the previous word."""

    def __init__(self, table: np.ndarray, vocab: Vocabulary):  # no Keras model
        self.vocab, self.table, self.units = vocab, table, 1
        self.banned = np.array([vocab.pad_id, vocab.start_id, vocab.unk_id])

    def project_image(self, features):
        return np.zeros((len(features), 1), np.float32)

    def step(self, word_ids, state, image_projection):
        logprobs = self.table[word_ids].copy()
        logprobs[:, self.banned] = -np.inf
        state = np.zeros((len(word_ids), 1)), np.zeros((len(word_ids), 1))
        return logprobs, state


def toy_vocab() -> Vocabulary:
    return Vocabulary(SPECIAL_TOKENS + TOY_WORDS)


def table_from(probs: dict[str, dict[str, float]], vocab: Vocabulary) -> np.ndarray:
    table = np.full((len(vocab), len(vocab)), -np.inf)
    for prev, nxt in probs.items():
        for word, p in nxt.items():
            table[vocab.index[prev], vocab.index[word]] = np.log(p)
    return table


def random_table(vocab: Vocabulary, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    allowed = [vocab.end_id] + [vocab.index[w] for w in TOY_WORDS]
    table = np.full((len(vocab), len(vocab)), -np.inf)
    for prev in range(len(vocab)):
        table[prev, allowed] = np.log(rng.dirichlet(np.full(len(allowed), 0.7)))
    return table


def exhaustive(decoder: BigramDecoder, max_length: int, no_repeats: bool = True) -> list[Hypothesis]:
    """Every caption the decoder can produce (at least one word; with ``no_repeats``, no content
    word twice: of the toy words "a" is a function word, "b" and "c" are not), with its word
    log-probabilities."""
    vocab, words = decoder.vocab, [decoder.vocab.index[w] for w in TOY_WORDS]
    once = content_words(vocab)
    out = []
    for n in range(1, max_length + 1):
        for ids in itertools.product(words, repeat=n):
            if no_repeats and any(ids.count(word) > 1 for word in once):
                continue
            seq = [vocab.start_id, *ids]
            lps = [float(decoder.table[p, w]) for p, w in zip(seq, ids)]
            if n < max_length:
                out.append(Hypothesis(list(ids), lps + [float(decoder.table[seq[-1], vocab.end_id])], True))
            else:
                out.append(Hypothesis(list(ids), lps, False))
    return sorted(out, key=lambda h: -h.score(LENGTH_PENALTY))


@pytest.mark.parametrize("no_repeats", (False, True))
@pytest.mark.parametrize("seed", range(8))
def test_unlimited_beam_is_exhaustive_search(seed, no_repeats):
    vocab = toy_vocab()
    decoder = BigramDecoder(random_table(vocab, seed), vocab)
    max_length = 4
    everything = exhaustive(decoder, max_length, no_repeats)
    wide = 4 ** max_length  # more than all the continuations (3 words and <end>) of any step
    by_ids = {tuple(h.ids): h for h in everything}
    for n_best in (1, 5, len(everything)):
        hyps = decoder.beam_search(np.zeros(1), wide, max_length, n_best=n_best, no_repeats=no_repeats)
        # The same scores in the same order.  Captions using the same bigrams in another
        # order tie (up to rounding), so which of them comes first is not compared.
        np.testing.assert_allclose([h.score(LENGTH_PENALTY) for h in hyps],
                                   [h.score(LENGTH_PENALTY) for h in everything[:n_best]], rtol=0, atol=1e-9)
        for h in hyps:
            assert h.finished == by_ids[tuple(h.ids)].finished
            np.testing.assert_allclose(h.word_logprobs, by_ids[tuple(h.ids)].word_logprobs, rtol=0, atol=1e-12)
    # Of 1 to 4 words from "a", "b", "c": all of them; or those with "b" and "c" at most once each.
    assert len(hyps) == len(by_ids) == (3 + 7 + 13 + 21 if no_repeats else 3 + 9 + 27 + 81)
    # Greedy's caption is one of them, with the same word log-probabilities, and each of its
    # words is the likeliest continuation of the words before it (content words said excepted).
    (greedy,) = decoder.greedy(np.zeros((1, 1)), max_length, no_repeats=no_repeats)
    np.testing.assert_allclose(greedy.word_logprobs, by_ids[tuple(greedy.ids)].word_logprobs, rtol=0, atol=1e-12)
    prev = [vocab.start_id, *greedy.ids]
    for t, word in enumerate(greedy.ids + ([vocab.end_id] if greedy.finished else [])):
        row = decoder.table[prev[t]].copy()
        if t == 0:
            row[vocab.end_id] = -np.inf
        if no_repeats:
            forbid_said(row[None], greedy.ids[:t], vocab)
        assert word == int(np.argmax(np.where(np.isin(np.arange(len(row)), decoder.banned), -np.inf, row)))


@pytest.mark.parametrize("seed", range(8))
def test_toy_beam_width_one_is_greedy(seed):
    vocab = toy_vocab()
    decoder = BigramDecoder(random_table(vocab, seed), vocab)
    (greedy,) = decoder.greedy(np.zeros((1, 1)), 6)
    (beam,) = decoder.beam_search(np.zeros(1), 1, 6)
    assert (beam.ids, beam.word_logprobs, beam.finished) == (greedy.ids, greedy.word_logprobs, greedy.finished)


def test_end_ranked_outside_the_beam_does_not_finish_a_caption():
    """An <end> that is not among the beam's best continuations must not end the search.

    After <start>, "a" (0.5) beats <end> (0.3); a width-1 beam must follow "a" as
    greedy does, and not return the empty caption it would get by finishing early.
    """
    vocab = toy_vocab()
    table = table_from({"<start>": {"a": 0.5, "<end>": 0.3, "b": 0.1, "c": 0.1},
                        "a": {"<end>": 0.6, "b": 0.2, "c": 0.2}}, vocab)
    decoder = BigramDecoder(table, vocab)
    (greedy,) = decoder.greedy(np.zeros((1, 1)), 5)
    assert vocab.decode(greedy.ids) == "a"
    (beam,) = decoder.beam_search(np.zeros(1), 1, 5)
    assert vocab.decode(beam.ids) == "a" and beam.logprob == pytest.approx(np.log(0.5 * 0.6))
    two = decoder.beam_search(np.zeros(1), 2, 5)
    assert vocab.decode(two[0].ids) == "a" and all(h.ids for h in two)


def test_no_empty_caption_even_when_end_is_likeliest_first():
    vocab = toy_vocab()
    table = table_from({"<start>": {"<end>": 0.7, "a": 0.2, "b": 0.1},
                        "a": {"<end>": 1.0}, "b": {"<end>": 1.0}}, vocab)
    decoder = BigramDecoder(table, vocab)
    (greedy,) = decoder.greedy(np.zeros((1, 1)), 5)
    assert vocab.decode(greedy.ids) == "a"
    hyps = decoder.beam_search(np.zeros(1), 3, 5)
    assert [vocab.decode(h.ids) for h in hyps] == ["a", "b"]


def test_beam_finds_what_greedy_misses():
    """The classic case: the greedy first word leads nowhere good."""
    vocab = toy_vocab()
    table = table_from({"<start>": {"a": 0.6, "b": 0.4},
                        "a": {"<end>": 0.4, "b": 0.3, "c": 0.3},
                        "b": {"<end>": 0.95, "c": 0.05},
                        "c": {"<end>": 1.0}}, vocab)
    decoder = BigramDecoder(table, vocab)
    (greedy,) = decoder.greedy(np.zeros((1, 1)), 5)
    hyps = decoder.beam_search(np.zeros(1), 2, 5)
    assert vocab.decode(greedy.ids) == "a"  # 0.6 * 0.4 = 0.24
    assert vocab.decode(hyps[0].ids) == "b"  # 0.4 * 0.95 = 0.38
    assert hyps[0].score(LENGTH_PENALTY) > greedy.score(LENGTH_PENALTY)


# -- the real bundles, when training has produced them ---------------------------------------------
def _real_bundle(variant: str) -> Path:
    path = REAL_WEIGHTS / variant
    if not (path / "config.json").is_file() or not (path / "decoder.weights.h5").is_file():
        pytest.skip(f"no trained bundle at {path}")
    return path


@pytest.mark.parametrize("variant", VARIANTS)
def test_real_bundle_step_decoder_equals_keras_model(variant, encoder, sample_features):
    captioner = Captioner.load(_real_bundle(variant), encoder=encoder)
    features = np.concatenate([sample_features, random_features(10, encoder.feature_dim, seed=6)])
    greedy = captioner.decoder.greedy(features, captioner.max_length)
    tokens = np.zeros((len(features), captioner.max_length), dtype=np.int32)
    tokens[:, 0] = captioner.vocab.start_id
    rng = np.random.default_rng(7)
    tokens[:, 1:] = rng.integers(captioner.vocab.end_id + 1, len(captioner.vocab), tokens[:, 1:].shape)
    assert_same_logprobs(captioner.decoder, captioner.bundle.model, features, tokens)
    assert_greedy_matches_naive(captioner, features)
    assert any(h.finished for h in greedy)  # a trained model ends its captions
    for f in sample_features[:3]:
        assert_beam_properties(captioner, f, beam_width=5)
    for f in sample_features[:2]:  # a real vocabulary and real captions, against the plain reference
        hyps = captioner.decoder.beam_search(f, 3, captioner.max_length)
        expected = reference_beam_search(captioner.decoder, f, 3, captioner.max_length)
        assert [captioner.vocab.decode(h.ids) for h in hyps] == [captioner.vocab.decode(h.ids) for h in expected]


def test_top_indices_equal_a_stable_full_sort():
    from captioning.decoding import _top_indices

    rng = np.random.default_rng(8)
    for trial in range(200):
        scores = rng.normal(size=(rng.integers(1, 6), rng.integers(4, 300)))
        scores = np.round(scores, rng.integers(0, 3))  # plenty of ties
        scores[rng.random(scores.shape) < 0.1] = -np.inf
        m = int(rng.integers(1, 12))
        expected = np.argsort(-scores, axis=None, kind="stable")[:m]
        np.testing.assert_array_equal(_top_indices(scores, m), expected)
