"""The standard caption formats (Karpathy split JSON, COCO caption annotation files) give the same
corpus as Flickr8k's own text files; malformed files fail with errors naming the file and the fault.

Only file names are listed from the image folders: no image is read."""

import json
import logging

import pytest

from captioning.corpus import CorpusError, load_corpus, read_token_file
from training.common import add_data_arguments, corpus_from_args

KARPATHY_SPLIT = {"train": "train", "dev": "val", "test": "test"}


@pytest.fixture(scope="module")
def original(flickr8k):
    """The corpus from Flickr8k's token file and split files, and the raw captions in file order."""
    return load_corpus(flickr8k), read_token_file(flickr8k / "Flickr8k_text" / "Flickr8k.token.txt")


def _split_of(corpus):
    return {image: name for name, images in corpus.splits.items() for image in images}


def _ordered_images(corpus, raw):
    """Split images in split order, then every other key of the token file (some have no split,
    one has no image file)."""
    in_splits = [image for name in ("train", "dev", "test") for image in corpus.splits[name]]
    seen = set(in_splits)
    return in_splits + [image for image in raw if image not in seen]


def _assert_same_corpus(loaded, corpus):
    assert loaded.image_dir == corpus.image_dir
    assert loaded.captions == corpus.captions
    assert set(loaded.splits) == {"train", "dev", "test"}
    for name in ("train", "dev", "test"):
        assert loaded.split(name) == corpus.split(name), name
    assert (len(loaded.split("train")), len(loaded.split("dev")), len(loaded.split("test"))) == (6000, 1000, 1000)


def test_karpathy_json_gives_the_flickr8k_corpus(original, flickr8k, tmp_path):
    corpus, raw = original
    split = _split_of(corpus)
    images = []
    for number, image in enumerate(_ordered_images(corpus, raw)):
        entry = {"filename": image, "imgid": number,
                 "sentences": [{"raw": text, "tokens": text.lower().split()} for text in raw[image]]}
        if image in split:
            entry["split"] = KARPATHY_SPLIT[split[image]]
        images.append(entry)
    path = tmp_path / "dataset_flickr8k.json"
    path.write_text(json.dumps({"dataset": "flickr8k", "images": images}))
    loaded = load_corpus(flickr8k, captions_file=path, image_dir=flickr8k / "Flicker8k_Dataset")
    _assert_same_corpus(loaded, corpus)

    # detection is by content, not by name; 'restval' is folded into train
    for entry in images[:500]:
        entry["split"] = "restval"
    renamed = tmp_path / "whatever.txt"
    renamed.write_text(json.dumps({"images": images}))
    loaded = load_corpus(flickr8k, captions_file=renamed, image_dir=flickr8k / "Flicker8k_Dataset")
    assert loaded.captions == corpus.captions
    assert loaded.split("train") == corpus.split("train")


def test_coco_annotation_files_give_the_flickr8k_corpus(original, flickr8k, tmp_path):
    corpus, raw = original
    split = _split_of(corpus)
    files = {"train": [], "dev": [], "test": [], None: []}
    for image in _ordered_images(corpus, raw):
        files[split.get(image)].append(image)
    paths = []
    next_id = 1000
    for name, file_name in (("train", "captions_train.json"), ("dev", "captions_val.json"),
                            ("test", "captions_test.json"), (None, "captions_extra.json")):
        images, annotations = [], []
        for number, image in enumerate(files[name]):
            images.append({"id": number, "file_name": image, "height": 1, "width": 1})
            for text in raw[image]:
                annotations.append({"id": next_id, "image_id": number, "caption": text})
                next_id += 1
        path = tmp_path / file_name
        path.write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": annotations}))
        paths.append(path)
    loaded = load_corpus(flickr8k, captions_file=paths, image_dir=flickr8k / "Flicker8k_Dataset")
    _assert_same_corpus(loaded, corpus)

    # through the command line, as users give them
    import argparse

    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    args = parser.parse_args(["--data", str(flickr8k), "--images", str(flickr8k / "Flicker8k_Dataset"),
                              "--captions", *map(str, paths)])
    assert args.captions == str(paths[0])  # one plain string, as before, for the code that records it
    _assert_same_corpus(corpus_from_args(args), corpus)


def _tiny_images(tmp_path, names):
    for name in names:
        (tmp_path / "imgs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "imgs" / name).write_bytes(b"x")
    return tmp_path / "imgs"


def test_karpathy_filepath_and_coco_folders(tmp_path, caplog):
    images = _tiny_images(tmp_path, ["val2014/a.jpg", "train2014/b.jpg", "train2014/c.jpg",
                                     "train2017/b.jpg", "val2017/d.jpg", "val2017/e.jpg"])
    karpathy = tmp_path / "dataset_coco.json"
    karpathy.write_text(json.dumps({"images": [
        {"filepath": "val2014", "filename": "a.jpg", "split": "test", "sentences": [{"raw": "A dog."}]},
        {"filepath": "train2014", "filename": "b.jpg", "split": "restval",
         "sentences": [{"raw": "A CAT!"}, {"tokens": ["two", "cats"]}]},
        {"filepath": "train2014", "filename": "c.jpg", "split": "val", "sentences": [{"raw": "A bird"}]},
        {"filepath": "train2014", "filename": "gone.jpg", "split": "train", "sentences": [{"raw": "x"}]},
    ]}))
    with caplog.at_level(logging.WARNING):
        corpus = load_corpus(tmp_path, captions_file=karpathy, image_dir=images)
    assert corpus.captions == {"val2014/a.jpg": ["a dog"], "train2014/b.jpg": ["a cat", "two cats"],
                               "train2014/c.jpg": ["a bird"]}
    assert corpus.splits == {"test": ["val2014/a.jpg"], "train": ["train2014/b.jpg"], "dev": ["train2014/c.jpg"]}
    assert "gone.jpg" in caplog.text

    # COCO 2017: the files' own splits and folders; with no test file, val is halved into dev and test
    for name, entries in (("train2017", [(1, "b.jpg", "A man.")]),
                          ("val2017", [(7, "d.jpg", "A boat"), (9, "e.jpg", "A car"), (9, "e.jpg", "Red car")])):
        ids = sorted({(i, f) for i, f, _ in entries})
        (tmp_path / f"captions_{name}.json").write_text(json.dumps({
            "images": [{"id": i, "file_name": f} for i, f in ids],
            "annotations": [{"image_id": i, "caption": c, "id": n} for n, (i, _, c) in enumerate(entries)]}))
    corpus = load_corpus(tmp_path, image_dir=images, captions_file=[tmp_path / "captions_train2017.json",
                                                                    tmp_path / "captions_val2017.json"])
    assert corpus.captions == {"train2017/b.jpg": ["a man"], "val2017/d.jpg": ["a boat"],
                               "val2017/e.jpg": ["a car", "red car"]}
    assert corpus.splits == {"train": ["train2017/b.jpg"], "dev": ["val2017/d.jpg"], "test": ["val2017/e.jpg"]}

    # split files override the files' own split
    for name, text in (("tr", "val2017/d.jpg\nval2017/e.jpg\n"), ("de", "train2017/b.jpg\n"), ("te", "train2017/b.jpg\n")):
        (tmp_path / f"{name}.txt").write_text(text)
    corpus = load_corpus(tmp_path, image_dir=images, captions_file=[tmp_path / "captions_val2017.json",
                                                                    tmp_path / "captions_train2017.json"],
                         split_files={s: tmp_path / f"{n}.txt" for s, n in (("train", "tr"), ("dev", "de"),
                                                                              ("test", "te"))})
    assert corpus.split("train") == ["val2017/d.jpg", "val2017/e.jpg"] and corpus.split("test") == ["train2017/b.jpg"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"annotations": []}', "needs 'images' with 'sentences'"),
    ("[1, 2]", "needs 'images' .* found list"),
    ('{"images": [{"filename": "a.jpg"}]}', r"images\[0\] has no 'sentences'"),
    ('{"images": [{"sentences": []}]}', r"images\[0\] has no 'filename'"),
    ('{"images": [{"filename": "a.jpg", "split": "holdout", "sentences": []}]}', "unknown split 'holdout'"),
    ('{"images": [{"filename": "a.jpg", "sentences": [{"raw": 3}]}]}', r"sentences\[0\]: 'raw' is 3"),
    ('{"images": [{"filename": "a.jpg", "sentences": []}, {"filename": "a.jpg", "sentences": []}]}',
     "a.jpg is listed twice"),
    ('{"images": "a.jpg"}', "'images' is 'a.jpg', expected list"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 2, "caption": "x"}]}',
     r"annotations\[0\]: image_id 2 is not in 'images'"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1}]}',
     r"annotations\[0\] has no 'caption'"),
    ('{"images": [{"id": 1}], "annotations": []}', r"images\[0\] has no 'file_name'"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}], "annotations": []}',
     "image id 1 is listed twice"),
])
def test_malformed_json_files_name_the_file_and_the_fault(tmp_path, content, message):
    images = _tiny_images(tmp_path, ["a.jpg"])
    path = tmp_path / "bad_captions.json"
    path.write_text(content)
    with pytest.raises(CorpusError, match=f"bad_captions.json: .*{message}"):
        load_corpus(tmp_path, captions_file=path, image_dir=images)


def test_several_files_must_all_be_coco(tmp_path):
    images = _tiny_images(tmp_path, ["a.jpg"])
    coco = tmp_path / "captions_train.json"
    coco.write_text('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "caption": "x"}]}')
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("a.jpg#0\tA dog\n")
    karpathy = tmp_path / "dataset.json"
    karpathy.write_text('{"images": [{"filename": "a.jpg", "sentences": [{"raw": "x"}]}]}')
    with pytest.raises(CorpusError, match="tokens.txt: several captions files must all be COCO"):
        load_corpus(tmp_path, captions_file=[coco, tokens], image_dir=images)
    with pytest.raises(CorpusError, match="dataset.json: .*Karpathy"):
        load_corpus(tmp_path, captions_file=[coco, karpathy], image_dir=images)
    with pytest.raises(CorpusError, match="captions file not found: .*nope.json"):
        load_corpus(tmp_path, captions_file=[coco, tmp_path / "nope.json"], image_dir=images)
    with pytest.raises(CorpusError, match="a.jpg is also in .*captions_train.json"):
        load_corpus(tmp_path, captions_file=[coco, coco], image_dir=images)
    # a JSON corpus without a split of its own: 80/10/10 by name (not Flickr8k's split files),
    # which one image cannot fill
    with pytest.raises(CorpusError, match="the train split is empty: 1 image.* too few to split 80/10/10"):
        load_corpus(tmp_path, captions_file=karpathy, image_dir=images)
