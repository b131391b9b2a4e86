"""captioning.significance: the paired bootstrap over test images, and the one across seeds and images."""

import time

import numpy as np
import pytest

from captioning.significance import (ImageStats, comparison_table, corpus_bleu, paired_bootstrap, pairwise_table,
                                     resample_counts, seed_bootstrap, seed_pairwise, statistics_from_tokenized)


def _synthetic(cider, seed=0, extra_correct=0.0):
    """ImageStats with the given per-image CIDEr and plausible BLEU counts."""
    rng = np.random.default_rng(seed)
    n = len(cider)
    testlen = rng.integers(8, 13, n).astype(float)
    guess = np.column_stack([np.maximum(testlen - k, 0) for k in range(4)])
    share = np.clip(np.array([0.6, 0.4, 0.25, 0.15]) + extra_correct + rng.normal(0, 0.1, (n, 4)), 0, 1)
    correct = np.floor(guess * share)
    return ImageStats(ids=tuple(f"img{i}" for i in range(n)), cider=np.asarray(cider, float), correct=correct,
                      guess=guess, testlen=testlen, reflen=testlen + rng.integers(-1, 2, n))


def test_identical_systems_give_an_interval_around_zero():
    a = _synthetic(np.random.default_rng(1).gamma(2.0, 0.25, 500))
    r = paired_bootstrap(a, a, resamples=2000, seed=0)
    for c in r.values():
        assert c.difference == 0 and c.low <= 0 <= c.high and not c.excludes_zero
        assert c.p_value == 1.0


def test_same_distribution_interval_contains_zero():
    rng = np.random.default_rng(2)
    a = _synthetic(rng.gamma(2.0, 0.25, 1000), seed=3)
    b = _synthetic(rng.gamma(2.0, 0.25, 1000), seed=4)
    r = paired_bootstrap(a, b, resamples=2000, seed=0)
    assert r["CIDEr"].low < 0 < r["CIDEr"].high
    assert r["CIDEr"].p_value > 0.05


def test_clear_gap_excludes_zero():
    rng = np.random.default_rng(5)
    base = rng.gamma(2.0, 0.25, 1000)
    a = _synthetic(base + 0.1 + rng.normal(0, 0.05, 1000), seed=6, extra_correct=0.1)
    b = _synthetic(base, seed=6)
    r = paired_bootstrap(a, b, resamples=2000, seed=0)
    for c in r.values():
        assert c.difference > 0 and c.low > 0 and c.excludes_zero and c.p_value < 0.01
        assert c.low <= c.difference <= c.high


def test_resampling_is_paired():
    """B is A plus a constant per image: every resample's CIDEr difference is that constant.
    Unpaired resampling of a spread-out score would give a wide interval instead."""
    rng = np.random.default_rng(7)
    a = _synthetic(rng.gamma(2.0, 0.5, 800))
    b = ImageStats(a.ids, a.cider - 0.05, a.correct, a.guess, a.testlen, a.reflen)
    r = paired_bootstrap(a, b, resamples=1000, seed=0)
    assert r["CIDEr"].low == pytest.approx(0.05) and r["CIDEr"].high == pytest.approx(0.05)
    assert r["BLEU-4"].low == r["BLEU-4"].high == 0


def test_pairing_is_by_image_id():
    rng = np.random.default_rng(8)
    a = _synthetic(rng.gamma(2.0, 0.5, 300))
    b = ImageStats(a.ids, a.cider - 0.05, a.correct, a.guess, a.testlen, a.reflen)
    order = rng.permutation(len(a))
    shuffled = ImageStats(tuple(np.array(b.ids)[order]), b.cider[order], b.correct[order], b.guess[order],
                          b.testlen[order], b.reflen[order])
    r = paired_bootstrap(a, shuffled, resamples=500, seed=0)
    assert r["CIDEr"].high - r["CIDEr"].low == pytest.approx(0, abs=1e-12)
    with pytest.raises(ValueError):
        paired_bootstrap(a, _synthetic(a.cider[:10]))


def test_deterministic_for_a_seed_and_fast():
    rng = np.random.default_rng(9)
    a, b = _synthetic(rng.gamma(2.0, 0.25, 1000), seed=1), _synthetic(rng.gamma(2.0, 0.25, 1000), seed=2)
    start = time.perf_counter()
    r1 = paired_bootstrap(a, b, resamples=10_000, seed=42)
    assert time.perf_counter() - start < 10  # ~1 s on one core
    assert r1 == paired_bootstrap(a, b, resamples=10_000, seed=42)
    assert r1["CIDEr"].low != paired_bootstrap(a, b, resamples=10_000, seed=43)["CIDEr"].low


def test_resample_counts_draw_n_images_each():
    counts = resample_counts(50, 20, np.random.default_rng(0))
    assert counts.shape == (20, 50) and (counts.sum(1) == 50).all()


def test_per_image_statistics_reproduce_the_coco_scorer():
    """On the full set, the mean per-image CIDEr and corpus_bleu of the summed counts are
    exactly what pycocoevalcap's Cider and Bleu(4) return (tokenized input, no Java)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    gts = {"1": ["a dog runs on the grass", "a brown dog is running", "the dog plays outside"],
           "2": ["a man rides a bike", "a person on a bicycle in the street"],
           "3": ["two children play in the snow", "kids playing in snow", "two kids in the snow"],
           "4": ["a woman sits on a bench", "a lady is sitting on a park bench"]}
    res = {"1": ["a dog runs through the grass"], "2": ["a man rides a bicycle down the street"],
           "3": ["two children in the snow"], "4": ["a woman on a bench"]}
    stats = statistics_from_tokenized(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert stats.corpus()["CIDEr"] == pytest.approx(cider, abs=1e-12)
    assert stats.corpus()["BLEU-4"] == pytest.approx(bleu[3], abs=1e-12)
    assert corpus_bleu(stats.correct.sum(0), stats.guess.sum(0), stats.testlen.sum(), stats.reflen.sum(), n=2) \
        == pytest.approx(bleu[1], abs=1e-12)


def test_pairwise_table_lists_each_pair_once():
    rng = np.random.default_rng(10)
    systems = {name: _synthetic(rng.gamma(2.0, 0.25, 200), seed=s) for s, name in enumerate("xyz")}
    table = pairwise_table(systems, resamples=200, label="beam k=3")
    rows = table.splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows] == ["x − y", "x − z", "y − z"]


# -- across seeds and images --------------------------------------------------------------------
def _runs(base, shifts, noise=0.02, seed=0, extra_correct=0.0):
    """One system's runs (seeds): per-image CIDEr ``base + shift`` plus a little per-image noise,
    and the same BLEU counts except one n-gram match more or less on a tenth of the images (two
    runs of one recipe caption some images differently)."""
    rng = np.random.default_rng(seed)
    system = _synthetic(base, seed=seed, extra_correct=extra_correct)
    runs = []
    for shift in shifts:
        changed = (rng.random(system.correct.shape) < 0.1) * rng.choice([-1, 1], system.correct.shape)
        runs.append(ImageStats(system.ids, np.clip(base + shift + rng.normal(0, noise, len(base)), 0, None),
                               np.clip(system.correct + changed, 0, system.guess), system.guess, system.testlen,
                               system.reflen))
    return runs


def _width(c):
    return c.high - c.low


def test_seed_bootstrap_identical_systems_narrow_interval_around_zero():
    base = np.random.default_rng(11).gamma(2.0, 0.25, 1000)
    runs = _runs(base, [0.0, 0.0, 0.0], seed=20)
    r = seed_bootstrap(runs, runs, resamples=2000, seed=0)
    for c in r.values():
        assert c.difference == 0 and c.low < 0 < c.high and not c.excludes_zero and c.p_value > 0.5
    # narrow: a fraction of the images-only interval between two different systems of the same quality
    other = _runs(np.random.default_rng(99).gamma(2.0, 0.25, 1000), [0.0], seed=90)[0]
    unrelated = paired_bootstrap(runs[0], other, resamples=2000, seed=0)
    for m in r:
        assert _width(r[m]) < 0.5 * _width(unrelated[m]), m
    assert _width(r["CIDEr"]) < 0.01


def test_seed_bootstrap_clear_gap_excludes_zero():
    base = np.random.default_rng(12).gamma(2.0, 0.25, 1000)
    a = _runs(base + 0.1, [0.0, 0.01, -0.01], seed=30, extra_correct=0.1)
    b = _runs(base, [0.0, 0.01, -0.01], seed=40)
    r = seed_bootstrap(a, b, resamples=2000, seed=0)
    for c in r.values():
        assert c.difference > 0 and c.low > 0 and c.excludes_zero and c.p_value < 0.01
        assert c.low <= c.difference <= c.high
    assert r["CIDEr"].a == pytest.approx(np.mean([s.corpus()["CIDEr"] for s in a]))


def test_seed_spread_widens_the_interval():
    """Runs that differ from seed to seed: the interval across seeds and images is wider than the
    images-only one of a single run per system, and wider than with steady runs."""
    base = np.random.default_rng(13).gamma(2.0, 0.25, 1000)
    steady_a, steady_b = _runs(base, [0.0] * 3, seed=50), _runs(base, [0.0] * 3, seed=60)
    spread_a, spread_b = _runs(base, [-0.04, 0.0, 0.04], seed=50), _runs(base, [0.04, 0.0, -0.04], seed=60)
    images_only = paired_bootstrap(spread_a[1], spread_b[1], resamples=2000, seed=0)["CIDEr"]
    steady = seed_bootstrap(steady_a, steady_b, resamples=2000, seed=0)["CIDEr"]
    spread = seed_bootstrap(spread_a, spread_b, resamples=2000, seed=0)["CIDEr"]
    assert _width(spread) > 3 * _width(images_only)
    assert _width(spread) > 3 * _width(steady)


def test_one_run_per_system_is_the_paired_bootstrap():
    rng = np.random.default_rng(14)
    a, b = _synthetic(rng.gamma(2.0, 0.25, 300), seed=1), _synthetic(rng.gamma(2.0, 0.25, 300), seed=2)
    across, paired = seed_bootstrap([a], [b], resamples=1500, seed=3), paired_bootstrap(a, b, resamples=1500, seed=3)
    for m in across:
        for field in ("a", "b", "difference", "low", "high", "p_value"):
            assert getattr(across[m], field) == pytest.approx(getattr(paired[m], field), abs=1e-9), (m, field)


def test_seed_bootstrap_pairs_by_image_id_and_is_deterministic():
    base = np.random.default_rng(15).gamma(2.0, 0.25, 400)
    a, b = _runs(base, [0.0, 0.02], seed=70), _runs(base, [0.01, 0.0, -0.01], seed=80)
    order = np.random.default_rng(0).permutation(400)
    shuffled = [ImageStats(tuple(np.array(s.ids)[order]), s.cider[order], s.correct[order], s.guess[order],
                           s.testlen[order], s.reflen[order]) for s in b]
    r1 = seed_bootstrap(a, b, resamples=500, seed=5)
    assert r1 == seed_bootstrap(a, b, resamples=500, seed=5)
    r2 = seed_bootstrap(a, shuffled, resamples=500, seed=5)
    for m in r1:
        assert r2[m].low == pytest.approx(r1[m].low) and r2[m].high == pytest.approx(r1[m].high)
    with pytest.raises(ValueError):
        seed_bootstrap(a, [_synthetic(base[:10])])
    with pytest.raises(ValueError):
        seed_bootstrap([], b)


def test_seed_pairwise_rows_and_table():
    base = np.random.default_rng(16).gamma(2.0, 0.25, 200)
    systems = {name: _runs(base, [0.0, 0.01], seed=10 * k) for k, name in enumerate("xyz")}
    rows = seed_pairwise(systems, resamples=200)
    assert [(a, b) for a, b, _ in rows] == [("x", "y"), ("x", "z"), ("y", "z")]
    table = comparison_table(rows, label="beam k=3, 2 seeds")
    assert table.splitlines()[0].startswith("| beam k=3, 2 seeds | ΔCIDEr-D [95% CI] |")
    assert len(table.splitlines()) == 5
