"""Where a cross-entropy training epoch goes: the input pipeline, the batch size, the softmax over
the vocabulary.  Each row times a fixed number of real training steps (the decoder of
``captioning.model`` on the Flickr8k training captions and the cached features) after a warm-up,
and scales to one epoch.

    python -m tools.profile_epoch [--steps 40] [--batch-sizes 64 256]

Rows: the input pipeline alone (``CaptionBatches.dataset()`` iterated, no model); the full model
at each batch size; the same model with a 50-word vocabulary (ids folded into it), which leaves
the LSTM and the image path as they are and shrinks the output layer and its softmax -- the gap
between the two is roughly what the vocabulary-sized output costs.
Prints a Markdown table and the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from captioning.corpus import load_corpus
from captioning.data import CaptionBatches, encode_captions
from captioning.features import default_cache_path, read_cache
from captioning.model import DecoderConfig, build_decoder
from captioning.training import TrainSettings, compile_decoder
from captioning.vocab import Vocabulary

from .measure import cpu_model

SMALL_VOCABULARY = 50  # the output layer of the "without the softmax" row


def training_data(data: str, cache_dir: str, max_words: int = 22):
    """(features (n, 1280), caption rows, caption id lists, vocabulary) of the training split."""
    corpus = load_corpus(data)
    cached = read_cache(default_cache_path(cache_dir, "efficientnet_lite0"), "efficientnet_lite0")
    if not cached:
        raise SystemExit(f"no feature cache in {cache_dir}/: run python -m training.train first")
    train = [n for n in corpus.split("train") if n in cached]
    index = {n: i for i, n in enumerate(train)}
    vocab = Vocabulary.build(corpus.split_captions("train"))
    rows, sequences = encode_captions(corpus.captions_of(train), index, vocab, max_words)
    return np.stack([cached[n] for n in train]), rows, sequences, vocab


def time_steps(batches: CaptionBatches, steps: int, vocab_size: int | None) -> float:
    """Seconds per step: the model's training step (``vocab_size`` outputs), or with
    ``vocab_size=None`` the input pipeline alone."""
    dataset = batches.dataset()
    if vocab_size is None:
        started = time.perf_counter()
        for _ in dataset.take(steps):
            pass
        return (time.perf_counter() - started) / steps
    config = DecoderConfig(vocab_size=vocab_size, feature_dim=batches.features.shape[1])
    model = compile_decoder(build_decoder(config), TrainSettings(batch_size=batches.batch_size))
    # Word ids must fit a small vocabulary (a no-op for the full one); the shapes stay the same.
    dataset = dataset.map(lambda x, y, w: ({**x, "caption_in": x["caption_in"] % vocab_size}, y % vocab_size, w))
    model.fit(dataset.take(3), verbose=0)  # warm-up: tracing and the first shapes
    started = time.perf_counter()
    model.fit(dataset.take(steps), verbose=0)
    return (time.perf_counter() - started) / steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/flickr8k")
    parser.add_argument("--cache-dir", default="cache")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per row (default: %(default)s)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    args = parser.parse_args(argv)

    features, rows, sequences, vocab = training_data(args.data, args.cache_dir)
    print(f"Machine: {cpu_model()}, {os.cpu_count()} cores. {len(sequences)} training captions, "
          f"vocabulary {len(vocab)} words; {args.steps} timed steps per row after 3 warm-up steps.\n")
    print("| what | batch | ms/step | steps/epoch | epoch (s) |")
    print("|---|---|---|---|---|")
    for batch_size in args.batch_sizes:
        batches = CaptionBatches(features, rows, sequences, batch_size, shuffle=True)
        for label, outputs in (("input pipeline alone", None), ("full model", len(vocab)),
                               (f"model, {SMALL_VOCABULARY}-word softmax", SMALL_VOCABULARY)):
            seconds = time_steps(batches, args.steps, outputs)
            print(f"| {label} | {batch_size} | {seconds * 1000:.1f} | {len(batches)} | "
                  f"{seconds * len(batches):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
