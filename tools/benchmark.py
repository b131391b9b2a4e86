"""How fast is captioning, really?  Measured on real Flickr8k test photos, warm.

    python -m tools.benchmark                        # weights/, ../shared/data/flickr8k, 50 images
    python -m tools.benchmark --images 100 --json benchmark.json --markdown benchmark.md

Per image (file on disk -> features -> captions), median and p90 wall time of:

  (a) the encoder alone (JPEG decode, resize, the bundles' CNN);
  (b) the encoder + three greedy captions (the incremental NumPy step decoder);
  (c) the encoder + three beam-search captions, k=5;
  (d) the encoder + three greedy captions by the textbook decoder (``model.predict``
      on the whole padded prefix for every word), on the first ``--naive-images``,
      reported as a speed-up ratio against (b) on the same images;

then batched feature-extraction throughput over a folder (no cache), the peak
resident memory of the app process (``app.py``, with all three models loaded and
after answering caption requests; if there is no app, a process that loads the
encoder and the three captioners), and training speed from each bundle's
``config.json`` and ``weights/training_summary.json``.  Prints a markdown table with the
machine it ran on.  Run it on an otherwise idle machine: nothing in the test
suite is timed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np

from captioning.variants import VARIANTS
from captioning.vocab import max_words_for
from demo.server import app_process
from training.common import DEFAULT_DATA, SUMMARY_FILE, read_training_summary

from .measure import cpu_model, process_memory, read_text, summary_ms

ROOT = Path(__file__).resolve().parents[1]
BEAM_WIDTH = 5
WARMUP_IMAGES = 3
# The bars of issue 4, on a 2-core CPU.
BAR_GREEDY_MS = 150
BAR_BEAM_MS = 300
BAR_SPEEDUP = 10
BAR_RSS_BYTES = 1.5e9


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="weights", help="folder with learned/, fasttext/, word2vec/")
    parser.add_argument("--data", default=DEFAULT_DATA, help="Flickr8k folder (default: %(default)s)")
    parser.add_argument("--images", type=int, default=50, help="test images timed per measurement (default: 50)")
    parser.add_argument("--naive-images", type=int, default=20,
                        help="images for the slow per-word model.predict decoder (default: 20)")
    parser.add_argument("--throughput-images", type=int, default=256,
                        help="images for the batched feature-extraction throughput (default: 256)")
    parser.add_argument("--batch-size", type=int, default=64, help="feature-extraction batch size")
    parser.add_argument("--app-requests", type=int, default=10,
                        help="caption requests sent to the app, per method, before reading its memory")
    parser.add_argument("--cache-dir", default="cache",
                        help="training's feature cache, to time the input pipeline alone (default: %(default)s)")
    parser.add_argument("--no-app", action="store_true", help="skip starting app.py")
    parser.add_argument("--app-timeout", type=float, default=300, help="seconds to wait for the app to answer")
    parser.add_argument("--json", help="also write every number (and the raw timings) to this JSON file")
    parser.add_argument("--markdown", help="also write the markdown report to this file")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- machine ------------------------------------------------------------------------------------
def cpu_quota() -> str | None:
    """The cgroup v2 CPU limit, e.g. '2.0 CPUs', if one is set."""
    quota = read_text("/sys/fs/cgroup/cpu.max").split()
    if len(quota) == 2 and quota[0] != "max":
        return f"{int(quota[0]) / int(quota[1]):.1f} CPUs"
    return None


def machine_info() -> dict:
    import keras
    import tensorflow as tf

    cpuinfo = read_text("/proc/cpuinfo")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    mem_kb = next((int(line.split()[1]) for line in read_text("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal")), 0)
    return {
        "cpu": cpu_model(),
        "cpu_flags": [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f in flags],
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_quota": cpu_quota(),
        "memory_gb": round(mem_kb / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "load_average": os.getloadavg(),
    }


# -- per-image pipelines ------------------------------------------------------------------------
def decoders(captioners, model_predict: bool):
    """{mode: function(features) -> captions} for the three models."""
    from captioning.decoding import naive_greedy

    def greedy(f):
        return [c.describe_features(f, "greedy").caption for c in captioners]

    def beam(f):
        return [c.describe_features(f, "beam", BEAM_WIDTH).caption for c in captioners]

    def naive(f):
        return [c.vocab.decode(naive_greedy(c.bundle.model, f.reshape(1, -1), c.vocab, c.max_length)[0])
                for c in captioners]

    modes = {"encoder": None, "greedy": greedy, "beam": beam}
    if model_predict:
        modes["naive"] = naive
    return modes


def time_images(encoder, decode, images: list[Path]) -> dict:
    """Per image: seconds in the encoder, seconds decoding, total; and the captions."""
    encode_s, decode_s, total_s, captions = [], [], [], []
    gc.collect()
    for path in images:
        started = time.perf_counter()
        features = encoder.features(path)
        encoded = time.perf_counter()
        out = decode(features) if decode else []
        done = time.perf_counter()
        encode_s.append(encoded - started)
        decode_s.append(done - encoded)
        total_s.append(done - started)
        captions.append(out)
    return {"encode_s": encode_s, "decode_s": decode_s, "total_s": total_s, "captions": captions}


def time_page(weights: Path, images: list[Path], warm: list[Path]) -> dict:
    """What the demo page computes per photo: one encoder pass (features, ImageNet head, familiarity),
    then the three models and their ensemble, each greedy, beam, beam + consensus and guided (width 3)."""
    from demo.models import ModelSet

    models = ModelSet.load(weights)
    settings = models.page_settings(beam_width=3)
    for path in warm:
        models.caption(path.read_bytes(), settings)
    encode_s, decode_s, total_s, consensus_s = [], [], [], []
    gc.collect()
    for path in images:
        data = path.read_bytes()
        started = time.perf_counter()
        captions = models.caption(data, settings)
        total_s.append(time.perf_counter() - started)
        encode_s.append(captions.encode_seconds)
        decode_s.append(total_s[-1] - captions.encode_seconds)
        # The re-ranking alone: the consensus call reuses the beam search the "beam" call ran.
        consensus_s.append(sum(by_method["consensus"].seconds for by_method in captions.results.values()
                               if "consensus" in by_method))
    return {"total": summary_ms(total_s), "decode": summary_ms(decode_s), "encode": summary_ms(encode_s),
            "consensus": summary_ms(consensus_s)}


def step_implementations(decoder, repeats: int = 300) -> dict:
    """Milliseconds per decoder step (1 row: greedy; 5 rows: a beam) of the NumPy step against
    the same step (the library's :func:`merge_step` over the decoder's weights) as a TensorFlow
    graph and as an XLA-compiled function; all must agree."""
    import tensorflow as tf

    from captioning.decoding import merge_step

    d = decoder
    tf_ops = SimpleNamespace(tanh=tf.tanh, maximum=tf.maximum, max=tf.reduce_max, sum=tf.reduce_sum,
                             exp=tf.exp, log=tf.math.log)
    gates = tf.constant(d.input_gates)
    weights = [tf.constant(w) for w in d.step_weights]
    banned = np.zeros(d.input_gates.shape[0], np.float32)
    banned[d.banned] = -np.inf
    banned = tf.constant(banned)
    u = d.units

    def tf_step(jit: bool):
        @tf.function(jit_compile=jit, reduce_retracing=True)
        def f(words, h, c, projection):
            logprobs, (h, c) = merge_step(tf_ops, tf.gather(gates, words), (h, c), projection, *weights)
            return logprobs + banned, h, c

        def step(words, state, projection):
            logprobs, h, c = f(tf.constant(words, tf.int32), state[0], state[1], projection)
            return logprobs.numpy(), (h.numpy(), c.numpy())
        return step

    impls = {"numpy": d.step, "tf.function": tf_step(False), "tf.function(jit_compile=True)": tf_step(True)}
    rng = np.random.default_rng(0)
    out: dict = {}
    for rows in (1, BEAM_WIDTH):
        words = rng.integers(d.vocab.end_id, d.input_gates.shape[0], rows)
        state = (rng.normal(size=(rows, u)).astype(np.float32), rng.normal(size=(rows, u)).astype(np.float32))
        projection = np.abs(rng.normal(size=(rows, u))).astype(np.float32)
        reference = d.step(words, state, projection)[0]
        finite = np.isfinite(reference)
        for name, step in impls.items():
            for _ in range(20):  # trace, compile, warm
                logprobs = step(words, state, projection)[0]
            started = time.perf_counter()
            for _ in range(repeats):
                step(words, state, projection)
            out.setdefault(name, {})[f"{rows}_rows_ms"] = (time.perf_counter() - started) / repeats * 1000
            out[name]["max_abs_diff"] = max(out[name].get("max_abs_diff", 0.0),
                                            float(np.abs(logprobs[finite] - reference[finite]).max()))
    return out


def feature_throughput(encoder, image_dir: Path, names: list[str], batch_size: int) -> dict:
    from captioning.features import extract_features

    extract_features(encoder, image_dir, names[:batch_size], batch_size=batch_size, progress=False)  # warm
    started = time.perf_counter()
    extract_features(encoder, image_dir, names, cache_path=None, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - started
    return {"images": len(names), "batch_size": batch_size, "seconds": seconds,
            "images_per_second": len(names) / seconds}


def load_captioners(weights: Path) -> list:
    """The three bundles' captioners, sharing one encoder (the one the bundles record) and one
    familiarity reference, as the app loads them."""
    from captioning.ensemble import Ensemble

    return Ensemble.load([weights / variant for variant in VARIANTS]).members


# -- memory -------------------------------------------------------------------------------------
def memory_child(args) -> int:
    """Load the encoder and the three captioners, caption one image, report this process's memory."""
    captioners = load_captioners(Path(args.weights))
    encoder = captioners[0].encoder
    features = encoder.features(args.image)
    for c in captioners:
        c.describe_features(features, "greedy")
        c.describe_features(features, "beam", BEAM_WIDTH)
    print(json.dumps(process_memory(os.getpid())))
    return 0


def library_memory(weights: Path, image: Path) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "tools.benchmark", "--memory-child", "--weights", str(weights),
                          "--image", str(image)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        return {"error": run.stderr.strip().splitlines()[-1] if run.stderr.strip() else f"exit {run.returncode}"}
    return {"what": "python process: encoder + 3 captioners loaded, one image captioned greedy and beam k=5",
            **json.loads(run.stdout.strip().splitlines()[-1])}


def app_memory(weights: Path, images: list[Path], requests: int, timeout: float) -> dict:
    """Start ``python app.py``, wait until it answers, send caption requests, read its memory, stop it."""
    app = ROOT / "app.py"
    if not app.is_file():
        return {"error": "app.py not found"}
    scratch = Path(tempfile.mkdtemp(prefix="benchmark-app-"))
    log_path = scratch / "app.log"
    result: dict = {"what": "python app.py (FastAPI + Gradio, three models and the encoder loaded)"}
    started = time.perf_counter()
    try:
        with app_process(weights, env={"GRADIO_EXAMPLES_CACHE": str(scratch / "examples"), "CAPTION_WEIGHTS_REPO": ""},
                         log_file=log_path, timeout=timeout) as (base, proc):
            return _measure_app(base, proc, result, started, images, requests)
    except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
        return {"error": str(exc), "log_tail": log_path.read_text()[-2000:]}


def _measure_app(base: str, proc, result: dict, started: float, images: list[Path], requests: int) -> dict:
    """Memory after start-up, caption latency through the HTTP API, memory after the requests."""
    result["startup_seconds"] = time.perf_counter() - started
    result["after_start"] = process_memory(proc.pid)
    with httpx.Client(base_url=base, timeout=120) as client:
        page = client.get("/", timeout=30)  # the Gradio page renders
        page.raise_for_status()
        result["ui_status"] = page.status_code
        latencies: dict[str, list[float]] = {"greedy": [], "beam": []}
        for method in ("greedy", "beam"):
            # Distinct images: the app caches the features of recent ones.  The first is a warm-up.
            offset = 0 if method == "greedy" else requests + 1
            for i, image in enumerate(images[offset:offset + requests + 1]):
                sent = time.perf_counter()
                response = client.post("/api/caption", data={"method": method, "beam_width": str(BEAM_WIDTH)},
                                       files={"image": (image.name, image.read_bytes(), "image/jpeg")})
                response.raise_for_status()
                answer = response.json()
                if i:
                    latencies[method].append(time.perf_counter() - sent)
                if VARIANTS[0] not in answer:
                    return {**result, "error": f"unexpected answer from /api/caption: {answer}"}
    result["http_latency"] = {m: summary_ms(v) for m, v in latencies.items() if v}
    result.update(process_memory(proc.pid))
    return result


# -- training speed -----------------------------------------------------------------------------
def training_speed(weights: Path) -> dict:
    out: dict = {"variants": {}}
    for v in VARIANTS:
        config_path = weights / v / "config.json"
        if config_path.is_file():
            config = json.loads(config_path.read_text())
            training = config.get("training", {})
            history_path = weights / v / "history.json"
            epochs = json.loads(history_path.read_text()).get("epoch_seconds", []) if history_path.is_file() else []
            out["variants"][v] = {
                "seconds_per_epoch": training.get("seconds_per_epoch"),
                "median_epoch_seconds": float(np.median(epochs)) if epochs else None,
                "epochs_run": training.get("epochs_run"), "best_epoch": training.get("best_epoch"),
                "seconds": training.get("seconds"), "batch_size": training.get("batch_size"),
                "train_captions": config.get("data", {}).get("train_captions"),
                "units": config.get("decoder", {}).get("units"),
                "vocab_size": config.get("decoder", {}).get("vocab_size"),
            }
    summary = read_training_summary(weights)
    if summary:
        out["run_summary"] = summary
    return out


def input_pipeline_speed(weights: Path, corpus, cache_dir: Path) -> dict:
    """One epoch of the training batches (tf.data over the caption generator), with no model:
    how much of an epoch the input pipeline alone would take."""
    from captioning.data import CaptionBatches, encode_captions
    from captioning.features import default_cache_path, read_cache
    from captioning.vocab import Vocabulary

    bundle = weights / VARIANTS[0]
    if not (bundle / "config.json").is_file():
        return {"error": f"needs the bundle {bundle}"}
    config = json.loads((bundle / "config.json").read_text())
    cache = default_cache_path(cache_dir, config["encoder"])
    if not cache.is_file():
        return {"error": f"needs the training feature cache {cache}"}
    cached = read_cache(cache, config["encoder"])
    train = [n for n in corpus.split("train") if n in cached]
    if not train:
        return {"error": f"the feature cache {cache} holds no training photo (python -m training.train fills it)"}
    index = {n: i for i, n in enumerate(train)}
    features = np.stack([cached[n] for n in train])
    vocab = Vocabulary.from_json(bundle / "vocab.json")
    rows, seqs = encode_captions(corpus.captions_of(train), index, vocab, max_words_for(int(config["max_length"])))
    batches = CaptionBatches(features, rows, seqs, int(config["training"]["batch_size"]), shuffle=True)
    started = time.perf_counter()
    count = sum(1 for _ in batches.dataset())
    seconds = time.perf_counter() - started
    return {"batches": count, "captions": len(seqs), "seconds_per_epoch": seconds}


# -- report -------------------------------------------------------------------------------------
def _mb(n) -> str:
    return f"{n / 2**20:,.0f} MiB" if n else "n/a"


def _bar(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**NOT met**")


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"Benchmark ({r['date']}): {m['cpu']}, {m['cores']} cores"
        + (f" ({m['usable_cores']} usable)" if m["usable_cores"] != m["cores"] else "")
        + (f", cgroup limit {m['cpu_quota']}" if m["cpu_quota"] else "")
        + f", {m['memory_gb']} GB RAM; Python {m['python']}, TensorFlow {m['tensorflow']}, "
          f"Keras {m['keras']}, NumPy {m['numpy']}. Load average at start {m['load_average'][0]:.2f}.",
        "",
        f"Per image, warm, Flickr8k test photos (file on disk -> captions from all three models; "
        f"{r['decoder']}):",
        "",
        "| measurement | images | median | p90 | mean | of which decoding (median) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    labels = {"encoder": "(a) encoder only (JPEG -> features)",
              "greedy": "(b) encoder + 3 greedy captions",
              "beam": f"(c) encoder + 3 beam k={BEAM_WIDTH} captions",
              "naive": "(d) encoder + 3 greedy captions, naive per-word `model.predict`",
              "page": "(e) the demo page: encoder + ImageNet head + familiarity, 3 models and their ensemble "
                      "x greedy, beam k=3, beam k=3 + consensus, guided k=3 (16 captions)"}
    for mode, label in labels.items():
        if mode not in r["per_image"]:
            continue
        s, d = r["per_image"][mode]["total"], r["per_image"][mode]["decode"]
        decode = "-" if mode == "encoder" else f"{d['median_ms']:.1f} ms"
        lines.append(f"| {label} | {s['n']} | {s['median_ms']:.1f} ms | {s['p90_ms']:.1f} ms | "
                     f"{s['mean_ms']:.1f} ms | {decode} |")
    page_consensus = r["per_image"].get("page", {}).get("consensus")
    if page_consensus and page_consensus["median_ms"] > 0:
        lines.append(f"| of (e): the four consensus re-rankings | {page_consensus['n']} | "
                     f"{page_consensus['median_ms']:.1f} ms | {page_consensus['p90_ms']:.1f} ms | "
                     f"{page_consensus['mean_ms']:.1f} ms | - |")
    sp = r.get("speedup")
    if sp:
        lines.append(f"| naive (d) / step decoder (b), same {sp['images']} images | {sp['images']} | "
                     f"**{sp['end_to_end']:.1f}x** | | | **{sp['decoding']:.1f}x** |")
    if r.get("step"):
        lines += ["", "One decoder step of the learned model (previous word + LSTM state -> next-word "
                      "log-probabilities + new state), mean of 300 calls; the app uses the fastest:", "",
                  f"| implementation | 1 row (greedy) | {BEAM_WIDTH} rows (beam) | max abs. log-prob difference |",
                  "|---|---:|---:|---:|"]
        for name, st in r["step"].items():
            lines.append(f"| {name} | {st['1_rows_ms']:.3f} ms | {st[f'{BEAM_WIDTH}_rows_ms']:.3f} ms | "
                         f"{st['max_abs_diff']:.1e} |")
    t = r["throughput"]
    lines += ["", f"Feature extraction over a folder (batches of {t['batch_size']}, JPEG decoding in 2 threads, "
                  f"no cache): **{t['images_per_second']:.1f} images/s** ({t['images']} images in "
                  f"{t['seconds']:.1f} s).", ""]
    lines += ["| memory | peak resident (VmHWM) | resident now (VmRSS) |", "|---|---:|---:|"]
    for key in ("app", "library"):
        mem = r["memory"].get(key)
        if not mem:
            continue
        if "error" in mem:
            lines.append(f"| {key}: {mem['error']} | | |")
            continue
        extra = f" + children {_mb(mem['children_rss_bytes'])}" if mem.get("children_rss_bytes") else ""
        lines.append(f"| {mem['what']} | **{_mb(mem['peak_rss_bytes'])}** | {_mb(mem['rss_bytes'])}{extra} |")
    app = r["memory"].get("app") or {}
    if app.get("http_latency"):
        h = app["http_latency"]
        lines += ["", "Through the app's HTTP API (`POST /api/caption`, multipart upload, all three models): "
                  + ", ".join(f"{m} median {s['median_ms']:.0f} ms / p90 {s['p90_ms']:.0f} ms ({s['n']} images)"
                              for m, s in h.items())
                  + f"; app start-up {app['startup_seconds']:.1f} s."]
    ts = r["training"]
    if ts["variants"]:
        lines += ["", "Training on the full train split (from each bundle's config.json and history.json):", "",
                  "| variant | train captions | epochs run (best) | s/epoch (mean) | s/epoch (median) | "
                  "training time |", "|---|---:|---:|---:|---:|---:|"]
        for v, s in ts["variants"].items():
            med = f"{s['median_epoch_seconds']:.1f}" if s["median_epoch_seconds"] is not None else "n/a"
            lines.append(f"| {v} | {s['train_captions']} | {s['epochs_run']} ({s['best_epoch']}) | "
                         f"{s['seconds_per_epoch']} | {med} | {s['seconds']} s |")
        run = ts.get("run_summary")
        if run:
            per = {x["variant"]: x["seconds"] for x in run.get("variants", [])}
            lines.append(f"| all three ({SUMMARY_FILE}) | | | | | {run['total_seconds']} s total: "
                         f"{run['features_seconds']} s features + "
                         + " + ".join(f"{v} {s} s" for v, s in per.items()) + " (incl. evaluation) |")
    pipe = ts.get("input_pipeline") or {}
    if "seconds_per_epoch" in pipe:
        epochs = [s["median_epoch_seconds"] or s["seconds_per_epoch"] for s in ts["variants"].values()]
        share = f" ({pipe['seconds_per_epoch'] / min(epochs):.0%} of the fastest training epoch)" if epochs else ""
        lines += ["", f"Input pipeline alone (tf.data over length-bucketed batches, no model): "
                      f"{pipe['seconds_per_epoch']:.1f} s for one epoch of {pipe['captions']} captions in "
                      f"{pipe['batches']} batches{share}; prefetching overlaps it with the training steps."]
    elif "error" in pipe:
        lines += ["", f"Input pipeline alone: not measured ({pipe['error']})."]
    b = r["bars"]
    lines += ["", "| bar (issue 4) | target | measured | |", "|---|---:|---:|---|"]
    for name, target, value, ok in b:
        lines.append(f"| {name} | {target} | {value} | {_bar(ok)} |")
    return "\n".join(lines) + "\n"


def bars(r: dict) -> list:
    per = r["per_image"]
    out = [("encoder + 3 greedy captions, median", f"< {BAR_GREEDY_MS} ms",
            f"{per['greedy']['total']['median_ms']:.1f} ms", per["greedy"]["total"]["median_ms"] < BAR_GREEDY_MS),
           (f"encoder + 3 beam k={BEAM_WIDTH} captions, median", f"< {BAR_BEAM_MS} ms",
            f"{per['beam']['total']['median_ms']:.1f} ms", per["beam"]["total"]["median_ms"] < BAR_BEAM_MS)]
    sp = r.get("speedup")
    out.append(("faster than per-word model.predict (end to end)", f">= {BAR_SPEEDUP}x",
                f"{sp['end_to_end']:.1f}x" if sp else "n/a", sp["end_to_end"] >= BAR_SPEEDUP if sp else None))
    mem = r["memory"].get("app") or {}
    which = "app process"
    if not mem.get("peak_rss_bytes"):
        mem, which = r["memory"].get("library") or {}, "library process (no app measurement)"
    peak = mem.get("peak_rss_bytes")
    out.append((f"peak resident memory, {which}", "< 1.5 GB", f"{peak / 1e9:.2f} GB" if peak else "n/a",
                peak < BAR_RSS_BYTES if peak else None))
    return out


# -- main ---------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        return memory_child(args)
    from captioning.corpus import load_corpus

    weights, data = Path(args.weights), Path(args.data)
    corpus = load_corpus(data)
    test = corpus.split("test")
    if len(test) < args.images:
        raise SystemExit(f"only {len(test)} test images in {data}")
    images = [corpus.image_dir / n for n in test[:args.images]]
    for path in images:  # into the page cache: time the work, not the disk
        path.read_bytes()
    machine = machine_info()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, load average {machine['load_average'][0]:.2f}",
          file=sys.stderr)

    captioners = load_captioners(weights)
    encoder = captioners[0].encoder
    c0 = captioners[0]
    decoder_desc = (f"LSTM {c0.config['decoder']['units']} units, vocabulary "
                    f"{', '.join(str(len(c.vocab)) for c in captioners)} words, max {c0.max_length} words")
    modes = decoders(captioners, model_predict=args.naive_images > 0)

    # Warm up every path (graph tracing, BLAS and allocator warm-up) on images that are not timed.
    warm = [corpus.image_dir / n for n in test[-WARMUP_IMAGES:]]
    for name, decode in modes.items():
        time_images(encoder, decode, warm[:2] if name == "naive" else warm)

    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine,
               "decoder": decoder_desc, "per_image": {}, "raw": {}}
    for name, decode in modes.items():
        subset = images[:args.naive_images] if name == "naive" else images
        print(f"timing {name} on {len(subset)} images", file=sys.stderr)
        timed = time_images(encoder, decode, subset)
        results["raw"][name] = timed
        results["per_image"][name] = {"total": summary_ms(timed["total_s"]), "decode": summary_ms(timed["decode_s"]),
                                      "encode": summary_ms(timed["encode_s"])}
    if "naive" in modes:
        n = min(args.naive_images, args.images)
        naive, greedy = results["raw"]["naive"], results["raw"]["greedy"]
        same = sum(a == b for a, b in zip(naive["captions"], greedy["captions"][:n]))
        results["speedup"] = {
            "images": n,
            "end_to_end": float(np.median(naive["total_s"]) / np.median(greedy["total_s"][:n])),
            "decoding": float(np.median(naive["decode_s"]) / np.median(greedy["decode_s"][:n])),
            "identical_captions": f"{same}/{n}",
        }

    print(f"timing the page's work on {len(images)} images", file=sys.stderr)
    results["per_image"]["page"] = time_page(weights, images, warm)

    print("step implementations", file=sys.stderr)
    results["step"] = step_implementations(captioners[0].decoder)
    print(f"feature-extraction throughput on {args.throughput_images} images", file=sys.stderr)
    results["throughput"] = feature_throughput(encoder, corpus.image_dir, test[:args.throughput_images],
                                               args.batch_size)
    del captioners, encoder, modes
    gc.collect()

    print("memory", file=sys.stderr)
    results["memory"] = {"library": library_memory(weights, images[0])}
    if not args.no_app:
        results["memory"]["app"] = app_memory(weights, images, args.app_requests, args.app_timeout)
    results["training"] = training_speed(weights)
    print("input pipeline", file=sys.stderr)
    results["training"]["input_pipeline"] = input_pipeline_speed(weights, corpus, Path(args.cache_dir))
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["bars"] = bars(results)

    report = markdown(results)
    print(report)
    if "speedup" in results:
        print(f"naive and step decoders gave identical captions on {results['speedup']['identical_captions']} images")
    if args.markdown:
        Path(args.markdown).write_text(report)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
