"""tools.repeats decodes as the library does: with the ban on, its captions are the captioner's own
(greedy and beam, single model and ensemble), and none names a content word twice; with it off,
they are what the searches give with ``no_repeats=False``."""

from __future__ import annotations

from captioning import Captioner
from captioning.ensemble import Ensemble
from captioning.variants import VARIANTS
from tools.repeats import captions, repeats_a_content_word


def test_repeats_a_content_word():
    assert repeats_a_content_word("a boy rides a bike on a bike")
    assert not repeats_a_content_word("a black and white dog runs on the grass")  # function words repeat
    assert not repeats_a_content_word("two dogs")


def test_captions_are_the_library_s(tiny_weights, encoder, sample_images):
    features = encoder.encode(sample_images)  # (N, feature_dim)
    members = [Captioner.load(tiny_weights / v, encoder=encoder) for v in VARIANTS]
    for captioner in [*members, Ensemble(members)]:
        for width, method in ((1, "greedy"), (3, "beam")):
            banned = captions(captioner, features, width, no_repeats=True)
            assert banned == captioner.caption_features_batch(features, method, width), captioner.name
            assert not any(map(repeats_a_content_word, banned)), captioner.name
            free = captions(captioner, features, width, no_repeats=False)
            if width == 1:
                hyps = captioner.decoder.greedy(features, captioner.max_length, no_repeats=False)
            else:
                hyps = [captioner.decoder.beam_search(f, width, captioner.max_length, n_best=1, no_repeats=False)[0]
                        for f in features]
            assert free == [captioner.vocab.decode(h.ids) for h in hyps], captioner.name
