"""The EfficientNet-Lite0 port: read without torch, and it classifies real photos."""

import io
import pickle

import numpy as np
import pytest
from PIL import Image

from captioning.encoders.efficientnet_lite import (
    build_efficientnet_lite0, checkpoint_path, load_imagenet_weights, preprocess)
from captioning.encoders.torch_pickle import CheckpointError, load_legacy_state_dict
from captioning.images import load_pixels

skimage_data = pytest.importorskip("skimage.data")

# Photos shipped with scikit-image and ImageNet classes that are right for them.
PHOTOS = {
    "chelsea": {281, 282, 283, 284, 285},  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "coffee": {504, 967, 968},  # coffee mug, espresso, cup
    "rocket": {657, 744, 812},  # missile, projectile, space shuttle
}


@pytest.fixture(scope="module")
def classifier():
    return load_imagenet_weights(build_efficientnet_lite0(include_top=True))


@pytest.mark.parametrize("photo", sorted(PHOTOS))
def test_port_ranks_the_right_class_top5(classifier, photo):
    pixels = load_pixels(getattr(skimage_data, photo)(), 224)
    logits = classifier.predict(preprocess(pixels[None]), verbose=0)[0]
    top5 = set(np.argsort(-logits)[:5].tolist())
    assert top5 & PHOTOS[photo], f"{photo}: top-5 {sorted(top5)}"


def test_checkpoint_reads_every_tensor_without_torch():
    state = load_legacy_state_dict(checkpoint_path())
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert all(np.isfinite(v).all() for v in state.values() if v.dtype.kind == "f")


def test_feature_extractor_gives_1280_pooled_features(encoder, sample_images):
    features = encoder.encode(sample_images[:2])
    assert features.shape == (2, 1280) and features.dtype == np.float32
    assert not np.allclose(features[0], features[1])


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f)
        pickle.dump(1001, f)
        pickle.dump({"little_endian": True}, f)
        pickle.dump(_Evil(), f)
    with pytest.raises(CheckpointError, match="refusing to load global builtins.print"):
        load_legacy_state_dict(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "not.pth"
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError):
        load_legacy_state_dict(path)
