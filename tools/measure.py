"""Small measuring helpers shared by the tools and the reports: percentiles and timing
summaries, a process's memory from /proc, the CPU's name, and the arguments of the tools that
re-decode the committed models on a split."""

from __future__ import annotations

import argparse
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def read_text(path: str | Path) -> str:
    """The file's text, or "" when it cannot be read (e.g. /proc on another system)."""
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def add_split_arguments(parser: argparse.ArgumentParser) -> None:
    """--weights, --models, --split (default dev) and --beam-width, plus the data arguments: the
    options of a tool that decodes the committed bundles and their ensemble on one split."""
    from captioning.variants import VARIANTS
    from training.common import add_data_arguments

    parser.add_argument("--weights", type=Path, default=Path("weights"))
    parser.add_argument("--models", nargs="+", default=list(VARIANTS), help="bundle names (default: all three)")
    parser.add_argument("--split", default="dev", help="split to measure on (default: %(default)s; the test "
                                                       "split reports, it must not choose)")
    parser.add_argument("--beam-width", type=int, default=3)
    add_data_arguments(parser)


@dataclass
class SplitToDecode:
    """One split, ready for decoding and scoring: its images, their feature rows and references,
    and the training captions (what "copied" and "novel" are measured against)."""

    images: list[str]
    features: np.ndarray  # (N, feature_dim), row i for images[i]
    references: dict[str, list[str]]
    training_captions: list[str]

    def score(self, captions: list[str]) -> dict:
        """COCO scores (no METEOR) and diversity of ``captions``, caption i for images[i]."""
        from captioning.evaluation import evaluate_predictions

        return evaluate_predictions(dict(zip(self.images, captions)), self.references, self.training_captions,
                                    meteor=False)


def load_models(args: argparse.Namespace):
    """The bundles of :func:`add_split_arguments`' ``--weights``/``--models`` as one Ensemble (its
    members are the single models; one encoder, the bundles' own)."""
    from captioning.ensemble import Ensemble

    return Ensemble.load([args.weights / name for name in args.models])


def split_to_decode(args: argparse.Namespace, encoder) -> SplitToDecode:
    """The split of :func:`add_split_arguments`' ``args``, encoded by ``encoder`` (cached features)."""
    from training.common import corpus_from_args, features_for

    corpus = corpus_from_args(args)
    images = corpus.split(args.split)
    features, index = features_for(corpus, encoder, args.cache_dir, images)
    return SplitToDecode(images, features[[index[name] for name in images]], corpus.captions_of(images),
                         corpus.split_captions("train"))


# -- statistics ---------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values`` (a value that occurred)."""
    rank = max(1, int(-(-q * len(values) // 100)))  # ceil(q/100 * n)
    return values[min(rank, len(values)) - 1]


def summary_ms(seconds) -> dict:
    """Median, p90 (interpolated), mean, min and max of durations in seconds, as milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    return {"n": int(ms.size), "median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "mean_ms": float(ms.mean()), "min_ms": float(ms.min()), "max_ms": float(ms.max())}


# -- memory -------------------------------------------------------------------------------------
def status_bytes(pid: int, keys=("VmHWM", "VmRSS")) -> dict[str, int]:
    """Fields of /proc/<pid>/status given in kB (VmRSS: resident now, VmHWM: peak resident), in bytes;
    absent when unknown."""
    fields = {}
    for line in read_text(f"/proc/{pid}/status").splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            try:
                fields[key] = int(value.split()[0]) * 1024
            except (ValueError, IndexError):
                continue
    return fields


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of ``pid`` in MB (VmRSS), None if unknown."""
    if pid is None:
        return None
    rss = status_bytes(pid, ("VmRSS",)).get("VmRSS")
    return None if rss is None else rss / 2**20


def descendants(pid: int) -> list[int]:
    """Every child process of ``pid``, recursively."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in read_text(task / "children").split():
            out += [int(child), *descendants(int(child))]
    return out


def process_memory(pid: int) -> dict:
    """VmHWM (peak resident) and VmRSS of a process, in bytes, plus its descendants' RSS."""
    fields = status_bytes(pid)
    children_rss = sum(status_bytes(child, ("VmRSS",)).get("VmRSS", 0) for child in descendants(pid))
    return {"peak_rss_bytes": fields.get("VmHWM"), "rss_bytes": fields.get("VmRSS"),
            "children_rss_bytes": children_rss}


# -- machine ------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo, else what platform says."""
    for line in read_text("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"
