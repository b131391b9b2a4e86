"""tools/stage1_probes.py measures four stage-1 alternatives; its numbers are only worth quoting if
the attention probe's NumPy step is its Keras model, the views probe really draws other views and
the consensus probe drops the caption the others disagree with.  Tiny random models, no training."""

from __future__ import annotations

import numpy as np

from captioning.model import DecoderConfig
from captioning.vocab import SPECIAL_TOKENS, Vocabulary
from tools.stage1_probes import REGIONS, AttentionStep, ViewBatches, build_attention_decoder, drop_outlier_captions

VOCAB = Vocabulary([*SPECIAL_TOKENS, "a", "dog", "runs", "on", "grass"])


def _random_weights(model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(rng.normal(0.0, 0.3, weight.shape).astype(np.float32))


def test_the_attention_step_decoder_gives_the_keras_models_next_word_log_probabilities():
    config = DecoderConfig(vocab_size=len(VOCAB), feature_dim=12, embedding_dim=8, units=16)
    model = build_attention_decoder(config)
    _random_weights(model, seed=0)
    maps = np.random.default_rng(1).uniform(0.0, 2.0, (3, REGIONS, config.feature_dim)).astype(np.float32)
    tokens = np.array([[VOCAB.start_id, 4, 5, 6, 7], [VOCAB.start_id, 8, 4, 4, 5], [VOCAB.start_id, 6, 6, 7, 8]])
    expected = np.log(model.predict({"image_features": maps, "caption_in": tokens}, verbose=0))  # (3, 5, vocab)

    decoder = AttentionStep(model, VOCAB)
    projection = decoder.project_image(maps.reshape(3, -1))  # flat, as beam search passes one image
    state = decoder.initial_state(3)
    allowed = np.setdiff1d(np.arange(len(VOCAB)), decoder.banned)
    for t in range(tokens.shape[1]):
        logprobs, state = decoder.step(tokens[:, t], state, projection)
        np.testing.assert_allclose(logprobs[:, allowed], expected[:, t, allowed], atol=1e-4)
        assert np.all(logprobs[:, decoder.banned] == -np.inf)
    # and the library's beam search runs on it: the best caption's log-probability is the model's
    best = decoder.beam_search(maps[0].reshape(-1), beam_width=3, max_length=6)[0]
    assert len(best.word_logprobs) >= 1


def test_view_batches_draw_each_caption_s_features_from_a_random_view_of_its_own_photo():
    images, views = 4, 3
    features = np.array([[v, i] for v in range(views) for i in range(images)], dtype=np.float32)  # view v of photo i
    rows = np.repeat(np.arange(images), 25)  # 25 captions per photo
    sequences = [[VOCAB.start_id, 4 + row, VOCAB.end_id] for row in rows]  # the word says which photo
    batches = ViewBatches(features, images, rows, sequences, batch_size=100, shuffle=True, seed=0)
    assert batches.views == views
    (inputs, _, _), = list(batches)
    view, photo = inputs["image_features"].astype(int).T
    np.testing.assert_array_equal(photo, inputs["caption_in"][:, 1] - 4)  # its own photo
    assert all(set(view[photo == i]) == set(range(views)) for i in range(images))  # every view drawn for each


def test_the_consensus_probe_drops_each_photos_caption_that_agrees_least_with_the_others():
    captions = {
        "dog.jpg": ["a dog runs on the grass", "a brown dog runs on green grass", "a dog is running on the grass",
                    "the animal is outside near a red car", "a dog runs across the grass"],
        "girl.jpg": ["a girl in a pink dress smiles", "a little girl is wearing a pink dress",
                     "two men play guitar on a stage", "a girl wears a pink dress", "a smiling girl in pink"],
    }
    kept = drop_outlier_captions(captions)
    assert kept == {"dog.jpg": [c for c in captions["dog.jpg"] if "red car" not in c],  # order kept
                    "girl.jpg": [c for c in captions["girl.jpg"] if "guitar" not in c]}
    assert [len(v) for v in drop_outlier_captions(captions, drop=2).values()] == [3, 3]
