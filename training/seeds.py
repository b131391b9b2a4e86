"""Train each variant with several seeds and record every run's test results, for error bars.

    python -m training.seeds --seeds 0 1 2                        # learned, fasttext, word2vec
    python -m training.seeds --seeds 0 1 2 --variant word2vec -- --data ../shared/data/flickr8k
    python -m training.seeds --refresh                            # recompute the comparisons only

Each (variant, seed) not yet in the results file (default ``weights/seed_runs.json``) is trained by
``training.train`` with ``--variant V --seed S --out <out>/seed-S --runs <out>/seed-S/checkpoints``
and every option after ``--`` (the same for every run: that is the recipe).  Seed 0 is the shipped
bundle (``--shipped``, default ``weights/``): it is read, not retrained, once its config.json says
seed 0 and the same recipe.  After each run the file gets that run's test scores (every decoding
setting in metrics.json, both training stages), the diversity of its captions
(captioning.diversity), its greedy and beam k=3 captions (to recompute per-image statistics), and
the comparison of every pair of variants by a bootstrap over test images and seeds
(captioning.significance.seed_bootstrap), greedy and beam k=3; it is written atomically after
every run.

Resumable: an interrupted multi-seed run continues where it stopped when run again (runs
already recorded are skipped; a bundle trained but not yet recorded is recorded without training,
unless another recipe trained it (refused, naming what differs);
training.train resumes an interrupted training from its checkpoints), so the runs can be spread
over time.  Each run's recipe (decoder sizes, vocabulary, training and fine-tuning settings,
data, the decoding settings training.train scores) is checked against the file's before anything
is trained: one results file never mixes recipes.  The report (``python -m training.report``) and
the demo's About tab read the file (captioning.seed_runs).
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import logging
import sys
from dataclasses import asdict, fields
from pathlib import Path

from captioning.bundle import CONFIG_FILE, METRICS_FILE, SAMPLES_FILE, VOCAB_FILE, write_json
from captioning.corpus import Corpus
from captioning.diversity import diversity
from captioning.scst import ScstSettings
from captioning.seed_runs import (CAPTION_SETTINGS, FORMAT, SEED_RUNS_FILE, main_setting, read_seed_runs, runs_of,
                                  summary_settings, variants_of)
from captioning.significance import image_statistics, seed_pairwise, tokenize_references
from captioning.training import BEFORE_RECORDED, TrainSettings
from captioning.variants import VARIANTS
from captioning.vocab import N_SPECIAL, max_length_for

from .common import corpus_from_args, read_training_summary, setup_logging
from .evaluate import PLAIN_SETTINGS
from .train import limit_corpus, parse_args as train_parse_args, scst_settings, train_settings
from .train import main as train_main

log = logging.getLogger("training.seeds")

SET_BY_US = ("--variant", "--seed", "--out", "--runs", "--no-evaluate")
TRAIN_KEYS = tuple(f.name for f in fields(TrainSettings) if f.name != "seed")
SCST_KEYS = tuple(f.name for f in fields(ScstSettings) if f.name != "seed")
RESAMPLES = 10_000
CONFIDENCE = 0.95


class SeedsError(RuntimeError):
    """A run that cannot be recorded (another recipe, a wrong seed, a missing file)."""


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    forwarded = []
    if "--" in argv:
        cut = argv.index("--")
        argv, forwarded = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage="%(prog)s --seeds S [S ...] [options] [-- training.train options]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[], help="seeds to train (0: the shipped bundle)")
    parser.add_argument("--variant", nargs="+", default=["all"], choices=[*VARIANTS, "all"],
                        help="variants to train (default: all three)")
    parser.add_argument("--results", default=f"weights/{SEED_RUNS_FILE}",
                        help="the results file, read and extended (default: %(default)s)")
    parser.add_argument("--out", default="runs/seeds", help="bundles of the runs: <out>/seed-S/<variant>/ "
                                                            "(default: %(default)s)")
    parser.add_argument("--shipped", default="weights", help="folder holding the shipped seed-0 bundles, read "
                                                             "instead of retraining seed 0 (default: %(default)s)")
    parser.add_argument("--no-shipped", action="store_true", help="train seed 0 like the other seeds")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples (default: %(default)s)")
    parser.add_argument("--bootstrap-seed", type=int, default=0)
    parser.add_argument("--refresh", action="store_true",
                        help="recompute the comparisons of the recorded runs (nothing is trained without --seeds)")
    args = parser.parse_args(argv)
    clash = [option for option in forwarded if option.split("=")[0] in SET_BY_US]
    if clash:
        parser.error(f"{', '.join(clash)}: set by training.seeds for each run, not an option to pass after --")
    args.variant = list(VARIANTS) if "all" in args.variant else [v for v in VARIANTS if v in args.variant]
    if not args.seeds and not args.refresh:
        parser.error("give --seeds (and the training options after --), or --refresh")
    if len(set(args.seeds)) != len(args.seeds) or any(s < 0 for s in args.seeds):
        parser.error("--seeds: distinct seeds, 0 or more")
    args.forwarded = forwarded
    return args


# -- the recipe ------------------------------------------------------------------------------
def train_argv(args, variant: str, seed: int) -> list[str]:
    folder = Path(args.out) / f"seed-{seed}"
    return [*args.forwarded, "--variant", variant, "--seed", str(seed), "--out", str(folder),
            "--runs", str(folder / "checkpoints")]


def expected_recipe(targs: argparse.Namespace, corpus: Corpus) -> dict:
    """What training.train will record in config.json for these options, as far as it is known
    before training (a partial recipe: compared key by key with a recorded one)."""
    training, scst = train_settings(targs).to_dict(), scst_settings(targs).to_dict()  # their seeds are left out
    decoder = {"units": targs.units, "dropout": targs.dropout}
    if not targs.vectors:
        decoder["embedding_dim"] = targs.embedding_dim
    return {"encoder": targs.encoder, "max_length": max_length_for(targs.max_words), "decoder": decoder,
            "vocab_min_count": targs.min_count, "training": {k: training[k] for k in TRAIN_KEYS},
            "fine_tuning": {k: scst[k] for k in SCST_KEYS} if targs.scst_epochs > 0 else None,
            "data": {f"{s}_images": len(corpus.split(s)) for s in ("train", "dev", "test")},
            "settings": recipe_settings(targs.settings)}


def recipe_of(config: dict, metrics: dict) -> dict:
    """A bundle's recipe: everything in its config.json that the seed does not change and that
    is the same for every variant (the embedding is :func:`embedding_of`)."""
    fine_tuning = config.get("fine_tuning")
    return {"encoder": config["encoder"], "max_length": config["max_length"],
            "decoder": {k: v for k, v in config["decoder"].items() if k != "embedding_trainable"},
            "vocab_min_count": config["vocab"]["min_count"],
            "training": training_recipe(config["training"]),
            "fine_tuning": None if fine_tuning is None else {
                "method": fine_tuning.get("method"), **{k: fine_tuning.get(k) for k in SCST_KEYS}},
            "data": dict(config["data"]), "settings": recipe_settings(metrics["scores"])}


def recipe_settings(settings) -> list[str]:
    """The decoding settings that are part of a recipe: those training.train scores (PLAIN_SETTINGS).
    One added to a bundle afterwards (``training.evaluate --settings consensus3 --merge``) is not how
    it was trained, no other seed would have it, and the seed tables compare greedy and beam k=3."""
    return sorted(s for s in settings if s in PLAIN_SETTINGS)


def training_recipe(recorded: dict) -> dict:
    """A recorded stage-1 settings section, keyed TRAIN_KEYS; a setting added since it was written
    reads as what that run ran (captioning.training.BEFORE_RECORDED), so records keep matching the
    options that reproduce them."""
    values = {**BEFORE_RECORDED, **recorded}
    return {k: values.get(k) for k in TRAIN_KEYS}


def embedding_of(config: dict) -> dict:
    return {k: config["embedding"].get(k) for k in ("kind", "dim", "trainable", "source")}


_ABSENT = object()


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences(recorded: dict, new: dict, partial: bool = False) -> list[str]:
    """'key: recorded value, new value' for each difference; ``partial``: only ``new``'s keys."""
    a, b = _flat(recorded), _flat(new)
    keys = list(b) if partial else list(dict.fromkeys([*a, *b]))
    show = (lambda v: "absent" if v is _ABSENT else json.dumps(v))
    return [f"{k}: {show(a.get(k, _ABSENT))} there, {show(b.get(k, _ABSENT))} here" for k in keys
            if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def refuse_mix(where: str, found: list[str], results_path: Path) -> None:
    if found:
        raise SeedsError(f"refusing to mix recipes in {results_path}: {where}:\n  " + "\n  ".join(found)
                         + "\nTrain with the options the recorded runs used (the ones after --), or give another "
                           "--results file.")


# -- recording one run ------------------------------------------------------------------------
def _read(path: Path) -> dict:
    if not path.is_file():
        raise SeedsError(f"{path} is missing")
    return json.loads(path.read_text(encoding="utf-8"))


def bundle_done(bundle: Path, seed: int) -> bool:
    """A finished and evaluated bundle of this seed (training.train publishes it only when done)."""
    try:
        return (bundle / SAMPLES_FILE).is_file() and _read(bundle / CONFIG_FILE)["training"]["seed"] == seed
    except (SeedsError, KeyError, ValueError):
        return False


class Context:
    """What recording needs besides the bundle: the corpus (references, training captions), the
    results file, and per-image statistics computed so far."""

    def __init__(self, results_path: Path, corpus: Corpus, resamples: int = RESAMPLES, bootstrap_seed: int = 0):
        self.results_path = results_path
        self.corpus = corpus
        self.test_images = corpus.split("test")
        self.references = corpus.captions_of(self.test_images)
        self.training_captions = corpus.split_captions("train")
        self.resamples, self.bootstrap_seed = resamples, bootstrap_seed
        self._tokenized = None
        self._stats = {}

    def new_results(self) -> dict:
        return {"format": FORMAT, "description": "training.seeds: each variant trained with several seeds; every "
                "run's test scores, caption diversity and captions", "recipe": None, "embeddings": {},
                "split": "test", "images": list(self.test_images), "runs": [], "significance": None}

    def statistics(self, run: dict, setting: str, ids: list[str]):
        key = (run["variant"], run["seed"], setting)
        if key not in self._stats:
            if self._tokenized is None:
                self._tokenized = tokenize_references(self.references, ids)
            self._stats[key] = image_statistics(dict(zip(ids, run["captions"][setting])), self.references,
                                                self._tokenized)
        return self._stats[key]


def record_run(results: dict, bundle: Path, variant: str, seed: int, shipped: bool, context: Context) -> dict:
    """Check a finished bundle against the results file (seed, recipe, test images) and add its run."""
    config, metrics, samples = (_read(bundle / name) for name in (CONFIG_FILE, METRICS_FILE, SAMPLES_FILE))
    trained_seed = config["training"].get("seed")
    if trained_seed != seed:
        raise SeedsError(f"{bundle} was trained with seed {trained_seed}, not {seed}")
    if config.get("name", variant) != variant:
        raise SeedsError(f"{bundle} is the {config.get('name')} variant, not {variant}")
    recipe, embedding = recipe_of(config, metrics), embedding_of(config)
    if results["recipe"] is None:
        results["recipe"] = recipe
    refuse_mix(f"{bundle} was trained with another recipe than the recorded runs",
               differences(results["recipe"], recipe), context.results_path)
    results["embeddings"].setdefault(variant, embedding)
    refuse_mix(f"{bundle}'s embedding differs from the recorded {variant} runs'",
               differences(results["embeddings"][variant], embedding), context.results_path)
    ids = results["images"]
    if metrics.get("split") != results["split"] or metrics.get("images") != len(ids):
        raise SeedsError(f"{bundle / METRICS_FILE}: scored on {metrics.get('images')} {metrics.get('split')} images, "
                         f"not the {len(ids)} {results['split']} images of {context.results_path}")
    vocabulary = json.loads((bundle / VOCAB_FILE).read_text(encoding="utf-8"))["words"][N_SPECIAL:]
    references = {i: context.references[i] for i in ids}
    captions, measures = {}, {}
    for setting in CAPTION_SETTINGS:
        if setting not in samples:
            continue
        if set(samples[setting]) != set(ids):
            raise SeedsError(f"{bundle / SAMPLES_FILE}: its {setting} captions are not of the test images")
        captions[setting] = [samples[setting][i] for i in ids]
        d = diversity(samples[setting], references, context.training_captions, vocabulary)
        measures[setting] = {k: round(v, 5) if isinstance(v, float) else v for k, v in d.items()}
    summary = next((v for v in (read_training_summary(bundle.parent) or {}).get("variants", [])
                    if v.get("variant") == variant), {})
    fine_tuning = config.get("fine_tuning")
    run = {"variant": variant, "seed": seed, "bundle": str(bundle), "shipped_bundle": shipped,
           "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "trained": config.get("created"), "shipped_stage": config.get("shipped_stage", "cross_entropy"),
           "scores": {s: metrics["scores"][s] for s in recipe["settings"]},  # not one merged in later
           "stages": metrics.get("stages"),
           "training": {k: config["training"].get(k) for k in ("epochs_run", "best_epoch", "best_val_loss")},
           "fine_tuning": None if fine_tuning is None else {k: fine_tuning.get(k) for k in ("best_epoch", "dev_cider")},
           "seconds": {"cross_entropy": config["training"].get("seconds"),
                       "scst": (fine_tuning or {}).get("seconds"),
                       "evaluate": summary.get("evaluate_seconds"), "total": summary.get("seconds")},
           "diversity": measures, "captions": captions}
    results["runs"] = sorted([r for r in results["runs"] if (r["variant"], r["seed"]) != (variant, seed)] + [run],
                             key=lambda r: (VARIANTS.index(r["variant"]) if r["variant"] in VARIANTS else 99, r["seed"]))
    return run


def compute_significance(results: dict, context: Context) -> dict | None:
    """Every pair of variants compared by the bootstrap over test images and seeds, under each
    decoding setting whose captions every run has (greedy, beam k=3); None with fewer than two
    variants."""
    settings = summary_settings(results)
    variants = variants_of(results)
    if not settings or len(variants) < 2:
        return None
    ids = results["images"]
    by_setting = {}
    for setting in settings:
        stats = {v: [context.statistics(r, setting, ids) for r in runs_of(results, v)] for v in variants}
        pairs = seed_pairwise(stats, context.resamples, context.bootstrap_seed, CONFIDENCE)
        by_setting[setting] = {"pairs": [{"a": a, "b": b, **{m: asdict(c) for m, c in result.items()}}
                                         for a, b, result in pairs]}
    return {"resamples": context.resamples, "seed": context.bootstrap_seed, "confidence": CONFIDENCE,
            "method": "captioning.significance.seed_bootstrap: test images (paired) and each variant's seeds "
                      "resampled with replacement, percentile interval",
            "seeds": {v: [r["seed"] for r in runs_of(results, v)] for v in variants}, "settings": by_setting}


def save(results: dict, context: Context) -> None:
    write_json(context.results_path, results)


# -- the loop ---------------------------------------------------------------------------------
def pending(args, results: dict | None) -> list[tuple[int, str]]:
    """(seed, variant) pairs not recorded yet, seed by seed (an interrupted run leaves whole seeds)."""
    done = {(r["variant"], r["seed"]) for r in (results or {}).get("runs", [])}
    return [(seed, v) for seed in args.seeds for v in args.variant if (v, seed) not in done]


def is_shipped(args, seed: int) -> bool:
    return seed == 0 and not args.no_shipped


def bundle_of(args, seed: int, variant: str) -> Path:
    """Where a run's bundle is: the shipped one for seed 0 (unless --no-shipped), else <out>/seed-S/<variant>."""
    return Path(args.shipped) / variant if is_shipped(args, seed) else Path(args.out) / f"seed-{seed}" / variant


def check_before_training(args, todo, results: dict | None, targs_of, corpus: Corpus, results_path: Path) -> None:
    """Refuse, before anything is trained, options, a shipped bundle or a bundle left in --out of
    another recipe."""
    for seed, variant in todo:
        expected = expected_recipe(targs_of(variant, seed), corpus)
        if results and results.get("recipe"):
            refuse_mix("these training options differ from the recorded runs'",
                       differences(results["recipe"], expected, partial=True), results_path)
        bundle = bundle_of(args, seed, variant)
        if is_shipped(args, seed):
            check_shipped(bundle, expected, results_path)
        else:
            refuse_left_bundle(bundle, seed, expected)


def check_shipped(bundle: Path, expected: dict, results_path: Path) -> None:
    """The shipped bundle can stand for seed 0: it is there, of seed 0 and of this recipe."""
    if not (bundle / CONFIG_FILE).is_file():
        raise SeedsError(f"no shipped bundle at {bundle} for seed 0: give --shipped DIR, or --no-shipped "
                         "to train seed 0 too")
    config, metrics = _read(bundle / CONFIG_FILE), _read(bundle / METRICS_FILE)
    if config["training"].get("seed") != 0:
        raise SeedsError(f"{bundle} was trained with seed {config['training'].get('seed')}, not 0: it cannot "
                         "stand for seed 0")
    refuse_mix(f"the shipped bundle {bundle} was trained with another recipe than these options",
               differences(recipe_of(config, metrics), expected, partial=True), results_path)


def refuse_left_bundle(bundle: Path, seed: int, expected: dict) -> None:
    """A finished bundle of this seed left in --out by other options is not this recipe's run."""
    if not bundle_done(bundle, seed):
        return
    found = differences(recipe_of(_read(bundle / CONFIG_FILE), _read(bundle / METRICS_FILE)), expected, partial=True)
    if found:
        raise SeedsError(f"{bundle} holds a seed-{seed} run of another recipe ({'; '.join(found)}): give another "
                         "--out, or remove that folder to train this recipe there")


def run_seeds(args) -> int:
    results_path = Path(args.results)
    if not args.seeds and not (read_seed_runs(results_path) or {}).get("runs"):
        raise SeedsError(f"nothing to refresh: {results_path} holds no recorded runs (give --seeds to train some)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".seeds.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SeedsError(f"another training.seeds is running on {out}") from None
        return record_seeds(args, results_path, out)


def record_seeds(args, results_path: Path, out: Path) -> int:
    setup_logging(out / "seeds.log")
    results = read_seed_runs(results_path)
    if results is not None and results.get("recipe"):  # recorded before a stage-1 setting existed: as it ran
        results["recipe"]["training"] = training_recipe(results["recipe"]["training"])

    def targs_of(variant: str, seed: int):
        return train_parse_args(train_argv(args, variant, seed))

    first = targs_of(args.variant[0], 0)
    corpus = corpus_from_args(first)
    if first.limit_images:
        corpus = limit_corpus(corpus, first.limit_images)
    context = Context(results_path, corpus, args.resamples, args.bootstrap_seed)
    if results is not None and list(results["images"]) != list(context.test_images):
        raise SeedsError(f"{results_path} was scored on other test images than this corpus' "
                         f"({len(results['images'])} recorded, {len(context.test_images)} here)")
    todo = pending(args, results)
    check_before_training(args, todo, results, targs_of, corpus, results_path)
    if results is None:
        results = context.new_results()
    log.info("%d run(s) to record in %s: %s", len(todo), results_path,
             ", ".join(f"{v} seed {s}" for s, v in todo) or "none")
    for seed, variant in todo:
        shipped, bundle = is_shipped(args, seed), bundle_of(args, seed, variant)
        if shipped:
            log.info("%s seed 0: the shipped bundle %s", variant, bundle)
        elif bundle_done(bundle, seed):
            log.info("%s seed %d: trained already (%s), recording it", variant, seed, bundle)
        else:
            log.info("%s seed %d: training into %s", variant, seed, bundle)
            code = train_main(train_argv(args, variant, seed))
            setup_logging(out / "seeds.log")  # training.train pointed the log at its own file
            if code != 0:
                raise SeedsError(f"training.train exited with {code} for {variant} seed {seed}")
        run = record_run(results, bundle, variant, seed, shipped, context)
        save(results, context)
        results["significance"] = compute_significance(results, context)
        save(results, context)
        scores = run["scores"].get(main_setting(results) or "", {})
        log.info("recorded %s seed %d (shipped stage %s): BLEU-4 %s, CIDEr %s", variant, seed, run["shipped_stage"],
                 scores.get("BLEU-4"), scores.get("CIDEr"))
    if args.refresh or (results["runs"] and results.get("significance") is None and len(variants_of(results)) > 1):
        results["significance"] = compute_significance(results, context)
        save(results, context)
        log.info("comparisons recomputed from the %d recorded runs", len(results["runs"]))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run_seeds(args)
    except SeedsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
