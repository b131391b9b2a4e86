"""Does memory stay flat as the corpus grows?  Feature extraction and training, at 1x, 4x and
16x Flickr8k.

    python -m tools.feature_memory                           # scales 1 4 16, ../shared/data/flickr8k
    python -m tools.feature_memory --scales 1 4 --steps 200 --work /tmp/feature-memory --json out.json

A corpus k times Flickr8k is simulated by repeating every image k times under distinct names:
``r00/<name>``, ``r01/<name>``, ... in a folder whose ``rNN`` entries link to the Flickr8k image
folder, each name keeping its image's five captions.  Nothing is cached between the copies:
the CNN runs on all k x 8,091 files.  Then, for each scale, each in a fresh process whose peak
resident memory (VmHWM) it reports at exit:

1. extraction: :func:`captioning.features.extract_shards` into a new sharded store (tf.data,
   batches of 64, float16 shards of 4,096 rows), with its images/s and the store's size on disk;
   the encoder first runs one batch of blank images, whose peak shows the CNN's own working
   memory apart from what the corpus adds;
2. training from the shards: ``--steps`` steps of the real decoder (``captioning.model``,
   compiled by ``captioning.training.compile_decoder``, default sizes) over ``CaptionBatches`` of
   64 captions, the features read row by row from the shards (``ShardedFeatures``);
3. the same training with the features read whole into a float32 matrix first, as the ``.npz``
   cache path holds them (for comparison).

The vocabulary is the 1x training split's (min count 5) at every scale, so the model is the same
size.  The stores are checked against ``<cache-dir>/features-<encoder>.npz`` when it is there
(every row, max abs difference: float16 rounding).  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from captioning.encoders import DEFAULT_ENCODER
from captioning.features import default_cache_path
from training.common import DEFAULT_DATA

from .measure import cpu_model, read_text, status_bytes

ROOT = Path(__file__).resolve().parents[1]
MiB = 2 ** 20
CHUNK = 4096  # rows read at once when the whole store is read


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DEFAULT_DATA, help="Flickr8k folder (default: %(default)s)")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16], help="corpus sizes, x Flickr8k")
    parser.add_argument("--images", type=int, help="only the first N Flickr8k images (a quick trial)")
    parser.add_argument("--steps", type=int, default=200, help="training steps per run (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=None, help="rows per shard (default: the store's)")
    parser.add_argument("--work", default="/tmp/feature-memory", help="simulated corpora and their stores")
    parser.add_argument("--cache-dir", default="cache", help="where the .npz cache to compare against is")
    parser.add_argument("--keep", action="store_true", help="keep the stores (they are removed at the end)")
    parser.add_argument("--json", help="also write the measurements here, after every scale; the other scales "
                                       "a file there holds (same machine and settings) are kept, so a long run "
                                       "can be done a scale at a time")
    parser.add_argument("--table", metavar="JSON", help="print the table of an earlier run's --json file, measure nothing")
    parser.add_argument("--child", choices=["extract", "train-shards", "train-memory"], help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- the simulated corpus ---------------------------------------------------------------------
def base_corpus(args):
    """Flickr8k, or its first ``--images`` images (by name)."""
    from captioning.corpus import load_corpus

    corpus = load_corpus(args.data)
    if args.images:
        keep = sorted(corpus.captions)[:args.images]
        corpus.captions = {name: corpus.captions[name] for name in keep}
        corpus.splits = {split: [n for n in names if n in corpus.captions] for split, names in corpus.splits.items()}
    return corpus


def virtual_names(images: list[str], scale: int) -> list[str]:
    """``r00/<image>``, ..., ``r<scale-1>/<image>``: every image ``scale`` times, one copy after another."""
    return [f"r{copy:02d}/{image}" for copy in range(scale) for image in images]


def image_folder(work: Path, source: Path, scale: int) -> Path:
    """``work/images`` with ``r00`` ... links to the Flickr8k image folder."""
    folder = work / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for copy in range(scale):
        link = folder / f"r{copy:02d}"
        if not link.is_symlink():
            link.symlink_to(source.resolve(), target_is_directory=True)
    return folder


def store_folder(work: Path, scale: int) -> Path:
    return work / f"shards-x{scale}"


def memory() -> dict:
    fields = status_bytes(os.getpid())
    return {"rss_mib": round(fields.get("VmRSS", 0) / MiB, 1), "peak_rss_mib": round(fields.get("VmHWM", 0) / MiB, 1)}


# -- children: one measurement each, in a fresh process ---------------------------------------
def child_extract(args) -> dict:
    from captioning.encoders import load_encoder
    from captioning.features import extract_shards
    from captioning.shards import DEFAULT_SHARD_SIZE

    corpus = base_corpus(args)
    work = Path(args.work)
    names = virtual_names(sorted(corpus.captions), args.scale)
    encoder = load_encoder()
    size = encoder.spec.input_size  # one batch first: the CNN's own working memory, whatever the corpus
    encoder.encode_pixels(np.zeros((args.batch_size, size, size, 3), np.uint8))
    warm = memory()
    started = time.perf_counter()
    store = extract_shards(encoder, work / "images", names, store_folder(work, args.scale),
                           shard_size=args.shard_size or DEFAULT_SHARD_SIZE, batch_size=args.batch_size)
    seconds = time.perf_counter() - started
    return {"images": len(store), "seconds": round(seconds, 1), "images_per_s": round(len(store) / seconds, 1),
            "warm_peak_rss_mib": warm["peak_rss_mib"], **memory()}


def child_train(args, in_memory: bool) -> dict:
    import keras

    from captioning.data import CaptionBatches, encode_captions
    from captioning.model import DecoderConfig, build_decoder
    from captioning.shards import ShardedFeatures
    from captioning.training import TrainSettings, compile_decoder
    from captioning.vocab import Vocabulary

    stages = {"imports": memory()}
    corpus = base_corpus(args)
    vocab = Vocabulary.build(corpus.split_captions("train"))  # the 1x vocabulary at every scale
    store = ShardedFeatures(store_folder(Path(args.work), args.scale))
    captions = {name: corpus.captions[name.split("/", 1)[1]] for name in store.names}
    rows, sequences = encode_captions(captions, store.index, vocab, max_words=22)
    del captions
    stages["captions"] = memory()
    features = store
    if in_memory:  # what the .npz path holds: one float32 matrix, filled a shard's worth at a time
        features = np.empty(store.shape, dtype=np.float32)
        for start in range(0, len(store), CHUNK):
            features[start:start + CHUNK] = store[start:start + CHUNK]
    stages["features"] = memory()
    keras.utils.set_random_seed(0)
    settings = TrainSettings(batch_size=args.batch_size)
    model = compile_decoder(build_decoder(DecoderConfig(vocab_size=len(vocab), feature_dim=store.feature_dim)),
                            settings)
    batches = CaptionBatches(features, rows, sequences, settings.batch_size, shuffle=True, seed=0)
    stages["model"] = memory()
    started = time.perf_counter()
    history = model.fit(batches.dataset().take(args.steps), epochs=1, shuffle=False, verbose=0)
    seconds = time.perf_counter() - started
    return {"captions": len(sequences), "steps": args.steps, "seconds": round(seconds, 1),
            "ms_per_step": round(1000 * seconds / args.steps, 1), "loss": round(float(history.history["loss"][-1]), 3),
            "stages": stages, **memory()}


def run_child(kind: str, scale: int, args) -> dict:
    command = [sys.executable, "-m", "tools.feature_memory", "--child", kind, "--scale", str(scale),
               "--data", args.data, "--work", args.work, "--steps", str(args.steps),
               "--batch-size", str(args.batch_size)]
    if args.images:
        command += ["--images", str(args.images)]
    if args.shard_size:
        command += ["--shard-size", str(args.shard_size)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)  # stderr: progress
    if done.returncode != 0:
        raise SystemExit(f"{kind} at {scale}x failed (exit {done.returncode})")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(time.perf_counter() - started, 1)
    print(f"{kind} {scale}x: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


# -- the parent: every scale, then the table --------------------------------------------------
def disk_mib(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / MiB, 1)


def check_against_cache(store_dir: Path, cache_path: Path) -> dict | None:
    """Max |store - .npz cache| over every row of the store whose image the cache holds (rNN/<image>
    vs <image>): {"rows", "max_abs_diff"}, None without a cache."""
    from captioning.features import read_cache
    from captioning.shards import ShardedFeatures

    if not cache_path.is_file():
        return None
    store = ShardedFeatures(store_dir)
    cache = read_cache(cache_path, store.encoder)
    rows = np.array([row for row, name in enumerate(store.names) if name.split("/", 1)[1] in cache])
    worst = 0.0
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        expected = np.stack([cache[store.names[row].split("/", 1)[1]] for row in chunk])
        worst = max(worst, float(np.abs(store[chunk] - expected).max()))
    return {"rows": len(rows), "max_abs_diff": worst}


def machine_line(images: int | None) -> str:
    ram = int(read_text("/proc/meminfo").split()[1]) / 2**20 if read_text("/proc/meminfo") else 0
    corpus = f"Flickr8k's first {images} images" if images else "Flickr8k (8,091 images)"
    return f"{cpu_model()}, {os.cpu_count()} cores, {ram:.1f} GB RAM. Corpus: {corpus}, repeated."


def run_line() -> str:
    """When this run started, and how busy the machine was."""
    load = read_text("/proc/loadavg").split()[:1] or ["?"]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"{now}, load average {load[0]} at start"


def report(saved: dict) -> str:
    """The header, the table and which run measured which scale."""
    runs: dict[str, list[str]] = {}
    for r in saved["results"]:
        runs.setdefault(r["run"], []).append(f"{r['scale']}x")
    measured = "; ".join(f"{', '.join(scales)} in the run of {run}" for run, scales in runs.items())
    return (f"Feature memory: {saved['machine']}\n\n{table(saved['results'], saved['steps'], saved['batch_size'])}\n"
            f"Measured: {measured}.")


def table(results: list[dict], steps: int, batch_size: int) -> str:
    lines = [
        f"| corpus | images | captions | extraction | extraction peak RSS (after a warm-up batch) | shards on disk "
        f"| training, {steps} steps from the shards: peak RSS (before the first step) "
        f"| same, features read whole into memory: peak RSS (before the first step) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        e, s, m = r["extract"], r["train_shards"], r["train_memory"]
        lines.append(
            f"| {r['scale']}x | {e['images']:,} | {s['captions']:,} | {e['images_per_s']:.1f} images/s "
            f"({e['seconds']:.0f} s) | **{e['peak_rss_mib']:.0f} MiB** ({e['warm_peak_rss_mib']:.0f}) "
            f"| {r['disk_mib']:.0f} MiB | **{s['peak_rss_mib']:.0f} MiB** ({s['stages']['model']['rss_mib']:.0f}) "
            f"| {m['peak_rss_mib']:.0f} MiB ({m['stages']['model']['rss_mib']:.0f}) |")
    def grown(r, stage):  # MiB a training process gained from imports to the end of ``stage``
        stages = r["train_shards"]["stages"]
        return stages[stage]["rss_mib"] - stages["imports"]["rss_mib"]

    lines += [
        "",
        f"Training: batches of {batch_size} captions; ms per step from the shards / in memory: "
        + ", ".join(f"{r['scale']}x {r['train_shards']['ms_per_step']:.0f} / {r['train_memory']['ms_per_step']:.0f}"
                    for r in results) + ". "
        + "Corpus and token ids of every caption, held by both: "
        + ", ".join(f"{r['scale']}x +{grown(r, 'captions'):.0f} MiB" for r in results) + ".",
    ]
    checked = [r for r in results if r["vs_cache"]]
    if checked:
        lines.append("Shards against the .npz cache (float32), every row whose image it holds: max abs. difference "
                     + ", ".join(f"{r['scale']}x {r['vs_cache']['max_abs_diff']:.1e} ({r['vs_cache']['rows']:,} rows)"
                                 for r in checked) + " (float16 rounding).")
    return "\n".join(lines)


# What makes measurements of one table: a --json file keeps other scales only when all of these match.
SAME_RUN_KEYS = ("machine", "encoder", "steps", "batch_size")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        result = child_extract(args) if args.child == "extract" else child_train(args, args.child == "train-memory")
        print(json.dumps(result))
        return 0
    if args.table:
        print(report(json.loads(Path(args.table).read_text())))
        return 0
    work = Path(args.work)
    corpus = base_corpus(args)
    saved = {"machine": machine_line(args.images), "encoder": DEFAULT_ENCODER, "steps": args.steps,
             "batch_size": args.batch_size, "results": []}
    if args.json and Path(args.json).is_file():  # other scales measured before with the same settings are kept
        before = json.loads(Path(args.json).read_text())
        differ = [key for key in SAME_RUN_KEYS if before.get(key) != saved[key]]
        if differ:  # never drop those measurements, nor mix them with these
            print(f"error: {args.json} holds measurements with another {', '.join(differ)} "
                  f"({', '.join(f'{k}={before.get(k)!r}' for k in differ)}); give another --json file", file=sys.stderr)
            return 2
        saved["results"] = [r for r in before["results"] if r["scale"] not in args.scales]
    run = run_line()
    for scale in args.scales:
        image_folder(work, corpus.image_dir, scale)
        store = store_folder(work, scale)
        shutil.rmtree(store, ignore_errors=True)  # a fresh extraction every time
        extract = run_child("extract", scale, args)
        result = {
            "scale": scale, "run": run, "extract": extract, "disk_mib": disk_mib(store),
            "vs_cache": check_against_cache(store, default_cache_path(args.cache_dir, DEFAULT_ENCODER)),
            "train_shards": run_child("train-shards", scale, args),
            "train_memory": run_child("train-memory", scale, args)}
        saved["results"] = sorted([*saved["results"], result], key=lambda r: r["scale"])
        if not args.keep:
            shutil.rmtree(store)
        if args.json:  # after every scale: a long run that is stopped keeps what it measured
            Path(args.json).write_text(json.dumps(saved, indent=1))
    print(report(saved))
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
