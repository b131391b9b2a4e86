"""Score a trained bundle on a split (default: Flickr8k's 1,000 test images).

    python -m training.evaluate --model weights/word2vec [--data ../shared/data/flickr8k]

Writes ``metrics.json`` into the bundle: COCO metrics (BLEU-1..4, METEOR, ROUGE-L,
CIDEr), NLTK corpus BLEU, vocabulary used, share of captions copied from the
training set and mean length, for greedy and beam search (k=3, k=5); plus a
``samples.json`` with every generated caption.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import time
from pathlib import Path

import numpy as np

from captioning import Captioner
from captioning.bundle import METRICS_FILE, SAMPLES_FILE, write_json
from captioning.corpus import Corpus
from captioning.evaluation import evaluate_predictions

from .common import add_data_arguments, corpus_from_args, features_for, setup_logging

log = logging.getLogger(__name__)

# name -> (method, beam width)
DECODING_SETTINGS = {"greedy": ("greedy", 1), "beam3": ("beam", 3), "beam5": ("beam", 5)}


def evaluate_captioner(captioner: Captioner, corpus: Corpus, features: np.ndarray, index: dict[str, int],
                       split: str = "test", settings: list[str] | None = None) -> tuple[dict, dict]:
    """(metrics, generated captions) for each decoding setting on ``split``."""
    images = corpus.split(split)
    train_images = set(corpus.split("train"))
    overlap = train_images.intersection(images) if split != "train" else set()
    if overlap:
        raise ValueError(f"{len(overlap)} {split} images are also training images")
    references = corpus.captions_of(images)
    training_captions = corpus.split_captions("train")
    matrix = features[[index[im] for im in images]]
    metrics, samples = {}, {}
    for name in settings or list(DECODING_SETTINGS):
        method, width = DECODING_SETTINGS[name]
        started = time.perf_counter()
        captions = captioner.caption_features_batch(matrix, method=method, beam_width=width)
        seconds = time.perf_counter() - started
        predictions = dict(zip(images, captions))
        scores = evaluate_predictions(predictions, references, training_captions)
        scores["decode_seconds"] = round(seconds, 2)
        metrics[name] = {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}
        samples[name] = predictions
        log.info("%s %s: BLEU-4 %.4f CIDEr %.4f METEOR %.4f (%d images, %.1f s)", captioner.name, name,
                 scores["BLEU-4"], scores["CIDEr"], scores["METEOR"], len(images), seconds)
    return {
        "split": split,
        "images": len(images),
        "encoder": captioner.config["encoder"],
        "date": datetime.date.today().isoformat(),
        "scores": metrics,
    }, samples


def write_evaluation(bundle: Path, metrics: dict, samples: dict) -> None:
    """Put the scores and every generated caption into the bundle folder."""
    write_json(bundle / METRICS_FILE, metrics)
    write_json(bundle / SAMPLES_FILE, samples)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="bundle folder, e.g. weights/word2vec")
    parser.add_argument("--split", default="test")
    parser.add_argument("--settings", nargs="+", choices=sorted(DECODING_SETTINGS), default=list(DECODING_SETTINGS))
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()

    corpus = corpus_from_args(args)
    captioner = Captioner.load(args.model)  # with the encoder the bundle was trained on
    features, index = features_for(corpus, captioner.encoder, args.cache_dir, corpus.split(args.split))
    metrics, samples = evaluate_captioner(captioner, corpus, features, index, args.split, args.settings)
    write_evaluation(captioner.bundle.path, metrics, samples)
    print(f"wrote {captioner.bundle.path / METRICS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
