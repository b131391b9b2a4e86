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
        "ghost.jpg.1#0\tNobody here .", "b.jpg#0\tA cat sleeps .",
    ], ["a.jpg", "b.jpg"])
    with caplog.at_level(logging.WARNING):
        corpus = load_corpus(tmp_path, captions_file=tokens, image_dir=tmp_path / "imgs")
    assert corpus.captions == {"a.jpg": ["a dog runs", "a brown dog"], "b.jpg": ["a cat sleeps"]}
    assert "ghost.jpg.1" in caplog.text
    # no split files: a deterministic split by name covers every image once
    assert sorted(sum(corpus.splits.values(), [])) == ["a.jpg", "b.jpg"]


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
