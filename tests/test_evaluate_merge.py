"""What ``training.evaluate`` and ``training.evaluate_ensemble`` write, and where: ``--merge`` adds
scores only to a record of the same split, images and members; a rewrite keeps what describes the
bundle (its shipped stage, both stages' scores); another split never replaces the test split's
files; consensus without its references ends in one line.  Tiny bundles, a few images each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import small_split_files
from training.evaluate import write_scores


@pytest.fixture
def data_args(flickr8k, tiny_weights, tmp_path, encoder, monkeypatch) -> list[str]:
    """The corpus options of a run on a few of the tiny bundles' images, with their cached features
    (only read: those images are among the ones training cached); the session's encoder is reused."""
    import training.evaluate
    from captioning import Captioner

    class SharedEncoder:
        @staticmethod
        def load(path):
            return Captioner.load(path, encoder=encoder)

    monkeypatch.setattr(training.evaluate, "Captioner", SharedEncoder)
    return ["--data", str(flickr8k), "--split-files", *small_split_files(flickr8k, tmp_path, sizes=(12, 4, 6)),
            "--cache-dir", str(tiny_weights.parent / "cache")]


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


ENSEMBLE_RECORD = {"split": "test", "images": 1000, "date": "2026-12-07", "members": ["learned", "fasttext", "word2vec"],
                   "scores": {"greedy": {"CIDEr": 0.6}, "beam3": {"CIDEr": 0.7}}}


# -- write_scores: what --merge may join ------------------------------------------------------------
@pytest.mark.parametrize("change, differs", [({"images": 30}, "images 1000, this run images 30"),
                                             ({"members": ["learned", "fasttext"]}, "members"),
                                             ({"split": "dev"}, "split test, this run split dev")])
def test_merge_refuses_scores_of_other_images_members_or_split(tmp_path, change, differs):
    metrics_path, samples_path = tmp_path / "ensemble_metrics.json", tmp_path / "ensemble_samples.json"
    write_scores(metrics_path, samples_path, ENSEMBLE_RECORD, {"greedy": {}, "beam3": {}})
    before = metrics_path.read_text()
    new = {**ENSEMBLE_RECORD, "scores": {"greedy": {"CIDEr": 0.1}}, **change}
    with pytest.raises(ValueError, match=differs):  # training.evaluate.MergeRefused
        write_scores(metrics_path, samples_path, new, {"greedy": {}}, merge=True)
    assert metrics_path.read_text() == before


def test_merge_takes_the_same_members_in_another_order(tmp_path):
    metrics_path, samples_path = tmp_path / "ensemble_metrics.json", tmp_path / "ensemble_samples.json"
    write_scores(metrics_path, samples_path, ENSEMBLE_RECORD, {"greedy": {}, "beam3": {}})
    new = {**ENSEMBLE_RECORD, "members": ["word2vec", "learned", "fasttext"], "scores": {"consensus3": {"CIDEr": 0.8}}}
    write_scores(metrics_path, samples_path, new, {"consensus3": {}}, merge=True)
    merged = _read(metrics_path)
    assert set(merged["scores"]) == {"greedy", "beam3", "consensus3"} and merged["members"] == ENSEMBLE_RECORD["members"]


def test_another_split_of_a_bundle_goes_beside_the_test_files(tmp_path):
    from training.evaluate import output_paths

    assert output_paths(tmp_path, "test") == (tmp_path / "metrics.json", tmp_path / "samples.json")
    assert output_paths(tmp_path, "dev") == (tmp_path / "dev_metrics.json", tmp_path / "dev_samples.json")


# -- the commands, on tiny bundles ------------------------------------------------------------------
def _fine_tuned(bundle: Path) -> dict:
    """Make the bundle look like one training.train fine-tuned and shipped at its SCST stage."""
    config = _read(bundle / "config.json")
    (bundle / "config.json").write_text(json.dumps({**config, "shipped_stage": "scst"}))
    metrics = _read(bundle / "metrics.json")
    stages = {"cross_entropy": {"greedy": {"CIDEr": 0.1}}, "scst": metrics["scores"]}
    (bundle / "metrics.json").write_text(json.dumps({**metrics, "shipped_stage": "scst", "stages": stages}))
    return stages


def test_rewrite_keeps_the_shipped_stage_and_both_stages_scores(tiny_bundle_copy, data_args):
    from training.evaluate import main as evaluate_main

    stages = _fine_tuned(tiny_bundle_copy)
    code = evaluate_main(["--model", str(tiny_bundle_copy), *data_args, "--settings", "greedy"])
    assert code == 0
    metrics = _read(tiny_bundle_copy / "metrics.json")
    assert metrics["images"] == 6 and set(metrics["scores"]) == {"greedy"}  # rewritten
    assert metrics["shipped_stage"] == "scst" and metrics["stages"] == stages


def test_dev_split_does_not_replace_the_test_files(tiny_bundle_copy, data_args):
    from training.evaluate import main as evaluate_main

    test_files = {name: (tiny_bundle_copy / name).read_text() for name in ("metrics.json", "samples.json")}
    code = evaluate_main(["--model", str(tiny_bundle_copy), *data_args, "--split", "dev",
                          "--settings", "greedy"])
    assert code == 0
    assert {name: (tiny_bundle_copy / name).read_text() for name in test_files} == test_files
    dev = _read(tiny_bundle_copy / "dev_metrics.json")
    assert dev["split"] == "dev" and dev["images"] == 4
    assert len(_read(tiny_bundle_copy / "dev_samples.json")["greedy"]) == 4


def test_merge_of_other_images_is_refused_in_one_line(tiny_bundle_copy, data_args, capsys):
    from training.evaluate import main as evaluate_main

    before = (tiny_bundle_copy / "metrics.json").read_text()  # training scored the tiny test split's 40 images
    code = evaluate_main(["--model", str(tiny_bundle_copy), *data_args, "--settings", "beam3",
                          "--merge"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: not merged:") and "images 40, this run images 6" in err
    assert (tiny_bundle_copy / "metrics.json").read_text() == before


def test_consensus_without_its_references_is_one_line(tiny_bundle_copy, data_args, capsys):
    from training.evaluate import main as evaluate_main

    code = evaluate_main(["--model", str(tiny_bundle_copy), *data_args, "--settings", "consensus3"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: consensus3 needs familiarity.h5 and neighbour_captions.json")
    assert "python -m training.build_familiarity" in err


def test_ensemble_merge_of_other_members_and_images_is_refused(tiny_weights, data_args, tmp_path, capsys):
    from training.evaluate_ensemble import main as ensemble_main

    weights = Path(shutil.copytree(tiny_weights, tmp_path / "weights"))
    metrics_path = weights / "ensemble_metrics.json"
    write_scores(metrics_path, weights / "ensemble_samples.json", ENSEMBLE_RECORD, {"greedy": {}, "beam3": {}})
    before = metrics_path.read_text()
    code = ensemble_main(["--weights", str(weights), "--models", "learned", "fasttext", *data_args,
                          "--settings", "greedy", "--merge"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: not merged:") and "images 1000" in err and "members" in err
    assert metrics_path.read_text() == before
