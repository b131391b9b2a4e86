"""Beam search's length penalty, measured: each committed model's and the ensemble's captions on a
split (default: the 1,000 dev images) ranked with several penalties.

    python -m tools.length_penalty [--weights weights] [--split dev] [--penalties 0.3 0.5 0.7 0.9 1.1 1.3]

Beam search ranks the captions it finished by log p / length**penalty
(``captioning.decoding.Hypothesis.score``); a higher penalty favours longer captions.  Prints a
markdown table: BLEU-4, CIDEr-D (COCO scorer), distinct words and mean length of the captions
per penalty; the one beam search uses (``captioning.decoding.LENGTH_PENALTY``) is marked.
"""

from __future__ import annotations

import argparse

import numpy as np

from captioning import Captioner
from captioning.decoding import LENGTH_PENALTY

from .measure import add_split_arguments, load_models, split_to_decode

PENALTIES = (0.3, 0.5, 0.7, 0.9, 1.1, 1.3)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--penalties", nargs="+", type=float, default=list(PENALTIES))
    add_split_arguments(parser)
    return parser.parse_args(argv)


def captions_by_penalty(captioner: Captioner, features: np.ndarray, penalties, beam_width: int) -> dict:
    """{penalty: the top beam-search caption of each row of ``features`` (N, feature_dim)}."""
    decoder = captioner.decoder
    return {penalty: [captioner.vocab.decode(decoder.beam_search(row, beam_width, captioner.max_length,
                                                                 length_penalty=penalty, n_best=1)[0].ids)
                      for row in features]
            for penalty in penalties}


def main(argv=None) -> int:
    args = parse_args(argv)
    ensemble = load_models(args)
    split = split_to_decode(args, ensemble.encoder)
    print(f"Split '{args.split}', {len(split.images)} images, beam k={args.beam_width}; * marks the penalty beam "
          "search uses.\n")
    print("| model | length penalty | BLEU-4 | CIDEr | words used | mean len |")
    print("|---|---:|---:|---:|---:|---:|")
    penalties = sorted({*args.penalties, LENGTH_PENALTY})
    for captioner in [*ensemble.members, ensemble]:
        for penalty, captions in captions_by_penalty(captioner, split.features, penalties, args.beam_width).items():
            scores = split.score(captions)
            mark = " *" if penalty == LENGTH_PENALTY else ""
            print(f"| {captioner.name} | {penalty:g}{mark} | {scores['BLEU-4']:.4f} | {scores['CIDEr']:.4f} | "
                  f"{scores['vocabulary_used']} | {scores['mean_length']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
