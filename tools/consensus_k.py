"""Consensus re-ranking's neighbour count, measured: each committed model's and the ensemble's
beam-search n-best on a split (default: the 1,000 dev images), re-ranked by the captions of the
K nearest training photos for several K.

    python -m tools.consensus_k [--weights weights] [--split dev] [--neighbours 5 10 20 40]

K = 0 is plain beam search (its own ranking, no re-ranking).  Prints a markdown table: BLEU-4,
CIDEr (COCO scorer), distinct words, share copied from the training captions and mean length per
K, then each K's mean CIDEr over the three models, then a paired bootstrap over the images of the
library's K (``captioning.consensus.NEIGHBOURS``, marked) against plain beam search for each model
(``captioning.significance``: 10,000 resamples, seed 0).  Needs the consensus reference beside the bundles
(``python -m training.build_familiarity``).
"""

from __future__ import annotations

import argparse

import numpy as np

from captioning.consensus import NEIGHBOURS, Consensus
from captioning.significance import comparison_table, image_statistics, paired_bootstrap, tokenize_references

from .measure import add_split_arguments, load_models, split_to_decode

NEIGHBOUR_COUNTS = (5, 10, 20, 40)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neighbours", nargs="+", type=int, default=list(NEIGHBOUR_COUNTS))
    add_split_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    ensemble = load_models(args)
    if ensemble.consensus is None:
        raise SystemExit(f"no consensus reference beside the bundles in {args.weights}: "
                         "run python -m training.build_familiarity first")
    split = split_to_decode(args, ensemble.encoder)
    images, matrix, references = split.images, split.features, split.references  # (N,), (N, feature_dim), {image: refs}
    counts = sorted({0, *args.neighbours, NEIGHBOURS})
    rerankers = {k: Consensus(ensemble.consensus.familiarity, ensemble.consensus.captions, k) for k in counts if k}
    print(f"Split '{args.split}', {len(images)} images, beam k={args.beam_width}; K = 0: plain beam search; "
          "* marks the K the library uses.\n")
    print("| model | K | BLEU-4 | CIDEr | words used | copied | mean len |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    cider = {k: [] for k in counts}
    tokenized = tokenize_references(references, images)
    comparisons = []
    for captioner in [*ensemble.members, ensemble]:
        nbest = [captioner.decoder.beam_search(row, args.beam_width, captioner.max_length) for row in matrix]
        for k in counts:
            chosen = [hyps[0] if not k else rerankers[k].rerank(row, hyps, captioner.vocab)[0][0]
                      for row, hyps in zip(matrix, nbest)]
            said = [captioner.vocab.decode(h.ids) for h in chosen]
            scores = split.score(said)
            if captioner is not ensemble:
                cider[k].append(scores["CIDEr"])
            if k in (0, NEIGHBOURS):
                stats = image_statistics(dict(zip(images, said)), references, tokenized)
                if k == 0:
                    plain = stats
                else:
                    comparisons.append((f"{captioner.name}: K {k}", "plain beam", paired_bootstrap(stats, plain)))
            mark = " *" if k == NEIGHBOURS else ""
            print(f"| {captioner.name} | {k}{mark} | {scores['BLEU-4']:.4f} | {scores['CIDEr']:.4f} | "
                  f"{scores['vocabulary_used']} | {scores['copied_from_training']:.1%} | "
                  f"{scores['mean_length']:.2f} |", flush=True)
    print(f"\n| K | mean CIDEr of the models ({', '.join(m.name for m in ensemble.members)}) |\n|---:|---:|")
    for k in counts:
        print(f"| {k}{' *' if k == NEIGHBOURS else ''} | {np.mean(cider[k]):.4f} |")
    print("\n" + comparison_table(comparisons, label=f"beam k={args.beam_width}, {args.split}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
