"""Reading an image-caption corpus: Flickr8k text files, or a CSV ``image,caption`` file.

A :class:`Corpus` maps image file names to their cleaned captions and names the
train / dev / test splits.  Captions whose image is missing from the image folder
are skipped with a warning (Flickr8k's token file has one such key).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .text import clean_caption

log = logging.getLogger(__name__)

# Flickr8k's layout, as the two original archives unpack.
FLICKR8K_IMAGES = "Flicker8k_Dataset"
FLICKR8K_TEXT = "Flickr8k_text"
FLICKR8K_TOKENS = "Flickr8k.token.txt"
FLICKR8K_SPLITS = {
    "train": "Flickr_8k.trainImages.txt",
    "dev": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}


class CorpusError(ValueError):
    """The corpus files are missing or malformed."""


@dataclass
class Corpus:
    image_dir: Path
    captions: dict[str, list[str]]  # image file name -> cleaned captions
    splits: dict[str, list[str]] = field(default_factory=dict)  # split name -> image names

    def split(self, name: str) -> list[str]:
        if name not in self.splits:
            raise CorpusError(f"corpus has no '{name}' split (has: {', '.join(self.splits) or 'none'})")
        return self.splits[name]

    def captions_of(self, images: list[str]) -> dict[str, list[str]]:
        return {image: self.captions[image] for image in images}

    def split_captions(self, name: str) -> list[str]:
        """Every caption of split ``name``'s images, in one list, in split order."""
        return [caption for image in self.split(name) for caption in self.captions[image]]


def read_token_file(path: str | Path) -> dict[str, list[str]]:
    """Parse ``<image>#<n>\\t<caption>`` lines into raw captions per image."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"captions file not found: {path}")
    captions: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            key, sep, caption = line.partition("\t")
            if not sep:
                raise CorpusError(f"{path}:{number}: expected '<image>#<n><TAB><caption>'")
            image = key.rsplit("#", 1)[0]
            captions.setdefault(image, []).append(caption)
    return captions


def read_csv_captions(path: str | Path) -> dict[str, list[str]]:
    """Parse a CSV with ``image`` and ``caption`` columns (the common Kaggle layout)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"captions file not found: {path}")
    captions: dict[str, list[str]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"image", "caption"} <= set(reader.fieldnames):
            raise CorpusError(f"{path}: CSV needs 'image' and 'caption' columns, has {reader.fieldnames}")
        for row in reader:
            captions.setdefault(row["image"].strip(), []).append(row["caption"])
    return captions


def read_split_file(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"split file not found: {path}")
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def _keep_existing_images(raw: dict[str, list[str]], image_dir: Path) -> dict[str, list[str]]:
    existing = {p.name for p in image_dir.iterdir()} if image_dir.is_dir() else set()
    if not existing:
        raise CorpusError(f"image folder is missing or empty: {image_dir}")
    kept = {}
    for image, texts in raw.items():
        if image not in existing:
            log.warning("skipping %d caption(s) of %s: no such image in %s", len(texts), image, image_dir)
            continue
        kept[image] = [clean_caption(t) for t in texts if clean_caption(t)]
    return kept


def _default_splits(images: list[str]) -> dict[str, list[str]]:
    """Deterministic 80/10/10 split for corpora that ship no split files."""
    ordered = sorted(images)
    n = len(ordered)
    n_dev = n_test = max(1, n // 10)
    return {
        "test": ordered[:n_test],
        "dev": ordered[n_test:n_test + n_dev],
        "train": ordered[n_test + n_dev:],
    }


def load_corpus(
    root: str | Path,
    captions_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    split_files: dict[str, str | Path] | None = None,
) -> Corpus:
    """Load a corpus.

    ``root`` is a Flickr8k folder (``Flicker8k_Dataset/`` + ``Flickr8k_text/``).  Any
    part can be overridden: ``captions_file`` (a token file, or a ``.csv``),
    ``image_dir`` and ``split_files``.  Without split files the images are split
    80/10/10 by name.
    """
    root = Path(root)
    text_dir = root / FLICKR8K_TEXT
    image_dir = Path(image_dir) if image_dir else root / FLICKR8K_IMAGES
    if captions_file is None:
        captions_file = text_dir / FLICKR8K_TOKENS
    captions_file = Path(captions_file)
    raw = read_csv_captions(captions_file) if captions_file.suffix.lower() == ".csv" else read_token_file(captions_file)
    captions = _keep_existing_images(raw, image_dir)

    if split_files is None:
        split_files = {name: text_dir / fname for name, fname in FLICKR8K_SPLITS.items()}
        if not all(Path(p).is_file() for p in split_files.values()):
            split_files = {}
    splits = {}
    for name, path in split_files.items():
        names = read_split_file(path)
        missing = [n for n in names if n not in captions]
        if missing:
            log.warning("%s split: %d image(s) have no captions or no file, skipped", name, len(missing))
        splits[name] = [n for n in names if n in captions]
    if not splits:
        splits = _default_splits(list(captions))
    return Corpus(image_dir=image_dir, captions=captions, splits=splits)
