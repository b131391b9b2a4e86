"""Argument and logging helpers shared by the training entry points."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from captioning.corpus import Corpus, CorpusError, load_corpus
from captioning.encoders import DEFAULT_ENCODER, ENCODERS, ImageEncoder
from captioning.features import default_cache_path, default_shard_folder, extract_features, extract_shards
from captioning.shards import DEFAULT_SHARD_SIZE, ShardedFeatures

DEFAULT_DATA = "../shared/data/flickr8k"
SUMMARY_FILE = "training_summary.json"  # <out>/training_summary.json: timings of the latest training.train run
FINE_TUNING_SUMMARY_FILE = "fine_tuning_summary.json"  # <out>/...: timings of a training.train --from-bundles run
# Above this many images, features go to a sharded store even without --feature-shards: their
# float32 matrix would take 256 MB (efficientnet_lite0), and more with every image.
AUTO_SHARD_IMAGES = 50_000


def read_training_summary(weights: str | Path, name: str = SUMMARY_FILE) -> dict | None:
    """The timings training.train wrote into ``weights`` (features, each variant, total), None if absent;
    ``name``: FINE_TUNING_SUMMARY_FILE for those of its --from-bundles run."""
    path = Path(weights) / name
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


class CacheDir(str):
    """``--cache-dir``: the folder as a plain string (what it always was), carrying how features are
    stored: ``feature_shards`` (a folder given with --feature-shards, else None: automatic) and
    ``shard_size``.  Every entry point hands ``args.cache_dir`` to :func:`features_for`."""

    feature_shards: str | None = None
    shard_size: int = DEFAULT_SHARD_SIZE


class _CacheDirAction(argparse.Action):
    """--cache-dir, --feature-shards and --shard-size: each stores its value and re-attaches
    all three to ``args.cache_dir``, whatever their order on the command line."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        cache_dir = CacheDir(namespace.cache_dir)
        cache_dir.feature_shards, cache_dir.shard_size = namespace.feature_shards, namespace.shard_size
        namespace.cache_dir = cache_dir


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The corpus options and the image-feature options (encoder, cache, shards)."""
    group = add_corpus_arguments(parser)
    _add_feature_arguments(group)


def add_corpus_arguments(parser: argparse.ArgumentParser):
    """--data, --captions, --images, --split-files: the corpus, for a command that reads its captions
    only; returns their argument group."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", default=DEFAULT_DATA,
                       help="Flickr8k folder holding Flicker8k_Dataset/ and Flickr8k_text/ (default: %(default)s)")
    group.add_argument("--captions", nargs="+", action=_CaptionFilesAction, metavar="FILE",
                       help="captions file instead of Flickr8k.token.txt: '<image>#<n><TAB>caption' lines, a CSV "
                            "with an image,caption header, a Karpathy split JSON (dataset_coco.json, ...; brings its "
                            "split), or COCO caption files (captions_train2017.json captions_val2017.json; each "
                            "file's split from its name)")
    group.add_argument("--images", help="image folder instead of <data>/Flicker8k_Dataset")
    group.add_argument("--split-files", nargs=3, metavar=("TRAIN", "DEV", "TEST"),
                       help="image lists for the three splits (default: the captions file's own split, "
                            "Flickr8k's split files when they sit beside it, else 80/10/10 by name)")
    return group


def _add_feature_arguments(group) -> None:
    group.add_argument("--encoder", default=DEFAULT_ENCODER, choices=sorted(ENCODERS),
                       help="image encoder (default: %(default)s; the others download ImageNet weights)")
    group.add_argument("--cache-dir", default="cache", action=_CacheDirAction,
                       help="where image features are cached (default: %(default)s)")
    group.add_argument("--feature-shards", metavar="DIR", action=_CacheDirAction,
                       help="keep image features in a sharded float16 store in DIR, read a batch at a time, "
                            "instead of <cache-dir>/features-<encoder>.npz in memory (automatic, in "
                            f"<cache-dir>/features-<encoder>/, above {AUTO_SHARD_IMAGES:,} images)")
    group.add_argument("--shard-size", type=_positive, default=DEFAULT_SHARD_SIZE, action=_CacheDirAction,
                       metavar="N", help="images per feature shard (default: %(default)s)")


def load_corpus_from_args(args) -> Corpus:
    """The corpus the data arguments name; CorpusError if it is missing or malformed (an empty split ...)."""
    splits = dict(zip(("train", "dev", "test"), args.split_files)) if args.split_files else None
    captions = getattr(args.captions, "files", args.captions)
    return load_corpus(args.data, captions_file=captions, image_dir=args.images, split_files=splits)


def corpus_from_args(args) -> Corpus:
    """:func:`load_corpus_from_args` for a command that cannot go on without it: a corpus error ends
    the command with its one line."""
    try:
        return load_corpus_from_args(args)
    except CorpusError as error:
        raise SystemExit(f"error: {error}") from None


def shard_folder(cache_dir: str | Path, encoder: ImageEncoder, images: list[str]) -> Path | None:
    """Where the features of ``images`` are sharded: --feature-shards, else <cache-dir>/features-<encoder>/
    for more than AUTO_SHARD_IMAGES images (or when a store is already there); None: the .npz cache."""
    explicit = getattr(cache_dir, "feature_shards", None)
    if explicit:
        return Path(explicit)
    automatic = default_shard_folder(cache_dir, encoder.name)
    return automatic if len(images) > AUTO_SHARD_IMAGES or automatic.is_dir() else None


def features_for(corpus: Corpus, encoder: ImageEncoder, cache_dir: str | Path, images: list[str],
                 ) -> tuple[np.ndarray | ShardedFeatures, dict[str, int]]:
    """(features (n, feature_dim), image name -> row), extracting and caching what is missing: a float32
    matrix from the .npz cache, or a :class:`ShardedFeatures` reading rows from a sharded store
    (see :func:`shard_folder`); both are indexed as ``features[rows]``."""
    folder = shard_folder(cache_dir, encoder, images)
    if folder is not None:
        store = extract_shards(encoder, corpus.image_dir, images, folder,
                               shard_size=getattr(cache_dir, "shard_size", DEFAULT_SHARD_SIZE))
        return store, {name: store.index[name] for name in images}
    features = extract_features(encoder, corpus.image_dir, images,
                                cache_path=default_cache_path(cache_dir, encoder.name))
    index = {name: row for row, name in enumerate(features)}
    return np.stack(list(features.values())), index
