"""The multi-seed results file (``weights/seed_runs.json``, written by ``python -m training.seeds``):
reading it and summarising it as mean ± standard deviation over seeds.

Shared by the report (``training.report``) and the demo's About tab, so both show the same numbers.
Pure Python over the JSON; the heavy work (training, scoring, the bootstrap) was done when the
file was written.  The file::

    {"format": 1, "recipe": {...}, "embeddings": {variant: {...}}, "split": "test",
     "images": [test image ids],
     "runs": [{"variant", "seed", "bundle", "shipped_bundle", "shipped_stage",
               "scores": {setting: {metric: value}},            # the run's shipped weights
               "stages": {"cross_entropy": {setting: ...}, "scst": {setting: ...} | null} | null,
               "diversity": {setting: {"types", "ttr1", "ttr2", "novelty", "coverage", "loc", ...}},
               "captions": {setting: [one caption per test image, in "images" order]}, ...}],
     "significance": {"resamples", "seed", "confidence", "method", "seeds": {variant: [seeds]},
                      "settings": {setting: {"pairs": [{"a", "b", "CIDEr": Comparison fields,
                                                        "BLEU-4": ...}]}}} | null}
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .significance import METRICS, Comparison
from .variants import VARIANTS

SEED_RUNS_FILE = "seed_runs.json"
FORMAT = 1
CAPTION_SETTINGS = ("greedy", "beam3")  # whose captions are kept: per-image statistics and diversity
SETTING_LABELS = {"greedy": "greedy", "beam3": "beam k=3", "beam5": "beam k=5",
                  "consensus3": "beam k=3 + consensus"}  # training.evaluate's settings, in table order
STAGE_LABELS = {"cross_entropy": "cross-entropy", "scst": "SCST"}
# (key in "scores" or "diversity", column header, format of one value)
SCORE_COLUMNS = (("BLEU-4", "BLEU-4", ".3f"), ("METEOR", "METEOR", ".3f"), ("CIDEr", "CIDEr", ".3f"))
DIVERSITY_COLUMNS = (("types", "types", ".0f"), ("ttr1", "TTR1", ".3f"), ("ttr2", "TTR2", ".3f"),
                     ("novelty", "novel", ".1%"), ("coverage", "coverage", ".1%"), ("loc", "Loc5", ".3f"))


def read_seed_runs(path: str | Path) -> dict | None:
    """The results file at ``path`` (a file, or a weights folder holding ``seed_runs.json``); None if absent."""
    path = Path(path)
    if path.is_dir():
        path = path / SEED_RUNS_FILE
    if not path.is_file():
        return None
    results = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(results, dict) or results.get("format") != FORMAT or not isinstance(results.get("runs"), list):
        raise ValueError(f"{path}: not a seed-runs file of format {FORMAT}")
    return results


def variants_of(results: dict) -> list[str]:
    """The variants with at least one run, in the usual order."""
    present = {r["variant"] for r in results["runs"]}
    return [v for v in VARIANTS if v in present] + sorted(present - set(VARIANTS))


def runs_of(results: dict, variant: str) -> list[dict]:
    """One variant's runs, by seed."""
    return sorted((r for r in results["runs"] if r["variant"] == variant), key=lambda r: r["seed"])


def summary_settings(results: dict) -> list[str]:
    """The decoding settings every run has scores and captions for, in CAPTION_SETTINGS order
    (greedy, beam k=3): the ones the tables summarise."""
    runs = results["runs"]
    return [s for s in CAPTION_SETTINGS if runs and all(s in r["scores"] and s in r.get("captions", {}) for r in runs)]


def main_setting(results: dict, preferred: str = "beam3") -> str | None:
    """One decoding setting to headline: ``preferred`` when every run has its scores and captions,
    else the first setting they all have; None without runs."""
    settings = summary_settings(results)
    return preferred if preferred in settings else (settings[0] if settings else None)


def mean_sd(values) -> tuple[float, float | None]:
    """(mean, sample standard deviation (n - 1); None for fewer than two values)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def format_mean_sd(values, fmt: str = ".3f") -> str:
    """"0.199 ± 0.004" (just the value for one run; "–" for none)."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    mean, sd = mean_sd(values)
    return f"{mean:{fmt}}" if sd is None else f"{mean:{fmt}} ± {sd:{fmt}}"


def format_over_runs(values, fmt: str = ".3f") -> str:
    """format_mean_sd of one value per run (None: the run lacks it), saying n when only some of the
    runs have one (METEOR of a run scored with --no-meteor): "0.199 ± 0.004 (n=2)"."""
    present = [v for v in values if v is not None]
    cell = format_mean_sd(present, fmt)
    return cell if len(present) in (0, len(values)) else f"{cell} (n={len(present)})"


def _seeds_cell(runs: list[dict]) -> str:
    return f"{len(runs)} (" + ", ".join(str(r["seed"]) for r in runs) + ")"


def seeds_rows(results: dict, settings: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): per variant and decoding setting, mean ± sd over its seeds of the shipped
    weights' scores and caption diversity."""
    headers = ["model", "decoding", "seeds", *(h for _, h, _ in SCORE_COLUMNS), *(h for _, h, _ in DIVERSITY_COLUMNS)]
    rows = []
    for variant in variants_of(results):
        for setting in settings if settings is not None else summary_settings(results):
            runs = [r for r in runs_of(results, variant) if setting in r["scores"]]
            if not runs:
                continue
            cells = [format_over_runs([r["scores"][setting].get(k) for r in runs], f) for k, _, f in SCORE_COLUMNS]
            cells += [format_over_runs([(r.get("diversity") or {}).get(setting, {}).get(k) for r in runs], f)
                      for k, _, f in DIVERSITY_COLUMNS]
            rows.append([variant, SETTING_LABELS.get(setting, setting), _seeds_cell(runs), *cells])
    return headers, rows


def stage_rows(results: dict, settings: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): per variant, training stage and decoding setting, mean ± sd over the seeds
    whose stage was scored on the test split (SCST is scored only where it beat cross-entropy on
    dev and was shipped)."""
    headers = ["model", "stage", "decoding", "seeds", *(h for _, h, _ in SCORE_COLUMNS)]
    rows = []
    for variant in variants_of(results):
        for stage, label in STAGE_LABELS.items():
            for setting in settings if settings is not None else summary_settings(results):
                scored = [(r, scores) for r in runs_of(results, variant)
                          if (scores := stage_scores(r, stage, setting))]
                if not scored:
                    continue
                rows.append([variant, label, SETTING_LABELS.get(setting, setting), _seeds_cell([r for r, _ in scored]),
                             *(format_over_runs([s.get(k) for _, s in scored], f) for k, _, f in SCORE_COLUMNS)])
    return headers, rows


def stage_scores(run: dict, stage: str, setting: str) -> dict | None:
    """One run's test scores of a training stage; a run without stages (cross-entropy only) has
    its ``scores`` as the cross-entropy stage."""
    stages = run.get("stages")
    if stages is None:
        return run["scores"].get(setting) if stage == "cross_entropy" else None
    return (stages.get(stage) or {}).get(setting)


def run_rows(results: dict, settings: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): every run, the stage it ships (with SCST's best epoch and dev CIDEr-D) and
    its BLEU-4 and CIDEr under each setting."""
    settings = settings if settings is not None else summary_settings(results)
    with_scst = fine_tuned(results)
    headers = ["model", "seed", "shipped stage", *(["dev CIDEr-D (SCST epoch)"] if with_scst else []),
               *(f"{m} {SETTING_LABELS.get(s, s)}" for s in settings for m in ("BLEU-4", "CIDEr"))]
    rows = []
    for variant in variants_of(results):
        for r in runs_of(results, variant):
            seed = f"{r['seed']} (shipped bundle when recorded)" if r.get("shipped_bundle") else str(r["seed"])
            fine_tuning = r.get("fine_tuning") or {}
            dev, best = fine_tuning.get("dev_cider") or [], fine_tuning.get("best_epoch", 0)
            dev_cell = [f"{dev[best]:.3f} ({best})" if len(dev) > best else "–"] if with_scst else []
            scores = [f"{r['scores'][s][m]:.3f}" if s in r["scores"] else "–" for s in settings
                      for m in ("BLEU-4", "CIDEr")]
            rows.append([variant, seed, STAGE_LABELS.get(r.get("shipped_stage"), "cross-entropy"), *dev_cell, *scores])
    return headers, rows


def fine_tuned(results: dict) -> bool:
    """Whether any run went through the SCST stage (its test scores per stage are worth a table)."""
    return any(r.get("fine_tuning") for r in results["runs"])


def recipe_label(results: dict) -> str:
    """Which training stages the recorded recipe runs."""
    return "cross-entropy only" if results["recipe"].get("fine_tuning") is None else "both stages"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
                      *("| " + " | ".join(map(str, row)) + " |" for row in rows)])


def stored_comparisons(results: dict) -> dict[str, list[tuple[str, str, dict[str, Comparison]]]]:
    """The across-seeds comparisons ``training.seeds`` stored, per decoding setting:
    {setting: [(first, second, {metric: Comparison}), ...]}."""
    significance = results.get("significance") or {}
    return {setting: [(p["a"], p["b"], {m: Comparison(**p[m]) for m in METRICS}) for p in stored["pairs"]]
            for setting, stored in (significance.get("settings") or {}).items()}


def comparison_label(results: dict, setting: str) -> str:
    """The first cell of a comparison table's header: the setting and the seeds per variant."""
    seeds = (results.get("significance") or {}).get("seeds") or {}
    counts = sorted({len(s) for s in seeds.values()})
    n = "/".join(map(str, counts)) or "?"
    return f"{SETTING_LABELS.get(setting, setting)}, {n} seed{'' if n == '1' else 's'}"
