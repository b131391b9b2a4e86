"""The familiarity signal: a reference built on synthetic features, the committed reference file,
real photos scored against it, and damaged files."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from captioning.encoders import ENCODERS
from captioning.familiarity import (DEFAULT_PATH, UNFAMILIAR_BELOW, UNFAMILIAR_NOTE, Familiarity,
                                    FamiliarityError)

ROOT = Path(__file__).resolve().parents[1]
FEATURE_DIM = ENCODERS["efficientnet_lite0"].feature_dim


@pytest.fixture(scope="module")
def synthetic():
    """(reference, training features (N, F), a fresh photo like the training ones (F,), an outlier (F,)).
    Photos vary along 12 hidden directions plus a little noise; the outlier lies off those directions."""
    rng = np.random.default_rng(0)
    directions = rng.normal(0, 1, (12, FEATURE_DIM))  # (12, F)
    base = rng.gamma(1.0, 1.0, FEATURE_DIM)           # (F,)

    def photos(n: int) -> np.ndarray:  # (n, F)
        return (base + rng.normal(0, 1, (n, 12)) @ directions + rng.normal(0, 0.3, (n, FEATURE_DIM))).astype(np.float32)

    train, test = photos(300), photos(100)
    basis, _ = np.linalg.qr(directions.T)  # (F, 12)
    away = rng.normal(0, 1, FEATURE_DIM)
    away -= basis @ (basis.T @ away)       # orthogonal to every direction the training photos vary along
    outlier = (base + 30 * away / np.linalg.norm(away)).astype(np.float32)
    reference = Familiarity.fit("efficientnet_lite0", train, [f"train{i}.jpg" for i in range(300)], test,
                                k=5, dims=16)
    return reference, train, photos(1)[0], outlier


def test_training_photo_is_familiar_and_outlier_is_not(synthetic):
    reference, train, fresh, outlier = synthetic
    own = [reference.score(features) for features in train[:20]]
    assert np.median([result.percentile for result in own]) > 90  # a typical test photo scores 50
    assert all(result.familiar for result in own)
    assert [result.nearest[0] for result in own] == [f"train{i}.jpg" for i in range(20)]
    assert len(own[0].nearest) == 5
    assert UNFAMILIAR_BELOW <= reference.score(fresh).percentile
    strange = reference.score(outlier)
    assert strange.percentile < UNFAMILIAR_BELOW and not strange.familiar
    assert strange.note == UNFAMILIAR_NOTE
    assert strange.similarity < min(result.similarity for result in own)


def test_saved_reference_scores_the_same_and_is_deterministic(synthetic, tmp_path):
    reference, train, _, outlier = synthetic
    reference.save(tmp_path / "a.h5")
    reference.save(tmp_path / "b.h5")
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    loaded = Familiarity.load(tmp_path / "a.h5")
    for features in (train[3], outlier):
        assert loaded.score(features) == reference.score(features)


def test_score_rejects_wrong_features(synthetic):
    reference = synthetic[0]
    with pytest.raises(ValueError, match="1280"):
        reference.score(np.zeros(2048, np.float32))
    with pytest.raises(ValueError):
        reference.score(np.full(FEATURE_DIM, np.nan, np.float32))


def test_committed_reference_loads_and_matches_the_encoder():
    reference = Familiarity.load()
    assert DEFAULT_PATH == ROOT / "weights" / "familiarity.h5"
    assert DEFAULT_PATH.stat().st_size < 3 * 2**20
    assert reference.encoder == json.loads((ROOT / "weights" / "learned" / "config.json").read_text())["encoder"]
    assert reference.feature_dim == ENCODERS[reference.encoder].feature_dim
    assert len(reference.train_names) == 6000 and len(reference.test_similarity) == 1000
    # Percentiles are against the test photos: their median scores about 50.
    assert 45 <= reference.percentile(float(np.median(reference.test_similarity))) <= 55


def test_flickr8k_photo_is_more_familiar_than_the_hubble_deep_field(flickr8k, encoder):
    reference = Familiarity.load()
    test_photo = flickr8k / "Flicker8k_Dataset" / "3385593926_d3e9c21170.jpg"  # dogs in snow, test split
    assert test_photo.name in (flickr8k / "Flickr8k_text" / "Flickr_8k.testImages.txt").read_text().split()
    photo = reference.score(encoder.features(test_photo))
    hubble = reference.score(encoder.features(ROOT / "demo" / "examples" / "hubble_deep_field.jpg"))
    assert photo.percentile > hubble.percentile
    assert photo.familiar and not hubble.familiar
    assert all(name.endswith(".jpg") for name in photo.nearest)


@pytest.mark.parametrize("damage", ["truncated", "not hdf5", "wrong shape", "missing array", "bad k"])
def test_damaged_reference_names_the_file(damage, tmp_path):
    path = tmp_path / "familiarity.h5"
    data = DEFAULT_PATH.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif damage == "not hdf5":
        path.write_bytes(b"not a reference" * 100)
    else:
        path.write_bytes(data)
        with h5py.File(path, "a") as f:
            if damage == "wrong shape":
                del f["components"]
                f.create_dataset("components", data=np.zeros((128, FEATURE_DIM + 1), np.float32))
            elif damage == "missing array":
                del f["train_names"]
            else:
                f.attrs["k"] = 10**9
    with pytest.raises(FamiliarityError, match=str(path)):
        Familiarity.load(path)


def test_missing_reference_says_how_to_build_it(tmp_path):
    with pytest.raises(FamiliarityError, match="training.build_familiarity"):
        Familiarity.load(tmp_path / "absent.h5")
