"""Determinism (issue 5.5), in the library: the same image, model and settings give the same
caption every time, in one captioner and across freshly loaded ones.  (The CLI's run-to-run
check is in test_cli.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from captioning import Captioner

SETTINGS = [("greedy", 1), ("beam", 3), ("beam", 5)]


@pytest.fixture(scope="module")
def model_path(tiny_weights):
    return tiny_weights / "learned"


@pytest.fixture(scope="module")
def captioner(model_path, encoder):
    return Captioner.load(model_path, encoder=encoder)


@pytest.fixture(scope="module")
def fresh_captioner(model_path):
    """Loaded from scratch: its own encoder and decoder, built and read from disk again."""
    return Captioner.load(model_path)


def _describe(captioner, image, method, width):
    result = captioner.describe(image, method=method, beam_width=width)
    return result.caption, result.words, result.word_probs, result.candidates


def test_features_are_bitwise_identical(captioner, fresh_captioner, sample_images):
    image = sample_images[0]
    first = captioner.features(image)
    assert np.array_equal(first, captioner.features(image))
    assert np.array_equal(first, fresh_captioner.features(image))
    assert np.array_equal(first, captioner.features(image.read_bytes()))  # as the app receives it


@pytest.mark.parametrize("method, width", SETTINGS)
def test_repeated_calls_give_the_same_caption(captioner, sample_images, method, width):
    images = sample_images[:3]
    first = [_describe(captioner, im, method, width) for im in images]
    for _ in range(2):
        assert [_describe(captioner, im, method, width) for im in images] == first
    # no state carried from one image to the next: reversed order, same answers
    assert [_describe(captioner, im, method, width) for im in reversed(images)] == first[::-1]


@pytest.mark.parametrize("method, width", SETTINGS)
def test_fresh_instances_agree(captioner, fresh_captioner, sample_images, method, width):
    for image in sample_images[:3]:
        assert _describe(fresh_captioner, image, method, width) == _describe(captioner, image, method, width)


def test_every_variant_is_deterministic_across_loads(tiny_weights, encoder, sample_images):
    image = sample_images[1]
    for variant in ("learned", "fasttext", "word2vec"):
        a = Captioner.load(tiny_weights / variant, encoder=encoder)
        b = Captioner.load(tiny_weights / variant, encoder=encoder)
        assert a.candidates(image, beam_width=3) == b.candidates(image, beam_width=3), variant
        assert a.caption(image) == b.caption(image), variant


def test_input_forms_give_the_same_caption(captioner, sample_images):
    """Path, uploaded bytes and an already-open PIL image describe the same photo."""
    path = sample_images[2]
    expected = captioner.caption(path, method="beam", beam_width=3)
    with Image.open(path) as image:
        image.load()
        assert captioner.caption(image, method="beam", beam_width=3) == expected
    assert captioner.caption(path.read_bytes(), method="beam", beam_width=3) == expected
    assert captioner.caption(str(path), method="beam", beam_width=3) == expected
