"""Decoding with and without the ban on repeated content words, measured: each committed model's
and the ensemble's greedy and beam-search captions on a split (default: the 1,000 dev images).

    python -m tools.repeats [--weights weights] [--split dev] [--beam-width 3]

The decoders say each content word at most once by default (``captioning.decoding.NO_REPEATS``;
content words: all but the function words of ``captioning.diversity.STOPWORDS``).  Prints a
markdown table: BLEU-4, CIDEr-D (COCO scorer), distinct words, mean length and the share of
captions that name a content word twice, per model, decoding and ban (off / on).
"""

from __future__ import annotations

import argparse
from collections import Counter

from captioning.diversity import STOPWORDS

from .measure import add_split_arguments, load_models, split_to_decode


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_split_arguments(parser)
    return parser.parse_args(argv)


def repeats_a_content_word(caption: str) -> bool:
    counts = Counter(word for word in caption.split() if word not in STOPWORDS)
    return any(n > 1 for n in counts.values())


def captions(captioner, features, beam_width: int, no_repeats: bool) -> list[str]:
    """The caption of each row of ``features`` (N, feature_dim): greedy (``beam_width`` 1) or beam search."""
    decoder, longest = captioner.decoder, captioner.max_length
    if beam_width == 1:
        hyps = decoder.greedy(features, longest, no_repeats=no_repeats)
    else:
        hyps = [decoder.beam_search(row, beam_width, longest, n_best=1, no_repeats=no_repeats)[0] for row in features]
    return [captioner.vocab.decode(hyp.ids) for hyp in hyps]


def main(argv=None) -> int:
    args = parse_args(argv)
    ensemble = load_models(args)
    split = split_to_decode(args, ensemble.encoder)
    print(f"Split '{args.split}', {len(split.images)} images; ban: no content word twice in a caption.\n")
    print("| model | decoding | ban | BLEU-4 | CIDEr | words used | mean len | repeat a content word |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for captioner in [*ensemble.members, ensemble]:
        for width in (1, args.beam_width):
            decoding = "greedy" if width == 1 else f"beam k={width}"
            for no_repeats in (False, True):
                said = captions(captioner, split.features, width, no_repeats)
                scores = split.score(said)
                repeating = sum(map(repeats_a_content_word, said)) / len(said)
                print(f"| {captioner.name} | {decoding} | {'on' if no_repeats else 'off'} | {scores['BLEU-4']:.4f} | "
                      f"{scores['CIDEr']:.4f} | {scores['vocabulary_used']} | {scores['mean_length']:.2f} | "
                      f"{repeating:.1%} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
