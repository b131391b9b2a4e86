"""Score the ensemble of the committed bundles on a split (default: Flickr8k's 1,000 test images).

    python -m training.evaluate_ensemble [--weights weights] [--models learned fasttext word2vec]

The ensemble (:class:`captioning.ensemble.Ensemble`) decodes with the mean of the models'
next-word log-probabilities; it is scored exactly as ``training.evaluate`` scores one bundle
(same decoding settings, same metrics), and written beside the bundles:
``<weights>/ensemble_metrics.json`` (a bundle's metrics.json, plus the member names) and
``<weights>/ensemble_samples.json`` (every generated caption).  Another split's go beside them as
``ensemble_<split>_metrics.json`` and ``ensemble_<split>_samples.json``: the test split's files are
the ones the app and ``training.report`` read, and a dev run must not replace them.  ``--merge``
adds the named settings' scores to the file already there, and refuses (before decoding) when that
file scores another split, another number of images or other members.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from captioning.ensemble import ENSEMBLE_METRICS_FILE, ENSEMBLE_SAMPLES_FILE, Ensemble
from captioning.variants import VARIANTS

from .common import add_data_arguments, corpus_from_args, features_for, setup_logging
from .evaluate import DECODING_SETTINGS, available_settings, evaluate_captioner, run_refusal, split_paths, write_scores


def output_paths(weights: Path, split: str) -> tuple[Path, Path]:
    """(metrics file, samples file) for the ensemble's scores on ``split`` (ENSEMBLE_METRICS_FILE and
    ENSEMBLE_SAMPLES_FILE for the test split; see training.evaluate.split_paths)."""
    return split_paths(weights / ENSEMBLE_METRICS_FILE, weights / ENSEMBLE_SAMPLES_FILE, split)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="weights", help="folder holding the bundles (default: %(default)s)")
    parser.add_argument("--models", nargs="+", default=list(VARIANTS), help="bundle names (default: all three)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--settings", nargs="+", choices=sorted(DECODING_SETTINGS),
                        help="decoding settings to score (default: every one the bundles can decode)")
    parser.add_argument("--merge", action="store_true",
                        help="add these settings' scores to the ensemble's metrics file instead of replacing it")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()

    weights = Path(args.weights)
    corpus = corpus_from_args(args)
    ensemble = Ensemble.load([weights / name for name in args.models])  # one encoder, the bundles' own
    settings = args.settings or available_settings(ensemble)
    metrics_path, samples_path = output_paths(weights, args.split)
    record = {"split": args.split, "images": len(corpus.split(args.split)), "members": list(args.models)}
    problem = run_refusal(ensemble, settings, weights, metrics_path, record, args.merge)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    features, index = features_for(corpus, ensemble.encoder, args.cache_dir, corpus.split(args.split))
    metrics, samples = evaluate_captioner(ensemble, corpus, features, index, args.split, settings)
    metrics["members"] = record["members"]
    write_scores(metrics_path, samples_path, metrics, samples, merge=args.merge)
    print(f"wrote {metrics_path} and {samples_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
