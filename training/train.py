"""Train caption models from raw images, end to end.

    python -m training.train --data ../shared/data/flickr8k --variant word2vec
    python -m training.train --variant all            # learned, fasttext, word2vec

Steps: read the corpus -> extract (or reuse cached) image features -> build the
vocabulary from the training captions -> train word vectors (word2vec/fasttext
variants, unless --vectors gives a file) -> fit the decoder with early stopping on
the dev split -> evaluate on the test split -> write the bundle to <out>/<variant>/.

A run is staged in <out>/.staging-<variant>/ and moved into place only when
training and evaluation have finished, so an interrupted run never damages the
bundle already there; a bundle left missing by a run killed while moving it into
place is recovered at the next start (captioning.bundle.restore_bundle).
Checkpoints live in <runs>/<variant>/; running the same command again resumes
from the last finished epoch.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import shutil
import time
from pathlib import Path

from captioning.bundle import METRICS_FILE, publish, restore_bundle, save_bundle, staging_path, write_json
from captioning.captioner import Captioner
from captioning.data import CaptionBatches, encode_captions
from captioning.embeddings import EMBEDDING_KINDS, embedding_matrix, load_vectors, train_vectors
from captioning.encoders import load_encoder
from captioning.model import DecoderConfig
from captioning.text import tokenize
from captioning.training import TrainSettings, fit_decoder
from captioning.vocab import Vocabulary

from .common import add_data_arguments, corpus_from_args, features_for, quiet_tensorflow, setup_logging
from .evaluate import evaluate_captioner

log = logging.getLogger("training.train")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="all", choices=[*EMBEDDING_KINDS, "all"],
                        help="embedding of the model to train (default: all three)")
    add_data_arguments(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--embedding-dim", type=int, default=256,
                       help="word vector size (ignored with --vectors; default: %(default)s)")
    model.add_argument("--units", type=int, default=256)
    model.add_argument("--dropout", type=float, default=0.5)
    model.add_argument("--min-count", type=int, default=5, help="minimum word frequency in the vocabulary")
    model.add_argument("--max-words", type=int, default=22,
                       help="longest caption in words, for training and generation (default: %(default)s)")
    model.add_argument("--vectors", help="pretrained vector file for the word2vec/fasttext variant "
                                         "(word2vec .bin/.txt, fastText .vec/.bin, GloVe .txt)")
    train = parser.add_argument_group("training")
    defaults = TrainSettings()
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    train.add_argument("--patience", type=int, default=defaults.patience)
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--limit-images", type=int,
                       help="use only the first N train/dev/test images (quick experiments and tests)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", default="weights", help="folder that receives <variant>/ bundles (default: %(default)s)")
    out.add_argument("--runs", default="runs", help="checkpoints of unfinished runs (default: %(default)s)")
    out.add_argument("--no-evaluate", action="store_true", help="skip the test-set evaluation")
    out.add_argument("--settings", nargs="+", default=["greedy", "beam3", "beam5"],
                     help="decoding settings to evaluate (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.vectors and args.variant not in ("word2vec", "fasttext"):
        parser.error("--vectors needs --variant word2vec or fasttext")
    return args


def word_vectors(kind: str, train_captions: list[str], args) -> tuple[object, str]:
    """(gensim KeyedVectors, where they came from)."""
    if args.vectors:
        return load_vectors(args.vectors), f"pretrained vectors from {Path(args.vectors).name}"
    started = time.perf_counter()
    vectors = train_vectors(kind, [tokenize(c) for c in train_captions], args.embedding_dim, seed=args.seed)
    name = {"word2vec": "Word2Vec", "fasttext": "FastText"}[kind]
    log.info("trained %s vectors (%d words) in %.1f s", name, len(vectors.key_to_index), time.perf_counter() - started)
    return vectors, f"gensim {name} skip-gram trained on the training captions"


def train_variant(variant: str, args, corpus, encoder, features, index, vocab) -> dict:
    started = time.perf_counter()
    train_caps = corpus.captions_of(corpus.split("train"))
    all_train_captions = [c for caps in train_caps.values() for c in caps]

    matrix, embedding = None, {"kind": variant, "dim": args.embedding_dim, "trainable": True,
                               "source": "learned with the decoder"}
    if variant != "learned":
        vectors, source = word_vectors(variant, all_train_captions, args)
        matrix, missing = embedding_matrix(vocab, vectors, seed=args.seed)
        embedding = {"kind": variant, "dim": int(matrix.shape[1]), "trainable": False, "source": source,
                     "words_without_vector": missing}

    config = DecoderConfig(vocab_size=len(vocab), feature_dim=encoder.feature_dim,
                           embedding_dim=embedding["dim"], units=args.units, dropout=args.dropout,
                           embedding_trainable=embedding["trainable"])
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                             patience=args.patience, seed=args.seed)
    rows, seqs = encode_captions(train_caps, index, vocab, args.max_words)
    dev_rows, dev_seqs = encode_captions(corpus.captions_of(corpus.split("dev")), index, vocab, args.max_words)
    train_batches = CaptionBatches(features, rows, seqs, settings.batch_size, shuffle=True, seed=args.seed)
    dev_batches = CaptionBatches(features, dev_rows, dev_seqs, 256, shuffle=False)
    log.info("%s: %d training captions in %d batches, %d dev captions", variant, len(seqs), len(train_batches),
             len(dev_seqs))

    checkpoint_dir = Path(args.runs) / variant
    model, history = fit_decoder(config, train_batches, dev_batches, settings, checkpoint_dir, matrix)
    train_seconds = time.perf_counter() - started

    bundle_config = {
        "name": variant,
        "encoder": encoder.name,
        "max_length": args.max_words + 1,
        "decoder": config.to_dict(),
        "embedding": embedding,
        "vocab": {"size": len(vocab), "min_count": args.min_count},
        "training": {**settings.to_dict(), "epochs_run": len(history["loss"]), "best_epoch": history["best_epoch"],
                     "seconds": round(train_seconds, 1),
                     "seconds_per_epoch": round(sum(history["epoch_seconds"]) / len(history["epoch_seconds"]), 1),
                     "best_val_loss": round(min(history["val_loss"]), 4)},
        "data": {"corpus": Path(args.data).name, "captions_file": Path(args.captions).name if args.captions else
                 "Flickr8k.token.txt", **{f"{s}_images": len(corpus.split(s)) for s in ("train", "dev", "test")},
                 "train_captions": len(seqs)},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    out = Path(args.out)
    staging = staging_path(out / variant)
    shutil.rmtree(staging, ignore_errors=True)  # an earlier run's; main() recovered it first if it was needed
    save_bundle(staging, model, vocab, bundle_config, history=history)

    evaluation_started = time.perf_counter()
    if not args.no_evaluate:
        captioner = Captioner.load(staging, encoder=encoder)
        metrics, samples = evaluate_captioner(captioner, corpus, features, index, "test", args.settings)
        write_json(staging / METRICS_FILE, metrics)
        write_json(staging / "samples.json", samples)
    evaluate_seconds = time.perf_counter() - evaluation_started
    publish(staging, out / variant)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log.info("%s: bundle written to %s (%.1f s in all)", variant, out / variant, time.perf_counter() - started)
    return {"variant": variant, "seconds": round(time.perf_counter() - started, 1),
            "train_seconds": round(train_seconds, 1), "evaluate_seconds": round(evaluate_seconds, 1),
            "epochs": len(history["loss"]),
            "seconds_per_epoch": bundle_config["training"]["seconds_per_epoch"]}


def limit_corpus(corpus, n: int):
    corpus.splits = {name: images[:n] for name, images in corpus.splits.items()}
    return corpus


def main(argv=None) -> int:
    quiet_tensorflow()
    args = parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    setup_logging(Path(args.out) / "training.log")
    started = time.perf_counter()
    log.info("training %s from %s", args.variant, args.captions or args.data)
    variants = list(EMBEDDING_KINDS) if args.variant == "all" else [args.variant]
    for variant in variants:  # a publish killed between its two renames leaves <out>/<variant>/ missing
        restore_bundle(Path(args.out) / variant)

    corpus = corpus_from_args(args)
    if args.limit_images:
        corpus = limit_corpus(corpus, args.limit_images)
    encoder = load_encoder(args.encoder)
    images = sorted({im for split in ("train", "dev", "test") for im in corpus.split(split)})
    features, index = features_for(corpus, encoder, args.cache_dir, images)
    feature_seconds = time.perf_counter() - started
    log.info("features for %d images ready after %.1f s", len(images), feature_seconds)

    train_captions = [c for im in corpus.split("train") for c in corpus.captions[im]]
    vocab = Vocabulary.build(train_captions, min_count=args.min_count)
    log.info("vocabulary: %d words seen at least %d times in the training captions", len(vocab), args.min_count)

    results = [train_variant(v, args, corpus, encoder, features, index, vocab) for v in variants]
    total = time.perf_counter() - started
    summary = {"features_seconds": round(feature_seconds, 1), "variants": results, "total_seconds": round(total, 1)}
    log.info("done: %s", json.dumps(summary))
    training = feature_seconds + sum(r["train_seconds"] for r in results)
    log.info("from raw images: %.1f min of training (features + word vectors + decoders), %.1f min in all "
             "with evaluation and saving", training / 60, total / 60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
