"""tools.length_penalty decodes as the library does: at the penalty beam search uses, its captions
are the captioner's own beam captions (single model and ensemble); a higher penalty never picks a
shorter caption (it only re-ranks the captions one search finished)."""

from __future__ import annotations

from captioning import Captioner
from captioning.decoding import LENGTH_PENALTY
from captioning.ensemble import Ensemble
from captioning.variants import VARIANTS
from tools.length_penalty import captions_by_penalty


def test_captions_by_penalty_are_the_library_s_beam_captions(tiny_weights, encoder, sample_images):
    features = encoder.encode(sample_images)  # (N, feature_dim)
    members = [Captioner.load(tiny_weights / v, encoder=encoder) for v in VARIANTS]
    for captioner in [*members, Ensemble(members)]:
        by_penalty = captions_by_penalty(captioner, features, [0.0, LENGTH_PENALTY, 2.0], beam_width=3)
        assert by_penalty[LENGTH_PENALTY] == captioner.caption_features_batch(features, "beam", 3), captioner.name
        for short, long in zip(by_penalty[0.0], by_penalty[2.0]):
            assert len(long.split()) >= len(short.split()), captioner.name
