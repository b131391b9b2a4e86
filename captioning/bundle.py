"""A trained model on disk: one self-describing folder, no pickle, no code.

    weights/<name>/
        config.json          format version, encoder, decoder sizes, embedding, training settings, data
        vocab.json           the vocabulary, in id order
        decoder.weights.h5   Keras weights; the architecture is rebuilt from config.json
        metrics.json         test-set scores (written by training.evaluate)
        history.json         loss per epoch
        loss_curve.png       the same, plotted

Loading checks every file and fails with a :class:`BundleError` that names the
file and what is wrong with it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import keras

from .model import DecoderConfig, build_decoder
from .vocab import Vocabulary

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "decoder.weights.h5"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
LOSS_CURVE_FILE = "loss_curve.png"


class BundleError(ValueError):
    """A model bundle is missing, incomplete or inconsistent."""


@dataclass
class Bundle:
    path: Path
    config: dict
    vocab: Vocabulary
    model: keras.Model
    metrics: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.get("name", self.path.name)


def _read_json(path: Path, required: bool = True):
    if not path.is_file():
        if required:
            raise BundleError(f"{path}: file is missing")
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None


def _decoder_config(config: dict, path: Path) -> DecoderConfig:
    try:
        decoder = DecoderConfig(**config["decoder"])
    except (KeyError, TypeError) as exc:
        raise BundleError(f"{path}: 'decoder' section is missing or malformed ({exc})") from None
    for key in ("vocab_size", "feature_dim", "embedding_dim", "units"):
        value = getattr(decoder, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BundleError(f"{path}: decoder.{key} must be a positive integer, not {value!r}")
    if not isinstance(decoder.dropout, (int, float)) or not 0 <= decoder.dropout < 1:
        raise BundleError(f"{path}: decoder.dropout must be a number in [0, 1), not {decoder.dropout!r}")
    if not isinstance(decoder.embedding_trainable, bool):
        raise BundleError(f"{path}: decoder.embedding_trainable must be true or false")
    return decoder


def _check_weight_shapes(weights_path: Path, model: keras.Model) -> None:
    """Compare the file's weight shapes with the decoder built from config.json, to name the mismatch."""
    import h5py

    shapes: list[tuple] = []
    try:
        with h5py.File(weights_path, "r") as f:
            if "layers" not in f:
                raise BundleError(f"{weights_path}: not a Keras weights file (no 'layers' group)")
            f["layers"].visititems(lambda _, obj: shapes.append(obj.shape) if isinstance(obj, h5py.Dataset) else None)
    except OSError as exc:
        raise BundleError(f"{weights_path}: unreadable, truncated or not HDF5 ({exc})") from None
    expected = Counter(tuple(w.shape) for w in model.weights)
    found = Counter(tuple(s) for s in shapes)
    if expected != found:
        extra, missing = sorted((found - expected).elements()), sorted((expected - found).elements())
        raise BundleError(f"{weights_path}: weight shapes do not match {CONFIG_FILE}: the file has "
                          f"{extra or 'nothing'} where the decoder it describes needs {missing or 'nothing'}")


def load_bundle(path: str | Path) -> Bundle:
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: model folder not found")
    config_path = path / CONFIG_FILE
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise BundleError(f"{config_path}: expected a JSON object")
    version = config.get("format_version")
    if not isinstance(version, int):
        raise BundleError(f"{config_path}: no 'format_version'")
    if version > FORMAT_VERSION:
        raise BundleError(f"{config_path}: format version {version} was written by a newer version of "
                          f"this library (this one reads up to {FORMAT_VERSION}); upgrade captioning")
    decoder_config = _decoder_config(config, config_path)
    for key in ("encoder", "max_length"):
        if key not in config:
            raise BundleError(f"{config_path}: missing '{key}'")

    vocab_path = path / VOCAB_FILE
    try:
        vocab = Vocabulary.from_json(vocab_path)
    except FileNotFoundError:
        raise BundleError(f"{vocab_path}: file is missing") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{vocab_path}: not a valid vocabulary ({exc})") from None
    if len(vocab) != decoder_config.vocab_size:
        raise BundleError(f"{vocab_path}: holds {len(vocab)} words but {CONFIG_FILE} says vocab_size "
                          f"{decoder_config.vocab_size}")

    weights_path = path / WEIGHTS_FILE
    if not weights_path.is_file():
        raise BundleError(f"{weights_path}: file is missing")
    model = build_decoder(decoder_config)
    _check_weight_shapes(weights_path, model)
    try:
        model.load_weights(weights_path)
    except (OSError, ValueError, KeyError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]  # Keras appends tensor dumps
        raise BundleError(f"{weights_path}: cannot be loaded into the decoder described by {CONFIG_FILE} "
                          f"(truncated, corrupt, or sizes that do not match): {reason}") from None
    return Bundle(path, config, vocab, model,
                  metrics=_read_json(path / METRICS_FILE, required=False),
                  history=_read_json(path / HISTORY_FILE, required=False))


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def plot_loss_curve(history: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    epochs = range(1, len(history["loss"]) + 1)
    ax.plot(epochs, history["loss"], marker="o", label="train")
    ax.plot(epochs, history["val_loss"], marker="o", label="validation")
    if history.get("best_epoch"):
        ax.axvline(history["best_epoch"], color="grey", linestyle=":", label="best")
    ax.set(xlabel="epoch", ylabel="cross-entropy per word", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_bundle(path: str | Path, model: keras.Model, vocab: Vocabulary, config: dict,
                history: dict | None = None, metrics: dict | None = None) -> Path:
    """Write a bundle into ``path`` (created; existing files replaced)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = {"format_version": FORMAT_VERSION, **config}
    write_json(path / CONFIG_FILE, config)
    vocab.to_json(path / VOCAB_FILE)
    # A fresh, uncompiled copy: the file then holds the decoder's weights only, no optimizer state.
    inference_model = build_decoder(DecoderConfig(**config["decoder"]))
    inference_model.set_weights(model.get_weights())
    inference_model.save_weights(path / WEIGHTS_FILE)
    if history:
        write_json(path / HISTORY_FILE, history)
        plot_loss_curve(history, path / LOSS_CURVE_FILE, config.get("name", path.name))
    if metrics:
        write_json(path / METRICS_FILE, metrics)
    return path


def publish(staging: str | Path, destination: str | Path) -> Path:
    """Move a finished bundle from ``staging`` to ``destination``, replacing any older one.

    The old bundle is moved aside first and deleted only after the new one is in
    place, so an interruption leaves one complete bundle at ``destination`` (or,
    at worst, next to it as ``<name>.old-<time>``).
    """
    staging, destination = Path(staging), Path(destination)
    old = None
    if destination.exists():
        old = destination.with_name(f"{destination.name}.old-{int(time.time())}")
        os.replace(destination, old)
    os.replace(staging, destination)
    if old is not None:
        shutil.rmtree(old)
    return destination
