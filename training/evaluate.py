"""Score a trained bundle on a split (default: Flickr8k's 1,000 test images).

    python -m training.evaluate --model weights/word2vec [--data ../shared/data/flickr8k]
    python -m training.evaluate --model weights/word2vec --settings consensus3 --merge

Writes ``metrics.json`` into the bundle: COCO metrics (BLEU-1..4, METEOR, ROUGE-L,
CIDEr), NLTK corpus BLEU, vocabulary used, share of captions copied from the
training set and mean length, for greedy and beam search (k=3, k=5) and, when the
consensus reference lies beside the bundle (captioning.consensus), beam k=3 re-ranked by
consensus; plus a ``samples.json`` with every generated caption.  Another split's go beside them
as ``<split>_metrics.json`` and ``<split>_samples.json`` (:func:`output_paths`): the test split's
files are the ones the app and ``training.report`` read.  A rewrite keeps what describes the
bundle: its shipped stage (config.json) and both training stages' scores (recorded by
training.train).  ``--merge`` keeps the settings already scored (and the other fields) and adds
or replaces the named ones; it refuses, before decoding, when the file already there scores
another split, another number of images or (an ensemble) other members: rerun without
``--merge`` to replace it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from captioning import Captioner
from captioning.bundle import METRICS_FILE, SAMPLES_FILE, write_json
from captioning.captioner import FAMILIARITY_FILE
from captioning.consensus import NEIGHBOUR_CAPTIONS_FILE
from captioning.corpus import Corpus
from captioning.evaluation import MeteorScorer, evaluate_predictions

from .common import add_data_arguments, corpus_from_args, features_for, setup_logging

log = logging.getLogger(__name__)

# name -> (method, beam width)
DECODING_SETTINGS = {"greedy": ("greedy", 1), "beam3": ("beam", 3), "beam5": ("beam", 5),
                     "consensus3": ("consensus", 3)}
PLAIN_SETTINGS = ["greedy", "beam3", "beam5"]  # what a bundle alone can decode (training.train scores these)
MERGE_KEYS = ("split", "images", "members")  # what scores merged into one file must share
KEPT_KEYS = ("stages",)  # what a rewrite keeps of the file it replaces: scores recorded at training


def available_settings(captioner: Captioner) -> list[str]:
    """Every setting ``captioner`` can decode: the plain ones, plus consensus with its reference."""
    return PLAIN_SETTINGS + (["consensus3"] if captioner.consensus is not None else [])


def unavailable_settings(captioner: Captioner, settings: list[str], folder: Path) -> str | None:
    """Why ``captioner`` cannot decode ``settings`` (consensus without its references in ``folder``,
    the folder holding the bundles); None when it can."""
    missing = [name for name in settings if name not in available_settings(captioner)]
    if not missing:
        return None
    files = [name for name in (FAMILIARITY_FILE, NEIGHBOUR_CAPTIONS_FILE) if not (folder / name).is_file()]
    return (f"{', '.join(missing)} needs {' and '.join(files or [FAMILIARITY_FILE, NEIGHBOUR_CAPTIONS_FILE])} "
            f"in {folder}/ (python -m training.build_familiarity writes both)")


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


def split_paths(metrics_path: Path, samples_path: Path, split: str) -> tuple[Path, Path]:
    """Where the scores and captions on ``split`` go, given the test split's files: those for the
    test split, else the same names with the split's before their last word (metrics.json ->
    dev_metrics.json, ensemble_samples.json -> ensemble_dev_samples.json), so that another split's
    never replace the test split's, the ones the app and training.report read."""
    if split == "test":
        return metrics_path, samples_path
    return _with_split(metrics_path, split), _with_split(samples_path, split)


def _with_split(path: Path, split: str) -> Path:
    head, _, last = path.name.rpartition("_")
    return path.with_name(f"{head}_{split}_{last}" if head else f"{split}_{last}")


def output_paths(bundle: Path, split: str) -> tuple[Path, Path]:
    """(metrics file, samples file) for a bundle's scores on ``split`` (see split_paths)."""
    return split_paths(bundle / METRICS_FILE, bundle / SAMPLES_FILE, split)


def write_evaluation(bundle: Path, metrics: dict, samples: dict, merge: bool = False) -> None:
    """Put the scores and every generated caption into the bundle folder (see write_scores)."""
    write_scores(*output_paths(bundle, metrics["split"]), metrics, samples, merge)


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _merge_key(record: dict, key: str):
    value = record.get(key)
    return sorted(value) if key == "members" and value else value  # the members' order makes no difference


def _shown(value) -> str:
    return "+".join(value) if isinstance(value, list) else str(value)


def merge_refusal(metrics_path: Path, record: dict) -> str | None:
    """Why scores of ``record`` (its split, number of images and, for an ensemble, members) cannot be
    merged into ``metrics_path``; None when they can (or the file is not there)."""
    old = _read(metrics_path)
    differ = [key for key in MERGE_KEYS if _merge_key(old, key) != _merge_key(record, key)]
    if not old or not differ:
        return None
    held = ", ".join(f"{key} {_shown(old.get(key))}" for key in differ)
    new = ", ".join(f"{key} {_shown(record.get(key))}" for key in differ)
    return f"not merged: {metrics_path} scores {held}, this run {new} (rerun without --merge to replace it)"


class MergeRefused(ValueError):
    """Scores that do not belong in the file they were to be merged into (see merge_refusal)."""


def kept_fields(metrics_path: Path, config: dict) -> dict:
    """What a rewrite of ``metrics_path`` keeps: what describes the bundle rather than this run, its
    shipped stage (``config``, the bundle's config.json) and the stages' scores the file holds."""
    old = _read(metrics_path)
    kept = {key: old[key] for key in KEPT_KEYS if key in old}
    return {**({"shipped_stage": config["shipped_stage"]} if "shipped_stage" in config else {}), **kept}


def write_scores(metrics_path: Path, samples_path: Path, metrics: dict, samples: dict, merge: bool = False) -> None:
    """Write the scores and the captions; ``merge``: into the files already there (they must
    score the same split, number of images and members: else :class:`MergeRefused`), keeping what
    they hold for other settings and their other fields (date, stages, members) as they are."""
    if merge and metrics_path.is_file():
        problem = merge_refusal(metrics_path, metrics)
        if problem:
            raise MergeRefused(problem)
        old_metrics = _read(metrics_path)
        metrics = {**old_metrics, "scores": {**old_metrics["scores"], **metrics["scores"]}}
        samples = {**_read(samples_path), **samples}
    write_json(metrics_path, metrics)
    write_json(samples_path, samples)


def run_refusal(captioner: Captioner, settings: list[str], folder: Path, metrics_path: Path, record: dict,
                merge: bool) -> str | None:
    """Why the run cannot go on, found before decoding (see unavailable_settings, merge_refusal)."""
    return unavailable_settings(captioner, settings, folder) or (merge_refusal(metrics_path, record) if merge else None)


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
    bundle = captioner.bundle.path
    settings = args.settings or available_settings(captioner)
    metrics_path, samples_path = output_paths(bundle, args.split)
    problem = run_refusal(captioner, settings, bundle.parent, metrics_path,
                          {"split": args.split, "images": len(corpus.split(args.split))}, args.merge)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    features, index = features_for(corpus, captioner.encoder, args.cache_dir, corpus.split(args.split))
    metrics, samples = evaluate_captioner(captioner, corpus, features, index, args.split, settings)
    metrics.update(kept_fields(metrics_path, captioner.config))
    write_scores(metrics_path, samples_path, metrics, samples, merge=args.merge)
    print(f"wrote {metrics_path} and {samples_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
