"""CiderDIndex, the consensus re-ranking's CIDEr-D: the same numbers as pycocoevalcap's scorer
(through captioning.scst.CiderDReward, which calls it) on the committed training captions, pooled
references weighted as the scorer weighs them, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from captioning.cider import CiderDIndex, scored_text
from captioning.consensus import NEIGHBOUR_CAPTIONS_FILE
from captioning.scst import CiderDReward

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def references():
    """The references of 400 training photos, from the committed consensus reference."""
    captions = json.loads((ROOT / "weights" / NEIGHBOUR_CAPTIONS_FILE).read_text())["captions"]
    return dict(list(captions.items())[:400])


def candidates(references, rng) -> tuple[list[str], list[list[str]]]:
    """(photos, captions): real reference captions, half with their own photo, shuffled and cut ones,
    repeats and words no reference uses, each with a photo drawn at random."""
    names = list(references)
    own = list(rng.choice(names, 12, replace=False))
    picked = [references[name][int(rng.integers(len(references[name])))].split() for name in own]
    captions = [*picked,
                [w for w in rng.permutation(picked[0])],
                picked[1][: len(picked[1]) // 2],
                ["a", "dog", "dog", "dog", "is", "a", "dog"],
                ["a", "zqxj", "runs", "through", "the", "zqxj", "grass"],
                ["a"], []]
    photos = own[:6] + list(rng.choice(names, len(captions) - 6))
    return photos, captions


def test_equals_the_coco_scorer_against_each_photos_references(references):
    index, oracle = CiderDIndex(references), CiderDReward(references)
    rng = np.random.default_rng(0)
    for trial in range(25):
        images, captions = candidates(references, rng)
        finished = list(rng.random(len(captions)) < 0.7)
        expected = oracle(images, captions, finished)  # pycocoevalcap, one photo's references per caption
        got = np.array([index.against([image], [caption], [done])[0]
                        for image, caption, done in zip(images, captions, finished)])
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
        assert expected.max() > 1.0 and (expected > 0).mean() > 0.5  # real scores compared, not zeros


def test_a_pool_weighs_each_photo_by_its_number_of_references(references):
    """CIDEr-D averages the similarity over references: against a pool of photos it is each photo's
    score weighted by its references, whichever order the photos come in."""
    uneven = {name: refs[: 1 + i % 5] for i, (name, refs) in enumerate(references.items())}
    index, oracle = CiderDIndex(uneven), CiderDReward(uneven)
    rng = np.random.default_rng(1)
    _, captions = candidates(uneven, rng)
    finished = [True] * len(captions)
    pool = list(rng.choice(list(uneven), 20, replace=False))
    weights = np.array([len(uneven[name]) for name in pool], dtype=np.float64)  # (20,)
    per_photo = np.array([oracle([name] * len(captions), captions, finished) for name in pool])  # (20, n)
    expected = weights @ per_photo / weights.sum()
    np.testing.assert_allclose(index.against(pool, captions, finished), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(index.against(pool[::-1], captions, finished), expected, rtol=1e-12, atol=1e-12)


def test_end_counts_only_for_a_finished_caption():
    index = CiderDIndex({"a.jpg": ["a dog runs", "a dog runs fast"], "b.jpg": ["a cat sleeps"]})
    assert scored_text(["a", "dog", "runs"], True) == "a dog runs <end>"
    finished, cut = index.against(["a.jpg"], [["a", "dog", "runs"]] * 2, [True, False])
    assert finished > cut > 0


def test_refusals():
    with pytest.raises(ValueError, match="at least one image"):
        CiderDIndex({})
    with pytest.raises(ValueError, match="at least one reference"):
        CiderDIndex({"a.jpg": []})
    index = CiderDIndex({"a.jpg": ["a dog runs"]})
    with pytest.raises(ValueError, match="at least one image"):
        index.against([], [["a", "dog"]], [True])
    with pytest.raises(KeyError, match="missing.jpg"):
        index.against(["a.jpg", "missing.jpg"], [["a", "dog"]], [True])
    assert index.against(["a.jpg"], [], []).shape == (0,)
