"""Train caption models from raw images, end to end.

    python -m training.train --data ../shared/data/flickr8k --variant word2vec
    python -m training.train --variant all            # learned, fasttext, word2vec

Steps: read the corpus -> extract (or reuse cached) image features -> build the
vocabulary from the training captions -> train word vectors (word2vec/fasttext
variants, unless --vectors gives a file) -> stage 1: fit the decoder by cross-entropy
with early stopping on the dev split -> stage 2: self-critical fine-tuning on CIDEr-D
(captioning.scst), the epoch kept by dev CIDEr-D -> evaluate both stages on the test
split -> write the bundle, holding the stage that did better on dev, to <out>/<variant>/.

A run is staged in <out>/.staging-<variant>/ and moved into place only when
training and evaluation have finished, so an interrupted run never damages the
bundle already there; a bundle left missing by a run killed while moving it into
place is recovered at the next start (captioning.bundle.restore_bundle).
Checkpoints live in <runs>/<variant>/; running the same command again resumes
from the last finished epoch.

    python -m training.train --variant all --from-bundles weights

runs stage 2 alone on finished cross-entropy bundles (those of a --scst-epochs 0 run) and writes
the fine-tuned bundles, scored like any other, to --out; its timings go to fine_tuning_summary.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captioning.bundle import (LOSS_CURVE_FILE, Bundle, BundleError, check_bundle_files, load_bundle, publish,
                               restore_bundle, save_bundle, staging_path, write_json)
from captioning.captioner import Captioner
from captioning.corpus import Corpus
from captioning.data import CaptionBatches, encode_captions
from captioning.distribute import (STRATEGIES, DistributeError, is_chief, make_strategy, wait_for_all_workers,
                                   worker_index)
from captioning.embeddings import embedding_matrix, load_vectors, train_vectors
from captioning.encoders import ImageEncoder, load_encoder
from captioning.model import DecoderConfig
from captioning.scst import CiderDReward, ScstData, ScstSettings, fine_tune
from captioning.text import tokenize
from captioning.training import TrainSettings, fit_decoder
from captioning.variants import LABELS, PRETRAINED_VARIANTS, VARIANTS
from captioning.vocab import DEFAULT_MIN_COUNT, Vocabulary, max_length_for

from .common import (FINE_TUNING_SUMMARY_FILE, SUMMARY_FILE, add_data_arguments, corpus_from_args, features_for,
                     setup_logging)
from .evaluate import PLAIN_SETTINGS, evaluate_captioner, write_evaluation
from .report import plot_loss_curve

log = logging.getLogger("training.train")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="all", choices=[*VARIANTS, "all"],
                        help="embedding of the model to train (default: all three)")
    add_data_arguments(parser)
    model = parser.add_argument_group("model")
    sizes = DecoderConfig(vocab_size=0, feature_dim=0)  # the decoder's default sizes
    model.add_argument("--embedding-dim", type=int, default=sizes.embedding_dim,
                       help="word vector size (ignored with --vectors; default: %(default)s)")
    model.add_argument("--units", type=int, default=sizes.units)
    model.add_argument("--dropout", type=float, default=sizes.dropout)
    model.add_argument("--min-count", type=int, default=DEFAULT_MIN_COUNT,
                       help="minimum word frequency in the vocabulary")
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
    train.add_argument("--min-delta", type=float, default=defaults.min_delta,
                       help="a smaller fall of the dev loss counts as no improvement (0: any fall counts)")
    train.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing,
                       help="share of each target word's probability spread over the vocabulary in "
                            "stage 1 (default: %(default)s, plain cross-entropy)")
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--limit-images", type=int,
                       help="use only the first N train/dev/test images (quick experiments and tests)")
    train.add_argument("--strategy", choices=STRATEGIES, default="default",
                       help="cross-entropy training with tf.distribute: 'mirrored' on every local GPU, "
                            "'multiworker' on the hosts in TF_CONFIG (run the same command on each; worker 0 "
                            "is the chief). Same global batches, same result as 'default' up to rounding. "
                            "Evaluation, SCST and publishing run on the chief alone, on one device; the other "
                            "workers stop after training (default: %(default)s)")
    scst = parser.add_argument_group("self-critical fine-tuning (stage 2)")
    scst_defaults = ScstSettings()
    scst.add_argument("--scst-epochs", type=int, default=scst_defaults.epochs,
                      help="passes over the training images, the best by dev CIDEr-D of beam-3 captions kept "
                           "(the cross-entropy weights count as epoch 0); 0: cross-entropy only "
                           "(default: %(default)s)")
    scst.add_argument("--scst-learning-rate", type=float, default=scst_defaults.learning_rate)
    scst.add_argument("--scst-samples", type=int, default=scst_defaults.samples_per_image,
                      help="captions sampled per image; each one's baseline is the others' mean reward")
    scst.add_argument("--from-bundles", metavar="DIR",
                      help="skip the cross-entropy stage: fine-tune the finished bundles DIR/<variant>/ (those "
                           "of a --scst-epochs 0 run) with the --scst-* options; they must be cross-entropy "
                           "bundles of this data (same vocabulary, encoder and --max-words)")
    scst.add_argument("--scst-cross-entropy", type=float, default=scst_defaults.cross_entropy_weight,
                      help="weight of the reference captions' cross-entropy added to the SCST loss; 0: pure "
                           "SCST, which narrowed the vocabulary here (README) (default: %(default)s)")
    scst.add_argument("--scst-keep-epochs", metavar="DIR",
                      help="also keep every SCST epoch's weights, as DIR/<variant>/epoch<N>.weights.h5 "
                           "(what tools.average_epochs averages)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", default="weights", help="folder that receives <variant>/ bundles (default: %(default)s)")
    out.add_argument("--runs", default="runs", help="checkpoints of unfinished runs (default: %(default)s)")
    out.add_argument("--no-evaluate", action="store_true", help="skip the test-set evaluation")
    out.add_argument("--no-meteor", action="store_true",
                     help="evaluate without METEOR (each scoring starts a Java scorer: ~6 s and a 2 GB heap); "
                          "for quick runs, metrics.json then has no METEOR")
    out.add_argument("--settings", nargs="+", choices=PLAIN_SETTINGS, default=PLAIN_SETTINGS,
                     help="decoding settings to evaluate (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.from_bundles and args.scst_epochs < 1:
        parser.error("--from-bundles fine-tunes finished bundles: give --scst-epochs N (at least 1)")
    if args.from_bundles and args.strategy != "default":
        parser.error("--from-bundles runs the fine-tuning alone, which runs on one device: leave out --strategy")
    if args.vectors and args.variant not in PRETRAINED_VARIANTS:
        parser.error(f"--vectors needs --variant {' or '.join(PRETRAINED_VARIANTS)}")
    return args


def train_settings(args) -> TrainSettings:
    """Stage 1's settings, as the command line gives them."""
    return TrainSettings(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                         patience=args.patience, min_delta=args.min_delta, seed=args.seed,
                         label_smoothing=args.label_smoothing)


def scst_settings(args) -> ScstSettings:
    """Stage 2's settings, as the command line gives them."""
    return ScstSettings(epochs=args.scst_epochs, learning_rate=args.scst_learning_rate,
                        samples_per_image=args.scst_samples, cross_entropy_weight=args.scst_cross_entropy,
                        seed=args.seed)


def word_vectors(kind: str, train_captions: list[str], args) -> tuple[object, str]:
    """(gensim KeyedVectors, where they came from)."""
    if args.vectors:
        return load_vectors(args.vectors), f"pretrained vectors from {Path(args.vectors).name}"
    started = time.perf_counter()
    vectors = train_vectors(kind, [tokenize(c) for c in train_captions], args.embedding_dim, seed=args.seed)
    log.info("trained %s vectors (%d words) in %.1f s", LABELS[kind], len(vectors.key_to_index),
             time.perf_counter() - started)
    return vectors, f"gensim {LABELS[kind]} skip-gram trained on the training captions"


@dataclass
class Shared:
    """What every variant of one run shares: the settings, the data and its features, the vocabulary."""

    args: argparse.Namespace
    corpus: Corpus
    encoder: ImageEncoder
    features: np.ndarray  # one row per image
    index: dict[str, int]  # image name -> row
    vocab: Vocabulary
    strategy: object = None  # tf.distribute strategy of the cross-entropy stage (None: one device)


@dataclass
class Trained:
    """A fitted decoder and how it was trained."""

    model: object
    history: dict
    decoder: DecoderConfig
    settings: TrainSettings
    train_captions: int


def train_variant(variant: str, run: Shared) -> dict:
    """The recipe: embedding -> cross-entropy -> (score it) -> SCST -> stage -> evaluate -> publish.
    Returns the timings of each stage."""
    clock = Stopwatch()
    if run.args.from_bundles:
        done = fine_tuned_by_this_command(variant, run)
        if done is not None:
            return done
        trained, embedding, cross_entropy_seconds = trained_from_bundle(variant, run)
        clock.lap("cross_entropy_seconds")
    else:
        matrix, embedding = choose_embedding(variant, run)
        trained = train_decoder(variant, run, embedding, matrix)
        clock.lap("cross_entropy_seconds")
        cross_entropy_seconds = clock.seconds["cross_entropy_seconds"]
    if not is_chief(run.strategy):  # the chief alone evaluates, fine-tunes and publishes
        log.info("%s: trained; the chief evaluates, fine-tunes and publishes", variant)
        return {"variant": variant, "seconds": round(clock.total, 1), "epochs": len(trained.history["loss"]),
                "seconds_per_epoch": seconds_per_epoch(trained.history),
                "loss": trained.history["loss"], "val_loss": trained.history["val_loss"]}
    cross_entropy_scores = None
    if not run.args.no_evaluate and run.args.scst_epochs > 0:  # scored now: fine-tuning changes the weights
        cross_entropy_scores = evaluate_model(variant, trained.model, run)[0]["scores"]
        clock.lap("evaluate_seconds")
    scst_history = fine_tune_decoder(variant, run, trained) if run.args.scst_epochs > 0 else None
    clock.lap("scst_seconds")
    staging = stage_bundle(variant, run, embedding, trained, cross_entropy_seconds, scst_history)
    if not run.args.no_evaluate:
        evaluate_staged(staging, run, cross_entropy_scores, scst_history)
        clock.lap("evaluate_seconds")
    publish_variant(staging, Path(run.args.out) / variant, Path(run.args.runs) / variant)
    log.info("%s: bundle written to %s (%.1f s in all)", variant, Path(run.args.out) / variant, clock.total)
    return {"variant": variant, "seconds": round(clock.total, 1),
            **{name: round(value, 1) for name, value in clock.seconds.items()},
            "epochs": len(trained.history["loss"]), "seconds_per_epoch": seconds_per_epoch(trained.history),
            "scst_epochs": len(scst_history["epoch_seconds"]) if scst_history else 0,
            # the SCST epochs' own times, including any a resumed run found done (scst_seconds: this process)
            "scst_epoch_seconds": round(sum(scst_history["epoch_seconds"]), 1) if scst_history else 0.0}


class Stopwatch:
    """Seconds spent in named stages (a name seen twice adds up), and in all."""

    def __init__(self):
        self.started = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.last
        self.last = now

    @property
    def total(self) -> float:
        return time.perf_counter() - self.started


def choose_embedding(variant: str, run: Shared) -> tuple[np.ndarray | None, dict]:
    """(initial embedding matrix, or None to learn it; the bundle's ``embedding`` section)."""
    args = run.args
    if variant == "learned":
        return None, {"kind": variant, "dim": args.embedding_dim, "trainable": True,
                      "source": "learned with the decoder"}
    vectors, source = word_vectors(variant, run.corpus.split_captions("train"), args)
    matrix, missing = embedding_matrix(run.vocab, vectors, seed=args.seed)
    return matrix, {"kind": variant, "dim": int(matrix.shape[1]), "trainable": False, "source": source,
                    "words_without_vector": missing}


def train_decoder(variant: str, run: Shared, embedding: dict, matrix: np.ndarray | None) -> Trained:
    """Fit the decoder on the train split with early stopping on the dev split (resuming a checkpoint)."""
    args = run.args
    decoder = DecoderConfig(vocab_size=len(run.vocab), feature_dim=run.encoder.feature_dim,
                            embedding_dim=embedding["dim"], units=args.units, dropout=args.dropout,
                            embedding_trainable=embedding["trainable"])
    settings = train_settings(args)
    train, dev = (encode_captions(run.corpus.captions_of(run.corpus.split(name)), run.index, run.vocab,
                                  args.max_words) for name in ("train", "dev"))
    train_batches = CaptionBatches(run.features, *train, settings.batch_size, shuffle=True, seed=args.seed)
    dev_batches = CaptionBatches(run.features, *dev, 256, shuffle=False)
    log.info("%s: %d training captions in %d batches, %d dev captions", variant, len(train[1]), len(train_batches),
             len(dev[1]))
    model, history = fit_decoder(decoder, train_batches, dev_batches, settings, Path(args.runs) / variant, matrix,
                                 strategy=run.strategy)
    return Trained(model, history, decoder, settings, len(train[1]))


def fine_tuned_by_this_command(variant: str, run: Shared) -> dict | None:
    """With --out the --from-bundles folder, each bundle fine-tuned replaces the one it started from, so
    a rerun after an interruption finds the first variants fine-tuned: those this command's settings
    fine-tuned are done (their timings as the bundle recorded them), not an error. None otherwise."""
    args = run.args
    path = Path(args.from_bundles) / variant
    if Path(args.out).resolve() != Path(args.from_bundles).resolve():
        return None
    try:
        config = check_bundle_files(path)[0]
    except BundleError:  # not a complete bundle: trained_from_bundle says what is wrong with it
        return None
    recorded = config.get("fine_tuning") or {}
    settings = scst_settings(args).to_dict()
    if any(recorded.get(key) != value for key, value in settings.items()):
        return None  # another fine-tuning's bundle: trained_from_bundle says why it cannot start from it
    log.info("%s: fine-tuned already by this command (an earlier run of it), skipped", variant)
    return {"variant": variant, "skipped": "fine-tuned already by an earlier run of this command",
            "seconds": 0.0, "scst_seconds": 0.0, "evaluate_seconds": 0.0, "scst_epochs": settings["epochs"],
            "scst_epoch_seconds": recorded.get("seconds", 0.0)}


def trained_from_bundle(variant: str, run: Shared) -> tuple[Trained, dict, float]:
    """Stage 1 as a finished bundle recorded it (--from-bundles): (its decoder and how it was trained,
    its ``embedding`` section, the seconds its cross-entropy stage took)."""
    path = Path(run.args.from_bundles) / variant
    bundle = load_bundle(path)
    config = bundle.config
    if config.get("fine_tuning"):
        raise SystemExit(f"error: {path} is fine-tuned already; --from-bundles starts from cross-entropy bundles")
    mismatch = [what for what, same in (("vocabulary", bundle.vocab.words == run.vocab.words),
                                        ("encoder", config["encoder"] == run.encoder.name),
                                        ("--max-words", config["max_length"] == max_length_for(run.args.max_words)))
                if not same]
    if mismatch:
        raise SystemExit(f"error: {path} was trained with another {', '.join(mismatch)} than this run's data")
    training = config["training"]
    settings = TrainSettings.from_record(training)
    log.info("%s: cross-entropy stage from %s (best epoch %d of %d)", variant, path, training["best_epoch"],
             training["epochs_run"])
    trained = Trained(bundle.model, bundle.history, DecoderConfig(**config["decoder"]), settings,
                      config["data"]["train_captions"])
    return trained, config["embedding"], training["seconds"]


def scst_data(run: Shared, split: str) -> ScstData:
    """A split's images, their feature rows and their CIDEr-D reward (the split's references)."""
    images = run.corpus.split(split)
    references = run.corpus.captions_of(images)
    return ScstData(images, run.features[[run.index[im] for im in images]], CiderDReward(references),
                    [references[im] for im in images])


def fine_tune_decoder(variant: str, run: Shared, trained: Trained) -> dict:
    """Stage 2: SCST from the cross-entropy weights (``trained.model`` ends holding the weights
    with the best dev CIDEr-D, possibly the starting ones).  Returns its history."""
    args = run.args
    settings = scst_settings(args)
    log.info("%s: self-critical fine-tuning, %d epochs at learning rate %.0e, cross-entropy weight %g", variant,
             settings.epochs, settings.learning_rate, settings.cross_entropy_weight)
    _, history = fine_tune(trained.model, run.vocab, scst_data(run, "train"), scst_data(run, "dev"),
                           max_length_for(args.max_words), settings, Path(args.runs) / variant / "scst",
                           keep_epochs=Path(args.scst_keep_epochs) / variant if args.scst_keep_epochs else None,
                           decoder=trained.decoder.to_dict())
    return {**history, "settings": settings.to_dict()}


def shipped_stage(scst_history: dict | None) -> str:
    """Which stage's weights the bundle holds: SCST's when one of its epochs beat the
    cross-entropy weights on dev CIDEr-D (its epoch 0), else the cross-entropy ones."""
    return "scst" if scst_history and scst_history["best_epoch"] > 0 else "cross_entropy"


def seconds_per_epoch(history: dict) -> float:
    return round(sum(history["epoch_seconds"]) / len(history["epoch_seconds"]), 1)


def bundle_config(variant: str, run: Shared, embedding: dict, trained: Trained, train_seconds: float,
                  scst_history: dict | None = None) -> dict:
    """config.json of the bundle: what was trained, how, on what."""
    args, history, corpus = run.args, trained.history, run.corpus
    return {
        "name": variant,
        "encoder": run.encoder.name,
        "max_length": max_length_for(args.max_words),
        "decoder": trained.decoder.to_dict(),
        "embedding": embedding,
        "vocab": {"size": len(run.vocab), "min_count": args.min_count},
        "training": {**trained.settings.to_dict(), "strategy": args.strategy,
                     "replicas": run.strategy.num_replicas_in_sync if run.strategy else 1,
                     "epochs_run": len(history["loss"]),
                     "best_epoch": history["best_epoch"], "seconds": round(train_seconds, 1),
                     "seconds_per_epoch": seconds_per_epoch(history),
                     "best_val_loss": round(min(history["val_loss"]), 4)},
        "fine_tuning": None if scst_history is None else {
            "method": "self-critical sequence training, reward CIDEr-D", **scst_history["settings"],
            "best_epoch": scst_history["best_epoch"], "seconds": round(sum(scst_history["epoch_seconds"]), 1),
            "dev_cider": [round(x, 4) for x in scst_history["dev_cider"]]},
        "shipped_stage": shipped_stage(scst_history),
        "data": {"corpus": Path(args.data).name,
                 "captions_file": ", ".join(Path(f).name for f in getattr(args.captions, "files", [args.captions]))
                 if args.captions else "Flickr8k.token.txt", **{f"{s}_images": len(corpus.split(s)) for s in ("train", "dev", "test")},
                 "train_captions": trained.train_captions},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def stage_bundle(variant: str, run: Shared, embedding: dict, trained: Trained, train_seconds: float,
                 scst_history: dict | None = None) -> Path:
    """Write the bundle (and its loss curve) into <out>/.staging-<variant>/; returns that folder."""
    staging = staging_path(Path(run.args.out) / variant)
    shutil.rmtree(staging, ignore_errors=True)  # an earlier run's; main() recovered it first if it was needed
    config = bundle_config(variant, run, embedding, trained, train_seconds, scst_history)
    history = {**trained.history, **({"scst": scst_history} if scst_history else {})}
    save_bundle(staging, trained.model, run.vocab, config, history=history)
    plot_loss_curve(trained.history, staging / LOSS_CURVE_FILE, variant)
    return staging


def evaluate_model(variant: str, model, run: Shared) -> tuple[dict, dict]:
    """(metrics, captions) of a decoder still in memory on the test split."""
    bundle = Bundle(Path(variant), {"name": variant, "encoder": run.encoder.name,
                                    "max_length": max_length_for(run.args.max_words)}, run.vocab, model)
    return evaluate_captioner(Captioner(bundle, run.encoder), run.corpus, run.features, run.index, "test",
                              run.args.settings, meteor=not run.args.no_meteor)


def evaluate_staged(staging: Path, run: Shared, cross_entropy_scores: dict | None = None,
                    scst_history: dict | None = None) -> None:
    """Score the staged bundle on the test split: its metrics.json (with both stages' scores when
    it was fine-tuned) and samples.json."""
    captioner = Captioner.load(staging, encoder=run.encoder)
    metrics, samples = evaluate_captioner(captioner, run.corpus, run.features, run.index, "test", run.args.settings,
                                          meteor=not run.args.no_meteor)
    if scst_history is not None:
        shipped = shipped_stage(scst_history)
        metrics["shipped_stage"] = shipped
        metrics["stages"] = {"cross_entropy": cross_entropy_scores,
                             "scst": metrics["scores"] if shipped == "scst" else None}
    write_evaluation(staging, metrics, samples)


def publish_variant(staging: Path, destination: Path, checkpoint_dir: Path) -> None:
    """Move the finished bundle into place; the run's checkpoints are no longer needed."""
    publish(staging, destination)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)


def limit_corpus(corpus, n: int):
    corpus.splits = {name: images[:n] for name, images in corpus.splits.items()}
    return corpus


def prepare(args, strategy=None) -> Shared:
    """Read the corpus, extract (or reuse) the image features, build the vocabulary."""
    started = time.perf_counter()
    corpus = corpus_from_args(args)
    if args.limit_images:
        corpus = limit_corpus(corpus, args.limit_images)
    encoder = load_encoder(args.encoder)
    images = sorted({im for split in ("train", "dev", "test") for im in corpus.split(split)})
    features, index = features_for(corpus, encoder, args.cache_dir, images)
    log.info("features for %d images ready after %.1f s", len(images), time.perf_counter() - started)
    vocab = Vocabulary.build(corpus.split_captions("train"), min_count=args.min_count)
    log.info("vocabulary: %d words seen at least %d times in the training captions", len(vocab), args.min_count)
    return Shared(args, corpus, encoder, features, index, vocab, strategy)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:  # before any other TensorFlow op: MultiWorkerMirroredStrategy must come first
        strategy = make_strategy(args.strategy)
    except DistributeError as error:
        raise SystemExit(f"error: {error}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chief = is_chief(strategy)  # any other worker writes only its log and its summary into <out>
    worker = "" if chief else f"-worker{worker_index(strategy)}"
    setup_logging(out / f"training{worker}.log")
    started = time.perf_counter()
    log.info("training %s from %s", args.variant, args.captions or args.data)
    variants = list(VARIANTS) if args.variant == "all" else [args.variant]
    for variant in variants if chief else []:  # a publish killed between its two renames leaves <out>/<variant>/ missing
        restore_bundle(out / variant)

    run = prepare(args, strategy)
    feature_seconds = time.perf_counter() - started
    results = [train_variant(v, run) for v in variants]
    wait_for_all_workers(strategy)  # the other workers wait here for the chief's evaluation and fine-tuning
    total = time.perf_counter() - started
    summary = {"finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "features_seconds": round(feature_seconds, 1), "variants": results, "total_seconds": round(total, 1)}
    if args.from_bundles:  # the training run's own timings stay in <out>/training_summary.json
        summary["from_bundles"] = args.from_bundles
        write_json(out / FINE_TUNING_SUMMARY_FILE, summary)
    else:
        write_json(out / (SUMMARY_FILE if chief else f"training_summary{worker}.json"), summary)
    log.info("done: %s", json.dumps(summary))
    if not chief:
        return 0
    if args.from_bundles:
        log.info("fine-tuning: %.1f min in all with evaluation and saving", total / 60)
        return 0
    training = feature_seconds + sum(r["cross_entropy_seconds"] + r["scst_seconds"] for r in results)
    log.info("from raw images: %.1f min of training (features + word vectors + both stages), %.1f min in all "
             "with evaluation and saving", training / 60, total / 60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
