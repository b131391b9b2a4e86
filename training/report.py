"""Print the results tables of the trained bundles as Markdown (pasted into the README).

    python -m training.report [--weights weights] [--data FLICKR8K]
    python -m training.report --weights coco-weights --captions captions_train2017.json captions_val2017.json \\
        --images /data/coco         # bundles of another corpus: the corpus options they were trained with

Reads each bundle's metrics.json (test-set scores of the shipped weights and, for a bundle
trained in two stages, of each stage) and config.json (training time of each stage), the
training run's timings from training_summary.json, and, when it exists, the multi-seed results
of ``python -m training.seeds`` (weights/seed_runs.json: mean ± standard deviation over seeds and
the comparison of the variants across seeds and test images).  The diversity and significance
tables need the corpus's captions (the data options of training.train) and cover the images the
bundles' samples.json captioned (a run with --limit-images: those only).  Also draws a bundle's
loss curve (:func:`plot_loss_curve`, called by training.train).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable
from pathlib import Path

from captioning.corpus import Corpus, CorpusError
from captioning.diversity import diversity, held_out_references, mean_local_recall
from captioning.ensemble import ENSEMBLE_METRICS_FILE, ENSEMBLE_SAMPLES_FILE
from captioning.seed_runs import (SEED_RUNS_FILE, SETTING_LABELS, STAGE_LABELS, comparison_label, fine_tuned, markdown_table,
                                  read_seed_runs, recipe_label, run_rows, seeds_rows, stage_rows,
                                  stored_comparisons, summary_settings)
from captioning.variants import VARIANTS
from captioning.vocab import N_SPECIAL
from captioning.significance import comparison_table
from tools.measure import cpu_model

from .common import (FINE_TUNING_SUMMARY_FILE, SUMMARY_FILE, add_corpus_arguments, load_corpus_from_args,
                     read_training_summary)

SETTINGS = SETTING_LABELS  # decoding setting -> its name in the tables, in table order
COLUMNS = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "NLTK-BLEU-4",
           "vocabulary_used", "copied_from_training", "mean_length"]
HEADERS = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "NLTK BLEU-4",
           "words used", "copied", "mean len"]


def _cell(key: str, value) -> str:
    if value is None:  # not scored (a run with --no-meteor)
        return "–"
    if key == "vocabulary_used":
        return str(value)
    if key == "copied_from_training":
        return f"{value:.0%}"
    if key == "mean_length":
        return f"{value:.1f}"
    return f"{value:.3f}"


def _stage(metrics: dict) -> str:
    """The stage whose weights a bundle ships; a bundle without the key was trained by cross-entropy only."""
    return STAGE_LABELS.get(metrics.get("shipped_stage", "cross_entropy"), metrics.get("shipped_stage"))


def scores_table(weights: Path) -> str:
    """The shipped weights' test scores: every model under every decoding setting."""
    lines = ["| model | stage | decoding | " + " | ".join(HEADERS) + " |",
             "|---|---|---|" + "---|" * len(HEADERS)]
    for variant in VARIANTS:
        path = weights / variant / "metrics.json"
        if not path.is_file():
            continue
        metrics = json.loads(path.read_text())
        scores = metrics["scores"]
        for setting, label in SETTINGS.items():
            if setting in scores:
                row = scores[setting]
                lines.append(f"| {variant} | {_stage(metrics)} | {label} | "
                             + " | ".join(_cell(k, row.get(k)) for k in COLUMNS) + " |")
    return "\n".join(lines)


STAGE_COLUMNS = ["BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "vocabulary_used", "copied_from_training", "mean_length"]
STAGE_HEADERS = ["BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "words used", "copied", "mean len"]


def stages_table(weights: Path) -> str:
    """Both training stages' test scores of each bundle trained in two stages (metrics.json
    "stages"), the shipped one marked; "" when no bundle has them."""
    lines = ["| model | stage | decoding | " + " | ".join(STAGE_HEADERS) + " |",
             "|---|---|---|" + "---|" * len(STAGE_HEADERS)]
    for variant in VARIANTS:
        path = weights / variant / "metrics.json"
        if not path.is_file():
            continue
        metrics = json.loads(path.read_text())
        if not metrics.get("stages"):
            continue
        for stage, label in STAGE_LABELS.items():
            if stage == metrics.get("shipped_stage"):
                label += " (shipped)"
            scores = metrics["stages"].get(stage)
            if not scores:
                lines.append(f"| {variant} | {label}: no epoch beat cross-entropy on dev, not scored | — | "
                             + " | ".join("—" for _ in STAGE_HEADERS) + " |")
                continue
            for setting, setting_label in SETTINGS.items():
                if setting in scores:
                    row = scores[setting]
                    lines.append(f"| {variant} | {label} | {setting_label} | "
                                 + " | ".join(_cell(k, row.get(k)) for k in STAGE_COLUMNS) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def ensemble_table(weights: Path) -> str:
    """The ensemble's scores (training.evaluate_ensemble), in the scores table's columns; "" if not scored."""
    path = weights / ENSEMBLE_METRICS_FILE
    if not path.is_file():
        return ""
    metrics = json.loads(path.read_text())
    name = "ensemble (" + " + ".join(metrics.get("members", VARIANTS)) + ")"
    lines = ["| model | decoding | " + " | ".join(HEADERS) + " |", "|---|---|" + "---|" * len(HEADERS)]
    for setting, label in SETTINGS.items():
        if setting in metrics["scores"]:
            row = metrics["scores"][setting]
            lines.append(f"| {name} | {label} | " + " | ".join(_cell(k, row.get(k)) for k in COLUMNS) + " |")
    return "\n".join(lines)


DIVERSITY_HEADERS = ["types", "TTR1", "TTR2", "novel", "coverage", "Loc5", "Loc4 (refs 2-5)", "mean len"]


def _diversity_row(name: str, label: str, d: dict, loc4: float) -> str:
    loc5 = "—" if d.get("loc") is None else f"{d['loc']:.3f}"
    cells = [str(d["types"]), f"{d['ttr1']:.3f}", f"{d['ttr2']:.3f}", f"{d['novelty']:.0%}",
             f"{d['coverage']:.1%}", loc5, f"{loc4:.3f}", f"{d['mean_length']:.1f}"]
    return f"| {name} | {label} | " + " | ".join(cells) + " |"


class SamplesNotInCorpus(ValueError):
    """The bundles captioned images that the corpus's split does not have: they were trained on another corpus."""


def sample_references(corpus: Corpus, split: str, images: Iterable[str]) -> dict[str, list[str]]:
    """The references of ``images`` (those the bundles captioned), in the split's order; raises
    :class:`SamplesNotInCorpus` if any is not in the corpus's ``split``."""
    images = set(images)
    references = {image: refs for image, refs in corpus.captions_of(corpus.split(split)).items() if image in images}
    missing = sorted(images.difference(references))
    if missing:
        raise SamplesNotInCorpus(
            f"{len(missing)} of the {len(images)} images the bundles captioned (such as {missing[0]}) are not in this "
            f"corpus's {split} split; give the corpus options they were trained with (--data, --captions, --images)")
    return references


def _read_samples(weights: Path) -> list[tuple[str, dict]]:
    """(name, samples.json) of every bundle with captions, then the ensemble's."""
    sources = [(v, weights / v / "samples.json") for v in VARIANTS] + [("ensemble", weights / ENSEMBLE_SAMPLES_FILE)]
    return [(name, json.loads(path.read_text())) for name, path in sources if path.is_file()]


def diversity_table(weights: Path, corpus: Corpus, split: str = "test") -> str:
    """Diversity and novelty (captioning.diversity) of every generated caption in the bundles'
    samples.json (and the ensemble's), and of one human reference per image (the first, scored
    against the others) as the ceiling, over the same images; "" if there are no samples."""
    vocab_path = next((weights / v / "vocab.json" for v in VARIANTS if (weights / v / "vocab.json").is_file()), None)
    if vocab_path is None:
        return ""
    vocabulary = json.loads(vocab_path.read_text())["words"][N_SPECIAL:]  # the learnable vocabulary
    rows = [(name, setting, label, samples[setting]) for name, samples in _read_samples(weights)
            for setting, label in SETTINGS.items() if setting in samples]
    if not rows:
        return ""
    references = sample_references(corpus, split, (image for *_, predictions in rows for image in predictions))
    training = corpus.split_captions("train")
    held, others = held_out_references(references, 0)  # reference 1 vs references 2-5
    lines = ["| captions | decoding | " + " | ".join(DIVERSITY_HEADERS) + " |",
             "|---|---|" + "---|" * len(DIVERSITY_HEADERS)]
    for name, setting, label, predictions in rows:
        d = diversity(predictions, references, training, vocabulary)
        lines.append(_diversity_row(name, label, d, mean_local_recall(predictions, others)[0]))
    human = diversity(held, others, training, vocabulary)  # its "loc" is against references 2-5: Loc4
    lines.append(_diversity_row("human (reference 1)", "—", {**human, "loc": None}, human["loc"]))
    return "\n".join(lines)


def training_table(weights: Path) -> str:
    """Each bundle's training, stage by stage, from its config.json: cross-entropy (epochs, time,
    validation loss), then self-critical fine-tuning (epochs, time, dev CIDEr-D before it and at
    its best epoch), and the stage it ships."""
    lines = ["| model | embedding | epochs (best) | s/epoch | cross-entropy time | best val loss | SCST epochs (best) "
             "| SCST time | dev CIDEr-D (before → best) | shipped |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        path = weights / variant / "config.json"
        if not path.is_file():
            continue
        config = json.loads(path.read_text())
        t, e, f = config["training"], config["embedding"], config.get("fine_tuning")
        frozen = "trainable" if e["trainable"] else "frozen"
        if f:
            dev = f.get("dev_cider") or []
            best = f.get("best_epoch", 0)
            scst = [f"{len(dev) - 1} ({best})", f"{f['seconds'] / 60:.1f} min",
                    f"{dev[0]:.3f} → {dev[best]:.3f}" if len(dev) > best else "—"]
        else:
            scst = ["—", "—", "—"]
        shipped = STAGE_LABELS.get(config.get("shipped_stage", "cross_entropy"), config.get("shipped_stage"))
        lines.append(f"| {variant} | {e['dim']}-d, {frozen} | {t['epochs_run']} ({t['best_epoch']}) | "
                     f"{t['seconds_per_epoch']:.0f} | {t['seconds'] / 60:.1f} min | {t['best_val_loss']:.3f} | "
                     + " | ".join(scst) + f" | {shipped} |")
    return "\n".join(lines)


def _variant_times(v: dict) -> str:
    """One variant's timings from training_summary.json: per stage when the run recorded them."""
    stages = [(key, label) for key, label in (("cross_entropy_seconds", "cross-entropy"), ("scst_seconds", "SCST"),
                                              ("evaluate_seconds", "evaluation"))
              if key in v and not (key == "scst_seconds" and v.get("scst_epochs") == 0)]
    if not stages:  # a run before the two-stage recipe: one figure, word vectors and evaluation included
        return f"{v['variant']} {v['seconds']:.0f} s"
    return (f"{v['variant']}: " + ", ".join(f"{label} {v[key]:.0f} s" for key, label in stages)
            + f" ({v['seconds']:.0f} s)")


def run_summary(weights: Path) -> str:
    """One line: how long the last training run took, stage by stage, from its training_summary.json."""
    run = read_training_summary(weights)
    if not run:
        return ""
    variants = "; ".join(_variant_times(v) for v in run["variants"])
    if not any("cross_entropy_seconds" in v for v in run["variants"]):
        note = "each with its word vectors and evaluation"
    elif any(v.get("scst_epochs") for v in run["variants"]):
        note = "cross-entropy includes the word vectors; evaluation scores both stages on the test split"
    else:
        note = "cross-entropy includes the word vectors; no fine-tuning stage"
    line = (f"Training run ({SUMMARY_FILE}): image features {run['features_seconds']:.0f} s; {variants} "
            f"({note}); {run['total_seconds'] / 60:.1f} min in all")
    if all("cross_entropy_seconds" in v for v in run["variants"]):
        training = run["features_seconds"] + sum(v["cross_entropy_seconds"] + v.get("scst_seconds", 0)
                                                 for v in run["variants"])
        stages = "both stages" if any(v.get("scst_epochs") for v in run["variants"]) else "cross-entropy"
        line += f", {training / 60:.1f} min of it training (features and {stages}, without evaluation)"
    line += "."
    tuning = read_training_summary(weights, FINE_TUNING_SUMMARY_FILE)
    if tuning:  # stage 2 run later on the bundles of that run (training.train --from-bundles)
        stages = "; ".join(f"{v['variant']}: SCST {v.get('scst_epoch_seconds', v['scst_seconds']):.0f} s "
                           f"({v.get('scst_epochs', 0)} epochs), evaluation {v.get('evaluate_seconds', 0):.0f} s"
                           for v in tuning["variants"])
        line += (f" Then fine-tuned ({FINE_TUNING_SUMMARY_FILE}, --from-bundles {tuning['from_bundles']}): "
                 f"{stages} (evaluation scores both stages); {tuning['total_seconds'] / 60:.1f} min in all.")
    return line


def plot_loss_curve(history: dict, path: Path, title: str) -> None:
    """Training and validation loss per epoch, the best epoch marked, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    epochs = range(1, len(history["loss"]) + 1)
    ax.plot(epochs, history["loss"], marker="o", label="train")
    ax.plot(epochs, history["val_loss"], marker="o", label="validation")
    if history.get("best_epoch"):
        ax.axvline(history["best_epoch"], color="grey", linestyle=":", label="best")
    ax.set(xlabel="epoch", ylabel="loss (cross-entropy, padding counted)", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="weights")
    add_corpus_arguments(parser)  # the corpus the bundles were trained on, for its captions
    parser.add_argument("--seed-runs", help=f"multi-seed results of training.seeds (default: <weights>/{SEED_RUNS_FILE})")
    args = parser.parse_args(argv)
    weights = Path(args.weights)
    first = next((weights / v / "metrics.json" for v in VARIANTS if (weights / v / "metrics.json").is_file()), None)
    if first is None:
        print(f"no metrics.json under {weights}/")
        return 1
    metrics = json.loads(first.read_text())
    print(f"Split '{metrics['split']}', {metrics['images']} images; {metrics['encoder']} features. "
          f"Machine: {cpu_model()}, {os.cpu_count()} cores.\n")
    print(scores_table(weights))
    print()
    stages = stages_table(weights)
    if stages:
        print("Both training stages on the test split (cross-entropy, then self-critical fine-tuning on CIDEr-D; "
              "the bundle ships the stage that did better on dev CIDEr-D):\n")
        print(stages)
        print()
    ensemble = ensemble_table(weights)
    if ensemble:
        print(ensemble)
        print()
    print(training_table(weights))
    summary = run_summary(weights)
    if summary:
        print()
        print(summary)
    corpus = report_corpus(args)
    if corpus is not None:
        print_diversity(weights, corpus, metrics["split"])
        print_significance(weights, corpus, metrics["split"])
    print_seeds(Path(args.seed_runs) if args.seed_runs else weights / SEED_RUNS_FILE)
    return 0


def significance_table(weights: Path, corpus: Corpus, split: str = "test", setting: str = "beam3",
                       resamples: int = 10_000, seed: int = 0) -> str:
    """Each pair of variants' CIDEr-D and BLEU-4 difference on ``setting``'s captions (samples.json),
    with a paired bootstrap 95% interval over the test images (captioning.significance); "" if
    fewer than two bundles have those captions."""
    from captioning.significance import image_statistics, pairwise_table, tokenize_references

    samples = {name: s[setting] for name, s in _read_samples(weights) if name in VARIANTS and setting in s}
    if len(samples) < 2:
        return ""
    # paired over the images every variant captioned (the split, or its first N with --limit-images)
    references = sample_references(corpus, split, set.intersection(*(set(p) for p in samples.values())))
    ids = list(references)
    tokenized = tokenize_references(references, ids)
    stats = {v: image_statistics({i: p[i] for i in ids}, references, tokenized) for v, p in samples.items()}
    return pairwise_table(stats, resamples=resamples, seed=seed, label=SETTINGS.get(setting, setting))


def report_corpus(args) -> Corpus | None:
    """The corpus the data options name, or None after one line saying why the tables that need it
    are left out (the other tables do not)."""
    try:
        return load_corpus_from_args(args)
    except CorpusError as exc:
        print(f"\nNo diversity or significance table: {exc}")
        return None


def print_significance(weights: Path, corpus: Corpus, split: str) -> None:
    """The significance table, if Java is installed and the bundles captioned images of ``corpus``."""
    try:
        table = significance_table(weights, corpus, split)
    except (CorpusError, SamplesNotInCorpus, RuntimeError, KeyError) as exc:
        print(f"\nNo significance table: {exc}")
        return
    if table:
        print(f"\nDifferences between the variants on the {split} images (first minus second), with a paired "
              "bootstrap over the images (captioning.significance: 10,000 resamples, seed 0, percentile 95% "
              "interval, two-sided p): test-image sampling only, one training run per variant.\n")
        print(table)


def seeds_table(results: dict, settings: list[str] | None = None) -> str:
    """Mean ± standard deviation over each variant's seeds of its shipped weights' scores and caption
    diversity, greedy and beam k=3 (the settings every run has captions for); "" without runs."""
    headers, rows = seeds_rows(results, settings)
    return markdown_table(headers, rows) if rows else ""


def seed_stages_table(results: dict, settings: list[str] | None = None) -> str:
    """Mean ± standard deviation over seeds of each training stage's test scores."""
    headers, rows = stage_rows(results, settings)
    return markdown_table(headers, rows) if rows else ""


def seed_runs_table(results: dict, settings: list[str] | None = None) -> str:
    """Every run: its seed, the stage it ships and its scores."""
    headers, rows = run_rows(results, settings)
    return markdown_table(headers, rows) if rows else ""


def seed_comparison_tables(results: dict) -> list[str]:
    """The comparisons of each pair of variants across seeds and test images that training.seeds
    stored, one table per decoding setting."""
    confidence = (results.get("significance") or {}).get("confidence", 0.95)
    return [comparison_table(rows, comparison_label(results, setting), confidence)
            for setting, rows in stored_comparisons(results).items() if rows]


def print_seeds(path: Path) -> None:
    """The multi-seed tables, when ``path`` (training.seeds' results file) exists."""
    try:
        results = read_seed_runs(path)
    except ValueError as exc:
        print(f"\nNo multi-seed tables: {exc}")
        return
    if not results or not results["runs"]:
        return
    settings = " and ".join(SETTINGS.get(s, s) for s in summary_settings(results))
    print(f"\nAcross training seeds ({path.name}, python -m training.seeds): each variant trained with the same "
          f"recipe ({recipe_label(results)}) and several seeds (seed 0: the bundle shipped when it was recorded), "
          f"scored on the {len(results['images'])} {results['split']} images, {settings}; mean ± standard deviation over the seeds (n - 1; n and the "
          "seeds in the third column). Diversity measures as in the diversity table.\n")
    print(seeds_table(results))
    stages = seed_stages_table(results) if fine_tuned(results) else ""
    if stages:
        print("\nEach training stage across the seeds (SCST is scored only for the seeds where it beat "
              "cross-entropy on dev CIDEr-D, and then shipped):\n")
        print(stages)
    print("\nEvery run" + (" (dev CIDEr-D at the SCST epoch kept; epoch 0: the cross-entropy weights)"
                            if fine_tuned(results) else "") + ":\n")
    print(seed_runs_table(results))
    comparisons = seed_comparison_tables(results)
    if comparisons:
        sig = results["significance"]
        print(f"\nDifferences between the variants across seeds and test images (first minus second; means over "
              f"seeds): a bootstrap that draws the test images (paired) and each variant's seeds with replacement "
              f"(captioning.significance.seed_bootstrap: {sig['resamples']:,} resamples, seed {sig['seed']}, "
              f"percentile {sig['confidence']:.0%} interval, two-sided p).")
        for table in comparisons:
            print()
            print(table)


def print_diversity(weights: Path, corpus: Corpus, split: str) -> None:
    """The diversity table, if the bundles captioned images of ``corpus`` (its references and
    training captions)."""
    try:
        table = diversity_table(weights, corpus, split)
    except (CorpusError, SamplesNotInCorpus) as exc:
        print(f"\nNo diversity table: {exc}")
        return
    if table:
        print(f"\nDiversity of the {split} captions (captioning.diversity): TTR over all captions together; "
              "novel: not a training caption; coverage: share of the model vocabulary (words seen 5+ times in training) used; Loc5: share of "
              "the content words all five references use that the caption says (Loc4: all of references 2-5); "
              "human: reference 1 of each image, scored against references 2-5.\n")
        print(table)


if __name__ == "__main__":
    raise SystemExit(main())
