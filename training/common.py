"""Argument and logging helpers shared by the training entry points."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from captioning.corpus import Corpus, load_corpus
from captioning.encoders import DEFAULT_ENCODER, ENCODERS, ImageEncoder
from captioning.features import default_cache_path, extract_features

DEFAULT_DATA = "../shared/data/flickr8k"
SUMMARY_FILE = "training_summary.json"  # <out>/training_summary.json: timings of the latest training.train run


def read_training_summary(weights: str | Path) -> dict | None:
    """The timings training.train wrote into ``weights`` (features, each variant, total), None if absent."""
    path = Path(weights) / SUMMARY_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def setup_logging(log_file: Path | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        handlers=handlers, force=True)
    logging.getLogger("gensim").setLevel(logging.WARNING)


class CaptionFiles(str):
    """``--captions``: the first file as a plain string (what one file always was), every file in ``.files``."""

    files: list[str]


class _CaptionFilesAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        value = CaptionFiles(values[0])
        value.files = list(values)
        setattr(namespace, self.dest, value)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", default=DEFAULT_DATA,
                       help="Flickr8k folder holding Flicker8k_Dataset/ and Flickr8k_text/ (default: %(default)s)")
    group.add_argument("--captions", nargs="+", action=_CaptionFilesAction, metavar="FILE",
                       help="captions file instead of Flickr8k.token.txt: '<image>#<n><TAB>caption' lines, a CSV "
                            "with image,caption columns, a Karpathy split JSON (dataset_coco.json, ...; brings its "
                            "split), or COCO caption files (captions_train2017.json captions_val2017.json; each "
                            "file's split from its name)")
    group.add_argument("--images", help="image folder instead of <data>/Flicker8k_Dataset")
    group.add_argument("--split-files", nargs=3, metavar=("TRAIN", "DEV", "TEST"),
                       help="image lists for the three splits (default: Flickr8k's, or 80/10/10 by name)")
    group.add_argument("--encoder", default=DEFAULT_ENCODER, choices=sorted(ENCODERS),
                       help="image encoder (default: %(default)s; the others download ImageNet weights)")
    group.add_argument("--cache-dir", default="cache", help="where image features are cached (default: %(default)s)")


def corpus_from_args(args) -> Corpus:
    splits = dict(zip(("train", "dev", "test"), args.split_files)) if args.split_files else None
    captions = getattr(args.captions, "files", args.captions)
    return load_corpus(args.data, captions_file=captions, image_dir=args.images, split_files=splits)


def features_for(corpus: Corpus, encoder: ImageEncoder, cache_dir: str | Path, images: list[str],
                 ) -> tuple[np.ndarray, dict[str, int]]:
    """(features matrix, image name -> row), extracting and caching what is missing."""
    features = extract_features(encoder, corpus.image_dir, images,
                                cache_path=default_cache_path(cache_dir, encoder.name))
    index = {name: row for row, name in enumerate(features)}
    return np.stack(list(features.values())), index
