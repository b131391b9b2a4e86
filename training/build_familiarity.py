"""Build the references of the training photos that the captioners read beside their bundles:
the familiarity reference (captioning.familiarity) and the training photos' captions for
consensus re-ranking (captioning.consensus).

    python -m training.build_familiarity --data ../shared/data/flickr8k [--out weights/familiarity.h5]
                                         [--captions-out weights/neighbour_captions.json]

Reads the train and test splits, takes their encoder features from the feature cache
(cache/features-<encoder>.npz, shared with training.train; missing ones are extracted and
added), fits the PCA on the training photos, scores the test photos against them and writes
the reference; then writes the training photos' reference captions.  The same features and
captions give the same files, byte for byte.

The definition and why k = 5, 128 dimensions and the cut: captioning/familiarity.py.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from captioning.consensus import NEIGHBOUR_CAPTIONS_FILE, NeighbourCaptions
from captioning.encoders import load_encoder
from captioning.familiarity import Familiarity

from .common import add_data_arguments, corpus_from_args, features_for, setup_logging

log = logging.getLogger("training.build_familiarity")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--out", default="weights/familiarity.h5", help="reference file to write (default: %(default)s)")
    parser.add_argument("--captions-out", default=f"weights/{NEIGHBOUR_CAPTIONS_FILE}",
                        help="training photos' captions for consensus re-ranking (default: %(default)s)")
    parser.add_argument("--k", type=int, default=5, help="nearest training photos averaged (default: %(default)s)")
    parser.add_argument("--dims", type=int, default=128, help="PCA components kept (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    started = time.perf_counter()
    corpus = corpus_from_args(args)
    train, test = sorted(corpus.split("train")), sorted(corpus.split("test"))
    encoder = load_encoder(args.encoder)
    features, index = features_for(corpus, encoder, args.cache_dir, train + test)  # (N + M, F)
    train_features = features[[index[n] for n in train]]
    test_features = features[[index[n] for n in test]]
    reference = Familiarity.fit(encoder.name, train_features, train, test_features, k=args.k, dims=args.dims)
    reference.save(args.out)
    size = Path(args.out).stat().st_size
    log.info("%s: %d training photos, %d test photos, k=%d, %d dims, %.2f MB, %.1f s", args.out, len(train),
             len(test), args.k, args.dims, size / 1e6, time.perf_counter() - started)
    NeighbourCaptions.from_corpus(corpus).save(args.captions_out)
    log.info("%s: the captions of %d training photos, %.2f MB", args.captions_out, len(train),
             Path(args.captions_out).stat().st_size / 1e6)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
