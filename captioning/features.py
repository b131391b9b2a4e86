"""Pooled CNN features for a folder of images, computed once and cached on disk.

The cache is a ``.npz`` file holding ``names`` (image file names), ``features``
(n, feature_dim float32) and ``encoder`` (the encoder's name).  Later runs load
what is cached and extract only the images that are missing.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm.auto import tqdm

from .encoders import ImageEncoder

log = logging.getLogger(__name__)


def default_cache_path(cache_dir: str | Path, encoder_name: str) -> Path:
    return Path(cache_dir) / f"features-{encoder_name}.npz"


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


def extract_features(
    encoder: ImageEncoder,
    image_dir: str | Path,
    names: Iterable[str],
    cache_path: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Features for ``names`` (files in ``image_dir``), reusing and extending the cache."""
    image_dir = Path(image_dir)
    names = list(dict.fromkeys(names))
    features = read_cache(cache_path, encoder.name) if cache_path else {}
    todo = [n for n in names if n not in features]
    if todo:
        log.info("extracting %s features for %d images (%d cached)", encoder.name, len(todo), len(names) - len(todo))
        # Decoding JPEGs in threads overlaps with the CNN running on the other core.
        with ThreadPoolExecutor(max_workers=2) as pool, tqdm(total=len(todo), disable=not progress,
                                                             desc=f"{encoder.name} features", unit="img") as bar:
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                pixels = np.stack(list(pool.map(lambda n: encoder.pixels(image_dir / n), batch)))
                for name, vector in zip(batch, encoder.encode_pixels(pixels)):
                    features[name] = vector
                bar.update(len(batch))
        if cache_path:
            write_cache(cache_path, encoder.name, features)
    return {n: features[n] for n in names}
