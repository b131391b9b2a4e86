"""Reading an image-caption corpus: Flickr8k text files, a CSV ``image,caption`` file, a Karpathy
split JSON (``dataset_flickr8k.json``, ``dataset_flickr30k.json``, ``dataset_coco.json``) or COCO
caption annotation files (``captions_train2017.json``, ...).  The format is detected from the content;
text files may start with a UTF-8 byte order mark (as Excel saves them).

A :class:`Corpus` maps image file names to their cleaned captions and names the
train / dev / test splits.  Captions whose image is missing from the image folder
are skipped with a warning (Flickr8k's token file has one such key).
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

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
CSV_COLUMNS = ("image", "caption")
TEXT_ENCODING = "utf-8-sig"  # UTF-8, with or without a byte order mark
SPLIT_HINT = "pass --split-files TRAIN DEV TEST listing images of this corpus"


class CorpusError(ValueError):
    """The corpus files are missing or malformed."""


@dataclass
class Corpus:
    image_dir: Path
    captions: dict[str, list[str]]  # image file name -> cleaned captions
    splits: dict[str, list[str]] = field(default_factory=dict)  # split name -> image names

    def split(self, name: str) -> list[str]:
        if name not in self.splits:
            raise CorpusError(f"corpus has no '{name}' split (has: {', '.join(self.splits) or 'none'}); "
                              f"{SPLIT_HINT}")
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
    with open(path, encoding=TEXT_ENCODING) as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            key, sep, caption = line.partition("\t")
            if not sep:
                raise CorpusError(f"{path}:{number}: expected '<image>#<n><TAB><caption>' "
                                  f"(or, on the first line, a CSV header '{','.join(CSV_COLUMNS)}')")
            image = key.rsplit("#", 1)[0]
            captions.setdefault(image, []).append(caption)
    return captions


def read_csv_captions(path: str | Path) -> dict[str, list[str]]:
    """Parse a CSV with ``image`` and ``caption`` columns (the common Kaggle layout)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"captions file not found: {path}")
    captions: dict[str, list[str]] = {}
    with open(path, encoding=TEXT_ENCODING, newline="") as f:
        reader = csv.DictReader(f)
        if not _has_caption_columns(reader.fieldnames):
            raise CorpusError(f"{path}: CSV needs 'image' and 'caption' columns, has {reader.fieldnames}")
        for row in reader:
            captions.setdefault(row["image"].strip(), []).append(row["caption"])
    return captions


def _has_caption_columns(fields: Sequence[str] | None) -> bool:
    return set(CSV_COLUMNS) <= set(fields or ())


def _starts_with_csv_header(path: Path) -> bool:
    """True when the file's first non-blank line is a CSV header naming the ``image`` and
    ``caption`` columns (Kaggle's Flickr8k ``captions.txt``); a token line has a TAB instead."""
    with open(path, encoding=TEXT_ENCODING, errors="replace", newline="") as f:
        line = next((line for line in f if line.strip()), "")
    return "\t" not in line and _has_caption_columns(next(csv.reader([line]), None))


# Karpathy split names -> ours: 'restval' is folded into train, as every captioning codebase does.
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "dev", "test": "test"}


def _read_json(path: Path) -> object:
    try:
        with open(path, encoding=TEXT_ENCODING) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CorpusError(f"{path}: not valid JSON ({e})") from None


def _looks_like_json(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1] in (b"{", b"[")


def caption_file_format(path: str | Path) -> str:
    """'karpathy', 'coco', 'csv' or 'tokens', from the file's content (a JSON object with ``images``
    and ``sentences`` is a Karpathy split, with ``images`` and ``annotations`` a COCO annotation
    file); see :func:`_text_format` for the text formats."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"captions file not found: {path}")
    if _looks_like_json(path):
        return _json_format(path, _read_json(path))
    return _text_format(path)


def _text_format(path: Path) -> str:
    """'csv' for a ``.csv`` file or one whose first line is an ``image,caption`` header (Kaggle's
    ``captions.txt``), else 'tokens' (Flickr8k's ``<image>#<n><TAB><caption>`` lines)."""
    return "csv" if path.suffix.lower() == ".csv" or _starts_with_csv_header(path) else "tokens"


def _json_format(path: Path, data: object) -> str:
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        return "coco"
    if isinstance(data, dict) and "images" in data:
        return "karpathy"
    keys = ", ".join(map(repr, data)) if isinstance(data, dict) else type(data).__name__
    raise CorpusError(f"{path}: a JSON captions file needs 'images' with 'sentences' (Karpathy split) or "
                      f"'images' and 'annotations' (COCO captions); found {keys or 'an empty object'}")


def _field(path: Path, where: str, record: object, name: str, kind: type | tuple[type, ...]):
    if not isinstance(record, dict):
        raise CorpusError(f"{path}: {where} is a {type(record).__name__}, expected an object")
    if name not in record:
        raise CorpusError(f"{path}: {where} has no '{name}'")
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        raise CorpusError(f"{path}: {where}: '{name}' is {value!r}, expected "
                          f"{' or '.join(k.__name__ for k in kinds)}")
    return value


def read_karpathy_json(path: str | Path, data: object = None) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(raw captions per image, splits) of a Karpathy split JSON.

    Images are named ``<filepath>/<filename>`` when the entry has a ``filepath`` (COCO's
    ``val2014``), else ``<filename>``.  ``restval`` is folded into train and ``val`` is the dev
    split; an image without ``split`` has captions but is in no split.  Each sentence's ``raw``
    text is used (cleaned like every other format), or its ``tokens`` when it has no ``raw``.
    """
    path = Path(path)
    if data is None:
        if not path.is_file():
            raise CorpusError(f"captions file not found: {path}")
        data = _read_json(path)
    images = _field(path, "the top-level object", data, "images", list)
    captions: dict[str, list[str]] = {}
    splits: dict[str, list[str]] = {}
    for i, entry in enumerate(images):
        where = f"images[{i}]"
        filename = _field(path, where, entry, "filename", str)
        folder = entry.get("filepath") or ""
        if not isinstance(folder, str):
            raise CorpusError(f"{path}: {where}: 'filepath' is {folder!r}, expected a folder name")
        image = f"{folder.strip('/')}/{filename}" if folder.strip("/") else filename
        if image in captions:
            raise CorpusError(f"{path}: {where}: image {image} is listed twice")
        texts = []
        for j, sentence in enumerate(_field(path, where, entry, "sentences", list)):
            swhere = f"{where}.sentences[{j}]"
            if isinstance(sentence, dict) and "raw" not in sentence and "tokens" in sentence:
                tokens = _field(path, swhere, sentence, "tokens", list)
                texts.append(" ".join(map(str, tokens)))
            else:
                texts.append(_field(path, swhere, sentence, "raw", str))
        captions[image] = texts
        split = entry.get("split")
        if split is None:
            continue
        if split not in KARPATHY_SPLITS:
            raise CorpusError(f"{path}: {where}: unknown split {split!r} "
                              f"(expected one of {', '.join(KARPATHY_SPLITS)})")
        splits.setdefault(KARPATHY_SPLITS[split], []).append(image)
    return captions, splits


_COCO_SPLIT = re.compile(r"(?:^|[^a-z])(train|val|test)(?:\d*)(?:[^a-z]|$)")
COCO_SPLITS = {"train": "train", "val": "dev", "test": "test"}


def coco_split_of(path: str | Path) -> tuple[str | None, str | None]:
    """(our split name, image subfolder) that a COCO annotation file's name implies:
    ``captions_train2017.json`` -> ('train', 'train2017'), ``captions_val2014.json`` ->
    ('dev', 'val2014'); (None, None) for a name without train/val/test."""
    stem = Path(path).stem.lower()
    match = _COCO_SPLIT.search(stem)
    if not match:
        return None, None
    folder = Path(path).stem
    folder = folder[len("captions_"):] if folder.lower().startswith("captions_") else folder
    return COCO_SPLITS[match.group(1)], folder


def read_coco_captions(path: str | Path, data: object = None) -> dict[str, list[str]]:
    """Raw captions per image file name of a COCO caption annotation file (``images[]`` with
    ``id`` and ``file_name``, ``annotations[]`` with ``image_id`` and ``caption``)."""
    path = Path(path)
    if data is None:
        if not path.is_file():
            raise CorpusError(f"captions file not found: {path}")
        data = _read_json(path)
    names: dict[int, str] = {}
    for i, entry in enumerate(_field(path, "the top-level object", data, "images", list)):
        image_id = _field(path, f"images[{i}]", entry, "id", (int, str))
        if image_id in names:
            raise CorpusError(f"{path}: images[{i}]: image id {image_id!r} is listed twice")
        names[image_id] = _field(path, f"images[{i}]", entry, "file_name", str)
    captions: dict[str, list[str]] = {name: [] for name in names.values()}
    for i, entry in enumerate(_field(path, "the top-level object", data, "annotations", list)):
        image_id = _field(path, f"annotations[{i}]", entry, "image_id", (int, str))
        caption = _field(path, f"annotations[{i}]", entry, "caption", str)
        if image_id not in names:
            raise CorpusError(f"{path}: annotations[{i}]: image_id {image_id!r} is not in 'images'")
        captions[names[image_id]].append(caption)
    return {name: texts for name, texts in captions.items() if texts}


def _read_coco_files(paths: list[Path], datas: list[object], image_dir: Path,
                     ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Merge COCO annotation files: each file's split (and image subfolder, when ``image_dir``
    has it) comes from its name, as in ``captions_train2017.json`` -> train, ``train2017/``."""
    captions: dict[str, list[str]] = {}
    splits: dict[str, list[str]] = {}
    source: dict[str, Path] = {}
    for path, data in zip(paths, datas):
        split, folder = coco_split_of(path)
        prefix = f"{folder}/" if folder and (image_dir / folder).is_dir() else ""
        if len(paths) > 1 and split is None:
            log.info("%s: no train/val/test in its name, its images are in no split", path)
        for name, texts in read_coco_captions(path, data).items():
            image = prefix + name
            if image in captions:
                raise CorpusError(f"{path}: image {image} is also in {source[image]}")
            source[image] = path
            captions[image] = texts
            if split is not None:
                splits.setdefault(split, []).append(image)
    if "dev" in splits and "test" not in splits:
        # COCO's test images have no public captions: the val images are halved, by name, into dev and test.
        ordered = sorted(splits["dev"])
        half = len(ordered) // 2
        log.info("no test split given: the %d dev images are split in two halves, dev and test", len(ordered))
        splits["dev"], splits["test"] = ordered[:half], ordered[half:]
    return captions, splits


def read_split_file(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"split file not found: {path}")
    with open(path, encoding=TEXT_ENCODING) as f:
        return [line.strip() for line in f if line.strip()]


def _keep_existing_images(raw: dict[str, list[str]], image_dir: Path) -> dict[str, list[str]]:
    existing = {p.name for p in image_dir.iterdir()} if image_dir.is_dir() else set()
    if not existing:
        raise CorpusError(f"image folder is missing or empty: {image_dir}")
    listings = {"": existing}  # subfolder -> file names (Karpathy's 'filepath', COCO's train2017/ ...)

    def exists(image: str) -> bool:
        folder, _, name = image.rpartition("/")
        if folder not in listings:
            sub = image_dir / folder
            listings[folder] = {p.name for p in sub.iterdir()} if sub.is_dir() else set()
        return name in listings[folder]

    kept = {}
    for image, texts in raw.items():
        if not exists(image):
            log.warning("skipping %d caption(s) of %s: no such image in %s", len(texts), image, image_dir)
            continue
        kept[image] = [clean_caption(t) for t in texts if clean_caption(t)]
    if not kept:
        example = f" (such as {next(iter(raw))})" if raw else ""
        raise CorpusError(f"none of the {len(raw)} captioned image(s){example} is in {image_dir}")
    return kept


def _flickr8k_split_files(captions_file: Path) -> dict[str, Path]:
    """Flickr8k's split files when all three sit beside the captions file, as they do beside
    Flickr8k's own ``Flickr8k.token.txt``; else none: another corpus is not given Flickr8k's split."""
    paths = {name: captions_file.parent / fname for name, fname in FLICKR8K_SPLITS.items()}
    return paths if all(path.is_file() for path in paths.values()) else {}


def _split_images(name: str, listed: list[str], source: str | Path, captions: dict[str, list[str]],
                  image_dir: Path) -> list[str]:
    """The images of split ``name`` (as ``source`` lists them) that have captions and a file: a
    warning counts those skipped, an error says why the split is empty."""
    kept = [image for image in listed if image in captions]
    if not kept:
        why = (f"none of its {len(listed)} image(s) from {source} has captions and a file in {image_dir}"
               if listed else f"{source} gives it no image")
        raise CorpusError(f"the {name} split is empty: {why}; {SPLIT_HINT}")
    if len(kept) < len(listed):
        log.warning("%s split: %d image(s) have no captions or no file, skipped", name, len(listed) - len(kept))
    return kept


def _default_splits(images: list[str], image_dir: Path) -> dict[str, list[str]]:
    """Deterministic 80/10/10 split for corpora that ship no split files."""
    ordered = sorted(images)
    n = len(ordered)
    n_dev = n_test = max(1, n // 10)
    splits = {
        "test": ordered[:n_test],
        "dev": ordered[n_test:n_test + n_dev],
        "train": ordered[n_test + n_dev:],
    }
    for name in ("train", "dev", "test"):
        if not splits[name]:
            raise CorpusError(f"the {name} split is empty: {n} image(s) with captions and a file in {image_dir} "
                              f"are too few to split 80/10/10 by name; {SPLIT_HINT}")
    return splits


def load_corpus(
    root: str | Path,
    captions_file: str | Path | Sequence[str | Path] | None = None,
    image_dir: str | Path | None = None,
    split_files: dict[str, str | Path] | None = None,
) -> Corpus:
    """Load a corpus.

    ``root`` is a Flickr8k folder (``Flicker8k_Dataset/`` + ``Flickr8k_text/``).  Any
    part can be overridden: ``captions_file`` (a token file, a ``.csv``, a Karpathy split
    JSON, or one or more COCO caption annotation files), ``image_dir`` and ``split_files``.
    A Karpathy JSON brings its own split, and COCO files theirs (from each file's name);
    ``split_files`` override them.  A text captions file (token lines or CSV) gets Flickr8k's split
    files when they sit beside it (Flickr8k's own captions).  Without any split the images are
    split 80/10/10 by name.  An empty split is an error that says why.
    """
    root = Path(root)
    image_dir = Path(image_dir) if image_dir else root / FLICKR8K_IMAGES
    if captions_file is None:
        captions_file = root / FLICKR8K_TEXT / FLICKR8K_TOKENS
    files = [Path(f) for f in captions_file] if isinstance(captions_file, (list, tuple)) else [Path(captions_file)]
    if not files:
        raise CorpusError("no captions file given")
    raw, embedded = _read_captions(files, image_dir)
    captions = _keep_existing_images(raw, image_dir)

    if split_files is None and embedded:
        source = files[0].name if len(files) == 1 else "the captions files"
        listed = {name: (images, source) for name, images in embedded.items()}
    else:
        if split_files is None:  # a JSON corpus without a split of its own: 80/10/10, never Flickr8k's split files
            split_files = _flickr8k_split_files(files[0]) if embedded is None else {}
        listed = {name: (read_split_file(path), path) for name, path in split_files.items()}
    if not listed:
        return Corpus(image_dir=image_dir, captions=captions, splits=_default_splits(list(captions), image_dir))
    splits = {name: _split_images(name, images, source, captions, image_dir)
              for name, (images, source) in listed.items()}
    return Corpus(image_dir=image_dir, captions=captions, splits=splits)


def _read_captions(files: list[Path], image_dir: Path,
                   ) -> tuple[dict[str, list[str]], dict[str, list[str]] | None]:
    """(raw captions per image, the split the files themselves give: None for the text formats,
    which have none, possibly empty for the JSON formats)."""
    if len(files) == 1 and files[0].is_file() and not _looks_like_json(files[0]):
        return (read_csv_captions if _text_format(files[0]) == "csv" else read_token_file)(files[0]), None
    datas = []
    for path in files:
        if not path.is_file():
            raise CorpusError(f"captions file not found: {path}")
        if not _looks_like_json(path):
            raise CorpusError(f"{path}: several captions files must all be COCO caption annotation files "
                              "(JSON with 'images' and 'annotations')")
        data = _read_json(path)
        kind = _json_format(path, data)
        if kind == "karpathy" and len(files) == 1:
            return read_karpathy_json(path, data)
        if kind != "coco":
            raise CorpusError(f"{path}: several captions files must all be COCO caption annotation files "
                              "(JSON with 'images' and 'annotations'); this one is a Karpathy split JSON")
        datas.append(data)
    return _read_coco_files(files, datas, image_dir)
