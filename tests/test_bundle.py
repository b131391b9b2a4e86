"""Broken model bundles (issue 5.3): loading fails with a :class:`BundleError` whose message
names the file and what is wrong with it, and loading never runs code from the bundle."""

from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path

import h5py
import pytest

from captioning import Captioner
from captioning.bundle import (CONFIG_FILE, FORMAT_VERSION, HISTORY_FILE, MAX_JSON_BYTES, MAX_WEIGHTS_BYTES,
                               METRICS_FILE, VOCAB_FILE, WEIGHTS_FILE, BundleError, load_bundle)


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _set_decoder(**values):
    return lambda bundle: _edit_json(bundle / CONFIG_FILE, lambda c: c["decoder"].update(values))


def _truncate(name: str, keep: float = 0.5):
    def breakage(bundle: Path):
        path = bundle / name
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    return breakage


def _write(name: str, content: str | bytes):
    def breakage(bundle: Path):
        path = bundle / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return breakage


def _unlink(name: str):
    return lambda bundle: (bundle / name).unlink()


def _drop_last_word(bundle: Path) -> None:
    _edit_json(bundle / VOCAB_FILE, lambda v: v["words"].pop())


def _config(edit):
    return lambda bundle: _edit_json(bundle / CONFIG_FILE, edit)


def _negate_a_weight_array(bundle: Path) -> None:
    """Change weights the way a bad disk or an edit would: the file stays valid HDF5 with the same shapes."""
    with h5py.File(bundle / WEIGHTS_FILE, "r+") as f:
        arrays = []
        f["layers"].visititems(lambda _, obj: arrays.append(obj) if isinstance(obj, h5py.Dataset) else None)
        biggest = max(arrays, key=lambda a: a.size)
        biggest[...] = -biggest[...]


def _zero_the_tail(bundle: Path) -> None:
    path = bundle / WEIGHTS_FILE
    data = path.read_bytes()
    path.write_bytes(data[:-4000] + b"\0" * 4000)


# name -> (breakage, file the message must name, regex for the problem it must state)
BREAKAGES = {
    "missing vocab.json": (_unlink(VOCAB_FILE), VOCAB_FILE, r"missing"),
    "missing config.json": (_unlink(CONFIG_FILE), CONFIG_FILE, r"missing"),
    "missing weights": (_unlink(WEIGHTS_FILE), WEIGHTS_FILE, r"missing"),
    "truncated weights": (_truncate(WEIGHTS_FILE), WEIGHTS_FILE, r"truncated"),
    "weights cut by 100 bytes": (_truncate(WEIGHTS_FILE, keep=0.999), WEIGHTS_FILE, r"truncated"),
    "weights not HDF5": (_write(WEIGHTS_FILE, b"\x80\x04not an hdf5 file" * 64), WEIGHTS_FILE, r"corrupt|signature"),
    "newer format version": (_config(lambda c: c.update(format_version=99)), CONFIG_FILE,
                             rf"format version 99.*newer.*up to {FORMAT_VERSION}"),
    "no format version": (_config(lambda c: c.pop("format_version")), CONFIG_FILE, r"format_version"),
    "embedding size changed": (_set_decoder(embedding_dim=48), WEIGHTS_FILE, r"shape"),
    "units changed": (_set_decoder(units=48), WEIGHTS_FILE, r"shape"),
    "feature size changed": (_set_decoder(feature_dim=2048), CONFIG_FILE,
                             r"decoder.feature_dim 2048 does not match encoder efficientnet_lite0"),
    "config not JSON": (_truncate(CONFIG_FILE), CONFIG_FILE, r"not valid JSON"),
    "config is a list": (_write(CONFIG_FILE, "[1, 2, 3]"), CONFIG_FILE, r"JSON object"),
    "config not UTF-8": (_write(CONFIG_FILE, b"\xff\xfe{\x00}"), CONFIG_FILE, r"not valid JSON"),
    "decoder section missing": (_config(lambda c: c.pop("decoder")), CONFIG_FILE, r"'decoder'.*missing"),
    "unknown decoder setting": (_config(lambda c: c["decoder"].update(activation="eval")), CONFIG_FILE,
                                r"'decoder'.*malformed.*activation"),
    "encoder missing": (_config(lambda c: c.pop("encoder")), CONFIG_FILE, r"missing 'encoder'"),
    "vocab one word short": (_drop_last_word, VOCAB_FILE, r"holds \d+ words but config.json says vocab_size \d+"),
    "vocab_size changed": (_set_decoder(vocab_size=7), VOCAB_FILE,
                           r"holds \d+ words but config.json says vocab_size 7"),
    "vocab not JSON": (_truncate(VOCAB_FILE), VOCAB_FILE, r"not valid JSON"),
    "vocab without words list": (_write(VOCAB_FILE, '{"tokens": []}'), VOCAB_FILE, r"'words' list"),
    "vocab without special tokens": (lambda b: _edit_json(b / VOCAB_FILE, lambda v: v["words"].pop(0)),
                                     VOCAB_FILE, r"must start with"),
    "metrics not JSON": (_write("metrics.json", "{oops"), "metrics.json", r"not valid JSON"),
    "weights changed, shapes kept": (_negate_a_weight_array, WEIGHTS_FILE, r"corrupt.*changed"),
    "weights tail zeroed": (_zero_the_tail, WEIGHTS_FILE, r"truncated|corrupt"),
    "digest not hex": (_config(lambda c: c.update(weights_sha256="abc")), CONFIG_FILE, r"64 hex digits"),
}


@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")  # Keras, on size mismatches
@pytest.mark.parametrize("name", list(BREAKAGES))
def test_broken_bundle_names_the_file_and_the_problem(tiny_bundle_copy, name):
    breakage, file_name, problem = BREAKAGES[name]
    breakage(tiny_bundle_copy)
    with pytest.raises(BundleError) as info:
        load_bundle(tiny_bundle_copy)
    message = str(info.value)
    assert message.startswith(str(tiny_bundle_copy / file_name) + ":"), message
    assert re.search(problem, message, re.IGNORECASE | re.DOTALL), message


def test_bundles_written_before_the_digest_still_load(tiny_bundle_copy):
    _config(lambda c: c.pop("weights_sha256"))(tiny_bundle_copy)
    assert load_bundle(tiny_bundle_copy).config.get("weights_sha256") is None


def test_missing_folder(tmp_path):
    with pytest.raises(BundleError, match=r"nope: model folder not found"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="model folder not found"):
        load_bundle(tmp_path / "file")


def test_captioner_load_raises_the_same_error(tiny_bundle_copy, encoder):
    """What the CLI and the app call."""
    (tiny_bundle_copy / VOCAB_FILE).unlink()
    with pytest.raises(BundleError, match=re.escape(str(tiny_bundle_copy / VOCAB_FILE))):
        Captioner.load(tiny_bundle_copy, encoder=encoder)


def test_intact_copy_loads_cleanly(tiny_bundle_copy):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. Keras "layers will retain freshly-initialized weights"
        bundle = load_bundle(tiny_bundle_copy)
    assert len(bundle.vocab) == bundle.config["decoder"]["vocab_size"]
    assert bundle.history["loss"]


# -- no code from the bundle ------------------------------------------------------

def test_bundle_files_hold_no_pickles_and_only_numeric_arrays(tiny_weights):
    for variant in ("learned", "fasttext", "word2vec"):
        for path in (tiny_weights / variant).iterdir():
            assert path.suffix in {".json", ".h5", ".png"}, f"unexpected file in a bundle: {path}"
            head = path.read_bytes()[:2]
            assert not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")), \
                f"{path} looks like a pickle"
        with h5py.File(tiny_weights / variant / WEIGHTS_FILE, "r") as weights:
            kinds = []
            weights.visititems(lambda name, obj: kinds.append((name, obj.dtype.kind))
                               if isinstance(obj, h5py.Dataset) else None)
            assert kinds and all(kind in "fiub" for _, kind in kinds), kinds  # no object/opaque data


def test_loading_never_unpickles_or_deserialises_code(tiny_bundle_copy, monkeypatch):
    """The architecture is rebuilt from config.json and only weights are read: no pickle, no
    ``keras.saving.load_model`` (which could deserialise Lambda layers), no unsafe mode."""
    import keras

    def forbidden(what):
        def call(*args, **kwargs):
            raise AssertionError(f"load_bundle called {what}")
        return call

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden(f"pickle.{name}"))
    monkeypatch.setattr(keras.saving, "load_model", forbidden("keras.saving.load_model"))
    monkeypatch.setattr(keras.models, "load_model", forbidden("keras.models.load_model"))
    monkeypatch.setattr(keras.config, "enable_unsafe_deserialization", forbidden("enable_unsafe_deserialization"))
    # a planted pickle or .keras file next to the real ones is simply ignored
    (tiny_bundle_copy / "decoder.keras").write_bytes(b"PK\x03\x04 planted")
    (tiny_bundle_copy / "model.pkl").write_bytes(pickle.dumps({"planted": True}))

    bundle = load_bundle(tiny_bundle_copy)
    assert bundle.model.get_layer("word_embedding").get_weights()[0].shape[0] == len(bundle.vocab)


def test_wrongly_typed_decoder_setting(tiny_bundle_copy):
    _set_decoder(dropout="half")(tiny_bundle_copy)
    with pytest.raises(BundleError, match=re.escape(str(tiny_bundle_copy / CONFIG_FILE))):
        load_bundle(tiny_bundle_copy)


@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")
def test_size_mismatch_message_is_short(tiny_bundle_copy):
    _set_decoder(embedding_dim=48)(tiny_bundle_copy)
    with pytest.raises(BundleError) as info:
        load_bundle(tiny_bundle_copy)
    assert len(str(info.value)) < 600 and "\n" not in str(info.value)


# -- tampered bundles (issue 8, item 6): fail fast, before anything big is allocated -----------

def _nested(depth: int) -> str:
    return '{"format_version": 1, "x": ' + "[" * depth + "]" * depth + "}"


def _oversized(name: str, filler: str):
    """A file one byte over its cap, still valid JSON: a size check must stop it, not the parser."""
    def breakage(bundle: Path):
        head = '{"words": [], "pad": "'
        (bundle / name).write_text(head + filler * (MAX_JSON_BYTES[name] - len(head) - 1) + '"}')
    return breakage


def _sparse_weights(bundle: Path) -> None:
    with open(bundle / WEIGHTS_FILE, "r+b") as f:
        f.truncate(MAX_WEIGHTS_BYTES + 1)  # sparse: costs no disk


# name -> (tampering, file the message must name, regex naming the field and the problem)
TAMPERINGS = {
    "units 50000": (_set_decoder(units=50000), CONFIG_FILE, r"decoder\.units must be a whole number from 1 to 4096"),
    "embedding_dim 1e7": (_set_decoder(embedding_dim=1e7), CONFIG_FILE, r"decoder\.embedding_dim .*10000000\.0"),
    "feature_dim 1e9": (_set_decoder(feature_dim=10**9), CONFIG_FILE, r"decoder\.feature_dim .*1000000000"),
    "vocab_size a million": (_set_decoder(vocab_size=10**6), CONFIG_FILE, r"decoder\.vocab_size"),
    "sizes each legal, total too big": (_set_decoder(units=4096), CONFIG_FILE, r"decoder sizes describe [\d,]+ "
                                                                               r"parameters, more than"),
    "units true": (_set_decoder(units=True), CONFIG_FILE, r"decoder\.units"),
    "dropout NaN": (_set_decoder(dropout=float("nan")), CONFIG_FILE, r"decoder\.dropout"),
    "decoder is a list": (_config(lambda c: c.update(decoder=[32, 32])), CONFIG_FILE, r"'decoder'"),
    "config nested 100000 deep": (_write(CONFIG_FILE, _nested(100_000)[:MAX_JSON_BYTES[CONFIG_FILE]]), CONFIG_FILE,
                                  r"nested"),
    "config nested 40 deep": (_write(CONFIG_FILE, _nested(40)), CONFIG_FILE, r"nested more than 32"),
    "config with a 5000-digit number": (_write(CONFIG_FILE, '{"format_version": ' + "9" * 5000 + "}"), CONFIG_FILE,
                                        r"not valid JSON"),
    "config over its size cap": (_oversized(CONFIG_FILE, " "), CONFIG_FILE, r"larger than 65536 bytes"),
    "max_length abc": (_config(lambda c: c.update(max_length="abc")), CONFIG_FILE,
                       r"max_length must be a whole number from 1 to 100, not 'abc'"),
    "max_length -5": (_config(lambda c: c.update(max_length=-5)), CONFIG_FILE, r"max_length .*not -5"),
    "max_length a million": (_config(lambda c: c.update(max_length=10**6)), CONFIG_FILE, r"max_length"),
    "max_length missing": (_config(lambda c: c.pop("max_length")), CONFIG_FILE, r"missing 'max_length'"),
    "encoder a path": (_config(lambda c: c.update(encoder="../../etc/passwd")), CONFIG_FILE,
                       r"encoder must be one of efficientnet_lite0.*not '\.\./\.\./etc/passwd'"),
    "encoder a list": (_config(lambda c: c.update(encoder=["efficientnet_lite0"])), CONFIG_FILE, r"encoder must be"),
    "format_version -7": (_config(lambda c: c.update(format_version=-7)), CONFIG_FILE,
                          r"format_version must be a whole number from 1 to 1, not -7"),
    "format_version a string": (_config(lambda c: c.update(format_version="1")), CONFIG_FILE, r"format_version"),
    "name a list": (_config(lambda c: c.update(name=["x"])), CONFIG_FILE, r"name must be a string"),
    "embedding section a string": (_config(lambda c: c.update(embedding="x")), CONFIG_FILE,
                                   r"'embedding' must be a JSON object"),
    "metrics a list": (_write(METRICS_FILE, "[1, 2]"), METRICS_FILE, r"expected a JSON object, not a list"),
    "metrics scores a list": (_write(METRICS_FILE, '{"scores": [1]}'), METRICS_FILE, r"'scores' must be"),
    "history a list": (_write(HISTORY_FILE, "[]"), HISTORY_FILE, r"expected a JSON object"),
    "history loss not numbers": (_write(HISTORY_FILE, '{"loss": ["a"]}'), HISTORY_FILE, r"'loss' must be a list"),
    "vocab words not strings": (lambda b: _edit_json(b / VOCAB_FILE, lambda v: v["words"].__setitem__(-1, 7)),
                                VOCAB_FILE, r"non-empty string"),
    "vocab over its size cap": (_oversized(VOCAB_FILE, "a"), VOCAB_FILE, r"larger than \d+ bytes"),
    "weights over their size cap": (_sparse_weights, WEIGHTS_FILE, r"more than the [\d,]+ a bundle may hold"),
}


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_tampered_bundle_fails_before_building_the_model(tiny_bundle_copy, monkeypatch, name):
    tampering, file_name, problem = TAMPERINGS[name]
    tampering(tiny_bundle_copy)

    def no_model(*args, **kwargs):
        raise AssertionError("build_decoder called: the model was built before the bundle was checked")

    monkeypatch.setattr("captioning.bundle.build_decoder", no_model)
    with pytest.raises(BundleError) as info:
        load_bundle(tiny_bundle_copy)
    message = str(info.value)
    assert message.startswith(str(tiny_bundle_copy / file_name) + ":"), message
    assert re.search(problem, message), message
    assert "\n" not in message and len(message) < 400, message


def test_the_committed_sizes_pass_the_caps(tiny_bundle_copy):
    """The caps are not so tight that a real model fails: the committed 256-unit config passes."""
    from captioning.bundle import read_config

    _set_decoder(vocab_size=2533, embedding_dim=256, units=256)(tiny_bundle_copy)
    read_config(tiny_bundle_copy / CONFIG_FILE)


@pytest.mark.parametrize("sizes", [(11, 7, 5, 3), (2533, 1280, 256, 256)])
def test_weight_shapes_are_those_of_the_built_model(sizes):
    """The bundle checks shapes and parameter counts without building: they must be the model's."""
    from collections import Counter

    from captioning.model import DecoderConfig, build_decoder, parameter_count, weight_shapes

    config = DecoderConfig(*sizes)
    model = build_decoder(config)
    assert Counter(weight_shapes(config)) == Counter(tuple(w.shape) for w in model.weights)
    assert parameter_count(config) == model.count_params()


def test_cli_reports_a_tampered_bundle_in_one_line(tiny_bundle_copy, sample_images):
    import subprocess
    import sys

    _set_decoder(units=50000)(tiny_bundle_copy)
    result = subprocess.run([sys.executable, "-m", "captioning", "caption", "--model", str(tiny_bundle_copy),
                             str(sample_images[0])], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot load model: {tiny_bundle_copy / CONFIG_FILE}: decoder.units must be a whole "
                      f"number from 1 to 4096, not 50000"], result.stderr
    assert "Traceback" not in result.stderr
