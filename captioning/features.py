"""Pooled CNN features for a folder of images, computed once and cached on disk.

Images stream through ``tf.data`` (decoded and resized in parallel, a batch ahead of the
CNN) into one of two caches:

- a ``.npz`` file (:func:`extract_features`) holding ``names`` (image file names),
  ``features`` (n, feature_dim float32) and ``encoder`` (the encoder's name), read whole
  into memory;
- a sharded float16 store (:func:`extract_shards`, :mod:`captioning.shards`), written a
  shard at a time and read a few rows at a time, for corpora too large for that.

Later runs reuse what is cached and extract only the images that are missing.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm.auto import tqdm

from .data import without_autotune
from .encoders import ImageEncoder
from .images import ImageError
from .shards import DEFAULT_SHARD_SIZE, ShardedFeatures, ShardWriter

log = logging.getLogger(__name__)


def default_cache_path(cache_dir: str | Path, encoder_name: str) -> Path:
    return Path(cache_dir) / f"features-{encoder_name}.npz"


def default_shard_folder(cache_dir: str | Path, encoder_name: str) -> Path:
    """Where a sharded store lives when no folder is named: beside the ``.npz`` cache."""
    return Path(cache_dir) / f"features-{encoder_name}"


def read_cache(path: str | Path, encoder_name: str) -> dict[str, np.ndarray]:
    """``{image name: feature vector}`` from a cache file, or ``{}`` if absent."""
    path = Path(path)
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as data:
        cached_encoder = str(data["encoder"])
        if cached_encoder != encoder_name:
            raise ValueError(f"{path} holds {cached_encoder} features, not {encoder_name}")
        return dict(zip(data["names"].tolist(), data["features"]))


def write_cache(path: str | Path, encoder_name: str, features: dict[str, np.ndarray]) -> None:
    """Write atomically: a killed run never leaves a half-written cache."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(features)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, names=np.array(names), encoder=np.array(encoder_name),
             features=np.stack([features[n] for n in names]).astype(np.float32))
    os.replace(tmp, path)


def pixel_batches(encoder: ImageEncoder, image_dir: str | Path, names: list[str], batch_size: int = 64,
                  workers: int = 2):
    """uint8 (batch, size, size, 3) pixel arrays for ``names`` (files in ``image_dir``), in order,
    streamed through ``tf.data``: ``workers`` files are decoded and resized at once (by the
    encoder's own :meth:`~captioning.encoders.ImageEncoder.pixels`, so exactly as at inference),
    and the next batch is prepared while the caller runs the CNN on this one.  The dataset holds
    only positions in ``names`` (no per-image tensor or path object: memory does not grow with
    the corpus).  An unreadable file raises :class:`~captioning.images.ImageError` naming it."""
    import tensorflow as tf

    image_dir, size = Path(image_dir), encoder.spec.input_size

    def load(position: np.int64) -> tuple[np.ndarray, bytes]:
        try:
            return encoder.pixels(image_dir / names[position]), b""
        except ImageError as exc:
            return np.zeros((size, size, 3), np.uint8), str(exc).encode()

    def load_tf(position):
        pixels, error = tf.numpy_function(load, [position], (tf.uint8, tf.string), stateful=False)
        return tf.ensure_shape(pixels, (size, size, 3)), error

    dataset = without_autotune(tf.data.Dataset.range(len(names))
                               .map(load_tf, num_parallel_calls=workers, deterministic=True)
                               .batch(batch_size).prefetch(1))
    for number, (pixels, errors) in enumerate(dataset.as_numpy_iterator()):
        for name, error in zip(names[number * batch_size:(number + 1) * batch_size], errors):
            if error:
                raise ImageError(f"{image_dir / name}: {error.decode()}")
        yield pixels


def stream_features(encoder: ImageEncoder, image_dir: str | Path, names: list[str], batch_size: int = 64,
                    progress: bool = True):
    """(names, float32 (batch, feature_dim) features) for ``names`` (files in ``image_dir``), a
    batch at a time, with a progress bar in images/s and a closing log line."""
    started = time.perf_counter()
    batches = pixel_batches(encoder, image_dir, names, batch_size)
    with tqdm(total=len(names), disable=not progress, desc=f"{encoder.name} features", unit="img") as bar:
        for start, pixels in zip(range(0, len(names), batch_size), batches):
            yield names[start:start + batch_size], encoder.encode_pixels(pixels)
            bar.update(len(pixels))
    seconds = time.perf_counter() - started
    log.info("extracted %d %s features in %.1f s (%.1f images/s)", len(names), encoder.name, seconds,
             len(names) / max(seconds, 1e-9))


def extract_features(
    encoder: ImageEncoder,
    image_dir: str | Path,
    names: Iterable[str],
    cache_path: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Features for ``names`` (files in ``image_dir``), reusing and extending the ``.npz`` cache.
    Everything is held in memory: for large corpora use :func:`extract_shards`."""
    names = list(dict.fromkeys(names))
    features = read_cache(cache_path, encoder.name) if cache_path else {}
    todo = [n for n in names if n not in features]
    if todo:
        log.info("extracting %s features for %d images (%d cached)", encoder.name, len(todo), len(names) - len(todo))
        for batch, vectors in stream_features(encoder, image_dir, todo, batch_size, progress):
            features.update(zip(batch, vectors))
        if cache_path:
            write_cache(cache_path, encoder.name, features)
    return {n: features[n] for n in names}


def extract_shards(
    encoder: ImageEncoder,
    image_dir: str | Path,
    names: Iterable[str],
    folder: str | Path,
    shard_size: int = DEFAULT_SHARD_SIZE,
    batch_size: int = 64,
    progress: bool = True,
) -> ShardedFeatures:
    """Features for ``names`` in the sharded store ``folder`` (float16), extracting only the
    images it lacks, one shard at a time: memory stays flat however many images there are,
    and a killed run resumes after its last finished shard."""
    names = list(dict.fromkeys(names))
    writer = ShardWriter(folder, encoder.name, encoder.feature_dim, shard_size)
    todo = [n for n in names if n not in writer.done]
    if todo:
        log.info("extracting %s features for %d images into %s (%d already there, %d rows a shard)",
                 encoder.name, len(todo), folder, len(names) - len(todo), shard_size)
        for batch, vectors in stream_features(encoder, image_dir, todo, batch_size, progress):
            writer.add(batch, vectors)
        writer.finish()
    return ShardedFeatures(folder, encoder.name)
