"""Four tries at a better stage 1 (learned embedding), measured against the default recipe: do
their beam-3 captions score higher on the dev and test splits?

    python -m tools.stage1_probes views --encoder efficientnet_lite0 --seed 0 --out evaluation/probes/views-seed0
    python -m tools.stage1_probes views --views none --encoder efficientnet_lite0 --seed 1 --out evaluation/probes/default-seed1
    python -m tools.stage1_probes views --views none --seed 0 --out evaluation/probes/lite0+lite2-seed0
    python -m tools.stage1_probes attention --out evaluation/probes/attention-seed0
    python -m tools.stage1_probes classes --seed 0 --out evaluation/probes/classes-seed0
    python -m tools.stage1_probes consensus --seed 0 --out evaluation/probes/consensus-seed0
    python -m tools.stage1_probes table evaluation/probes/*          # the runs, as a Markdown table
    python -m tools.stage1_probes compare --a evaluation/probes/views-seed* --b evaluation/probes/default-seed*

**views** (training-time augmentation): every time a training caption is drawn, it is paired with
the pooled features of one view of its photo, chosen at random: the photo itself, mirrored, its
four corner crops (7/8 of each side, scaled back to 224 px) or the mirrored centre crop.  Dev and
test captions see the photo itself, as the app does.  The views' features are extracted once into
``<cache-dir>/views-<encoder>.npz``.  ``--views none`` is the default recipe's stage 1 through
this same code (with ``--encoder efficientnet_lite0``, the default before Lite0 + Lite2, seed 0
reproduces ``evaluation/lite0_recipe/learned`` exactly); ``--encoder`` (default: the library's)
picks the features, from the cache ``training.train`` uses.

**attention** (Lu et al. 2017's spatial attention, without their sentinel): the merge decoder of
``captioning.model`` plus, at every word, a context vector: the 7x7 map of the encoder's last
convolution of EfficientNet-Lite0 (49 regions x 1280, before pooling) projected to ``units``, weighted by a softmax over
``w . tanh(region keys + LSTM output x W)``, and added to the merge beside the pooled image
projection.  The attention reads the LSTM's output, so teacher forcing still runs the LSTM over a
whole caption at once.  The maps are cached in ``<cache-dir>/regions-<encoder>.npy`` (float16,
1 GB for Flickr8k).  Its NumPy step (:class:`AttentionStep`) matches the Keras model to float
rounding and runs the library's beam search unchanged.

**classes** (what the encoder's ImageNet head knows, as an input): the pooled features with
EfficientNet-Lite0's 1000 class probabilities appended, ``sqrt(p)`` so that the runners-up of a
confident class are not lost under it, into the same merge decoder (``feature_dim`` + 1000).  The
head was trained on 1.2 million ImageNet photos; a linear layer fitted to 6,000 Flickr photos cannot
learn it from the features, though the features hold the same information.  The app computes these
probabilities anyway (guided decoding), so at inference it would cost nothing.  Cached in
``<cache-dir>/classes-<encoder>.npy``.

**consensus** (cleaner training captions): each training photo's caption that agrees least with
its other captions (lowest CIDEr-D against them, pycocoevalcap) is dropped before training, a fifth
of the captions.  CIDEr rewards the n-grams most people used; the odd caption out teaches phrasing
nobody will be scored on (dropped: "the kid is in front of a car with a put and a ball"; kept, among
others: "a little girl plays croquet next to a truck").  The vocabulary is the full split's, and the
batches are the default recipe's (``--views none``), so only the captions differ.

``compare`` bootstraps the difference of two groups of runs (seeds) on each split
(``captioning.significance.seed_bootstrap``: over the images and the seeds).

Both probes train with ``captioning.training.fit_decoder`` and the default ``TrainSettings``, on the
vocabulary ``training.train`` builds, then write to ``--out``: ``metrics.json`` (COCO scores of
beam-3 captions on dev and test, ``captioning.evaluation.evaluate_predictions``), ``samples.json``
(every caption), ``history.json`` (losses) and the weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from captioning.bundle import write_json
from captioning.corpus import load_corpus
from captioning.data import CaptionBatches, encode_captions
from captioning.decoding import StepDecoder, lstm_step, merge_output
from captioning.encoders import DEFAULT_ENCODER, ENCODERS, load_encoder
from captioning.encoders.efficientnet_lite import preprocess
from captioning.evaluation import evaluate_predictions
from captioning.features import pixel_batches
from captioning.model import (IMAGE_PROJECTION, LSTM, MERGE_DENSE, WORD_EMBEDDING, WORD_PROBS, DecoderConfig,
                              build_decoder)
from captioning.training import TrainSettings, fit_decoder, save_atomic
from captioning.vocab import DEFAULT_MIN_COUNT, Vocabulary, max_length_for
from training.common import DEFAULT_DATA, features_for, setup_logging

log = logging.getLogger("tools.stage1_probes")

MAX_WORDS = 22  # training.train's default --max-words
ATTENTION_ENCODER = "efficientnet_lite0"  # one CNN, whose last convolution the attention reads
BEAM_WIDTH = 3
CROP = 196  # 7/8 of 224


def _corner(rows: slice, cols: slice, mirror: bool = False):
    def view(pixels):  # uint8 (n, 224, 224, 3) -> a crop of it, mirrored or not
        crop = pixels[:, rows, cols]
        return crop[:, :, ::-1] if mirror else crop
    return view


VIEWS = {
    "mirror": lambda pixels: pixels[:, :, ::-1],
    "top_left": _corner(slice(None, CROP), slice(None, CROP)),
    "top_right": _corner(slice(None, CROP), slice(-CROP, None)),
    "bottom_left": _corner(slice(-CROP, None), slice(None, CROP)),
    "bottom_right": _corner(slice(-CROP, None), slice(-CROP, None)),
    "mirrored_centre": _corner(slice(14, 14 + CROP), slice(14, 14 + CROP), mirror=True),
}


# -- views -------------------------------------------------------------------------------------

def view_features(encoder, image_dir: Path, names: list[str], cache: Path) -> dict[str, np.ndarray]:
    """{view: float32 (len(names), feature_dim)} for every view in VIEWS, rows in ``names`` order
    (extracted in one pass over the photos, then read from ``cache``)."""
    import tensorflow as tf

    if cache.is_file():
        with np.load(cache) as data:
            if data["names"].tolist() == names:
                return {view: data[view] for view in VIEWS}
    out = {view: np.zeros((len(names), encoder.feature_dim), np.float32) for view in VIEWS}
    started, done = time.perf_counter(), 0
    for pixels in pixel_batches(encoder, image_dir, names):
        for view, transform in VIEWS.items():
            seen = np.ascontiguousarray(transform(pixels))
            if seen.shape[1:3] != pixels.shape[1:3]:  # a crop: back to the encoder's size
                seen = tf.image.resize(seen, pixels.shape[1:3]).numpy().round().clip(0, 255).astype(np.uint8)
            out[view][done:done + len(pixels)] = encoder.encode_pixels(seen)
        done += len(pixels)
    log.info("features of %d views of %d photos in %.0f s", len(VIEWS), len(names), time.perf_counter() - started)
    save_atomic(lambda path: np.savez(path, names=np.array(names), **out), cache)
    return out


class ViewBatches(CaptionBatches):
    """Training batches whose image features come from a random view of each caption's photo:
    ``features`` stacks the views, (views * images, feature_dim), view v of image i at row v * images + i."""

    def __init__(self, features: np.ndarray, images: int, *args, **kwargs):
        super().__init__(features, *args, **kwargs)
        self.images, self.views = images, len(features) // images

    def _batch(self, members: np.ndarray):
        inputs, target, weights = super()._batch(members)
        view = self.rng.integers(0, self.views, len(members))
        inputs["image_features"] = self.features[self.rows[members] + self.images * view]
        return inputs, target, weights


# -- attention ---------------------------------------------------------------------------------

REGIONS = 49  # the encoder's 7 x 7 map
ATTENTION = "attention"
REGION_PROJECTION = "region_projection"


@keras.saving.register_keras_serializable(package="stage1_probes")
class RegionAttention(layers.Layer):
    """[regions V (B, R, U), LSTM outputs h (B, T, U)] -> context (B, T, U):
    softmax over R of w . tanh(V K + h Q + b), times V."""

    def build(self, shapes):
        units = shapes[0][-1]
        self.key_kernel = self.add_weight(shape=(units, units), name="key_kernel")
        self.query_kernel = self.add_weight(shape=(units, units), name="query_kernel")
        self.score_bias = self.add_weight(shape=(units,), name="score_bias", initializer="zeros")
        self.score_vector = self.add_weight(shape=(units,), name="score_vector")

    def call(self, inputs, mask=None):
        regions, hidden = inputs
        keys = ops.matmul(regions, self.key_kernel)  # (B, R, U)
        queries = ops.matmul(hidden, self.query_kernel) + self.score_bias  # (B, T, U)
        scores = ops.sum(ops.tanh(keys[:, None] + queries[:, :, None]) * self.score_vector, axis=-1)  # (B, T, R)
        return ops.matmul(ops.softmax(scores, axis=-1), regions)  # (B, T, U)

    def compute_mask(self, inputs, mask=None):
        return None if mask is None else mask[1]

    def compute_output_shape(self, shapes):
        return (*shapes[1][:2], shapes[0][-1])


def build_attention_decoder(config: DecoderConfig, embedding_matrix=None) -> keras.Model:
    """``build_decoder``'s merge decoder, its image input the (batch, 49, feature_dim) map, plus
    the attention context in the merge."""
    if embedding_matrix is not None:
        raise ValueError("the attention probe learns its embedding")
    regions_in = keras.Input((REGIONS, config.feature_dim), name="image_features")
    caption_in = keras.Input((None,), dtype="int32", name="caption_in")
    pooled = layers.GlobalAveragePooling1D(name="pool")(regions_in)  # the pooled features the merge decoder reads
    image = layers.Dropout(config.dropout, name="image_dropout")(pooled)
    image = layers.Dense(config.units, activation="relu", name=IMAGE_PROJECTION)(image)
    image = layers.Reshape((1, config.units), name="image_per_step")(image)
    regions = layers.Dropout(config.dropout, name="region_dropout")(regions_in)
    regions = layers.Dense(config.units, activation="relu", name=REGION_PROJECTION)(regions)  # (B, R, U)
    words = layers.Embedding(config.vocab_size, config.embedding_dim, mask_zero=True, name=WORD_EMBEDDING)(caption_in)
    words = layers.Dropout(config.dropout, name="word_dropout")(words)
    hidden = layers.LSTM(config.units, return_sequences=True, name=LSTM)(words)  # (B, T, U)
    context = RegionAttention(name=ATTENTION)([regions, hidden])
    merged = layers.Add(name="merge")([image, hidden, context])
    merged = layers.Dense(config.units, activation="relu", name=MERGE_DENSE)(merged)
    probs = layers.Dense(config.vocab_size, activation="softmax", name=WORD_PROBS)(merged)
    return keras.Model([regions_in, caption_in], probs, name="attention_decoder")


class AttentionStep(StepDecoder):
    """The attention decoder one word at a time: the merge step with the context added to the image
    projection.  The per-image projection packs [pooled projection; regions V; keys V K], (n, 1 + 2R, U)."""

    def __init__(self, model: keras.Model, vocab: Vocabulary):
        super().__init__(model, vocab)
        self.region_kernel, self.region_bias = model.get_layer(REGION_PROJECTION).get_weights()
        self.key_kernel, self.query_kernel, self.score_bias, self.score_vector = model.get_layer(ATTENTION).get_weights()

    def project_image(self, features: np.ndarray) -> np.ndarray:
        regions = features.astype(np.float32).reshape(len(features), REGIONS, -1)  # beam search passes it flat
        pooled = super().project_image(regions.mean(axis=1))  # (n, U)
        values = np.maximum(regions @ self.region_kernel + self.region_bias, 0.0)  # (n, R, U)
        return np.concatenate([pooled[:, None], values, values @ self.key_kernel], axis=1)

    def step(self, word_ids: np.ndarray, state, image_projection: np.ndarray):
        pooled, values = image_projection[:, 0], image_projection[:, 1:1 + REGIONS]  # (n, U), (n, R, U)
        keys = image_projection[:, 1 + REGIONS:]  # (n, R, U)
        h, c = lstm_step(np, self.input_gates[word_ids], state, self.lstm_recurrent, self.lstm_bias)
        scores = np.tanh(keys + (h @ self.query_kernel + self.score_bias)[:, None]) @ self.score_vector  # (n, R)
        weights = np.exp(scores - scores.max(axis=1, keepdims=True))
        context = np.einsum("nr,nru->nu", weights / weights.sum(axis=1, keepdims=True), values)  # (n, U)
        logprobs = merge_output(np, pooled + context, h, self.merge_kernel, self.merge_bias, self.out_kernel,
                                self.out_bias)
        logprobs[:, self.banned] = -np.inf
        return logprobs, (h, c)


def cached_rows(cache: Path, names: list[str], compute) -> np.ndarray:
    """An array with one row per name in ``names``: read from ``cache`` (``.npy``) when it was
    written for these names, else ``compute()`` saved there."""
    listed = cache.with_suffix(".names.json")  # written last: an array file without it is unfinished
    if cache.is_file() and listed.is_file() and json.loads(listed.read_text()) == names:
        return np.load(cache)
    rows = compute()
    save_atomic(lambda path: np.save(path, rows), cache)
    save_atomic(lambda path: Path(path).write_text(json.dumps(names)), listed)
    return rows


def region_maps(encoder, image_dir: Path, names: list[str], cache: Path) -> np.ndarray:
    """float16 (len(names), 49, 1280): the encoder's last convolution, before its pooling layer."""
    def extract():
        conv_map = keras.Model(encoder.model.input, encoder.model.get_layer("avg_pool").input)
        maps, done = np.zeros((len(names), REGIONS, encoder.feature_dim), np.float16), 0
        for pixels in pixel_batches(encoder, image_dir, names):
            maps[done:done + len(pixels)] = conv_map.predict(preprocess(pixels), verbose=0).reshape(len(pixels), REGIONS, -1)
            done += len(pixels)
        return maps

    return cached_rows(cache, names, extract)


class RegionBatches(CaptionBatches):
    """Batches of float16-stored maps, handed out as float32."""

    def _batch(self, members: np.ndarray):
        inputs, target, weights = super()._batch(members)
        inputs["image_features"] = inputs["image_features"].astype(np.float32)
        return inputs, target, weights


# -- classes -----------------------------------------------------------------------------------

def class_probabilities(encoder, image_dir: Path, names: list[str], cache: Path) -> np.ndarray:
    """float32 (len(names), 1000): the encoder's ImageNet class probabilities, rows in ``names`` order."""
    if not encoder.has_classes:
        raise SystemExit(f"encoder {encoder.name} has no ImageNet head: the classes probe needs one")
    return cached_rows(cache, names, lambda: np.concatenate(
        [encoder.analyse_pixels(pixels)[1] for pixels in pixel_batches(encoder, image_dir, names)]).astype(np.float32))


# -- consensus ---------------------------------------------------------------------------------

def drop_outlier_captions(captions: dict[str, list[str]], drop: int = 1) -> dict[str, list[str]]:
    """Each image's captions without the ``drop`` of them with the lowest CIDEr-D against the
    image's other captions (pycocoevalcap's scorer; document frequencies over every such pair)."""
    from pycocoevalcap.cider.cider import Cider

    keys = [(image, n) for image, texts in captions.items() for n in range(len(texts))]
    references = {k: [t for m, t in enumerate(captions[k[0]]) if m != k[1]] for k in keys}
    _, scores = Cider().compute_score(references, {k: [captions[k[0]][k[1]]] for k in keys})
    score = dict(zip(references, scores))  # compute_score iterates its dicts in insertion order
    kept = {}
    for image, texts in captions.items():
        best = set(sorted(range(len(texts)), key=lambda n: -score[image, n])[:len(texts) - drop])
        kept[image] = [text for n, text in enumerate(texts) if n in best]  # in their own order
    return kept


# -- the recipe --------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for probe in ("views", "attention", "classes", "consensus"):
        run = commands.add_parser(probe, help=f"train and score the {probe} probe")
        if probe in ("classes", "consensus"):
            run.add_argument("--encoder", choices=sorted(ENCODERS), default=DEFAULT_ENCODER)
        if probe == "views":
            run.add_argument("--views", choices=["all", "none"], default="all",
                             help="every view in VIEWS, or the photo alone (the default recipe)")
            run.add_argument("--encoder", choices=sorted(ENCODERS), default=DEFAULT_ENCODER)
        run.add_argument("--seed", type=int, default=0)
        run.add_argument("--data", default=DEFAULT_DATA)
        run.add_argument("--cache-dir", default="cache")
        run.add_argument("--out", required=True)
    table = commands.add_parser("table", help="the runs' scores as a Markdown table")
    table.add_argument("runs", nargs="+", help="--out folders of finished runs")
    compare = commands.add_parser("compare", help="bootstrap group A minus group B on dev and test")
    compare.add_argument("--a", nargs="+", required=True, help="--out folders of group A (one per seed)")
    compare.add_argument("--b", nargs="+", required=True, help="--out folders of group B")
    compare.add_argument("--data", default=DEFAULT_DATA)
    compare.add_argument("--resamples", type=int, default=10_000)
    return parser.parse_args(argv)


def _record(run: str, name: str) -> dict:
    return json.loads((Path(run) / name).read_text(encoding="utf-8"))


def print_table(runs: list[str]) -> None:
    print("| run | probe | encoder | seed | epochs | best dev loss | dev BLEU-4 | dev CIDEr | test BLEU-4 "
          "| test CIDEr | test words | test copied |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        metrics, history = _record(run, "metrics.json"), _record(run, "history.json")
        probe = "default recipe" if metrics.get("views") == "none" else metrics["probe"]
        dev, test = metrics["dev"], metrics["test"]
        print(f"| {Path(run).name} | {probe} | {metrics['encoder']} | {metrics['seed']} | {len(history['loss'])} | "
              f"{min(history['val_loss']):.3f} | {dev['BLEU-4']:.4f} | {dev['CIDEr']:.4f} | {test['BLEU-4']:.4f} | "
              f"{test['CIDEr']:.4f} | {test['vocabulary_used']} | {test['copied_from_training']:.1%} |")


def print_comparison(a: list[str], b: list[str], data: str, resamples: int) -> None:
    from captioning.significance import image_statistics, seed_bootstrap

    corpus = load_corpus(data)
    print(f"A: {', '.join(Path(r).name for r in a)}; B: {', '.join(Path(r).name for r in b)}; "
          f"{resamples} resamples of images and seeds")
    for split in ("dev", "test"):
        references = corpus.captions_of(corpus.split(split))
        stats = [[image_statistics(_record(run, "samples.json")[split], references) for run in group]
                 for group in (a, b)]
        for metric, result in seed_bootstrap(*stats, resamples=resamples, seed=0).items():
            print(f"{split} {metric}: A {result.a:.4f} B {result.b:.4f} A-B {result.difference:+.4f} "
                  f"[{result.low:+.4f}, {result.high:+.4f}] p={result.p_value:.3f}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.command == "table":
        print_table(args.runs)
        return 0
    if args.command == "compare":
        print_comparison(args.a, args.b, args.data, args.resamples)
        return 0
    args.probe, args.views = args.command, getattr(args, "views", None)  # None: attention, classes, consensus
    args.encoder = getattr(args, "encoder", ATTENTION_ENCODER)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    setup_logging(out / "probe.log")
    corpus = load_corpus(args.data)
    images = sorted(set(corpus.split("train") + corpus.split("dev") + corpus.split("test")))
    encoder = load_encoder(args.encoder)
    features, index = features_for(corpus, encoder, args.cache_dir, images)  # (images, feature_dim), name -> row
    names = list(index)  # in row order
    vocab = Vocabulary.build(corpus.split_captions("train"), min_count=DEFAULT_MIN_COUNT)
    train_captions = corpus.captions_of(corpus.split("train"))
    if args.probe == "consensus":
        train_captions = drop_outlier_captions(train_captions)
    train, dev = (encode_captions(captions, index, vocab, MAX_WORDS)
                  for captions in (train_captions, corpus.captions_of(corpus.split("dev"))))
    settings = TrainSettings(seed=args.seed)
    config = DecoderConfig(vocab_size=len(vocab), feature_dim=encoder.feature_dim)

    if args.probe == "classes":
        probs = class_probabilities(encoder, corpus.image_dir, names, Path(args.cache_dir) / f"classes-{encoder.name}.npy")
        build, decoder_class, seen = build_decoder, StepDecoder, np.concatenate([features, np.sqrt(probs)], axis=1)
        config = DecoderConfig(vocab_size=len(vocab), feature_dim=seen.shape[1])  # (images, feature_dim + 1000)
        train_batches = CaptionBatches(seen, *train, settings.batch_size, shuffle=True, seed=args.seed)
        dev_batches = CaptionBatches(seen, *dev, 256, shuffle=False)
    elif args.probe in ("views", "consensus"):
        build, decoder_class, seen = build_decoder, StepDecoder, features
        views = ([] if args.views in ("none", None) else
                 list(view_features(encoder, corpus.image_dir, names,
                                    Path(args.cache_dir) / f"views-{encoder.name}.npz").values()))
        train_batches = ViewBatches(np.concatenate([features, *views]), len(names), *train, settings.batch_size,
                                    shuffle=True, seed=args.seed)
        dev_batches = CaptionBatches(features, *dev, 256, shuffle=False)  # the photos themselves
    else:
        build, decoder_class = build_attention_decoder, AttentionStep
        seen = region_maps(encoder, corpus.image_dir, names, Path(args.cache_dir) / f"regions-{encoder.name}.npy")
        train_batches = RegionBatches(seen, *train, settings.batch_size, shuffle=True, seed=args.seed)
        dev_batches = RegionBatches(seen, *dev, 256, shuffle=False)
    log.info("%s probe (%s, %s), seed %d: %d training captions", args.probe, args.views, encoder.name, args.seed,
             len(train[1]))
    model, history = fit_decoder(config, train_batches, dev_batches, settings, out / "checkpoints", build=build)
    model.save_weights(out / "decoder.weights.h5")

    decoder, metrics, samples = decoder_class(model, vocab), {}, {}
    for split in ("dev", "test"):
        split_images = corpus.split(split)
        started = time.perf_counter()
        captions = [vocab.decode(decoder.beam_search(seen[index[name]].reshape(-1), BEAM_WIDTH,
                                                     max_length_for(MAX_WORDS))[0].ids) for name in split_images]
        samples[split] = dict(zip(split_images, captions))
        scores = evaluate_predictions(samples[split], corpus.captions_of(split_images), corpus.split_captions("train"))
        metrics[split] = {key: round(value, 4) if isinstance(value, float) else value for key, value in scores.items()}
        log.info("%s beam %d: BLEU-4 %.4f CIDEr %.4f, %d words (%.0f s)", split, BEAM_WIDTH, scores["BLEU-4"],
                 scores["CIDEr"], scores["vocabulary_used"], time.perf_counter() - started)
    write_json(out / "metrics.json", {"probe": args.probe, "views": args.views, "encoder": encoder.name, "seed": args.seed,
                                      "beam_width": BEAM_WIDTH, **metrics})
    write_json(out / "samples.json", samples)
    write_json(out / "history.json", history)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
