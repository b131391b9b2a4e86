"""Score a trained bundle on a split (default: Flickr8k's 1,000 test images).

    python -m training.evaluate --model weights/word2vec [--data ../shared/data/flickr8k]
    python -m training.evaluate --model weights/word2vec --settings consensus3 --merge

Writes ``metrics.json`` into the bundle: COCO metrics (BLEU-1..4, METEOR, ROUGE-L,
CIDEr), NLTK corpus BLEU, vocabulary used, share of captions copied from the
training set and mean length, for greedy and beam search (k=3, k=5) and, when the
consensus reference lies beside the bundle (captioning.consensus), beam k=3 re-ranked by
consensus; plus a ``samples.json`` with every generated caption.  ``--merge`` keeps the
settings already scored (and the other fields, such as both training stages' scores) and
adds or replaces the named ones.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import time
from pathlib import Path

import numpy as np

from captioning import Captioner
from captioning.bundle import METRICS_FILE, SAMPLES_FILE, write_json
from captioning.corpus import Corpus
from captioning.evaluation import MeteorScorer, evaluate_predictions

from .common import add_data_arguments, corpus_from_args, features_for, setup_logging

log = logging.getLogger(__name__)

# name -> (method, beam width)
DECODING_SETTINGS = {"greedy": ("greedy", 1), "beam3": ("beam", 3), "beam5": ("beam", 5),
                     "consensus3": ("consensus", 3)}
PLAIN_SETTINGS = ["greedy", "beam3", "beam5"]  # what a bundle alone can decode (training.train scores these)


def available_settings(captioner: Captioner) -> list[str]:
    """Every setting ``captioner`` can decode: the plain ones, plus consensus with its reference."""
    return PLAIN_SETTINGS + (["consensus3"] if captioner.consensus is not None else [])


def evaluate_captioner(captioner: Captioner, corpus: Corpus, features: np.ndarray, index: dict[str, int],
                       split: str = "test", settings: list[str] | None = None,
                       meteor: bool = True) -> tuple[dict, dict]:
    """(metrics, generated captions) for each decoding setting on ``split``; ``meteor=False`` leaves
    METEOR out (its Java scorer's start is most of a tiny run's evaluation)."""
    images = corpus.split(split)
    train_images = set(corpus.split("train"))
    overlap = train_images.intersection(images) if split != "train" else set()
    if overlap:
        raise ValueError(f"{len(overlap)} {split} images are also training images")
    references = corpus.captions_of(images)
    training_captions = corpus.split_captions("train")
    matrix = features[[index[im] for im in images]]
    metrics, samples = {}, {}
    with MeteorScorer() as meteor_scorer:  # one Java process for every setting (started at the first)
        for name in settings or list(DECODING_SETTINGS):
            method, width = DECODING_SETTINGS[name]
            started = time.perf_counter()
            captions = captioner.caption_features_batch(matrix, method=method, beam_width=width)
            seconds = time.perf_counter() - started
            predictions = dict(zip(images, captions))
            scores = evaluate_predictions(predictions, references, training_captions, meteor=meteor,
                                          meteor_scorer=meteor_scorer)
            scores["decode_seconds"] = round(seconds, 2)
            metrics[name] = {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}
            samples[name] = predictions
            log.info("%s %s: BLEU-4 %.4f CIDEr %.4f METEOR %s (%d images, %.1f s)", captioner.name, name,
                     scores["BLEU-4"], scores["CIDEr"], f"{scores['METEOR']:.4f}" if meteor else "not scored",
                     len(images), seconds)
    return {
        "split": split,
        "images": len(images),
        "encoder": captioner.config["encoder"],
        "date": datetime.date.today().isoformat(),
        "scores": metrics,
    }, samples


def write_evaluation(bundle: Path, metrics: dict, samples: dict, merge: bool = False) -> None:
    """Put the scores and every generated caption into the bundle folder (see write_scores)."""
    write_scores(bundle / METRICS_FILE, bundle / SAMPLES_FILE, metrics, samples, merge)


def write_scores(metrics_path: Path, samples_path: Path, metrics: dict, samples: dict, merge: bool = False) -> None:
    """Write the scores and the captions; ``merge``: into the files already there (they must
    score the same split), keeping what they hold for other settings and their other fields
    (date, stages, members) as they are."""
    if merge and metrics_path.is_file():
        old_metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        if old_metrics.get("split") != metrics["split"]:
            raise ValueError(f"{metrics_path} scores the {old_metrics.get('split')} split, not {metrics['split']}")
        old_samples = json.loads(samples_path.read_text(encoding="utf-8")) if samples_path.is_file() else {}
        metrics = {**old_metrics, "scores": {**old_metrics["scores"], **metrics["scores"]}}
        samples = {**old_samples, **samples}
    write_json(metrics_path, metrics)
    write_json(samples_path, samples)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="bundle folder, e.g. weights/word2vec")
    parser.add_argument("--split", default="test")
    parser.add_argument("--settings", nargs="+", choices=sorted(DECODING_SETTINGS),
                        help="decoding settings to score (default: every one the bundle can decode)")
    parser.add_argument("--merge", action="store_true",
                        help="add these settings' scores to the bundle's metrics.json instead of replacing it")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()

    corpus = corpus_from_args(args)
    captioner = Captioner.load(args.model)  # with the encoder the bundle was trained on
    features, index = features_for(corpus, captioner.encoder, args.cache_dir, corpus.split(args.split))
    settings = args.settings or available_settings(captioner)
    metrics, samples = evaluate_captioner(captioner, corpus, features, index, args.split, settings)
    write_evaluation(captioner.bundle.path, metrics, samples, merge=args.merge)
    print(f"wrote {captioner.bundle.path / METRICS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
