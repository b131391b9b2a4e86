"""Paths no other test walks: ``training.evaluate`` on a few images, training with ``--vectors``
from a word-vector file to a bundle that loads, the Embeddings tab's nearest words against a
brute-force cosine, and concurrent captioning through ``demo.models.ModelSet``."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from captioning.variants import VARIANTS
from conftest import small_split_files
from demo.models import MODELS



# -- training.evaluate ------------------------------------------------------------------------------
def test_evaluate_rewrites_metrics_and_samples_of_a_bundle(tiny_bundle_copy, flickr8k, tmp_path, encoder):
    from captioning import Captioner
    from training.evaluate import main as evaluate_main

    splits = small_split_files(flickr8k, tmp_path)
    test_images = Path(splits[2]).read_text().split()
    before = json.loads((tiny_bundle_copy / "metrics.json").read_text())
    code = evaluate_main(["--model", str(tiny_bundle_copy), "--data", str(flickr8k), "--split-files", *splits,
                          "--cache-dir", str(tmp_path / "cache"), "--settings", "greedy", "beam3"])
    assert code == 0
    metrics = json.loads((tiny_bundle_copy / "metrics.json").read_text())
    samples = json.loads((tiny_bundle_copy / "samples.json").read_text())
    assert before["images"] != len(test_images)  # it was rewritten, not left as training wrote it
    assert metrics["split"] == "test" and metrics["images"] == len(test_images) == 8
    assert set(metrics["scores"]) == set(samples) == {"greedy", "beam3"}
    captioner = Captioner.load(tiny_bundle_copy, encoder=encoder)
    features = encoder.encode([flickr8k / "Flicker8k_Dataset" / n for n in test_images])
    for setting, (method, width) in {"greedy": ("greedy", 1), "beam3": ("beam", 3)}.items():
        assert list(samples[setting]) == test_images
        # the recorded captions are the model's captions of those images
        assert list(samples[setting].values()) == captioner.caption_features_batch(features, method, width)
        scores = metrics["scores"][setting]
        assert 0 <= scores["BLEU-4"] <= scores["BLEU-1"] <= 1 and 0 <= scores["METEOR"] <= 1
        assert scores["distinct_captions"] == len(set(samples[setting].values()))
        assert scores["mean_length"] == pytest.approx(
            np.mean([len(c.split()) for c in samples[setting].values()]), abs=1e-3)


# -- --vectors: a word-vector file all the way to a loadable bundle ------------------------------------
def test_training_with_a_vectors_file_gives_a_bundle_that_loads(flickr8k, tmp_path, encoder):
    from captioning import Captioner
    from captioning.corpus import load_corpus
    from training.train import main as train_main

    splits = small_split_files(flickr8k, tmp_path)
    corpus = load_corpus(flickr8k, split_files=dict(zip(("train", "dev", "test"), splits)))
    words = sorted({w for c in corpus.split_captions("train") for w in c.split()})
    rng = np.random.default_rng(0)
    vectors = {w: rng.normal(size=6).round(4) for w in words[: len(words) // 2]}  # half the words have one
    glove = tmp_path / "tiny.glove.txt"  # GloVe text: no header line
    glove.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in vectors.items()))

    out = tmp_path / "weights"
    code = train_main(["--data", str(flickr8k), "--split-files", *splits, "--variant", "word2vec",
                       "--vectors", str(glove), "--epochs", "1", "--units", "16", "--min-count", "1", "--scst-epochs", "0",
                       "--out", str(out), "--runs", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
                       "--no-evaluate"])
    assert code == 0
    captioner = Captioner.load(out / "word2vec", encoder=encoder)
    config = captioner.config
    assert config["embedding"]["dim"] == 6 and config["embedding"]["trainable"] is False
    assert glove.name in config["embedding"]["source"]
    table = captioner.embeddings
    known = [w for w in vectors if w in captioner.vocab]
    assert len(known) >= 10
    for word in known:  # the file's vectors, copied in and left frozen by training
        np.testing.assert_allclose(table[captioner.vocab.index[word]], vectors[word], rtol=0, atol=1e-6)
    caption = captioner.caption(flickr8k / "Flicker8k_Dataset" / Path(splits[2]).read_text().split()[0])
    assert isinstance(caption, str) and "<" not in caption


# -- the Embeddings tab: nearest words --------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_nearest_words_equal_a_brute_force_cosine(variant, tiny_weights, encoder):
    from captioning import Captioner

    captioner = Captioner.load(tiny_weights / variant, encoder=encoder)
    vectors = captioner.embeddings.astype(np.float64)
    words = captioner.vocab.words
    special = 4  # <pad>, <unk>, <start>, <end>
    for word in ("dog", "a", words[-1]):
        if word not in captioner.vocab:
            continue
        query = vectors[captioner.vocab.index[word]]
        expected = []
        for i in range(special, len(words)):
            if words[i] == word:
                continue
            cosine = float(vectors[i] @ query / (np.linalg.norm(vectors[i]) * np.linalg.norm(query)))
            expected.append((cosine, words[i]))
        expected.sort(key=lambda pair: -pair[0])
        found = captioner.nearest_words(word, k=8)
        assert [w for w, _ in found] == [w for _, w in expected[:8]] or _ties_only(found, expected[:8])
        np.testing.assert_allclose([s for _, s in found], [c for c, _ in expected[:8]], rtol=0, atol=1e-5)
        assert word not in [w for w, _ in found] and not any(w.startswith("<") for w, _ in found)
    with pytest.raises(KeyError):
        captioner.nearest_words("zzzz-not-a-word")


def _ties_only(found, expected) -> bool:
    """Different order only among words whose similarities tie to float precision."""
    return all(abs(s - c) < 1e-6 for (_, s), (c, _) in zip(found, expected))


# -- concurrent requests through the demo's ModelSet ----------------------------------------------------
def test_concurrent_captions_equal_sequential(tiny_weights, sample_images):
    """Several threads through ModelSet.caption (as the server's worker threads call it) get exactly
    the captions one caller gets alone: bytes (which go through the feature cache) and arrays
    (which do not), greedy and beam, 16 requests from 4 threads released together."""
    from captioning.images import load_pixels
    from demo.admission import Admission
    from demo.models import ModelSet

    models = ModelSet.load(tiny_weights)
    models.admission = Admission(max_waiting=32)  # queue every request: this test is not about refusals
    photos = [p.read_bytes() for p in sample_images[:2]] + [load_pixels(p) for p in sample_images[2:4]]
    jobs = [(i, method) for i in range(len(photos)) for method in ("greedy", "beam")] * 2
    alone = {(i, method): models.caption(photos[i], models.settings(method, 3)).captions()
             for i, method in dict.fromkeys(jobs)}
    models._seen.clear()  # the concurrent requests start from an empty feature cache
    barrier = threading.Barrier(4)

    def run(job):
        i, method = job
        try:
            barrier.wait(timeout=30)
        except threading.BrokenBarrierError:
            pass
        return job, models.caption(photos[i], models.settings(method, 3)).captions()

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, jobs))
    assert len(results) == len(jobs)
    for job, captions in results:
        assert set(captions) == set(MODELS)  # the three and their ensemble
        assert captions == alone[job], job
