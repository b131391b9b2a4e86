"""Tests for captioning.evaluation (pycocoevalcap tests need Java; METEOR runs once)."""

from __future__ import annotations

import contextlib
import shutil

import pytest

from captioning import evaluation
from captioning.evaluation import (
    caption_statistics,
    coco_scores,
    evaluate_predictions,
    nltk_corpus_bleu,
)

needs_java = pytest.mark.skipif(
    shutil.which("java") is None,
    reason="java not on PATH (apt-get install default-jre-headless)",
)

REFERENCES = {
    "img1": [
        "a black dog is running through the grass",
        "a dog runs across a green field",
        "a black dog runs on the grass",
    ],
    "img2": [
        "two children are playing on the beach",
        "two kids play in the sand near the water",
        "children playing on a sandy beach",
    ],
    "img3": [
        "a man is riding a bike down the street",
        "a man rides his bicycle on a city street",
        "a cyclist rides down the road",
    ],
    "img4": [
        "a woman is climbing a steep rock wall",
        "a climber scales a large rock",
        "a woman climbs up the side of a cliff",
    ],
}
PERFECT = {i: refs[0] for i, refs in REFERENCES.items()}
PARTIAL = {
    "img1": "a black dog is running in the snow",
    "img2": "two children are playing in the water",
    "img3": "a man is riding a horse",
    "img4": "a woman is climbing a tree",
}
WRONG = {
    "img1": "purple elephants sing loudly",
    "img2": "an old clock ticks slowly",
    "img3": "seven bananas float upward",
    "img4": "quiet violins hum softly",
}
COCO_KEYS = {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"}
NLTK_KEYS = {f"NLTK-BLEU-{n}" for n in range(1, 5)}


@contextlib.contextmanager
def recording_meteor():
    """Within it, every METEOR process the evaluation module starts is appended to the list yielded."""
    created = []

    class RecordingMeteor(evaluation.Meteor):
        def __init__(self):
            super().__init__()
            created.append(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluation, "Meteor", RecordingMeteor)
        yield created


@pytest.fixture(scope="module")
def perfect_with_meteor():
    """Scores of PERFECT with METEOR (one ~6 s java start), plus the Meteor objects."""
    if shutil.which("java") is None:
        pytest.skip("java not on PATH (apt-get install default-jre-headless)")
    with recording_meteor() as created:
        scores = coco_scores(PERFECT, REFERENCES, meteor=True)
    return scores, created


@needs_java
def test_perfect_predictions(perfect_with_meteor):
    scores, _ = perfect_with_meteor
    assert set(scores) == COCO_KEYS | {"METEOR"}
    for n in range(1, 5):
        assert scores[f"BLEU-{n}"] == pytest.approx(1.0, abs=1e-6)
    assert scores["ROUGE-L"] == pytest.approx(1.0)
    assert scores["CIDEr"] > 2.0
    assert 0.5 < scores["METEOR"] <= 1.0


@needs_java
def test_meteor_process_is_cleaned_up(perfect_with_meteor):
    _, created = perfect_with_meteor
    assert len(created) == 1
    proc = created[0].meteor_p
    assert proc.poll() is not None, "METEOR java process still running"
    assert proc.stdin.closed and proc.stdout.closed and proc.stderr.closed
    created[0].__del__()  # must not block or raise after our cleanup


@needs_java
def test_one_meteor_process_scores_several_evaluations_as_fresh_ones_do(perfect_with_meteor):
    """evaluate_captioner scores every decoding setting through one MeteorScorer (one Java start,
    not one per setting); the scores must be those of a process started for each."""
    perfect, _ = perfect_with_meteor
    with recording_meteor() as created:
        with evaluation.MeteorScorer() as scorer:
            shared = [coco_scores(p, REFERENCES, meteor_scorer=scorer)["METEOR"] for p in (PARTIAL, PERFECT, PARTIAL)]
        assert len(created) == 1
        assert created[0].meteor_p.poll() is not None, "METEOR java process still running after the with block"
        fresh_partial = coco_scores(PARTIAL, REFERENCES)["METEOR"]
    assert len(created) == 2
    assert shared == [fresh_partial, perfect["METEOR"], fresh_partial]
    assert shared[0] < shared[1]


@needs_java
def test_wrong_scores_lower_than_right():
    right = coco_scores(PARTIAL, REFERENCES, meteor=False)
    wrong = coco_scores(WRONG, REFERENCES, meteor=False)
    assert set(right) == set(wrong) == COCO_KEYS
    for key in COCO_KEYS:
        assert wrong[key] < right[key], key
    assert wrong["CIDEr"] == pytest.approx(0.0, abs=1e-6)


@needs_java
def test_nltk_bleu_tracks_coco_bleu():
    ranked = [PERFECT, PARTIAL, WRONG]
    coco = [coco_scores(p, REFERENCES, meteor=False) for p in ranked]
    nltk = [nltk_corpus_bleu(p, REFERENCES) for p in ranked]
    for scores in nltk:
        assert set(scores) == NLTK_KEYS
        assert all(0.0 <= v <= 1.0 for v in scores.values())
    for n in range(1, 5):
        c = [s[f"BLEU-{n}"] for s in coco]
        k = [s[f"NLTK-BLEU-{n}"] for s in nltk]
        assert c[0] > c[1] > c[2] and k[0] > k[1] > k[2], n
        assert k[0] == pytest.approx(1.0)
        assert k[1] == pytest.approx(c[1], abs=1e-3)  # same closest-ref brevity penalty


def test_nltk_bleu_without_java_dependencies():
    scores = nltk_corpus_bleu(WRONG, REFERENCES)
    assert scores["NLTK-BLEU-4"] == 0.0  # no smoothing: no n-gram overlap -> 0


def test_caption_statistics_exact():
    predictions = {
        "a": "a dog runs",
        "b": "a dog runs",
        "c": "a  cat sleeps ",  # whitespace is normalised
        "d": "a bird",
    }
    training = ["a dog runs", "a cat sleeps", "a dog jumps"]
    assert caption_statistics(predictions, training) == {
        "vocabulary_used": 6,  # a dog runs cat sleeps bird
        "copied_from_training": 0.75,
        "mean_length": 11 / 4,
        "distinct_captions": 3,
        "distinct_share": 0.75,
    }


def test_missing_references_raise():
    predictions = dict(PARTIAL, img9="a dog", img8="a cat")
    references = dict(REFERENCES, img8=[])
    with pytest.raises(ValueError, match="img8, img9"):
        coco_scores(predictions, references)
    with pytest.raises(ValueError, match="img9"):
        nltk_corpus_bleu(predictions, references)
    with pytest.raises(ValueError, match="img9"):
        evaluate_predictions(predictions, references, [])


def test_missing_java_is_explained(monkeypatch):
    monkeypatch.setattr(evaluation.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="default-jre-headless"):
        coco_scores(PERFECT, REFERENCES, meteor=False)


@needs_java
def test_evaluate_predictions_merges_everything():
    scores = evaluate_predictions(PARTIAL, REFERENCES, REFERENCES["img1"], meteor=False)
    stats = {"vocabulary_used", "copied_from_training", "mean_length",
             "distinct_captions", "distinct_share"}
    assert set(scores) == COCO_KEYS | NLTK_KEYS | stats
    assert scores["distinct_captions"] == 4 and scores["copied_from_training"] == 0.0


def test_merged_scores_keep_the_other_settings_and_fields(tmp_path):
    """training.evaluate --merge: a new setting joins the scores already recorded; the record's
    other fields (its date, both stages' scores) stay as they were; another split is refused."""
    import json

    from training.evaluate import write_scores

    metrics_path, samples_path = tmp_path / "metrics.json", tmp_path / "samples.json"
    old = {"split": "test", "images": 2, "date": "2026-11-27", "stages": {"scst": {"beam3": {"CIDEr": 0.5}}},
           "scores": {"greedy": {"CIDEr": 0.4}, "beam3": {"CIDEr": 0.5}}}
    write_scores(metrics_path, samples_path, old, {"greedy": {"a.jpg": "a dog"}, "beam3": {"a.jpg": "a dog runs"}})
    new = {"split": "test", "images": 2, "date": "2026-12-07", "scores": {"consensus3": {"CIDEr": 0.6}}}
    write_scores(metrics_path, samples_path, new, {"consensus3": {"a.jpg": "a dog runs on grass"}}, merge=True)
    merged = json.loads(metrics_path.read_text())
    assert merged["scores"] == {"greedy": {"CIDEr": 0.4}, "beam3": {"CIDEr": 0.5}, "consensus3": {"CIDEr": 0.6}}
    assert merged["date"] == "2026-11-27" and merged["stages"] == old["stages"]
    assert set(json.loads(samples_path.read_text())) == {"greedy", "beam3", "consensus3"}
    with pytest.raises(ValueError, match="scores split test, this run split dev"):
        write_scores(metrics_path, samples_path, {**new, "split": "dev"}, {}, merge=True)
    write_scores(metrics_path, samples_path, new, {"consensus3": {}})  # without merge: replaced
    assert json.loads(metrics_path.read_text()) == new
