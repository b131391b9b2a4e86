"""Print the results table of the trained bundles as Markdown (pasted into the README).

    python -m training.report [--weights weights]

Reads each bundle's metrics.json (test-set scores) and config.json (training time), and the
training run's timings from training_summary.json.  Also draws a bundle's loss curve
(:func:`plot_loss_curve`, called by training.train).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from captioning.variants import VARIANTS
from tools.measure import cpu_model

from .common import SUMMARY_FILE, read_training_summary

SETTINGS = {"greedy": "greedy", "beam3": "beam k=3", "beam5": "beam k=5"}
COLUMNS = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "NLTK-BLEU-4",
           "vocabulary_used", "copied_from_training", "mean_length"]
HEADERS = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "NLTK BLEU-4",
           "words used", "copied", "mean len"]


def _cell(key: str, value) -> str:
    if key == "vocabulary_used":
        return str(value)
    if key == "copied_from_training":
        return f"{value:.0%}"
    if key == "mean_length":
        return f"{value:.1f}"
    return f"{value:.3f}"


def scores_table(weights: Path) -> str:
    lines = ["| model | decoding | " + " | ".join(HEADERS) + " |",
             "|---|---|" + "---|" * len(HEADERS)]
    for variant in VARIANTS:
        path = weights / variant / "metrics.json"
        if not path.is_file():
            continue
        scores = json.loads(path.read_text())["scores"]
        for setting, label in SETTINGS.items():
            if setting in scores:
                row = scores[setting]
                lines.append(f"| {variant} | {label} | " + " | ".join(_cell(k, row[k]) for k in COLUMNS) + " |")
    return "\n".join(lines)


def training_table(weights: Path) -> str:
    lines = ["| model | embedding | epochs (best) | s/epoch | training time | best val loss |",
             "|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        path = weights / variant / "config.json"
        if not path.is_file():
            continue
        config = json.loads(path.read_text())
        t, e = config["training"], config["embedding"]
        frozen = "trainable" if e["trainable"] else "frozen"
        lines.append(f"| {variant} | {e['dim']}-d, {frozen} | {t['epochs_run']} ({t['best_epoch']}) | "
                     f"{t['seconds_per_epoch']:.0f} | {t['seconds'] / 60:.1f} min | {t['best_val_loss']:.3f} |")
    return "\n".join(lines)


def run_summary(weights: Path) -> str:
    """One line: how long the last training run took, from its training_summary.json."""
    run = read_training_summary(weights)
    if not run:
        return ""
    variants = "; ".join(f"{v['variant']} {v['seconds']:.0f} s" for v in run["variants"])
    return (f"Training run ({SUMMARY_FILE}): image features {run['features_seconds']:.0f} s; {variants} "
            f"(each with its word vectors and evaluation); {run['total_seconds'] / 60:.1f} min in all.")


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
    ax.set(xlabel="epoch", ylabel="cross-entropy per word", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="weights")
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
    print(training_table(weights))
    summary = run_summary(weights)
    if summary:
        print()
        print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
