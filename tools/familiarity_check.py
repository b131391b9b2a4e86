"""How well the familiarity reference tells Flickr8k-like photos from everyday ones: the figures
quoted in ``captioning/familiarity.py``'s docstring.

    python -m tools.familiarity_check [--reference weights/familiarity.h5] [--data ../shared/data/flickr8k]

Scores the 1,000 dev photos (features from the cache ``training.train`` uses, extracted where
missing) and the 13 everyday photos (``evaluation/ood/`` and the Hubble deep field of
``demo/examples/``) against the reference, with the encoder the reference was built from, and
prints: the AUC (the chance that a dev photo scores above an everyday one), how many of each are
called unfamiliar, each everyday photo's percentile, and the share of the training features'
energy the reference's directions hold.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from captioning.corpus import load_corpus
from captioning.encoders import load_encoder
from captioning.familiarity import DEFAULT_PATH, Familiarity
from training.common import DEFAULT_DATA, features_for
from training.evaluate_guided import OOD_DIR

ROOT = Path(__file__).resolve().parents[1]
EVERYDAY = sorted(OOD_DIR.glob("*.jpg")) + [ROOT / "demo" / "examples" / "hubble_deep_field.jpg"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--cache-dir", default="cache")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    reference = Familiarity.load(args.reference)
    encoder = load_encoder(reference.encoder)
    corpus = load_corpus(args.data)
    train, dev = sorted(corpus.split("train")), sorted(corpus.split("dev"))
    features, index = features_for(corpus, encoder, args.cache_dir, train + dev)  # (N, F)
    dev_scores = [reference.score(features[index[name]]) for name in dev]
    everyday = [(path.stem, reference.score(encoder.features(path))) for path in EVERYDAY]

    dev_similarity = np.array([s.similarity for s in dev_scores])           # (1000,)
    everyday_similarity = np.array([s.similarity for _, s in everyday])     # (13,)
    auc = float((dev_similarity[:, None] > everyday_similarity[None, :]).mean())
    train_features = features[[index[name] for name in train]].astype(np.float64)
    energy = np.linalg.svd(train_features, compute_uv=False) ** 2
    print(f"reference {args.reference} ({reference.encoder}, {reference.feature_dim} features, "
          f"{len(reference.components)} directions, {args.reference.stat().st_size / 1e6:.2f} MB)")
    print(f"directions hold {energy[:len(reference.components)].sum() / energy.sum():.1%} of the training features' energy")
    print(f"AUC (dev photo above an everyday photo): {auc:.3f}")
    print(f"called unfamiliar: {sum(not s.familiar for _, s in everyday)} of {len(everyday)} everyday photos, "
          f"{np.mean([not s.familiar for s in dev_scores]):.1%} of {len(dev)} dev photos")
    for name, score in sorted(everyday, key=lambda item: item[1].percentile):
        print(f"  {name}: percentile {score.percentile:.1f}{'' if score.familiar else ' (unfamiliar)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
