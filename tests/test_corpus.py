"""Corpus reading, caption cleaning and the vocabulary."""

import logging

import pytest

from captioning.corpus import CorpusError, load_corpus, read_token_file
from captioning.text import clean_caption
from captioning.vocab import Vocabulary


def test_clean_caption():
    assert clean_caption("A dog, 2 cats & a BIRD!  ") == "a dog cats a bird"
    assert clean_caption("  Two   men 's hats .") == "two men s hats"
    assert clean_caption("123 !!") == ""


def _make_corpus(tmp_path, lines, images):
    (tmp_path / "imgs").mkdir()
    for name in images:
        (tmp_path / "imgs" / name).write_bytes(b"x")
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(lines) + "\n")
    return tokens


def test_token_file_skips_missing_images_with_a_warning(tmp_path, caplog):
    tokens = _make_corpus(tmp_path, [
        "a.jpg#0\tA dog runs .", "a.jpg#1\tA brown dog .",
        "ghost.jpg.1#0\tNobody here .", "b.jpg#0\tA cat sleeps .", "c.jpg#0\tA bird .",
    ], ["a.jpg", "b.jpg", "c.jpg"])
    with caplog.at_level(logging.WARNING):
        corpus = load_corpus(tmp_path, captions_file=tokens, image_dir=tmp_path / "imgs")
    assert corpus.captions == {"a.jpg": ["a dog runs", "a brown dog"], "b.jpg": ["a cat sleeps"],
                               "c.jpg": ["a bird"]}
    assert "ghost.jpg.1" in caplog.text
    # no split files: a deterministic split by name covers every image once
    assert sorted(sum(corpus.splits.values(), [])) == ["a.jpg", "b.jpg", "c.jpg"]


def test_csv_captions(tmp_path):
    (tmp_path / "imgs").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "imgs" / name).write_bytes(b"x")
    csv = tmp_path / "captions.csv"
    csv.write_text('image,caption\na.jpg,"A dog, running."\nb.jpg,A cat\n')
    splits = {}
    for name, images in (("train", "a.jpg"), ("dev", "b.jpg"), ("test", "b.jpg")):
        (tmp_path / f"{name}.txt").write_text(images + "\n")
        splits[name] = tmp_path / f"{name}.txt"
    corpus = load_corpus(tmp_path, captions_file=csv, image_dir=tmp_path / "imgs", split_files=splits)
    assert corpus.captions["a.jpg"] == ["a dog running"]
    assert corpus.split("train") == ["a.jpg"]


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(CorpusError, match="captions file not found"):
        read_token_file(tmp_path / "nope.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("no tab on this line\n")
    with pytest.raises(CorpusError, match="bad.txt:1"):
        read_token_file(bad)
    csv = tmp_path / "bad.csv"
    csv.write_text("file,text\na.jpg,x\n")
    (tmp_path / "imgs").mkdir()
    with pytest.raises(CorpusError, match="'image' and 'caption'"):
        load_corpus(tmp_path, captions_file=csv, image_dir=tmp_path / "imgs")


def test_flickr8k_splits_are_standard_and_disjoint(flickr8k):
    corpus = load_corpus(flickr8k)
    train, dev, test = (set(corpus.split(s)) for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (6000, 1000, 1000)
    assert not train & test and not train & dev and not dev & test
    assert len(corpus.captions) == 8091
    assert all(len(caps) == 5 for caps in corpus.captions.values())


def test_vocabulary_round_trip(tmp_path):
    vocab = Vocabulary.build(["a dog runs", "a dog sits", "a cat"], min_count=2)
    assert vocab.words[:6] == ["<pad>", "<unk>", "<start>", "<end>", "a", "dog"]
    ids = vocab.encode("a dog flies")
    assert ids == [vocab.start_id, vocab.index["a"], vocab.index["dog"], vocab.unk_id, vocab.end_id]
    assert vocab.decode(ids) == "a dog <unk>"
    vocab.to_json(tmp_path / "vocab.json")
    assert Vocabulary.from_json(tmp_path / "vocab.json").words == vocab.words


def test_vocabulary_rejects_bad_word_lists():
    with pytest.raises(ValueError):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError):
        Vocabulary(["<pad>", "<unk>", "<start>", "<end>", "a", "a"])


def test_reading_a_corpus_leaves_no_file_open(tmp_path):
    """Every file the corpus reader opens is closed (no ResourceWarning once collected)."""
    import gc
    import warnings

    from captioning.corpus import read_split_file

    tokens = _make_corpus(tmp_path, ["a.jpg#0\tA dog runs .", "b.jpg#0\tA cat sleeps ."], ["a.jpg", "b.jpg"])
    splits = {}
    for name, images in (("train", "a.jpg\n"), ("dev", "b.jpg\n"), ("test", "b.jpg\n\n")):
        splits[name] = tmp_path / f"{name}.txt"
        splits[name].write_text(images)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assert read_split_file(splits["test"]) == ["b.jpg"]
        corpus = load_corpus(tmp_path, captions_file=tokens, image_dir=tmp_path / "imgs", split_files=splits)
        gc.collect()
    assert corpus.split("train") == ["a.jpg"] and corpus.captions["b.jpg"] == ["a cat sleeps"]
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


# -- which split a corpus gets ---------------------------------------------------------------------
def _fake_flickr8k(root, names):
    """A Flickr8k-shaped folder: a token file and the three split files beside it in Flickr8k_text/."""
    (root / "Flicker8k_Dataset").mkdir(parents=True)
    text = root / "Flickr8k_text"
    text.mkdir()
    for name in names:
        (root / "Flicker8k_Dataset" / name).write_bytes(b"x")
    (text / "Flickr8k.token.txt").write_text("".join(f"{name}#0\tA dog .\n" for name in names))
    for split, listed in (("train", names[2:]), ("dev", names[1:2]), ("test", names[:1])):
        (text / f"Flickr_8k.{split}Images.txt").write_text("\n".join(listed) + "\n")
    return root


def _own_corpus(folder, count):
    """``count`` images photo_000.jpg ... with a CSV of their captions (one with a comma, quoted)."""
    folder.mkdir(parents=True)
    for number in range(count):
        (folder / f"photo_{number:03d}.jpg").write_bytes(b"x")
    rows = [f'photo_{number:03d}.jpg,"A dog, running"' for number in range(count)]
    (folder / "captions.csv").write_text("image,caption\n" + "\n".join(rows) + "\n")
    return folder / "captions.csv"


def _by_name(images):
    ordered = sorted(images)
    n = max(1, len(ordered) // 10)
    return {"test": ordered[:n], "dev": ordered[n:2 * n], "train": ordered[2 * n:]}


def _cli_corpus(*argv):
    import argparse

    from training.common import add_data_arguments, corpus_from_args

    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    return corpus_from_args(parser.parse_args(list(argv)))


def test_flickr8k_split_files_are_for_flickr8k_captions_only(tmp_path):
    names = [f"{n}.jpg" for n in range(6)]
    root = _fake_flickr8k(tmp_path / "flickr8k", names)
    flickr8k_split = {"train": names[2:], "dev": names[1:2], "test": names[:1]}
    # Flickr8k's own captions, by default or named, get its split files
    assert load_corpus(root).splits == flickr8k_split
    assert load_corpus(root, captions_file=root / "Flickr8k_text" / "Flickr8k.token.txt").splits == flickr8k_split

    # another corpus, with --data still naming Flickr8k (its default): 80/10/10 by name
    csv = _own_corpus(tmp_path / "own", 40)
    corpus = _cli_corpus("--data", str(root), "--captions", str(csv), "--images", str(csv.parent))
    assert corpus.splits == _by_name(corpus.captions) and len(corpus.split("train")) == 32
    assert corpus.captions["photo_000.jpg"] == ["a dog running"]
    # the same holds for a token file that does not sit beside Flickr8k's split files
    copy = tmp_path / "tokens.txt"
    copy.write_text((root / "Flickr8k_text" / "Flickr8k.token.txt").read_text())
    assert load_corpus(root, captions_file=copy).splits == _by_name(names)


def test_an_empty_split_is_a_one_line_error(tmp_path):
    csv = _own_corpus(tmp_path / "own", 5)
    lists = {}
    for split, listed in (("train", "photo_002.jpg\nphoto_003.jpg\n"), ("dev", "other.jpg\nmore.jpg\n"),
                          ("test", "photo_000.jpg\n")):
        lists[split] = tmp_path / f"{split}.txt"
        lists[split].write_text(listed)
    with pytest.raises(CorpusError, match=r"^the dev split is empty: none of its 2 image\(s\) from .*dev.txt "
                                          r"has captions and a file in .*own; pass --split-files TRAIN DEV TEST"):
        load_corpus(tmp_path, captions_file=csv, image_dir=csv.parent, split_files=lists)
    lists["dev"].write_text("\n")
    with pytest.raises(CorpusError, match=r"the dev split is empty: .*dev.txt gives it no image"):
        load_corpus(tmp_path, captions_file=csv, image_dir=csv.parent, split_files=lists)

    # too few images for 80/10/10; through the command line, one line, no traceback
    two = _own_corpus(tmp_path / "two", 2)
    with pytest.raises(SystemExit, match=r"^error: the train split is empty: 2 image\(s\) .* too few to split "
                                         r"80/10/10 by name; pass --split-files") as info:
        _cli_corpus("--data", str(tmp_path), "--captions", str(two), "--images", str(two.parent))
    assert "\n" not in str(info.value)
    # no caption names an image of the folder
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "other.jpg").write_bytes(b"x")
    with pytest.raises(CorpusError, match=r"none of the 5 captioned image\(s\) \(such as photo_000.jpg\) is in "
                                          r".*elsewhere$"):
        load_corpus(tmp_path, captions_file=csv, image_dir=tmp_path / "elsewhere")


# -- text caption files: detected by content, with or without a byte order mark -------------------
KAGGLE_CAPTIONS = ('image,caption\na.jpg,"A dog, running."\na.jpg,A brown dog\nb.jpg,A cat\n'
                   'c.jpg,"A bird, ""flying"""\n')
KAGGLE_CORPUS = {"a.jpg": ["a dog running", "a brown dog"], "b.jpg": ["a cat"], "c.jpg": ["a bird flying"]}


@pytest.mark.parametrize("name", ["captions.txt", "captions.csv", "captions"])
@pytest.mark.parametrize("bom", [False, True], ids=["utf-8", "utf-8-bom"])
def test_kaggle_captions_are_read_whatever_the_name_and_bom(tmp_path, name, bom):
    from captioning.corpus import caption_file_format

    images = tmp_path / "Images"
    images.mkdir()
    for image in KAGGLE_CORPUS:
        (images / image).write_bytes(b"x")
    path = tmp_path / name
    path.write_text(KAGGLE_CAPTIONS, encoding="utf-8-sig" if bom else "utf-8")
    assert caption_file_format(path) == "csv"
    corpus = load_corpus(tmp_path, captions_file=path, image_dir=images)
    assert corpus.captions == KAGGLE_CORPUS
    assert corpus.splits == _by_name(KAGGLE_CORPUS)


@pytest.mark.parametrize("marked", ["tokens", "split files", "karpathy"])
def test_other_text_files_with_a_byte_order_mark(tmp_path, marked):
    from captioning.corpus import caption_file_format

    encoding = lambda kind: "utf-8-sig" if kind == marked else "utf-8"  # noqa: E731
    # a token file (whose first caption mentions 'image,caption': still a token file)
    tokens = _make_corpus(tmp_path, ["a.jpg#0\timage,caption", "b.jpg#0\tA cat .", "c.jpg#0\tA bird ."],
                          ["a.jpg", "b.jpg", "c.jpg"])
    tokens.write_text(tokens.read_text(), encoding=encoding("tokens"))
    assert caption_file_format(tokens) == "tokens"
    assert read_token_file(tokens) == {"a.jpg": ["image,caption"], "b.jpg": ["A cat ."], "c.jpg": ["A bird ."]}
    lists = {}
    for split, listed in (("train", "a.jpg\n"), ("dev", "b.jpg\n"), ("test", "c.jpg\n")):
        lists[split] = tmp_path / f"{split}.txt"
        lists[split].write_text(listed, encoding=encoding("split files"))
    corpus = load_corpus(tmp_path, captions_file=tokens, image_dir=tmp_path / "imgs", split_files=lists)
    assert corpus.splits == {"train": ["a.jpg"], "dev": ["b.jpg"], "test": ["c.jpg"]}
    karpathy = tmp_path / "dataset.json"
    karpathy.write_text('{"images": [' + ", ".join(
        f'{{"filename": "{image}", "split": "{split}", "sentences": [{{"raw": "A dog"}}]}}'
        for image, split in (("a.jpg", "train"), ("b.jpg", "val"), ("c.jpg", "test"))) + "]}",
        encoding=encoding("karpathy"))
    assert caption_file_format(karpathy) == "karpathy"
    assert load_corpus(tmp_path, captions_file=karpathy, image_dir=tmp_path / "imgs").splits == corpus.splits
