"""training.seeds end to end on a tiny corpus: several seeds per variant recorded in one results
file, resumable (an interrupted run continues, a finished one trains nothing), one recipe per
file, the shipped bundle standing for seed 0, and the report reading the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from captioning.seed_runs import read_seed_runs, seeds_rows, stage_rows, stored_comparisons
from training import seeds

VARIANTS = ["learned", "word2vec"]  # two variants: enough for the pairwise comparison, cheaper than three
# Greedy only and no METEOR: its Java scorer (~6 s a start) was the slowest part of a tiny run.
TRAIN = ["--limit-images", "40", "--epochs", "2", "--embedding-dim", "32", "--units", "32", "--min-count", "2",
         "--scst-epochs", "1", "--settings", "greedy", "--no-meteor"]


class Trainer:
    """training.train's main, counted; ``interrupt_at``: the call that raises KeyboardInterrupt
    instead (a run stopped between two trainings)."""

    def __init__(self, interrupt_at: int | None = None):
        self.calls: list[list[str]] = []
        self.interrupt_at = interrupt_at
        self.real = seeds.train_main

    def __call__(self, argv):
        self.calls.append(argv)
        if len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        return self.real(argv)

    def trained(self) -> list[tuple[str, str]]:
        return [(a[a.index("--variant") + 1], a[a.index("--seed") + 1]) for a in self.calls]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("seeds")


def argv(work: Path, flickr8k: Path, *own: str, results: str = "seed_runs.json", extra=()) -> list[str]:
    return [*own, "--results", str(work / results), "--out", str(work / "runs"), "--resamples", "500", "--",
            "--data", str(flickr8k), *TRAIN, *extra, "--cache-dir", str(work / "cache")]


def invoke(work, flickr8k, *own, interrupt_at=None, **kwargs) -> tuple[int | None, Trainer]:
    trainer = Trainer(interrupt_at)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(seeds, "train_main", trainer)
        try:
            code = seeds.main(argv(work, flickr8k, *own, **kwargs))
        except KeyboardInterrupt:
            code = None
    return code, trainer


@pytest.fixture(scope="module")
def recorded(work, flickr8k) -> dict:
    """Three tiny runs in two sittings: the first (seeds 0 and 1 of both variants, seed by seed)
    stops as its third training begins; the second (seeds 0 and 1 of learned) trains what is missing."""
    code, first = invoke(work, flickr8k, "--seeds", "0", "1", "--variant", *VARIANTS, "--no-shipped", interrupt_at=3)
    assert code is None and first.trained() == [("learned", "0"), ("word2vec", "0"), ("learned", "1")]
    after_first = read_seed_runs(work / "seed_runs.json")
    own = ("--seeds", "0", "1", "--variant", "learned", "--no-shipped")
    code, second = invoke(work, flickr8k, *own)
    assert code == 0
    return {"own": own, "after_first": after_first, "second": second,
            "results": read_seed_runs(work / "seed_runs.json")}


def test_interrupted_run_continues_where_it_stopped(recorded):
    first = recorded["after_first"]
    assert [(r["variant"], r["seed"]) for r in first["runs"]] == [("learned", 0), ("word2vec", 0)]
    # the third training was interrupted as it began: the second sitting trains only what is missing
    assert recorded["second"].trained() == [("learned", "1")]
    results = recorded["results"]
    assert [(r["variant"], r["seed"]) for r in results["runs"]] == [("learned", 0), ("learned", 1), ("word2vec", 0)]
    assert results["runs"][0] == first["runs"][0] | {"recorded": results["runs"][0]["recorded"]}


def test_every_run_is_recorded_with_scores_stages_captions_and_recipe(recorded, work):
    results = recorded["results"]
    assert results["recipe"]["training"]["epochs"] == 2 and results["recipe"]["fine_tuning"]["epochs"] == 1
    assert results["recipe"]["decoder"]["units"] == 32 and results["recipe"]["settings"] == ["greedy"]
    assert results["recipe"]["data"]["test_images"] == 40 == len(results["images"])
    assert set(results["embeddings"]) == set(VARIANTS)
    for run in results["runs"]:
        bundle = work / "runs" / f"seed-{run['seed']}" / run["variant"]
        metrics = json.loads((bundle / "metrics.json").read_text())
        samples = json.loads((bundle / "samples.json").read_text())
        assert run["scores"] == metrics["scores"] and run["stages"] == metrics["stages"]
        assert run["shipped_stage"] == metrics["shipped_stage"] and not run["shipped_bundle"]
        assert set(run["captions"]) == {"greedy"}
        assert run["captions"]["greedy"] == [samples["greedy"][i] for i in results["images"]]
        assert set(run["diversity"]["greedy"]) >= {"types", "ttr1", "ttr2", "novelty", "coverage", "loc"}
        assert run["seconds"]["cross_entropy"] > 0 and run["seconds"]["scst"] > 0 and run["seconds"]["evaluate"] > 0
        assert json.loads((bundle / "config.json").read_text())["training"]["seed"] == run["seed"]
    # different seeds, different models
    losses = [json.loads((work / "runs" / f"seed-{s}" / "learned" / "history.json").read_text())["loss"] for s in (0, 1)]
    assert losses[0] != losses[1]


def test_the_comparison_across_seeds_is_stored_and_reproducible(recorded, work, flickr8k):
    results = recorded["results"]
    significance = results["significance"]
    assert list(significance["settings"]) == ["greedy"]
    assert significance["seeds"] == {"learned": [0, 1], "word2vec": [0]}
    ((a, b, comparison),) = stored_comparisons(results)["greedy"]
    assert (a, b) == ("learned", "word2vec")
    for metric, c in comparison.items():
        learned = [r["scores"]["greedy"][metric] for r in results["runs"] if r["variant"] == "learned"]
        assert c.a == pytest.approx(sum(learned) / 2, abs=6e-4) and c.low <= c.difference <= c.high
    # recomputed from the stored captions alone, it is the same
    targs = seeds.train_parse_args(seeds.train_argv(seeds.parse_args(argv(work, flickr8k, "--refresh")), "learned", 0))
    corpus = seeds.limit_corpus(seeds.corpus_from_args(targs), 40)
    context = seeds.Context(work / "seed_runs.json", corpus, resamples=500)
    assert seeds.compute_significance(results, context) == significance


def test_a_finished_run_trains_nothing(recorded, work, flickr8k):
    path = work / "seed_runs.json"
    before = path.read_bytes()
    code, trainer = invoke(work, flickr8k, *recorded["own"])
    assert code == 0 and trainer.calls == [] and path.read_bytes() == before


def test_a_trained_but_unrecorded_run_is_recorded_without_training(recorded, work, flickr8k):
    path = work / "seed_runs.json"
    results = read_seed_runs(path)
    results["runs"] = [r for r in results["runs"] if (r["variant"], r["seed"]) != ("learned", 1)]
    path.write_text(json.dumps(results))
    code, trainer = invoke(work, flickr8k, *recorded["own"])
    assert code == 0 and trainer.calls == []
    again = read_seed_runs(path)
    strip = lambda runs: [{k: v for k, v in r.items() if k != "recorded"} for r in runs]  # noqa: E731
    assert strip(again["runs"]) == strip(recorded["results"]["runs"])
    assert again["significance"] == recorded["results"]["significance"]


def test_refuses_to_mix_recipes(recorded, work, flickr8k, capsys):
    path = work / "seed_runs.json"
    before = path.read_bytes()
    code, trainer = invoke(work, flickr8k, "--seeds", "2", "--variant", "learned", extra=["--epochs", "3"])
    assert code == 2 and trainer.calls == [] and path.read_bytes() == before
    err = capsys.readouterr().err
    assert "refusing to mix recipes" in err and "training.epochs: 2 there, 3 here" in err


def test_a_record_from_before_min_delta_reads_as_what_it_ran(recorded, work, flickr8k, capsys):
    """Runs recorded before stage 1 had min_delta stopped on any fall of the dev loss: the record reads
    as min_delta 0, so the default (0.005) is refused by name and --min-delta 0 is the same recipe."""
    older = json.loads((work / "seed_runs.json").read_text(encoding="utf-8"))
    del older["recipe"]["training"]["min_delta"]
    (work / "older.json").write_text(json.dumps(older), encoding="utf-8")
    before = (work / "older.json").read_bytes()
    code, trainer = invoke(work, flickr8k, "--seeds", "2", "--variant", "learned", results="older.json")
    assert code == 2 and trainer.calls == [] and (work / "older.json").read_bytes() == before
    assert "training.min_delta: 0.0 there, 0.005 here" in capsys.readouterr().err
    as_it_ran = seeds.training_recipe(older["recipe"]["training"])
    assert as_it_ran == {**older["recipe"]["training"], "min_delta": 0.0}
    with_option = seeds.train_settings(seeds.train_parse_args([*TRAIN, "--min-delta", "0"])).to_dict()
    assert seeds.differences({"training": as_it_ran}, {"training": {k: with_option[k] for k in seeds.TRAIN_KEYS}}) == []


def test_the_shipped_bundle_stands_for_seed_0(recorded, work, flickr8k, capsys):
    seed0 = work / "runs" / "seed-0"
    code, trainer = invoke(work, flickr8k, "--seeds", "0", "--variant", "learned", "--shipped", str(seed0),
                           results="shipped.json")
    assert code == 0 and trainer.calls == []
    (run,) = read_seed_runs(work / "shipped.json")["runs"]
    assert run["shipped_bundle"] and run["bundle"] == str(seed0 / "learned")
    assert run["scores"] == recorded["results"]["runs"][0]["scores"]
    # a bundle of another seed cannot stand for seed 0, nor one of another recipe
    code, trainer = invoke(work, flickr8k, "--seeds", "0", "--variant", "learned", "--shipped",
                           str(work / "runs" / "seed-1"), results="other.json")
    assert code == 2 and trainer.calls == [] and "trained with seed 1, not 0" in capsys.readouterr().err
    code, trainer = invoke(work, flickr8k, "--seeds", "0", "--variant", "learned", "--shipped", str(seed0),
                           results="other.json", extra=["--units", "16"])
    err = capsys.readouterr().err
    assert code == 2 and trainer.calls == [] and "another recipe" in err and "decoder.units: 32 there, 16 here" in err
    assert not (work / "other.json").exists()


def test_a_setting_merged_in_after_training_leaves_the_shipped_bundle_of_the_recipe(recorded, work, flickr8k):
    """training.evaluate --settings consensus3 --merge adds a setting training.train cannot score: the
    shipped bundle still stands for seed 0, and its run keeps the recipe's settings alone."""
    shipped = work / "merged"
    shutil.copytree(work / "runs" / "seed-0" / "learned", shipped / "learned")
    metrics = json.loads((shipped / "learned" / "metrics.json").read_text())
    metrics["scores"]["consensus3"] = metrics["scores"]["greedy"]
    (shipped / "learned" / "metrics.json").write_text(json.dumps(metrics))
    code, trainer = invoke(work, flickr8k, "--seeds", "0", "--variant", "learned", "--shipped", str(shipped),
                           results="merged.json")
    assert code == 0 and trainer.calls == []
    results = read_seed_runs(work / "merged.json")
    assert results["recipe"]["settings"] == ["greedy"] and list(results["runs"][0]["scores"]) == ["greedy"]


def test_a_bundle_of_another_recipe_left_in_out_is_refused(recorded, work, flickr8k, capsys):
    """A new results file, --out holding seed 1 trained with --units 32: asked for --units 16, it says so
    in one line instead of recording that bundle as this recipe's run."""
    code, trainer = invoke(work, flickr8k, "--seeds", "1", "--variant", "learned", results="units16.json",
                           extra=["--units", "16"])
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert code == 2 and trainer.calls == [] and not (work / "units16.json").exists()
    assert "decoder.units: 32 there, 16 here" in error and "--out" in error


def test_a_score_some_runs_lack_is_averaged_over_the_others_with_their_n():
    """METEOR of one seed scored with --no-meteor and one without: not one seed's value under 2 seeds."""
    runs = [{"variant": "learned", "seed": seed, "scores": {"greedy": {"BLEU-4": 0.2, "CIDEr": 0.5, **meteor}},
             "stages": None, "diversity": {}, "captions": {"greedy": []}}
            for seed, meteor in ((0, {"METEOR": 0.19}), (1, {}))]
    results = {"format": 1, "recipe": {}, "runs": runs}
    (row,) = seeds_rows(results)[1]
    assert row[2:6] == ["2 (0, 1)", "0.200 ± 0.000", "0.190 (n=1)", "0.500 ± 0.000"]
    (row,) = stage_rows(results)[1]
    assert row[3:7] == ["2 (0, 1)", "0.200 ± 0.000", "0.190 (n=1)", "0.500 ± 0.000"]


def test_refresh_without_recorded_runs_is_refused(work, flickr8k, capsys):
    code, _ = invoke(work, flickr8k, "--refresh", results="absent.json")
    assert code == 2 and not (work / "absent.json").exists()
    assert "nothing to refresh" in capsys.readouterr().err


def test_options_it_sets_itself_are_refused(work, flickr8k):
    with pytest.raises(SystemExit):
        seeds.parse_args(["--seeds", "1", "--", "--seed", "3"])
    with pytest.raises(SystemExit):
        seeds.parse_args(["--", "--epochs", "2"])  # no --seeds, no --refresh


def test_report_reads_the_results(recorded, work, flickr8k, capsys):
    from training import report

    weights = work / "weights"
    for variant in VARIANTS:
        shutil.copytree(work / "runs" / "seed-0" / variant, weights / variant)
    shutil.copy(work / "seed_runs.json", weights / "seed_runs.json")
    assert report.main(["--weights", str(weights), "--data", str(flickr8k)]) == 0
    out = capsys.readouterr().out
    seeds_table = report.seeds_table(recorded["results"])
    assert seeds_table in out
    rows = seeds_table.splitlines()
    assert rows[0].startswith("| model | decoding | seeds | BLEU-4 | METEOR | CIDEr | types |")
    assert rows[2].startswith("| learned | greedy | 2 (0, 1) | ") and " ± " in rows[2]
    assert rows[3].startswith("| word2vec | greedy | 1 (0) | ")
    assert "| greedy, 1/2 seeds | ΔCIDEr-D [95% CI] |" in out and "| learned − word2vec | " in out
    assert "| learned | cross-entropy | greedy | 2 (0, 1) |" in out
    assert "| learned | 0 | " in out and "| word2vec | 0 | " in out
