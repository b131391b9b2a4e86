"""Averaging the weights of several self-critical epochs, measured: does the average caption better
than the epoch ``training.train`` keeps (the best by dev CIDEr-D)?

    python -m training.train --variant learned --scst-keep-epochs runs/epochs --out runs/averaged
    python -m tools.average_epochs --bundle runs/averaged/learned --epochs runs/epochs/learned --sets 2 3 2,3 1,2,3

For each set of epochs (``1,2,3``: the mean of epochs 1-3, weight by weight), the bundle's decoder
takes the averaged weights and captions the dev and test splits (default: beam k=3), scored by
``training.evaluate.evaluate_captioner`` as a bundle is.  Prints a markdown table: BLEU-4, CIDEr
(COCO scorer) and distinct words per split.  Dev is the split that may choose.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from captioning import Captioner
from captioning.bundle import load_bundle
from captioning.encoders import load_encoder
from training.common import add_data_arguments, corpus_from_args, features_for
from training.evaluate import DECODING_SETTINGS, evaluate_captioner

SPLITS = ("dev", "test")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True, help="the bundle whose decoder takes the averages")
    parser.add_argument("--epochs", type=Path, required=True,
                        help="folder of epoch<N>.weights.h5 files (training.train --scst-keep-epochs DIR: DIR/<variant>)")
    parser.add_argument("--sets", nargs="+", required=True, help="sets of epochs to average, e.g. 2 3 2,3 1,2,3")
    parser.add_argument("--setting", choices=sorted(DECODING_SETTINGS), default="beam3",
                        help="decoding setting, as training.evaluate names them (default: %(default)s)")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    args.sets = [tuple(int(epoch) for epoch in text.split(",")) for text in args.sets]
    return args


def average_weights(weight_lists: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Element-wise mean of several models' ``get_weights()`` lists (same architecture); an array that
    is not floating point (integer state, should a model carry any) is taken from the first model."""
    return [np.mean(arrays, axis=0).astype(arrays[0].dtype) if np.issubdtype(arrays[0].dtype, np.floating)
            else arrays[0] for arrays in zip(*weight_lists)]


def main(argv=None) -> int:
    args = parse_args(argv)
    corpus = corpus_from_args(args)
    bundle = load_bundle(args.bundle)
    encoder = load_encoder(bundle.config["encoder"])
    model = bundle.model
    epoch_weights = {}
    for epoch in sorted({epoch for epochs in args.sets for epoch in epochs}):
        model.load_weights(args.epochs / f"epoch{epoch}.weights.h5")
        epoch_weights[epoch] = model.get_weights()
    features, index = features_for(corpus, encoder, args.cache_dir, [im for s in SPLITS for im in corpus.split(s)])
    method, width = DECODING_SETTINGS[args.setting]
    print(f"{args.bundle}: SCST epochs' weights averaged; {f'beam k={width}' if method == 'beam' else method}.\n")
    print("| epochs averaged | " + " | ".join(f"{s} BLEU-4 | {s} CIDEr | {s} words" for s in SPLITS) + " |")
    print("|---|" + "---:|---:|---:|" * len(SPLITS))
    for epochs in args.sets:
        model.set_weights(average_weights([epoch_weights[epoch] for epoch in epochs]))
        captioner = Captioner(bundle, encoder)  # its step decoder copies the averaged weights
        cells = []
        for split in SPLITS:  # scored as training.evaluate scores a bundle
            scores = evaluate_captioner(captioner, corpus, features, index, split, [args.setting])[0]["scores"][args.setting]
            cells += [f"{scores['BLEU-4']:.4f}", f"{scores['CIDEr']:.4f}", str(scores["vocabulary_used"])]
        print(f"| {', '.join(map(str, epochs))} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
