"""Self-critical sequence training (captioning.scst): the reward is pycocoevalcap's CIDEr-D, the
baseline is the mean of the other samples, sampling follows the model, and fine-tuning a tiny
model raises the reward of its own captions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from pycocoevalcap.cider.cider_scorer import CiderScorer

from conftest import TINY_IMAGES_PER_SPLIT

from captioning.decoding import StepDecoder
from captioning.model import DecoderConfig, build_decoder
from captioning.scst import (CiderDReward, ScstData, ScstSettings, dev_cider, fine_tune, leave_one_out_advantages,
                             by_length, make_policy_gradient_step, reference_arrays, sample_captions,
                             teacher_forcing_arrays)
from captioning.text import END
from captioning.vocab import Vocabulary

REFERENCES = {
    "dog.jpg": ["a black dog runs on the grass", "a dog running through grass", "the black dog is running",
                "a dog runs outside", "a black dog plays on a lawn"],
    "boat.jpg": ["a red boat on the lake", "a boat floats on calm water", "a small red boat",
                 "people in a boat on a lake", "a boat on the water"],
    "man.jpg": ["a man rides a bike down a street", "a cyclist on a city street", "a man on a bicycle",
                "a person riding a bike", "a man cycles down the road"],
}


def test_reward_is_the_coco_scorer_cider_d_with_end_tokens():
    """Scoring every image of the split at once, the reward equals pycocoevalcap's own CIDEr-D
    (its IDF then comes from the same references) with ``<end>`` appended on both sides."""
    images = list(REFERENCES)
    captions = [["a", "black", "dog", "runs"], ["a", "red", "boat", "on", "water"], ["a", "man", "on", "a", "bike"]]
    reward = CiderDReward(REFERENCES)(images, captions, [True] * 3)

    scorer = CiderScorer()
    for image, words in zip(images, captions):
        scorer += (" ".join(words + [END]), [f"{r} {END}" for r in REFERENCES[image]])
    _, expected = scorer.compute_score()
    np.testing.assert_allclose(reward, expected, rtol=1e-12)


def test_reward_does_not_depend_on_the_minibatch():
    reward = CiderDReward(REFERENCES)
    caption = ["a", "dog", "runs", "on", "the", "grass"]
    alone = reward(["dog.jpg"], [caption], [True])
    in_a_batch = reward(["boat.jpg", "dog.jpg", "man.jpg"], [["a", "boat"], caption, ["a", "man"]], [True] * 3)
    assert alone[0] == pytest.approx(in_a_batch[1], rel=1e-12)


def test_reward_ranks_captions_and_rewards_finishing():
    reward = CiderDReward(REFERENCES)
    good, wrong = ["a", "black", "dog", "runs", "on", "the", "grass"], ["a", "red", "boat", "on", "the", "lake"]
    scores = reward(["dog.jpg", "dog.jpg", "dog.jpg"], [good, wrong, good], [True, True, False])
    assert scores[0] > 1.0 > scores[1]
    assert scores[0] > scores[2]  # the same words, cut off before <end>: "grass <end>" no longer matches


def test_leave_one_out_baseline():
    rewards = np.array([[1.0, 2.0, 3.0, 6.0], [0.5, 0.5, 0.5, 0.5]])
    advantages = leave_one_out_advantages(rewards)
    assert advantages[0, 0] == pytest.approx(1.0 - (2 + 3 + 6) / 3)
    assert advantages[0, 3] == pytest.approx(6.0 - 2.0)
    np.testing.assert_allclose(advantages.sum(axis=1), 0.0, atol=1e-12)  # the baseline only redistributes
    np.testing.assert_array_equal(advantages[1], 0.0)  # equally good samples: nothing to learn
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out_advantages(np.ones((3, 1)))


def test_teacher_forcing_arrays_shift_the_sample():
    ids = np.array([[7, 8, 3, 0, 0], [9, 9, 9, 9, 9]])  # finished with <end> (3); cut off at max length
    caption_in, target, weights = teacher_forcing_arrays(ids, start_id=2)
    np.testing.assert_array_equal(caption_in, [[2, 7, 8, 3, 0], [2, 9, 9, 9, 9]])
    np.testing.assert_array_equal(target, ids)
    np.testing.assert_array_equal(weights, [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])


def _tiny(vocab_words=("a", "dog", "boat", "runs", "on", "grass", "water"), seed=0):
    keras.utils.set_random_seed(seed)
    vocab = Vocabulary(["<pad>", "<unk>", "<start>", "<end>", *vocab_words])
    model = build_decoder(DecoderConfig(vocab_size=len(vocab), feature_dim=6, embedding_dim=8, units=16, dropout=0.0))
    return vocab, model


def test_samples_have_the_right_shape_and_follow_the_model():
    vocab, model = _tiny()
    decoder = StepDecoder(model, vocab)
    features = np.random.default_rng(1).random((3, 6)).astype(np.float32)
    ids, finished = sample_captions(decoder, features, 4, max_length=6, rng=np.random.default_rng(0))
    assert ids.shape[0] == 12 and ids.shape[1] <= 6
    assert not np.isin(ids, [vocab.unk_id, vocab.start_id]).any()
    assert (ids[:, 0] != vocab.end_id).all() and (ids[:, 0] != 0).all()
    for row, done in zip(ids, finished):
        words = row[row != 0]
        assert (row[:len(words)] != 0).all()  # padding only after the caption
        assert done == (words[-1] == vocab.end_id) and (words[:-1] != vocab.end_id).all()

    # The first word's frequencies over many samples match the model's own distribution.
    one = features[:1]
    logprobs, _ = decoder.step(np.array([vocab.start_id]), decoder.initial_state(1), decoder.project_image(one))
    logprobs[0, vocab.end_id] = -np.inf
    expected = np.exp(logprobs[0]) / np.exp(logprobs[0]).sum()
    first, _ = sample_captions(decoder, one, 20_000, max_length=1, rng=np.random.default_rng(2))
    observed = np.bincount(first[:, 0], minlength=len(vocab)) / len(first)
    np.testing.assert_allclose(observed, expected, atol=0.015)


def test_policy_gradient_step_follows_the_sign_of_the_advantage():
    vocab, model = _tiny()
    features = np.ones((1, 6), dtype=np.float32)
    ids = np.array([[vocab.index["dog"], vocab.index["runs"], vocab.end_id]])
    caption_in, target, weights = teacher_forcing_arrays(ids, vocab.start_id)

    def logprob():
        probs = model({"image_features": features, "caption_in": caption_in}, training=False).numpy()
        return float(np.log(probs[0, np.arange(3), target[0]]).sum())

    step = make_policy_gradient_step(model, keras.optimizers.SGD(0.5))
    before = logprob()
    step(by_length(features, caption_in, target, weights, np.array([1.0], dtype=np.float32)))
    raised = logprob()
    step(by_length(features, caption_in, target, weights, np.array([-1.0], dtype=np.float32)))
    step(by_length(features, caption_in, target, weights, np.array([-1.0], dtype=np.float32)))
    assert raised > before + 0.01
    assert logprob() < raised - 0.01


def test_grouping_by_length_cuts_padding_but_not_the_mean():
    """The rows split into groups of similar length, each no wider than its longest row, give the
    same advantage-weighted mean log-probability as the whole padded batch."""
    from captioning.scst import _mean_log_prob

    vocab, model = _tiny()
    rng = np.random.default_rng(0)
    lengths = np.array([1, 7, 2, 2, 5, 3, 7, 1, 4])
    ids = np.zeros((len(lengths), 7), dtype=np.int32)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(4, len(vocab), n)
    features = rng.normal(size=(len(lengths), 6)).astype(np.float32)
    scale = rng.normal(size=len(lengths)).astype(np.float32)
    arrays = teacher_forcing_arrays(ids, vocab.start_id)

    groups = by_length(features, *arrays, scale)
    assert len(groups) == 3
    assert [g[1].shape[1] for g in groups] == [2, 4, 7]  # lengths sorted: 1 1 2 | 2 3 4 | 5 7 7
    assert sorted(np.concatenate([g[4] for g in groups]).tolist()) == sorted(scale.tolist())
    whole = float(_mean_log_prob(model, [(features, *arrays, scale)]))
    assert float(_mean_log_prob(model, groups)) == pytest.approx(whole, rel=1e-5)


def test_reference_arrays_teacher_force_the_references():
    vocab = Vocabulary(["<pad>", "<unk>", "<start>", "<end>", "a", "dog", "runs"])
    caption_in, target, weights = reference_arrays(vocab, ["a dog runs", "a cat"])
    a, dog, runs, unk = (vocab.index[w] for w in ("a", "dog", "runs", "<unk>"))
    np.testing.assert_array_equal(caption_in, [[vocab.start_id, a, dog, runs], [vocab.start_id, a, unk, vocab.end_id]])
    np.testing.assert_array_equal(target, [[a, dog, runs, vocab.end_id], [a, unk, vocab.end_id, 0]])
    np.testing.assert_array_equal(weights, [[1, 1, 1, 1], [1, 1, 1, 0]])


def test_cross_entropy_term_pulls_towards_the_references():
    """With zero advantages the policy-gradient term is zero: without the cross-entropy term the step
    changes nothing; with it, the references' likelihood rises."""
    vocab, model = _tiny()
    features = np.ones((1, 6), dtype=np.float32)
    zero, one = np.zeros(1, dtype=np.float32), np.ones(1, dtype=np.float32)
    sample = by_length(features, *teacher_forcing_arrays(np.array([[vocab.index["a"], vocab.end_id]]), vocab.start_id),
                       zero)
    references = by_length(features, *reference_arrays(vocab, ["the dog runs"]), one)

    def reference_logprob():
        _, caption_in, target, weights, _ = references[0]
        probs = model({"image_features": features, "caption_in": caption_in}, training=False).numpy()
        return float((np.log(probs[0, np.arange(target.shape[1]), target[0]]) * weights[0]).sum())

    weights_before = [w.copy() for w in model.get_weights()]
    make_policy_gradient_step(model, keras.optimizers.SGD(0.5))(sample)
    for before, after in zip(weights_before, model.get_weights()):
        np.testing.assert_array_equal(before, after)

    before = reference_logprob()
    make_policy_gradient_step(model, keras.optimizers.SGD(0.5), cross_entropy_weight=1.0)(sample, references)
    assert reference_logprob() > before + 0.01


def test_a_cross_entropy_weight_needs_the_references(toy_corpus, tmp_path):
    images, features, references, words = toy_corpus
    vocab, model = _tiny(words)
    data = ScstData(images, features, CiderDReward(references))  # no reference captions given
    with pytest.raises(ValueError, match="reference captions"):
        fine_tune(model, vocab, data, data, 7, ScstSettings(epochs=1, cross_entropy_weight=0.5), tmp_path)


def test_frozen_embeddings_stay_frozen():
    keras.utils.set_random_seed(0)
    vocab = Vocabulary(["<pad>", "<unk>", "<start>", "<end>", "a", "dog"])
    config = DecoderConfig(vocab_size=len(vocab), feature_dim=4, embedding_dim=4, units=8, dropout=0.0,
                           embedding_trainable=False)
    model = build_decoder(config, np.random.default_rng(0).random((len(vocab), 4)).astype(np.float32))
    table = model.get_layer("word_embedding").get_weights()[0].copy()
    ids = np.array([[4, 5, 3]])
    caption_in, target, weights = teacher_forcing_arrays(ids, vocab.start_id)
    make_policy_gradient_step(model, keras.optimizers.SGD(1.0))(
        by_length(np.ones((1, 4), np.float32), caption_in, target, weights, np.array([1.0], np.float32)))
    np.testing.assert_array_equal(model.get_layer("word_embedding").get_weights()[0], table)


@pytest.fixture(scope="module")
def toy_corpus():
    """Twelve 'images' (random feature vectors), each with five references about one of three
    subjects, and a tiny untrained decoder: enough for the reward to be learnable in seconds."""
    rng = np.random.default_rng(0)
    subjects = {0: ["a dog runs on the grass", "a dog on grass", "the dog runs", "a dog runs", "dog on the grass"],
                1: ["a boat on the water", "a boat on water", "the boat on the water", "a boat", "boat on water"],
                2: ["a man rides a bike", "a man on a bike", "the man rides", "a man rides", "man on a bike"]}
    images = [f"im{i}.jpg" for i in range(12)]
    centres = rng.normal(size=(3, 6))
    features = np.stack([centres[i % 3] + 0.1 * rng.normal(size=6) for i in range(12)]).astype(np.float32)
    references = {im: subjects[i % 3] for i, im in enumerate(images)}
    words = sorted({w for caps in subjects.values() for c in caps for w in c.split()})
    return images, features, references, words


def test_fine_tuning_raises_the_reward_and_keeps_the_best_epoch(toy_corpus, tmp_path):
    images, features, references, words = toy_corpus
    vocab, model = _tiny(words)
    data = ScstData(images, features, CiderDReward(references))
    settings = ScstSettings(epochs=12, images_per_batch=4, samples_per_image=5, learning_rate=3e-2,
                            cross_entropy_weight=0.0)  # pure SCST
    tuned, history = fine_tune(model, vocab, data, data, max_length=7, settings=settings, checkpoint_dir=tmp_path)

    assert len(history["dev_cider"]) == 13 and len(history["mean_reward"]) == 12
    assert np.mean(history["mean_reward"][-3:]) > np.mean(history["mean_reward"][:3]) + 0.3
    assert history["best_epoch"] > 0 and max(history["dev_cider"]) > history["dev_cider"][0] + 0.5
    assert history["dev_cider"][history["best_epoch"]] == max(history["dev_cider"])
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["epoch"] == 12 and state["best_epoch"] == history["best_epoch"]


def test_fine_tuning_with_the_cross_entropy_term_raises_the_reward(toy_corpus, tmp_path):
    images, features, references, words = toy_corpus
    vocab, model = _tiny(words)
    data = ScstData(images, features, CiderDReward(references), [references[im] for im in images])
    settings = ScstSettings(epochs=12, images_per_batch=4, learning_rate=3e-2, cross_entropy_weight=0.3)
    _, history = fine_tune(model, vocab, data, data, max_length=7, settings=settings, checkpoint_dir=tmp_path)
    assert np.mean(history["mean_reward"][-3:]) > np.mean(history["mean_reward"][:3]) + 0.3
    assert history["best_epoch"] > 0


def test_fine_tuning_keeps_every_epochs_weights_when_asked(toy_corpus, tmp_path):
    """keep_epochs: epoch<N>.weights.h5 for every epoch, the last one equal to the checkpoint's last
    weights (what tools.average_epochs averages); the kept best weights are unaffected."""
    images, features, references, words = toy_corpus
    data = ScstData(images, features, CiderDReward(references))
    settings = ScstSettings(epochs=2, images_per_batch=4, learning_rate=3e-2, cross_entropy_weight=0.0)
    vocab, model = _tiny(words)
    tuned, history = fine_tune(model, vocab, data, data, 7, settings, tmp_path / "run", keep_epochs=tmp_path / "kept")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["epoch1.weights.h5", "epoch2.weights.h5"]
    best = [w.copy() for w in tuned.get_weights()]
    _, second = _tiny(words, seed=5)
    second.load_weights(tmp_path / "kept" / "epoch2.weights.h5")
    last = second.get_weights()
    second.load_weights(tmp_path / "run" / "last.weights.h5")
    for kept, checkpoint in zip(last, second.get_weights()):
        np.testing.assert_array_equal(kept, checkpoint)
    second.load_weights(tmp_path / "kept" / "epoch1.weights.h5")
    assert any(not np.array_equal(a, b) for a, b in zip(second.get_weights(), last))  # the epochs differ
    second.load_weights(tmp_path / "run" / "best.weights.h5")
    for kept, checkpoint in zip(best, second.get_weights()):
        np.testing.assert_array_equal(kept, checkpoint)


def test_fine_tuning_resumes_after_an_interruption(toy_corpus, tmp_path, monkeypatch):
    import captioning.scst as scst

    images, features, references, words = toy_corpus
    data = ScstData(images, features, CiderDReward(references))
    settings = ScstSettings(epochs=3, images_per_batch=4, learning_rate=1e-2, cross_entropy_weight=0.0)
    real_dev_cider, calls = scst.dev_cider, []

    def dev_cider_then_crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # before fine-tuning, after epoch 1, then dies in epoch 2's scoring
            raise KeyboardInterrupt
        return real_dev_cider(*args, **kwargs)

    monkeypatch.setattr(scst, "dev_cider", dev_cider_then_crash)
    vocab, model = _tiny(words)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(model, vocab, data, data, 7, settings, tmp_path)
    assert json.loads((tmp_path / "state.json").read_text())["epoch"] == 1

    monkeypatch.setattr(scst, "dev_cider", real_dev_cider)
    epochs_run = []
    monkeypatch.setattr(scst, "leave_one_out_advantages",
                        lambda r: (epochs_run.append(1), leave_one_out_advantages(r))[1])
    vocab, model = _tiny(words)  # the same starting model, rebuilt: the checkpoint's weights are loaded into it
    _, history = fine_tune(model, vocab, data, data, 7, settings, tmp_path)
    assert len(history["mean_reward"]) == 3 and len(history["dev_cider"]) == 4
    assert len(epochs_run) == 2 * 3  # epochs 2 and 3 only, three minibatches each


DECODER = {"vocab_size": 99, "feature_dim": 6, "embedding_dim": 8, "units": 16, "dropout": 0.5,
           "embedding_trainable": True}
IDENTITY_KEYS = ("start_weights", "decoder", "data")  # what the old code's state.json lacked
TWO_EPOCHS = ScstSettings(epochs=2, images_per_batch=4, learning_rate=1e-2, cross_entropy_weight=0.0)


@pytest.fixture(scope="module")
def interrupted(toy_corpus, tmp_path_factory):
    """(checkpoint folder, kept-epochs folder) of a fine-tuning of ``_tiny(words)`` with ``DECODER``,
    killed right after epoch 1's checkpoint was written; copy them before use."""
    import captioning.scst as scst

    images, features, references, words = toy_corpus
    data = ScstData(images, features, CiderDReward(references))
    folder = tmp_path_factory.mktemp("interrupted")
    real_write_json = scst.write_json

    def write_then_die(path, state):
        real_write_json(path, state)
        raise KeyboardInterrupt

    vocab, model = _tiny(words)
    scst.write_json = write_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            fine_tune(model, vocab, data, data, 7, TWO_EPOCHS, folder / "run", decoder=DECODER,
                      keep_epochs=folder / "kept")
    finally:
        scst.write_json = real_write_json
    assert json.loads((folder / "run" / "state.json").read_text())["epoch"] == 1
    return folder / "run", folder / "kept"


@pytest.mark.parametrize("seed, decoder, old_checkpoint, why", [
    (5, DECODER, False, "other starting (stage-1) weights; starting stage 2 afresh"),  # stage 1 retrained
    (0, {**DECODER, "dropout": 0.3}, False, "other decoder config; starting stage 2 afresh"),  # same weights
    (0, DECODER, True, "does not record its starting model; starting stage 2 afresh"),  # written before the check
])
def test_a_checkpoint_of_another_starting_model_is_not_resumed(toy_corpus, interrupted, tmp_path, caplog,
                                                               seed, decoder, old_checkpoint, why):
    """An SCST checkpoint left by a killed run is resumed only by the fine-tuning of the very same
    stage-1 model: after stage 1 was trained anew (other weights) or with another decoder config
    (dropout changes no weight shape), stage 2 starts from the new weights, saying why, and the
    other run's kept epochs are gone."""
    images, features, references, words = toy_corpus
    data = ScstData(images, features, CiderDReward(references))
    run, kept = (Path(shutil.copytree(folder, tmp_path / folder.name)) for folder in interrupted)
    (kept / "epoch5.weights.h5").write_bytes((kept / "epoch1.weights.h5").read_bytes())  # a longer run's
    if old_checkpoint:
        state = json.loads((run / "state.json").read_text())
        (run / "state.json").write_text(json.dumps({k: v for k, v in state.items() if k not in IDENTITY_KEYS}))

    vocab, model = _tiny(words, seed=seed)
    epoch_0 = dev_cider(model, vocab, data, 7, TWO_EPOCHS.select_beam_width)
    with caplog.at_level("INFO", logger="captioning.scst"):
        _, history = fine_tune(model, vocab, data, data, 7, TWO_EPOCHS, run, decoder=decoder, keep_epochs=kept)
    assert why in caplog.text and "SCST: resuming" not in caplog.text
    assert len(history["mean_reward"]) == 2 and history["dev_cider"][0] == epoch_0  # both epochs, from these weights
    assert sorted(p.name for p in kept.iterdir()) == ["epoch1.weights.h5", "epoch2.weights.h5"]
    state = json.loads((run / "state.json").read_text())
    assert state["decoder"] == decoder and state["epoch"] == 2


def test_the_same_starting_model_resumes(toy_corpus, interrupted, tmp_path, caplog):
    """Rerun with the same stage-1 weights, decoder config and settings: epoch 2 only."""
    images, features, references, words = toy_corpus
    data = ScstData(images, features, CiderDReward(references))
    run, kept = (Path(shutil.copytree(folder, tmp_path / folder.name)) for folder in interrupted)
    vocab, model = _tiny(words)  # the same starting model, rebuilt
    with caplog.at_level("INFO", logger="captioning.scst"):
        _, history = fine_tune(model, vocab, data, data, 7, TWO_EPOCHS, run, decoder=dict(DECODER), keep_epochs=kept)
    assert "SCST: resuming after epoch 1" in caplog.text and "afresh" not in caplog.text
    ours = [r for r in caplog.records if r.name == "captioning.scst"]
    assert len(history["mean_reward"]) == 2 and len(ours) == 2  # the resume line, epoch 2's line


def test_training_runs_both_stages_and_records_them(flickr8k, tmp_path):
    """training.train with --scst-epochs: the bundle holds the stage better on dev, metrics.json
    both stages' test scores, config.json and history.json the fine-tuning, the summary each
    stage's time."""
    from training.report import scores_table
    from training.train import main as train_main

    out = tmp_path / "weights"
    assert train_main([
        "--data", str(flickr8k), "--variant", "learned", "--limit-images", "40", "--epochs", "2",
        "--embedding-dim", "16", "--units", "16", "--min-count", "2", "--scst-epochs", "2",
        "--scst-learning-rate", "1e-3", "--settings", "greedy", "beam3", "--out", str(out),
        "--runs", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "--no-meteor",
    ]) == 0
    config = json.loads((out / "learned" / "config.json").read_text())
    metrics = json.loads((out / "learned" / "metrics.json").read_text())
    history = json.loads((out / "learned" / "history.json").read_text())
    summary = json.loads((out / "training_summary.json").read_text())

    tuning = config["fine_tuning"]
    assert tuning["epochs"] == 2 and tuning["select_beam_width"] == 3 and len(tuning["dev_cider"]) == 3
    shipped = "scst" if tuning["best_epoch"] > 0 else "cross_entropy"
    assert config["shipped_stage"] == metrics["shipped_stage"] == shipped
    assert set(metrics["stages"]["cross_entropy"]) == {"greedy", "beam3"}
    assert metrics["stages"]["scst"] == (metrics["scores"] if shipped == "scst" else None)
    assert len(history["scst"]["mean_reward"]) == 2 and history["loss"]
    (variant,) = summary["variants"]
    assert variant["scst_epochs"] == 2
    assert all(variant[k] > 0 for k in ("cross_entropy_seconds", "scst_seconds", "evaluate_seconds"))
    # --no-meteor: every other score, no METEOR, and the report says it was not scored
    assert "CIDEr" in metrics["scores"]["greedy"] and "METEOR" not in metrics["scores"]["greedy"]
    rows = [line for line in scores_table(out).splitlines() if line.startswith("| learned |")]
    assert len(rows) == 2 and all(line.split(" | ")[7] == "–" for line in rows)  # the METEOR column


def test_fine_tuning_finished_bundles_keeps_their_first_stage(flickr8k, tiny_weights, tmp_path):
    """--from-bundles: stage 2 alone on cross-entropy bundles. The new bundle records the source's
    cross-entropy stage unchanged, the fine-tuning (with its cross-entropy weight) and both stages'
    scores; the timings go to fine_tuning_summary.json. A fine-tuned bundle is refused as a source."""
    from training.train import main as train_main

    def fine_tune_from(source, out, *extra):
        return train_main([
            "--data", str(flickr8k), "--variant", "fasttext", "--limit-images", str(TINY_IMAGES_PER_SPLIT),
            "--min-count", "2", "--cache-dir", str(tmp_path / "cache"), "--runs", str(tmp_path / "runs"),
            "--from-bundles", str(source), "--out", str(out), "--scst-epochs", "1", "--scst-learning-rate", "1e-3",
            "--scst-cross-entropy", "0.5", "--settings", "greedy", "--no-meteor", *extra])

    out = tmp_path / "tuned"
    assert fine_tune_from(tiny_weights, out) == 0
    source = json.loads((tiny_weights / "fasttext" / "config.json").read_text())
    config = json.loads((out / "fasttext" / "config.json").read_text())
    metrics = json.loads((out / "fasttext" / "metrics.json").read_text())
    history = json.loads((out / "fasttext" / "history.json").read_text())
    source_history = json.loads((tiny_weights / "fasttext" / "history.json").read_text())

    assert config["embedding"] == source["embedding"] and config["decoder"] == source["decoder"]
    for key in ("epochs_run", "best_epoch", "seconds", "best_val_loss", "learning_rate", "batch_size"):
        assert config["training"][key] == source["training"][key]
    assert history["loss"] == source_history["loss"] and len(history["scst"]["mean_reward"]) == 1
    tuning = config["fine_tuning"]
    assert tuning["epochs"] == 1 and tuning["cross_entropy_weight"] == 0.5 and len(tuning["dev_cider"]) == 2
    assert config["shipped_stage"] == metrics["shipped_stage"]
    assert set(metrics["stages"]["cross_entropy"]) == {"greedy"}
    summary = json.loads((out / "fine_tuning_summary.json").read_text())
    assert summary["from_bundles"] == str(tiny_weights) and summary["variants"][0]["scst_seconds"] > 0
    assert not (out / "training_summary.json").exists()

    with pytest.raises(SystemExit, match="fine-tuned already"):
        fine_tune_from(out, tmp_path / "again")
    # Fine-tuned in place (--out the --from-bundles folder), a rerun of the same command after an
    # interruption finds its own finished variants: skipped, not an error, and left as they are.
    before = (out / "fasttext" / "decoder.weights.h5").read_bytes()
    assert fine_tune_from(out, out) == 0
    assert (out / "fasttext" / "decoder.weights.h5").read_bytes() == before
    assert json.loads((out / "fine_tuning_summary.json").read_text())["variants"][0]["skipped"]
    with pytest.raises(SystemExit, match="fine-tuned already"):  # other SCST settings: not this command's
        fine_tune_from(out, out, "--scst-learning-rate", "2e-3")
    with pytest.raises(SystemExit, match="another --max-words"):
        fine_tune_from(tiny_weights, tmp_path / "other", "--max-words", "12")


def test_the_sampler_steps_only_unfinished_rows_and_draws_what_stepping_every_row_draws():
    """sample_captions stops stepping a caption once it ends; the samples (so SCST's training) must be
    exactly those of the plain loop below, which steps every row to the end: the same draws per row."""
    vocab, model = _tiny()
    decoder = StepDecoder(model, vocab)
    features = np.random.default_rng(3).random((3, 6)).astype(np.float32)
    k, max_length = 6, 8

    rows = len(features) * k
    projection = np.repeat(decoder.project_image(features), k, axis=0)
    state, words, rng = decoder.initial_state(rows), np.full(rows, vocab.start_id), np.random.default_rng(4)
    expected, finished = np.zeros((rows, max_length), np.int32), np.zeros(rows, bool)
    for t in range(max_length):
        logprobs, state = decoder.step(words, state, projection)
        if t == 0:
            logprobs[:, vocab.end_id] = -np.inf
        cumulative = np.cumsum(np.exp(logprobs), axis=1)
        words = np.minimum((cumulative <= (rng.random(rows) * cumulative[:, -1])[:, None]).sum(axis=1), len(vocab) - 1)
        expected[~finished, t] = words[~finished]
        finished |= words == vocab.end_id

    ids, done = sample_captions(decoder, features, k, max_length, np.random.default_rng(4))
    lengths = (ids != 0).sum(axis=1)
    assert len(set(lengths)) >= 3 and done.any() and not done.all()  # rows did finish at different steps
    np.testing.assert_array_equal(ids, expected[:, :ids.shape[1]])
    assert not expected[:, ids.shape[1]:].any()
    np.testing.assert_array_equal(done, finished)
