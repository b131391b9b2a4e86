"""training.report and the About tab (demo.ui) on hand-made bundle files: both training stages and
their times, old single-stage bundles still read, and the multi-seed results (mean ± sd, the stored
comparison across seeds, the error-bar plot, and a plain line when there are none)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from captioning.seed_runs import format_mean_sd, mean_sd, read_seed_runs, seeds_rows, stage_rows
from captioning.significance import Comparison
from demo import ui
from training import report

SETTINGS = ("greedy", "beam3", "beam5")


def _scores(base: float) -> dict:
    return {s: {"BLEU-1": 0.6 + base, "BLEU-2": 0.4 + base, "BLEU-3": 0.3 + base, "BLEU-4": 0.2 + base + k / 100,
                "METEOR": 0.19 + base, "ROUGE-L": 0.45 + base, "CIDEr": 0.5 + base + k / 100,
                "NLTK-BLEU-4": 0.2 + base, "vocabulary_used": 400, "copied_from_training": 0.12,
                "mean_length": 9.5} for k, s in enumerate(SETTINGS)}


def _config(variant: str, staged: bool, shipped: str = "scst") -> dict:
    config = {"name": variant, "encoder": "efficientnet_lite0", "max_length": 23,
              "decoder": {"vocab_size": 2533, "feature_dim": 1280, "embedding_dim": 256, "units": 256,
                          "dropout": 0.5, "embedding_trainable": variant == "learned"},
              "embedding": {"kind": variant, "dim": 256, "trainable": variant == "learned", "source": "x"},
              "vocab": {"size": 2533, "min_count": 5},
              "training": {"epochs": 20, "batch_size": 256, "seed": 0, "epochs_run": 12, "best_epoch": 9,
                           "seconds": 600.0, "seconds_per_epoch": 45.0, "best_val_loss": 2.41},
              "data": {"corpus": "flickr8k", "train_images": 6000, "train_captions": 29775}}
    if staged:
        config["fine_tuning"] = {"method": "self-critical sequence training, reward CIDEr-D", "epochs": 3,
                                 "learning_rate": 5e-5, "samples_per_image": 5, "images_per_batch": 50, "seed": 0,
                                 "best_epoch": 2 if shipped == "scst" else 0, "seconds": 1500.0,
                                 "dev_cider": [0.52, 0.55, 0.57, 0.56] if shipped == "scst" else [0.52, 0.5, 0.49, 0.48]}
        config["shipped_stage"] = shipped
    return config


def _metrics(staged: bool, shipped: str = "scst") -> dict:
    metrics = {"split": "test", "images": 1000, "encoder": "efficientnet_lite0", "date": "2026-11-27"}
    cross_entropy, scst = _scores(0.0), _scores(0.03)
    if not staged:
        return {**metrics, "scores": cross_entropy}
    return {**metrics, "scores": scst if shipped == "scst" else cross_entropy, "shipped_stage": shipped,
            "stages": {"cross_entropy": cross_entropy, "scst": scst if shipped == "scst" else None}}


def _weights(folder: Path, staged: bool) -> Path:
    shipped = {"learned": "scst", "fasttext": "cross_entropy", "word2vec": "scst"}
    for variant in ("learned", "fasttext", "word2vec"):
        (folder / variant).mkdir(parents=True)
        (folder / variant / "config.json").write_text(json.dumps(_config(variant, staged, shipped[variant])))
        (folder / variant / "metrics.json").write_text(json.dumps(_metrics(staged, shipped[variant])))
    if staged:
        summary = {"features_seconds": 90.0, "total_seconds": 7200.0, "variants": [
            {"variant": v, "cross_entropy_seconds": 600.0, "scst_seconds": 1500.0, "evaluate_seconds": 200.0,
             "seconds": 2300.0, "epochs": 12, "seconds_per_epoch": 45.0, "scst_epochs": 3}
            for v in ("learned", "fasttext", "word2vec")]}
    else:
        summary = {"features_seconds": 93.4, "total_seconds": 1831.3, "variants": [
            {"variant": "learned", "seconds": 521.8, "train_seconds": 483.9, "epochs": 13, "seconds_per_epoch": 36.9}]}
    (folder / "training_summary.json").write_text(json.dumps(summary))
    return folder


def test_two_stage_bundles_show_both_stages_and_their_times(tmp_path):
    weights = _weights(tmp_path, staged=True)
    scores = report.scores_table(weights).splitlines()
    assert scores[0].startswith("| model | stage | decoding | BLEU-1 |") and len(scores) == 2 + 9
    assert scores[2].startswith("| learned | SCST | greedy | ") and "| fasttext | cross-entropy | greedy |" in scores[5]
    stages = report.stages_table(weights)
    assert "| learned | cross-entropy | beam k=3 | 0.210 |" in stages
    assert "| learned | SCST (shipped) | beam k=3 | 0.240 |" in stages
    assert "| fasttext | cross-entropy (shipped) | beam k=3 |" in stages
    assert "| fasttext | SCST: no epoch beat cross-entropy on dev, not scored |" in stages
    training = report.training_table(weights)
    assert "| learned | 256-d, trainable | 12 (9) | 45 | 10.0 min | 2.410 | 3 (2) | 25.0 min | 0.520 → 0.570 | SCST |" \
        in training
    assert "| fasttext | 256-d, frozen | 12 (9) | 45 | 10.0 min | 2.410 | 3 (0) | 25.0 min | 0.520 → 0.520 | " \
           "cross-entropy |" in training
    summary = report.run_summary(weights)
    assert "learned: cross-entropy 600 s, SCST 1500 s, evaluation 200 s (2300 s)" in summary
    # 90 s of features + 3 x (600 s + 1500 s) of training; the rest of the 120 min is evaluation
    assert summary.endswith("120.0 min in all, 106.5 min of it training (features and both stages, without evaluation).")


def test_a_run_without_scst_shows_no_scst_time(tmp_path):
    weights = _weights(tmp_path, staged=True)
    summary = json.loads((weights / "training_summary.json").read_text())
    for v in summary["variants"]:
        v.update(scst_seconds=0.0, scst_epochs=0)
    (weights / "training_summary.json").write_text(json.dumps(summary))
    line = report.run_summary(weights)
    assert "learned: cross-entropy 600 s, evaluation 200 s (2300 s)" in line and "SCST" not in line


def test_old_single_stage_bundles_are_still_read(tmp_path):
    weights = _weights(tmp_path, staged=False)
    assert "| learned | cross-entropy | beam k=3 | " in report.scores_table(weights)
    assert report.stages_table(weights) == ""
    assert "| learned | 256-d, trainable | 12 (9) | 45 | 10.0 min | 2.410 | — | — | — | cross-entropy |" \
        in report.training_table(weights)
    assert "learned 522 s (each with its word vectors and evaluation)" in report.run_summary(weights)


class FakeCaptioner(SimpleNamespace):
    pass


def _models(weights: Path, source: Path | None = None):
    captioners = {v: FakeCaptioner(config=json.loads((weights / v / "config.json").read_text()),
                                   metrics=json.loads((weights / v / "metrics.json").read_text()))
                  for v in ("learned", "fasttext", "word2vec")}
    ensemble = {"scores": _scores(0.05)}
    return SimpleNamespace(captioners=captioners, source=source,
                           test_scores=lambda: {**{v: c.metrics for v, c in captioners.items()}, "ensemble": ensemble})


def test_about_tab_shows_both_stages(tmp_path):
    models = _models(_weights(tmp_path, staged=True))
    headers, rows = ui.results_table(models)
    assert headers[:3] == ["model", "stage", "decoding"]
    stages = {(r[0], r[1]) for r in rows}
    assert {("Learned", "cross-entropy"), ("Learned", "SCST (shipped)"), ("FastText", "cross-entropy (shipped)"),
            ("Ensemble", "the shipped models")} <= stages
    assert ("FastText", "SCST") not in stages and len(rows) == 3 * 2 + 3 + 3 * 2 + 3
    text = ui.variant_markdown("learned", models.captioners["learned"].config)
    assert "self-critical fine-tuning (reward CIDEr-D): 3 epochs (best 2, dev CIDEr-D 0.520 → 0.570), 25 min" in text
    assert "ships the fine-tuned (SCST) weights" in text
    assert "no SCST epoch beat them" in ui.variant_markdown("fasttext", models.captioners["fasttext"].config)
    assert "Training, in two stages" in ui.about_intro(models)


def test_about_tab_reads_old_bundles(tmp_path):
    models = _models(_weights(tmp_path, staged=False))
    headers, rows = ui.results_table(models)
    assert {r[1] for r in rows if r[0] == "Learned"} == {"cross-entropy"}
    assert "self-critical" not in ui.variant_markdown("learned", models.captioners["learned"].config)
    assert "Training, in two stages" not in ui.about_intro(models)


# -- the multi-seed results -----------------------------------------------------------------------
def _comparison(metric, a, b, low, high, p):
    return asdict(Comparison(metric, a, b, a - b, low, high, p, 0.95, 1000))


def _seed_runs(folder: Path) -> Path:
    runs = []
    for variant, base in (("learned", 0.50), ("fasttext", 0.49), ("word2vec", 0.51)):
        for seed, shift in ((0, 0.0), (1, 0.01), (2, -0.01)):
            scores = {s: {"BLEU-4": 0.2 + shift / 2, "METEOR": 0.2, "CIDEr": base + shift} for s in ("greedy", "beam3")}
            runs.append({"variant": variant, "seed": seed, "shipped_bundle": seed == 0, "shipped_stage": "scst",
                         "scores": scores, "stages": {"cross_entropy": {"beam3": {"BLEU-4": 0.19, "METEOR": 0.19,
                                                                                  "CIDEr": base - 0.03}},
                                                      "scst": {"beam3": scores["beam3"]} if seed else None},
                         "fine_tuning": {"best_epoch": 1 if seed else 0, "dev_cider": [0.5, 0.52]},
                         "diversity": {"beam3": {"types": 400 + seed, "ttr1": 0.04, "ttr2": 0.11, "novelty": 0.85,
                                                 "coverage": 0.16, "loc": 0.58}},
                         "captions": {"greedy": ["a dog"], "beam3": ["a dog"]}})
    pairs = [{"a": "learned", "b": "fasttext", "CIDEr": _comparison("CIDEr", 0.5, 0.49, -0.01, 0.03, 0.31),
              "BLEU-4": _comparison("BLEU-4", 0.2, 0.2, -0.01, 0.01, 0.9)},
             {"a": "learned", "b": "word2vec", "CIDEr": _comparison("CIDEr", 0.5, 0.51, -0.03, 0.01, 0.4),
              "BLEU-4": _comparison("BLEU-4", 0.2, 0.2, -0.01, 0.01, 0.9)},
             {"a": "fasttext", "b": "word2vec", "CIDEr": _comparison("CIDEr", 0.49, 0.51, -0.035, -0.005, 0.01),
              "BLEU-4": _comparison("BLEU-4", 0.2, 0.2, -0.01, 0.01, 0.9)}]
    results = {"format": 1, "recipe": {}, "embeddings": {}, "split": "test", "images": ["x.jpg"], "runs": runs,
               "significance": {"resamples": 1000, "seed": 0, "confidence": 0.95,
                                "seeds": {v: [0, 1, 2] for v in ("learned", "fasttext", "word2vec")},
                                "settings": {"beam3": {"pairs": pairs}}}}
    path = folder / "seed_runs.json"
    path.write_text(json.dumps(results))
    return path


def test_mean_and_standard_deviation():
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_sd([0.5]) == (0.5, None)
    assert format_mean_sd([0.19, 0.2, 0.21]) == "0.200 ± 0.010"
    assert format_mean_sd([0.5]) == "0.500" and format_mean_sd([None]) == "–"
    assert format_mean_sd([0.85, 0.86], ".1%") == "85.5% ± 0.7%"


def test_report_prints_the_seed_tables(tmp_path, capsys):
    results = read_seed_runs(_seed_runs(tmp_path))
    table = report.seeds_table(results).splitlines()
    assert table[0] == ("| model | decoding | seeds | BLEU-4 | METEOR | CIDEr | types | TTR1 | TTR2 | novel | coverage "
                        "| Loc5 |")
    assert table[3] == ("| learned | beam k=3 | 3 (0, 1, 2) | 0.200 ± 0.005 | 0.200 ± 0.000 | 0.500 ± 0.010 | 401 ± 1 | "
                        "0.040 ± 0.000 | 0.110 ± 0.000 | 85.0% ± 0.0% | 16.0% ± 0.0% | 0.580 ± 0.000 |")
    assert table[2].startswith("| learned | greedy | 3 (0, 1, 2) | 0.200 ± 0.005 |") and table[2].endswith("| – |")
    assert len(table) == 2 + 3 * 2
    headers, rows = stage_rows(results, ["beam3"])
    assert ["learned", "cross-entropy", "beam k=3", "3 (0, 1, 2)", "0.190 ± 0.000", "0.190 ± 0.000",
            "0.470 ± 0.000"] in rows
    assert ["learned", "SCST", "beam k=3", "2 (1, 2)", "0.200 ± 0.007", "0.200 ± 0.000", "0.500 ± 0.014"] in rows
    report.print_seeds(tmp_path / "seed_runs.json")
    out = capsys.readouterr().out
    assert "| beam k=3, 3 seeds | ΔCIDEr-D [95% CI] |" in out
    assert "| fasttext − word2vec | -0.020 [-0.035, -0.005] | 0.010 | yes |" in out
    assert "| learned | 0 (shipped bundle when recorded) | SCST | 0.500 (0) | 0.200 | 0.500 | 0.200 | 0.500 |" in out
    assert "| learned | 1 | SCST | 0.520 (1) | 0.205 | 0.510 | 0.205 | 0.510 |" in out
    assert "Each training stage across the seeds" in out
    report.print_seeds(tmp_path / "absent.json")
    assert capsys.readouterr().out == ""


def test_report_without_fine_tuning_leaves_out_the_stage_columns(tmp_path, capsys):
    path = _seed_runs(tmp_path)
    results = json.loads(path.read_text())
    for run in results["runs"]:
        run.update(fine_tuning=None, stages=None, shipped_stage="cross_entropy")
    path.write_text(json.dumps(results))
    report.print_seeds(path)
    out = capsys.readouterr().out
    assert "Each training stage" not in out and "dev CIDEr-D" not in out
    assert "| learned | 0 (shipped bundle when recorded) | cross-entropy | 0.200 | 0.500 | 0.200 | 0.500 |" in out


def test_about_tab_shows_the_seeds_with_error_bars(tmp_path):
    weights = _weights(tmp_path / "weights", staged=True)
    _seed_runs(weights)
    models = _models(weights, source=weights)
    text = ui.seeds_markdown(models)
    assert "| learned | beam k=3 | 3 (0, 1, 2) | 0.200 ± 0.005 |" in text and "| fasttext − word2vec |" in text
    assert seeds_rows(read_seed_runs(weights), ["beam3"])[1][0][3] == "0.200 ± 0.005"
    fig = ui.seeds_figure(models)
    assert len(fig.axes) == 4  # greedy, beam 3; BLEU-4, CIDEr
    bleu, cider = fig.axes[2:4]
    assert bleu.get_title() == "BLEU-4, beam 3" and cider.get_title() == "CIDEr, beam 3"
    assert len(cider.containers) == 3  # one error bar per model
    bar = cider.containers[0]
    (segments,) = [c for c in bar.lines[2]]
    low, high = segments.get_segments()[0][:, 1]
    assert (low, high) == pytest.approx((0.49, 0.51))  # mean 0.50 ± sd 0.01
    assert sum(len(line.get_xdata()) for line in cider.lines if line.get_linestyle() == "None") >= 9  # every seed
    fig.savefig(tmp_path / "seeds.png")


@pytest.mark.parametrize("source", [None, "empty"])
def test_about_tab_without_seed_results_says_so(tmp_path, source):
    weights = _weights(tmp_path / "weights", staged=True)
    models = _models(weights, source=None if source is None else weights)
    assert "No multi-seed results here" in ui.seeds_markdown(models)
    assert ui.seeds_figure(models) is None


def test_a_later_fine_tuning_run_is_added_to_the_summary(tmp_path):
    weights = _weights(tmp_path, staged=True)
    assert "Then fine-tuned" not in report.run_summary(weights)
    (weights / "fine_tuning_summary.json").write_text(json.dumps({
        "from_bundles": "weights", "features_seconds": 3.0, "total_seconds": 1800.0,
        "variants": [{"variant": "learned", "cross_entropy_seconds": 1.0, "scst_seconds": 1500.0,
                      "evaluate_seconds": 90.0, "scst_epochs": 8, "scst_epoch_seconds": 1500.0}]}))
    line = report.run_summary(weights)
    assert line.startswith("Training run (training_summary.json)")
    assert line.endswith("Then fine-tuned (fine_tuning_summary.json, --from-bundles weights): learned: SCST 1500 s "
                         "(8 epochs), evaluation 90 s (evaluation scores both stages); 30.0 min in all.")


# -- the diversity table: bundles of any corpus, the human row over the images the bundles captioned -----------
CAPTIONS = ["a dog runs on the grass", "a brown dog runs", "the dog runs on grass", "a dog on the grass",
            "dog runs outside", "a man rides a red bike", "a man on a bike", "the man rides a bike",
            "a man rides", "man on a bike in the street"]


def _coco_corpus(folder: Path) -> list[str]:
    """COCO caption files (train2017: 4 images, val2017: 4, halved into dev and test) and their
    (empty) image files under ``folder``; returns the report's corpus options for them."""
    for split, names in (("train2017", ["t1.jpg", "t2.jpg", "t3.jpg", "t4.jpg"]),
                         ("val2017", ["v1.jpg", "v2.jpg", "v3.jpg", "v4.jpg"])):
        (folder / "images" / split).mkdir(parents=True)
        images, annotations = [], []
        for number, name in enumerate(names):
            (folder / "images" / split / name).write_bytes(b"x")
            images.append({"id": number, "file_name": name})
            first = 5 * (number % 2)  # dogs and men by turns
            annotations += [{"id": len(annotations), "image_id": number, "caption": caption}
                            for caption in CAPTIONS[first:first + 5]]
        (folder / f"captions_{split}.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    return ["--captions", str(folder / "captions_train2017.json"), str(folder / "captions_val2017.json"),
            "--images", str(folder / "images")]


def _captioned(weights: Path, images: list[str]) -> Path:
    """A learned bundle's files, as training.train writes them, that captioned ``images``."""
    bundle = weights / "learned"
    bundle.mkdir(parents=True)
    (bundle / "metrics.json").write_text(json.dumps({**_metrics(staged=False), "images": len(images)}))
    words = sorted({w for c in CAPTIONS for w in c.split()})
    (bundle / "vocab.json").write_text(json.dumps({"words": ["<pad>", "<unk>", "<start>", "<end>", *words]}))
    (bundle / "samples.json").write_text(json.dumps({"greedy": {image: "a dog runs on the grass" for image in images}}))
    return weights


def test_report_reads_bundles_of_another_corpus(flickr8k, tmp_path, capsys):
    """Bundles trained on COCO caption files: with Flickr8k (the default corpus) the report says in
    one line that their images are not in it and leaves the diversity table out; given the corpus
    options they were trained with, it prints the table."""
    corpus_options = _coco_corpus(tmp_path / "coco")
    weights = _captioned(tmp_path / "weights", ["val2017/v3.jpg", "val2017/v4.jpg"])

    assert report.main(["--weights", str(weights), "--data", str(flickr8k)]) == 0
    out = capsys.readouterr().out
    assert ("\nNo diversity table: 2 of the 2 images the bundles captioned (such as val2017/v3.jpg) are not in this "
            "corpus's test split; give the corpus options they were trained with (--data, --captions, --images)\n"
            in out)
    assert "| learned | cross-entropy | greedy |" in out  # the other tables are there

    assert report.main(["--weights", str(weights), *corpus_options]) == 0
    out = capsys.readouterr().out
    assert "No diversity table" not in out
    assert "| learned | greedy | 6 |" in out and "| human (reference 1) | — |" in out  # 6 words in its captions

    assert report.main(["--weights", str(weights), "--data", str(tmp_path / "nowhere")]) == 0  # no corpus at all
    assert "\nNo diversity or significance table: captions file not found: " in capsys.readouterr().out


def test_the_human_row_covers_the_images_the_bundles_captioned(tmp_path):
    """A run with --limit-images captions the first N test images: the human ceiling is scored on
    those, not on the whole test split."""
    from captioning.corpus import load_corpus
    from captioning.diversity import diversity, held_out_references

    options = _coco_corpus(tmp_path / "coco")
    corpus = load_corpus(tmp_path / "coco", captions_file=options[1:3], image_dir=options[4])
    first = corpus.split("test")[:1]
    assert len(corpus.split("test")) == 2 and first  # the other test image has other captions
    weights = _captioned(tmp_path / "weights", first)
    held, others = held_out_references(corpus.captions_of(first), 0)
    vocabulary = sorted({w for c in CAPTIONS for w in c.split()})
    human = diversity(held, others, corpus.split_captions("train"), vocabulary)
    expected = report._diversity_row("human (reference 1)", "—", {**human, "loc": None}, human["loc"])
    assert report.diversity_table(weights, corpus).splitlines()[-1] == expected
