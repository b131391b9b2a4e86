"""The sharded feature store (issue 14, features at scale): float16 shards with a JSON index,
streamed extraction that resumes after an interruption without redoing finished shards,
damaged shards redone or refused by name, and training that reads rows from the shards."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from captioning.data import CaptionBatches
from captioning.encoders import DEFAULT_ENCODER
from captioning.features import extract_features, extract_shards
from captioning.shards import INDEX_FILE, ShardedFeatures, ShardError, ShardWriter
from training.common import AUTO_SHARD_IMAGES, add_data_arguments, features_for, shard_folder

IMAGES = 10  # real Flickr8k photos for the extraction tests
SHARD_SIZE = 4  # -> shards of 4, 4 and 2 images
BATCH = 2


def f16(array: np.ndarray) -> np.ndarray:
    """What a float16 store gives back for float32 ``array``."""
    return np.asarray(array, dtype=np.float32).astype(np.float16).astype(np.float32)


def write_store(folder: Path, features: np.ndarray, names: list[str], shard_size: int, batch: int = 3) -> None:
    writer = ShardWriter(folder, "fake", features.shape[1], shard_size)
    for start in range(0, len(names), batch):
        writer.add(names[start:start + batch], features[start:start + batch])
    writer.finish()


class CountingEncoder:
    """The real encoder, counting the images it encodes; raises after ``fail_after`` batches."""

    def __init__(self, encoder, fail_after: int | None = None):
        self.encoder, self.fail_after = encoder, fail_after
        self.spec, self.name, self.feature_dim = encoder.spec, encoder.name, encoder.feature_dim
        self.batches = self.images = 0

    def pixels(self, image):
        return self.encoder.pixels(image)

    def encode_pixels(self, pixels):
        if self.fail_after is not None and self.batches == self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.batches += 1
        self.images += len(pixels)
        return self.encoder.encode_pixels(pixels)


@pytest.fixture(scope="module")
def photos(flickr8k) -> tuple[Path, list[str]]:
    names = (flickr8k / "Flickr8k_text" / "Flickr_8k.devImages.txt").read_text().split()[:IMAGES]
    return flickr8k / "Flicker8k_Dataset", names


@pytest.fixture(scope="module")
def reference(encoder, photos) -> np.ndarray:
    """float32 (IMAGES, feature_dim): the features as the .npz path extracts them."""
    image_dir, names = photos
    features = extract_features(encoder, image_dir, names, batch_size=BATCH, progress=False)
    return np.stack([features[n] for n in names])


# -- the store on its own -------------------------------------------------------------

def test_round_trip_and_indexing_match_the_dense_matrix(tmp_path):
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(11, 6)).astype(np.float32)
    names = [f"img{i}.jpg" for i in range(11)]
    write_store(tmp_path, dense, names, shard_size=4)

    index = json.loads((tmp_path / INDEX_FILE).read_text())
    assert (index["encoder"], index["feature_dim"], index["dtype"]) == ("fake", 6, "float16")
    assert [(s["file"], s["rows"]) for s in index["shards"]] == [
        ("shard-00000.npy", 4), ("shard-00001.npy", 4), ("shard-00002.npy", 3)]
    assert index["shards"][1]["names"] == names[4:8]  # name -> (shard 1, row i)
    assert np.load(tmp_path / "shard-00001.npy").dtype == np.float16

    store = ShardedFeatures(tmp_path, "fake")
    expected = f16(dense)
    assert store.shape == (11, 6) and len(store) == 11 and store.names == names
    assert store.index == {n: i for i, n in enumerate(names)}
    for key in ([3, 3, 10, 0, 5], np.array([7, 4, 3, 8]), [], 2, -1, slice(2, 9), slice(None, None, -3)):
        got = store[key]
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected[key])
    np.testing.assert_array_equal(store[np.arange(11)], expected)
    np.testing.assert_array_equal(np.asarray(store), expected)  # read whole only when asked
    assert np.abs(store[np.arange(11)] - dense).max() <= np.abs(dense).max() * 2 ** -11  # float16 rounding
    with pytest.raises(IndexError):
        store[[11]]
    with pytest.raises(TypeError):
        store[[0.5]]


def test_caption_batches_read_the_same_batches_from_shards(tmp_path):
    rng = np.random.default_rng(1)
    dense = rng.normal(size=(9, 5)).astype(np.float32)
    write_store(tmp_path, dense, [f"{i}.jpg" for i in range(9)], shard_size=2)
    rows = np.repeat(np.arange(9), 3)  # several captions per image: rows repeat within a batch
    sequences = [[2, *rng.integers(4, 20, size=int(rng.integers(2, 9))).tolist(), 3] for _ in rows]
    from_dense = CaptionBatches(f16(dense), rows, sequences, batch_size=5, seed=3)
    from_shards = CaptionBatches(ShardedFeatures(tmp_path), rows, sequences, batch_size=5, seed=3)
    pairs = list(zip(from_dense, from_shards))
    assert len(pairs) == len(from_dense) == 6
    for (dense_in, dense_target, _), (shard_in, shard_target, _) in pairs:
        np.testing.assert_array_equal(shard_in["image_features"], dense_in["image_features"])
        np.testing.assert_array_equal(shard_target, dense_target)


def test_a_store_of_another_encoder_or_size_is_refused_by_name(tmp_path):
    write_store(tmp_path, np.zeros((3, 4), np.float32), ["a", "b", "c"], shard_size=2)
    with pytest.raises(ShardError, match=f"{tmp_path / INDEX_FILE}.*fake features, not efficientnet_lite0"):
        ShardedFeatures(tmp_path, "efficientnet_lite0")
    with pytest.raises(ValueError, match="fake features, not other"):  # ShardError is a ValueError
        ShardWriter(tmp_path, "other", 4)
    with pytest.raises(ShardError, match="4-d features, not 8-d"):
        ShardWriter(tmp_path, "fake", 8)
    (tmp_path / INDEX_FILE).write_text("{not json")
    with pytest.raises(ShardError, match="not a readable feature index"):
        ShardedFeatures(tmp_path)
    with pytest.raises(ShardError, match="no feature index"):
        ShardedFeatures(tmp_path / "empty")


def test_a_truncated_shard_is_refused_when_read_and_dropped_when_resumed(tmp_path):
    dense = np.arange(30, dtype=np.float32).reshape(6, 5)
    write_store(tmp_path, dense, list("abcdef"), shard_size=2)
    shard = tmp_path / "shard-00001.npy"
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(ShardError, match=f"{shard}: .* bytes, expected .*truncated"):
        ShardedFeatures(tmp_path)
    writer = ShardWriter(tmp_path, "fake", 5, shard_size=2)  # checksums: shard 1 is dropped, its file removed
    assert writer.done == set("abef") and not shard.exists()
    writer.add(["c", "d"], dense[2:4])
    store = ShardedFeatures(tmp_path)
    np.testing.assert_array_equal(store[[store.index[n] for n in "abcdef"]], dense)


# -- extraction into shards -------------------------------------------------------------

def test_streamed_shards_equal_the_npz_features(encoder, photos, reference, tmp_path):
    image_dir, names = photos
    store = extract_shards(encoder, image_dir, names, tmp_path, shard_size=SHARD_SIZE, batch_size=BATCH,
                           progress=False)
    assert store.names == names and len(json.loads((tmp_path / INDEX_FILE).read_text())["shards"]) == 3
    np.testing.assert_array_equal(store[np.arange(IMAGES)], f16(reference))  # within float16 rounding, no more
    # the inference path (encoder.encode, no tf.data) agrees too
    np.testing.assert_allclose(store[:BATCH], encoder.encode([image_dir / n for n in names[:BATCH]]),
                               rtol=2 ** -10, atol=1e-6)


def test_an_interrupted_extraction_resumes_after_its_finished_shards(encoder, photos, reference, tmp_path):
    image_dir, names = photos
    folder = tmp_path / "shards"
    interrupted = CountingEncoder(encoder, fail_after=3)  # 3 batches of 2: shard 0 written, 2 images buffered
    with pytest.raises(KeyboardInterrupt):
        extract_shards(interrupted, image_dir, names, folder, shard_size=SHARD_SIZE, batch_size=BATCH,
                       progress=False)
    assert interrupted.images == 6
    assert [s["names"] for s in json.loads((folder / INDEX_FILE).read_text())["shards"]] == [names[:4]]
    (folder / "shard-00001.npy.tmp").write_bytes(b"half a shard")  # as a kill during a write leaves it

    resumed = CountingEncoder(encoder)
    store = extract_shards(resumed, image_dir, names, folder, shard_size=SHARD_SIZE, batch_size=BATCH,
                           progress=False)
    assert resumed.images == IMAGES - SHARD_SIZE, "finished shard extracted again"
    assert sorted(p.name for p in folder.iterdir()) == [INDEX_FILE, "shard-00000.npy", "shard-00001.npy",
                                                        "shard-00002.npy"]
    assert store.names == names
    np.testing.assert_array_equal(store[np.arange(IMAGES)], f16(reference))

    again = CountingEncoder(encoder)  # everything there: nothing is encoded
    extract_shards(again, image_dir, names, folder, shard_size=SHARD_SIZE, progress=False)
    assert again.images == 0

    (folder / "shard-00002.npy").write_bytes(b"\x93NUMPY damaged")  # damaged: redone, the rest kept
    repaired = CountingEncoder(encoder)
    store = extract_shards(repaired, image_dir, names, folder, shard_size=SHARD_SIZE, batch_size=BATCH,
                           progress=False)
    assert repaired.images == 2
    np.testing.assert_array_equal(store[[store.index[n] for n in names]], f16(reference))


def test_an_unreadable_image_is_named(encoder, photos, tmp_path):
    image_dir, names = photos
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    for name in names[:3]:
        (tmp_path / name).symlink_to(image_dir / name)
    with pytest.raises(ValueError, match="broken.jpg: .*not an image"):
        extract_shards(encoder, tmp_path, [*names[:3], "broken.jpg"], tmp_path / "shards", shard_size=2,
                       batch_size=2, progress=False)


# -- training from shards ---------------------------------------------------------------

def test_shard_options_reach_features_for(encoder, tmp_path):
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    args = parser.parse_args(["--shard-size", "7", "--feature-shards", "s", "--cache-dir", str(tmp_path)])
    assert args.cache_dir == str(tmp_path) and args.cache_dir.shard_size == 7
    assert shard_folder(args.cache_dir, encoder, ["a.jpg"]) == Path("s")
    plain = parser.parse_args(["--cache-dir", str(tmp_path)]).cache_dir
    assert shard_folder(plain, encoder, ["a.jpg"]) is None  # small corpora: the .npz cache
    many = [f"{i}.jpg" for i in range(AUTO_SHARD_IMAGES + 1)]
    assert shard_folder(plain, encoder, many) == tmp_path / f"features-{encoder.name}"
    with pytest.raises(SystemExit):
        parser.parse_args(["--shard-size", "0"])


def test_training_runs_from_shards(flickr8k, tmp_path):
    from captioning.bundle import load_bundle
    from captioning.corpus import load_corpus
    from training.train import main as train_main

    folder, out = tmp_path / "shards", tmp_path / "weights"
    code = train_main(["--data", str(flickr8k), "--variant", "learned", "--limit-images", "6", "--epochs", "1",
                       "--embedding-dim", "8", "--units", "8", "--min-count", "1", "--settings", "greedy", "--scst-epochs", "0",
                       "--no-meteor", "--feature-shards", str(folder), "--shard-size", "5",
                       "--out", str(out), "--runs", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    assert not (tmp_path / "cache").exists(), "the .npz cache was used"
    store = ShardedFeatures(folder, DEFAULT_ENCODER)  # what training.train extracts with by default
    assert len(store) == 18 and len(json.loads((folder / INDEX_FILE).read_text())["shards"]) == 4
    assert load_bundle(out / "learned").config["data"]["train_images"] == 6
    assert (out / "learned" / "metrics.json").is_file()  # evaluated from the shards' rows too

    corpus = load_corpus(flickr8k)
    features, index = features_for(corpus, _no_encoder(), _cache_dir(tmp_path, folder), store.names[:4])
    assert isinstance(features, ShardedFeatures) and index == {n: i for i, n in enumerate(store.names[:4])}


def _cache_dir(tmp_path: Path, folder: Path):
    from training.common import CacheDir

    cache_dir = CacheDir(tmp_path / "cache")
    cache_dir.feature_shards = str(folder)
    return cache_dir


def _no_encoder():
    """An encoder that must not run: every image is already in the store."""
    from captioning.encoders import ENCODERS

    class Unused:
        spec = ENCODERS[DEFAULT_ENCODER]
        name, feature_dim = spec.name, spec.feature_dim

        def pixels(self, image):
            raise AssertionError("an image was decoded again")

        encode_pixels = pixels

    return Unused()


def test_readme_shows_the_recorded_feature_memory_and_it_is_flat():
    """The README's memory table is `python -m tools.feature_memory --table` of the committed record,
    verbatim; and in that record, what grows with the corpus is the captions, not the features."""
    from tools.feature_memory import report

    root = Path(__file__).resolve().parents[1]
    saved = json.loads((root / "evaluation" / "feature_memory" / "feature_memory.json").read_text())
    assert report(saved) in (root / "README.md").read_text(encoding="utf-8")
    by_scale = {r["scale"]: r for r in saved["results"]}
    assert sorted(by_scale) == [1, 4, 16]
    small, large = by_scale[1], by_scale[16]
    assert large["extract"]["peak_rss_mib"] < 1.1 * small["extract"]["peak_rss_mib"]
    grown = large["train_shards"]["peak_rss_mib"] - small["train_shards"]["peak_rss_mib"]
    captions_grown = (large["train_shards"]["stages"]["captions"]["rss_mib"]
                      - small["train_shards"]["stages"]["captions"]["rss_mib"])
    assert grown < captions_grown + 32  # MiB: the features add (almost) nothing


def test_feature_memory_never_mixes_or_drops_other_measurements(tmp_path, capsys, flickr8k):
    """--json on a file of another encoder (the committed record is Lite0's) or other settings: one
    line, nothing measured, the file untouched; not its rows dropped or mixed with these."""
    from tools.feature_memory import main

    root = Path(__file__).resolve().parents[1]
    record = tmp_path / "feature_memory.json"
    record.write_bytes((root / "evaluation" / "feature_memory" / "feature_memory.json").read_bytes())
    before = record.read_bytes()
    assert main(["--json", str(record), "--scales", "2", "--data", str(flickr8k), "--work", str(tmp_path / "w")]) == 2
    assert "another" in capsys.readouterr().err and record.read_bytes() == before
    assert not (tmp_path / "w").exists()
