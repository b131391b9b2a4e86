"""captioning.diversity on tiny hand-made captions, every number worked out by hand."""

from __future__ import annotations

import pytest

from captioning.diversity import (STOPWORDS, content_words, coverage, diversity, held_out_references,
                                  local_recall, mean_local_recall, novelty, shared_content_words,
                                  type_token_ratio, types)

CAPTIONS = ["a dog runs", "a dog runs", "a black dog jumps"]  # 10 tokens, 5 types


def test_types_and_corpus_level_ttr():
    assert types(CAPTIONS) == 5  # a dog runs black jumps
    assert type_token_ratio(CAPTIONS) == pytest.approx(5 / 10)
    # bigrams: (a dog) (dog runs) x2, (a black) (black dog) (dog jumps): 7 bigrams, 5 distinct
    assert type_token_ratio(CAPTIONS, 2) == pytest.approx(5 / 7)
    # n-grams do not cross captions: "runs a" is never counted
    assert type_token_ratio(["a b", "a b"], 2) == pytest.approx(1 / 2)
    with pytest.raises(ValueError):
        type_token_ratio(["dog"], 2)


def test_novelty_is_the_share_not_found_verbatim_in_training():
    training = ["a dog runs", "a cat sleeps"]
    assert novelty(CAPTIONS, training) == pytest.approx(1 / 3)
    assert novelty(["a  dog runs "], training) == 0.0  # whitespace is normalised
    assert novelty(["a dog runs fast"], training) == 1.0  # a longer caption is new


def test_coverage_of_the_learnable_vocabulary():
    vocabulary = ["a", "dog", "cat", "runs", "sleeps", "black", "white", "jumps"]
    assert coverage(CAPTIONS, vocabulary) == pytest.approx(5 / 8)
    assert coverage(["a zebra"], vocabulary) == pytest.approx(1 / 8)  # words outside it do not count


def test_content_words_drop_the_stopwords():
    assert content_words("a black dog is running through the grass") == {"black", "dog", "running", "grass"}
    assert {"a", "the", "is", "through", "two", "and", "his"} <= STOPWORDS
    assert not {"dog", "black", "running", "man", "red", "jumps"} & STOPWORDS


def test_local_recall_against_the_words_all_references_share():
    references = ["a black dog runs on the grass", "the black dog is running in grass",
                  "a dog in the grass", "black and white dog on grass", "dog plays outside on grass"]
    assert shared_content_words(references) == {"dog", "grass"}
    assert local_recall("a dog runs", references) == pytest.approx(1 / 2)
    assert local_recall("a dog on the grass", references) == 1.0
    assert local_recall("a man", references) == 0.0
    assert local_recall("a dog", ["a dog", "the cat"]) is None  # no shared content word: undefined


def test_mean_local_recall_skips_undefined_images():
    predictions = {"x": "a dog runs", "y": "a cat", "z": "a man"}
    references = {"x": ["a dog runs", "dog runs fast"],  # shared {dog, runs}: recall 1
                  "y": ["a cat sits", "cat on a mat"],  # shared {cat}: recall 1
                  "z": ["a woman", "a man"]}  # nothing shared: left out
    assert mean_local_recall(predictions, references) == (1.0, 2)
    predictions["x"] = "a dog"
    assert mean_local_recall(predictions, references) == (pytest.approx(0.75), 2)


def test_held_out_reference_is_scored_against_the_rest():
    references = {"x": ["r0", "r1", "r2"], "y": ["s0", "s1", "s2"]}
    held, rest = held_out_references(references)
    assert held == {"x": "r0", "y": "s0"} and rest == {"x": ["r1", "r2"], "y": ["s1", "s2"]}
    assert held_out_references(references, 2)[1]["x"] == ["r0", "r1"]


def test_diversity_puts_it_together():
    predictions = {"x": "a dog runs", "y": "a black dog jumps"}
    references = {"x": ["a dog runs", "the dog runs"], "y": ["a dog jumps", "dogs jump"]}
    out = diversity(predictions, references, ["a dog runs"], ["a", "dog", "runs", "black", "jumps", "cat"])
    assert out == {"types": 5, "ttr1": pytest.approx(5 / 7), "ttr2": pytest.approx(5 / 5),
                   "novelty": 0.5, "coverage": pytest.approx(5 / 6), "mean_length": 3.5,
                   "loc": 1.0, "loc_images": 1}
