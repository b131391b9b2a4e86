"""The committed models (weights/) keep their quality, and the README reports it truthfully.

* On the first 40 Flickr8k test images, each committed model reproduces exactly the captions
  recorded in its ``samples.json`` (written by ``training.evaluate`` when the bundle was made),
  greedy, beam k=3 and beam k=3 re-ranked by consensus (with the committed consensus reference).  Any change to the encoder, the image preparation, the vocabulary, the
  weights or the decoding changes some of these 240 captions.
* Each ``metrics.json`` holds the scores the README claims (beam k=3: BLEU-4 >= 0.21 and
  CIDEr >= 0.54), on the full 1,000-image test split.
* The README's results tables are exactly what ``python -m training.report`` prints.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from captioning.scst import ScstSettings
from captioning.training import TrainSettings

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights"
VARIANTS = ("learned", "fasttext", "word2vec")
REGRESSION_IMAGES = 40
# setting in samples.json / metrics.json -> (method, beam width), as training.evaluate decodes
SETTINGS = {"greedy": ("greedy", 1), "beam3": ("beam", 3), "consensus3": ("consensus", 3)}
# What the README's "Results" section claims for every model with beam k=3.
README_FLOOR = {"BLEU-4": 0.21, "CIDEr": 0.54}


def _json(path: Path):
    assert path.is_file(), f"{path} is missing: the committed bundles are part of the repository"
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def test_split(flickr8k) -> list[str]:
    return (flickr8k / "Flickr8k_text" / "Flickr_8k.testImages.txt").read_text().split()


@pytest.fixture(scope="module")
def regression_features(encoder, flickr8k, test_split):
    """Features of the first test images, encoded in one batch as training.evaluate does."""
    names = test_split[:REGRESSION_IMAGES]
    return names, encoder.encode([flickr8k / "Flicker8k_Dataset" / n for n in names])


@pytest.mark.parametrize("variant", VARIANTS)
def test_committed_model_reproduces_its_samples(variant, encoder, regression_features):
    from captioning import Captioner

    names, features = regression_features
    samples = _json(WEIGHTS / variant / "samples.json")
    captioner = Captioner.load(WEIGHTS / variant, encoder=encoder)
    for setting, (method, width) in SETTINGS.items():
        expected = [samples[setting][name] for name in names]
        got = captioner.caption_features_batch(features, method=method, beam_width=width)
        differ = [(name, want, have) for name, want, have in zip(names, expected, got) if want != have]
        assert not differ, (f"{variant} {setting}: {len(differ)}/{len(names)} captions differ from "
                            f"samples.json, e.g. {differ[:3]}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_photo_file_gives_its_recorded_caption(variant, encoder, flickr8k, test_split):
    """The user's path (a file on disk, Captioner.caption) gives the recorded captions too."""
    from captioning import Captioner

    name = test_split[0]
    samples = _json(WEIGHTS / variant / "samples.json")
    captioner = Captioner.load(WEIGHTS / variant, encoder=encoder)
    photo = flickr8k / "Flicker8k_Dataset" / name
    assert captioner.caption(photo) == samples["greedy"][name]
    assert captioner.caption(photo, method="beam", beam_width=3) == samples["beam3"][name]


@pytest.mark.parametrize("variant", VARIANTS)
def test_metrics_meet_the_readme_claims(variant, test_split):
    metrics = _json(WEIGHTS / variant / "metrics.json")
    samples = _json(WEIGHTS / variant / "samples.json")
    assert metrics["split"] == "test" and metrics["images"] == len(test_split) == 1000
    assert metrics["encoder"] == _json(WEIGHTS / variant / "config.json")["encoder"]
    assert set(metrics["scores"]) == set(samples) == {"greedy", "beam3", "beam5", "consensus3"}
    for setting, captions in samples.items():
        assert sorted(captions) == sorted(test_split), f"{setting}: samples.json must caption every test image"
        assert all(c.strip() for c in captions.values())
    beam3 = metrics["scores"]["beam3"]
    for metric, floor in README_FLOOR.items():
        # The README states scores to 3 decimals.
        assert round(beam3[metric], 3) >= floor, f"{variant} beam k=3 {metric} {beam3[metric]} < README's {floor}"
    for setting, scores in metrics["scores"].items():
        assert 0 < scores["BLEU-4"] <= scores["BLEU-3"] <= scores["BLEU-2"] <= scores["BLEU-1"] <= 1, setting
        assert scores["distinct_captions"] == len(set(samples[setting].values())), setting


def test_readme_floor_is_what_the_readme_says():
    """The floor above is the README's own claim (so neither can move without the other)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    claim = re.search(r"BLEU-4 ≥ ([0-9.]+) and\s+CIDEr ≥ ([0-9.]+) with beam\s+k=3", readme)
    if claim is None:
        pytest.fail("README.md no longer states the beam k=3 floor ('BLEU-4 ≥ x and CIDEr ≥ y with beam k=3'); "
                    "update README_FLOOR in this test with the README's new claim")
    assert (float(claim.group(1)), float(claim.group(2))) == (README_FLOOR["BLEU-4"], README_FLOOR["CIDEr"])


def _markdown_tables(text: str) -> list[str]:
    """Each run of consecutive lines starting with '|', as one block of text."""
    blocks, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line.rstrip())
        elif current:
            blocks.append("\n".join(current))
            current = []
    return blocks


def test_readme_tables_are_what_training_report_prints():
    result = subprocess.run([sys.executable, "-m", "training.report", "--weights", str(WEIGHTS)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    tables = _markdown_tables(result.stdout)
    assert len(tables) >= 2, result.stdout  # the scores and the training table
    scores = tables[0]
    assert scores.count("\n") == 1 + 4 * len(VARIANTS), scores  # header, rule, 4 settings x 3 models
    readme_tables = _markdown_tables((ROOT / "README.md").read_text(encoding="utf-8"))
    for table in tables:
        assert table in readme_tables, (
            f"README.md does not contain this table from `python -m training.report` verbatim:\n{table}")


def test_readme_quotes_the_default_recipe_run_as_recorded():
    """The README's figures for the default recipe's end-to-end run (time, epochs, dev CIDEr-D) are
    what training.report makes of the record in evaluation/default_recipe/."""
    from training import report

    record = ROOT / "evaluation" / "default_recipe"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert report.training_table(record) in _markdown_tables(readme)
    assert report.run_summary(record) in readme.splitlines()
    summary = _json(record / "training_summary.json")
    assert {v["scst_epochs"] for v in summary["variants"]} == {ScstSettings().epochs}  # the default it measured
    scst_defaults = ScstSettings().to_dict()
    for variant in VARIANTS:  # and both stages as the defaults train them now
        config = _json(record / variant / "config.json")
        assert TrainSettings.from_record(config["training"]) == TrainSettings(), variant
        assert {k: config["fine_tuning"][k] for k in scst_defaults} == scst_defaults, variant
