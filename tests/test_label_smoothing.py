"""Label smoothing in stage 1 (``TrainSettings.label_smoothing``, ``--label-smoothing``): the loss
is the formula, 0 is plain cross-entropy, and a smoothed run's checkpoint resumes with its loss."""

from __future__ import annotations

import logging

import keras
import numpy as np
import pytest

from captioning.model import DecoderConfig
from captioning.training import CaptionLoss, TrainSettings, fit_decoder, word_losses

from test_training_resume import _batches


@pytest.fixture
def toy():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 3, 5))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)  # (B, T, V)
    target = rng.integers(0, 5, size=(2, 3))  # (B, T)
    return target, probs.astype(np.float32)


def test_zero_is_plain_cross_entropy(toy):
    target, probs = toy
    expected = -np.log(np.take_along_axis(probs, target[..., None], -1))[..., 0]
    np.testing.assert_allclose(np.asarray(word_losses(target, probs)), expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(word_losses(target, probs, 0.0)), expected, rtol=1e-5)


def test_smoothed_loss_is_cross_entropy_against_the_smoothed_target(toy):
    target, probs = toy
    e, vocab = 0.1, probs.shape[-1]
    smoothed = np.full(probs.shape, e / vocab)
    np.put_along_axis(smoothed, target[..., None], 1 - e + e / vocab, -1)
    expected = -(smoothed * np.log(probs)).sum(-1)  # (B, T)
    np.testing.assert_allclose(np.asarray(word_losses(target, probs, e)), expected, rtol=1e-5)


def test_a_smoothed_run_resumes_with_its_loss(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="captioning.training")
    config = DecoderConfig(vocab_size=12, feature_dim=8, embedding_dim=4, units=4, dropout=0.0)
    train, dev = _batches(seed=1)
    settings = TrainSettings(epochs=1, patience=10, label_smoothing=0.2)
    model, _ = fit_decoder(config, train, dev, settings, tmp_path)
    assert isinstance(model.loss, CaptionLoss) and model.loss.label_smoothing == 0.2

    resumed = keras.saving.load_model(tmp_path / "last.keras", safe_mode=True)
    assert isinstance(resumed.loss, CaptionLoss) and resumed.loss.label_smoothing == 0.2
    _, history = fit_decoder(config, train, dev, TrainSettings(epochs=2, patience=10, label_smoothing=0.2), tmp_path)
    assert "resuming after epoch 1 " in caplog.text and len(history["loss"]) == 2

    plain, _ = fit_decoder(config, train, dev, TrainSettings(epochs=1, patience=10), tmp_path / "plain")
    assert isinstance(plain.loss, keras.losses.SparseCategoricalCrossentropy)
