"""Decoder architecture, teacher-forcing batches and word vectors."""

import json

import numpy as np
import pytest

from captioning.data import CaptionBatches, encode_captions
from captioning.embeddings import embedding_matrix, load_vectors, train_vectors
from captioning.encoders import DEFAULT_ENCODER
from captioning.model import DecoderConfig, build_decoder
from captioning.vocab import Vocabulary

CAPTIONS = ["a dog runs on the grass", "a black dog runs", "a child plays in the water",
            "two dogs play on the grass", "a child runs in the park"] * 4


@pytest.fixture
def vocab():
    return Vocabulary.build(CAPTIONS, min_count=1)


def test_merge_decoder_shapes_and_layers(vocab):
    model = build_decoder(DecoderConfig(vocab_size=len(vocab), feature_dim=12, embedding_dim=8, units=16))
    probs = model.predict({"image_features": np.zeros((3, 12), "float32"),
                           "caption_in": np.ones((3, 7), "int32")}, verbose=0)
    assert probs.shape == (3, 7, len(vocab))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    kinds = {layer.__class__.__name__ for layer in model.layers}
    assert "Lambda" not in kinds and {"LSTM", "Embedding", "Add", "Dense", "Dropout"} <= kinds


def test_frozen_pretrained_embedding(vocab):
    matrix = np.random.default_rng(0).normal(size=(len(vocab), 8)).astype("float32")
    config = DecoderConfig(vocab_size=len(vocab), feature_dim=12, embedding_dim=8, embedding_trainable=False)
    model = build_decoder(config, matrix)
    layer = model.get_layer("word_embedding")
    assert not layer.trainable
    np.testing.assert_array_equal(layer.get_weights()[0], matrix)
    with pytest.raises(ValueError, match="embedding matrix"):
        build_decoder(config, matrix[:, :4])


def test_teacher_forcing_batches(vocab):
    captions = {"img0": ["a dog runs on the grass", "a black dog runs"], "img1": ["two dogs play"]}
    rows, seqs = encode_captions(captions, {"img0": 0, "img1": 1}, vocab, max_words=5)
    assert len(seqs) == 2  # the 6-word caption is longer than max_words
    features = np.arange(6, dtype="float32").reshape(2, 3)
    batches = list(CaptionBatches(features, rows, seqs, batch_size=8, shuffle=False, pad_to=4))
    assert len(batches) == 1
    inputs, target, weights = batches[0]
    assert inputs["caption_in"].shape == target.shape == weights.shape == (2, 8)
    by_length = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # unshuffled batches go short to long
    for row, member in enumerate(by_length):
        seq = seqs[member]
        n = len(seq) - 1
        assert inputs["caption_in"][row, :n].tolist() == seq[:-1]  # <start> w1 .. wn
        assert target[row, :n].tolist() == seq[1:]  # w1 .. wn <end>
        assert weights[row].tolist() == [1.0] * n + [0.0] * (8 - n)
        np.testing.assert_array_equal(inputs["image_features"][row], features[rows[member]])


def test_shuffled_batches_cover_every_caption_once(vocab):
    captions = {f"img{i}": [c] for i, c in enumerate(CAPTIONS)}
    rows, seqs = encode_captions(captions, {k: i for i, k in enumerate(captions)}, vocab, max_words=20)
    batches = CaptionBatches(np.zeros((len(CAPTIONS), 3), "float32"), rows, seqs, batch_size=3, seed=1)
    seen = sorted(int(f) for inputs, _, _ in batches for f in inputs["caption_in"].sum(1))
    assert seen == sorted(int(sum(s[:-1])) for s in seqs)
    assert len(list(batches)) == len(batches) == 7


def test_training_dataset_runs_without_the_autotuner(vocab):
    """With tf.data's autotuner on, deleting each epoch's iterator waited for its thread (most
    Flickr8k epochs took 41 s for 24 s of steps); the dataset must keep it off and still yield the batches."""
    captions = {f"img{i}": [c] for i, c in enumerate(CAPTIONS)}
    rows, seqs = encode_captions(captions, {k: i for i, k in enumerate(captions)}, vocab, max_words=20)
    batches = CaptionBatches(np.zeros((len(CAPTIONS), 3), "float32"), rows, seqs, batch_size=3, shuffle=False)
    dataset = batches.dataset()
    assert dataset.options().autotune.enabled is False
    assert [t.numpy().tolist() for _, t, _ in dataset] == [t.tolist() for _, t, _ in batches]


def test_trained_vectors_are_deterministic():
    sentences = [c.split() for c in CAPTIONS]
    a = train_vectors("word2vec", sentences, dim=8, seed=3, epochs=5)
    b = train_vectors("word2vec", sentences, dim=8, seed=3, epochs=5)
    np.testing.assert_array_equal(a["dog"], b["dog"])


def test_fasttext_gives_vectors_to_unseen_words(vocab):
    vectors = train_vectors("fasttext", [c.split() for c in CAPTIONS], dim=8, seed=0, epochs=5)
    assert "doggy" not in vectors.key_to_index
    assert np.abs(vectors["doggy"]).sum() > 0  # from character n-grams
    matrix, missing = embedding_matrix(vocab, vectors)
    assert missing == 0 and matrix.shape == (len(vocab), 8)
    assert not matrix[vocab.pad_id].any()
    np.testing.assert_allclose(matrix[vocab.index["dog"]], vectors["dog"])


def test_user_supplied_vector_files(tmp_path, vocab):
    vectors = train_vectors("word2vec", [c.split() for c in CAPTIONS], dim=4, seed=0, epochs=2)
    vectors.save_word2vec_format(str(tmp_path / "w2v.bin"), binary=True)
    vectors.save_word2vec_format(str(tmp_path / "w2v.vec"), binary=False)
    glove = tmp_path / "glove.txt"  # GloVe: no header line
    glove.write_text("dog 0.1 0.2 0.3\ncat 0.4 0.5 0.6\n")
    for name in ("w2v.bin", "w2v.vec"):
        loaded = load_vectors(tmp_path / name)
        np.testing.assert_allclose(loaded["dog"], vectors["dog"], rtol=1e-5)
    loaded = load_vectors(glove)
    assert loaded.vector_size == 3 and np.allclose(loaded["cat"], [0.4, 0.5, 0.6])
    matrix, missing = embedding_matrix(vocab, loaded)
    assert missing == len(vocab) - 4 - 1  # only 'dog' of the vocabulary is in the file
    with pytest.raises(FileNotFoundError):
        load_vectors(tmp_path / "missing.vec")


def test_tiny_bundles_are_self_describing(tiny_weights):
    for variant, trainable in (("learned", True), ("fasttext", False), ("word2vec", False)):
        bundle = tiny_weights / variant
        names = {p.name for p in bundle.iterdir()}
        assert {"config.json", "vocab.json", "decoder.weights.h5", "metrics.json", "history.json",
                "loss_curve.png"} <= names
        config = json.loads((bundle / "config.json").read_text())
        assert config["encoder"] == DEFAULT_ENCODER
        assert config["embedding"]["kind"] == variant and config["embedding"]["trainable"] is trainable
        assert config["decoder"]["vocab_size"] == len(json.loads((bundle / "vocab.json").read_text())["words"])
        history = json.loads((bundle / "history.json").read_text())
        assert len(history["loss"]) == len(history["val_loss"]) == config["training"]["epochs_run"]
        metrics = json.loads((bundle / "metrics.json").read_text())
        assert metrics["split"] == "test" and {"BLEU-4", "CIDEr", "METEOR"} <= set(metrics["scores"]["greedy"])
        # The values, not just the keys: the recorded best epoch is the lowest validation loss, the
        # sizes in config.json are the loaded model's, and the scores are the scorer's ranges.
        t = config["training"]
        assert t["best_epoch"] == history["best_epoch"] == int(np.argmin(history["val_loss"])) + 1
        assert t["best_val_loss"] == pytest.approx(min(history["val_loss"]), abs=1e-3)
        assert all(np.isfinite(history["loss"])) and history["loss"][-1] < history["loss"][0]
        from captioning.bundle import load_bundle

        model = load_bundle(bundle).model
        emb = model.get_layer("word_embedding")
        assert emb.get_weights()[0].shape == (config["decoder"]["vocab_size"], config["decoder"]["embedding_dim"])
        assert emb.trainable is trainable
        assert model.get_layer("lstm").get_weights()[1].shape == (config["decoder"]["units"], 4 * config["decoder"]["units"])
        greedy = metrics["scores"]["greedy"]
        assert 0 <= greedy["BLEU-4"] <= greedy["BLEU-1"] <= 1 and 0 <= greedy["METEOR"] <= 1 and greedy["CIDEr"] >= 0
        assert metrics["images"] == config["data"]["test_images"] == 40
    assert not list(tiny_weights.glob(".staging-*"))
