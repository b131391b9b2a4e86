"""tools.average_epochs: the average of several epochs' weights is their element-wise mean, and a
decoder takes it."""

from __future__ import annotations

import numpy as np

from captioning.model import DecoderConfig, build_decoder
from tools.average_epochs import average_weights


def test_average_is_the_elementwise_mean_and_leaves_integer_state_alone():
    first = [np.array([[1.0, 2.0]], np.float32), np.array([7], np.uint32)]
    second = [np.array([[3.0, 6.0]], np.float32), np.array([9], np.uint32)]
    third = [np.array([[5.0, 1.0]], np.float32), np.array([11], np.uint32)]
    mean = average_weights([first, second, third])
    np.testing.assert_array_equal(mean[0], [[3.0, 3.0]])
    assert mean[0].dtype == np.float32
    np.testing.assert_array_equal(mean[1], [7])  # not a weight: the first model's
    np.testing.assert_array_equal(average_weights([first])[0], first[0])


def test_a_decoder_takes_the_average_of_real_models():
    """Two decoders' get_weights() lists average into weights a third decoder accepts, each array
    the mean of the two."""
    config = DecoderConfig(vocab_size=7, feature_dim=4, embedding_dim=4, units=8, dropout=0.5)
    models = [build_decoder(config) for _ in range(2)]
    model = build_decoder(config)
    model.set_weights(average_weights([m.get_weights() for m in models]))
    held = model.get_weights()
    assert len(held) == len(models[0].get_weights()) >= 6
    for mean, a, b in zip(held, *(m.get_weights() for m in models)):
        np.testing.assert_allclose(mean, (a + b) / 2, rtol=1e-6, atol=1e-7)
    assert not np.allclose(models[0].get_weights()[0], models[1].get_weights()[0])  # a real average
