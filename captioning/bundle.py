"""A trained model on disk: one self-describing folder, no pickle, no code.

    weights/<name>/
        config.json          format version, encoder, decoder sizes, embedding, training settings, data,
                             the weights file's SHA-256
        vocab.json           the vocabulary, in id order
        decoder.weights.h5   Keras weights; the architecture is rebuilt from config.json
        metrics.json         test-set scores (written by training.evaluate)
        samples.json         every generated test caption (written with metrics.json)
        history.json         loss per epoch
        loss_curve.png       the same, plotted (drawn by training.train)

Loading checks every file and fails with a :class:`BundleError` that names the
file and what is wrong with it.  Every value is checked for type and range, and
every file for size, before anything is allocated (see the limits below), so a
tampered bundle fails with one line instead of a multi-gigabyte allocation.

Publishing and recovery (:func:`publish`, :func:`recover_bundle`).  A finished
bundle is staged in ``<parent>/.staging-<name>/`` and published with two renames:
the old ``<name>/`` is moved aside to ``<name>.old-<ns>``, then the staged folder
becomes ``<name>/``.  A kill between the two leaves ``<name>/`` missing; loading
(and the next training run) then puts back the newest complete copy, the staged
one first.  The rules that make this safe with several processes at once:

* a bundle is moved into ``<name>/`` only by one ``os.replace`` of the whole folder,
  which fails when ``<name>/`` already exists (it is never empty), so two processes
  never both put a bundle in place and nothing in place is ever overwritten;
* a folder is deleted only after a complete bundle is in ``<name>/``, and only after
  renaming it to ``.trash-...`` first (an atomic claim: one process wins), so
  a folder being deleted is never a recovery candidate;
* loading never deletes a staged folder: it may belong to a training run that is
  still evaluating; the next training run replaces it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import keras

from .encoders import ENCODERS
from .model import DecoderConfig, build_decoder, parameter_count, weight_shapes
from .vocab import Vocabulary

log = logging.getLogger("captioning.bundle")

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "decoder.weights.h5"
METRICS_FILE = "metrics.json"
SAMPLES_FILE = "samples.json"
HISTORY_FILE = "history.json"
LOSS_CURVE_FILE = "loss_curve.png"
REQUIRED_FILES = (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE)

STAGING_PREFIX = ".staging-"  # <parent>/.staging-<name>/: a bundle being written (training.train)
ASIDE_MARK = ".old-"          # <parent>/<name>.old-<ns>/: the previous bundle, moved aside by publish()
TRASH_PREFIX = ".trash-"      # <parent>/.trash-<name>-...: claimed for deletion, never loaded or recovered

# -- limits: what a bundle may ask for ---------------------------------------------------------
# Checked before anything is read into memory or allocated.  The committed bundles need a few
# MB; each cap is far above any model this library trains and far below what would exhaust the
# 16 GB machine the demo runs on, so a tampered file fails with a message, not an allocation.
MiB = 2**20
MAX_VOCAB_SIZE = 100_000      # caption vocabularies are 2.5k (Flickr8k) to ~10k (COCO) words
MAX_FEATURE_DIM = 8192        # the widest known encoder gives 3840 features (Lite0 + Lite1 + Lite2)
MAX_EMBEDDING_DIM = 2048      # word vectors are 50-300-d; 2048 leaves room for contextual ones
MAX_UNITS = 4096              # the committed LSTMs have 256 units
MAX_PARAMETERS = 50_000_000   # 200 MB of float32: ~20x the committed decoders (2.2M parameters)
                              # and within every cap above only for sane combinations of them
MAX_CAPTION_LENGTH = 100      # words per caption, <end> included; Flickr8k's longest is 23
MAX_JSON_DEPTH = 32           # our files nest 3 levels; deeper is tampering (and json recursion)
MAX_JSON_BYTES = {            # the committed files are 1 kB, 26 kB, 2 kB and 1 kB
    CONFIG_FILE: 64 * 1024,
    VOCAB_FILE: 8 * MiB,      # MAX_VOCAB_SIZE words of up to ~80 bytes each
    METRICS_FILE: 4 * MiB,
    HISTORY_FILE: 4 * MiB,
}
MAX_WEIGHTS_BYTES = 4 * MAX_PARAMETERS + 16 * MiB  # float32 weights plus HDF5 bookkeeping
DECODER_SIZE_CAPS = {"vocab_size": MAX_VOCAB_SIZE, "feature_dim": MAX_FEATURE_DIM,
                     "embedding_dim": MAX_EMBEDDING_DIM, "units": MAX_UNITS}
# Optional config.json sections the demo reads with .get(): when present they must be objects.
CONFIG_SECTIONS = ("embedding", "vocab", "training", "data")
# config.json's record of the weights file's SHA-256 (hex): a file changed by a bad disk, a partial
# copy or an edit fails to load instead of captioning with damaged weights whose shapes still fit.
# Bundles written before it have none and load without the check.
WEIGHTS_DIGEST = "weights_sha256"


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


# -- reading JSON safely ---------------------------------------------------------------------
def _json_depth(data) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(value, dict):
            stack += [(v, depth + 1) for v in value.values()]
        elif isinstance(value, list):
            stack += [(v, depth + 1) for v in value]
    return deepest


def _read_json(path: Path, required: bool = True):
    """Parsed JSON of ``path`` (at most MAX_JSON_BYTES[its name], nested at most MAX_JSON_DEPTH);
    {} for a missing optional file."""
    if not path.is_file():
        if required:
            raise BundleError(f"{path}: file is missing")
        return {}
    limit = MAX_JSON_BYTES[path.name]
    with path.open("rb") as file:
        raw = file.read(limit + 1)  # never more, whatever the file claims to be
    if len(raw) > limit:
        raise BundleError(f"{path}: file is larger than {limit} bytes, the most a {path.name} may hold")
    try:
        data = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise BundleError(f"{path}: not valid JSON (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, and ints of over 4300 digits
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if _json_depth(data) > MAX_JSON_DEPTH:
        raise BundleError(f"{path}: not valid for a bundle (JSON nested more than {MAX_JSON_DEPTH} levels)")
    return data


def _read_object(path: Path, required: bool = True) -> dict:
    data = _read_json(path, required)
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object, not a {type(data).__name__}")
    return data


# -- checking values -------------------------------------------------------------------------
def _whole_number(value, path: Path, field_name: str, top: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
        raise BundleError(f"{path}: {field_name} must be a whole number from 1 to {top}, not {_short(value)}")
    return value


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_format_version(config: dict, path: Path) -> None:
    if "format_version" not in config:
        raise BundleError(f"{path}: no 'format_version'")
    version = config["format_version"]
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise BundleError(f"{path}: format version {version} was written by a newer version of "
                          f"this library (this one reads up to {FORMAT_VERSION}); upgrade captioning")
    _whole_number(version, path, "format_version", FORMAT_VERSION)


def _decoder_config(config: dict, path: Path) -> DecoderConfig:
    section = config.get("decoder")
    if not isinstance(section, dict):
        raise BundleError(f"{path}: 'decoder' section is missing or malformed (expected an object, "
                          f"not {_short(section)})")
    try:
        decoder = DecoderConfig(**section)
    except TypeError as exc:
        raise BundleError(f"{path}: 'decoder' section is missing or malformed ({exc})") from None
    for key, top in DECODER_SIZE_CAPS.items():
        _whole_number(getattr(decoder, key), path, f"decoder.{key}", top)
    if (not isinstance(decoder.dropout, (int, float)) or isinstance(decoder.dropout, bool)
            or not 0 <= decoder.dropout < 1):
        raise BundleError(f"{path}: decoder.dropout must be a number in [0, 1), not {_short(decoder.dropout)}")
    if not isinstance(decoder.embedding_trainable, bool):
        raise BundleError(f"{path}: decoder.embedding_trainable must be true or false")
    parameters = parameter_count(decoder)
    if parameters > MAX_PARAMETERS:
        raise BundleError(f"{path}: decoder sizes describe {parameters:,} parameters, more than the "
                          f"{MAX_PARAMETERS:,} a bundle may hold")
    return decoder


def _check_encoder(config: dict, decoder: DecoderConfig, path: Path) -> None:
    if "encoder" not in config:
        raise BundleError(f"{path}: missing 'encoder'")
    name = config["encoder"]
    if not isinstance(name, str) or name not in ENCODERS:
        raise BundleError(f"{path}: encoder must be one of {', '.join(ENCODERS)}, not {_short(name)}")
    if decoder.feature_dim != ENCODERS[name].feature_dim:
        raise BundleError(f"{path}: decoder.feature_dim {decoder.feature_dim} does not match encoder {name}, "
                          f"which gives {ENCODERS[name].feature_dim} features")


def _check_descriptive_fields(config: dict, path: Path) -> None:
    if "max_length" not in config:
        raise BundleError(f"{path}: missing 'max_length'")
    _whole_number(config["max_length"], path, "max_length", MAX_CAPTION_LENGTH)
    if not isinstance(config.get("name", ""), str):
        raise BundleError(f"{path}: name must be a string, not {_short(config['name'])}")
    digest = config.get(WEIGHTS_DIGEST, "0" * 64)
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise BundleError(f"{path}: {WEIGHTS_DIGEST} must be 64 hex digits, not {_short(digest)}")
    for section in CONFIG_SECTIONS:
        if not isinstance(config.get(section, {}), dict):
            raise BundleError(f"{path}: '{section}' must be a JSON object, not {_short(config[section])}")


def read_config(path: Path) -> tuple[dict, DecoderConfig]:
    """config.json, every field checked: (the config, its decoder sizes)."""
    config = _read_object(path)
    _check_format_version(config, path)
    decoder = _decoder_config(config, path)
    _check_encoder(config, decoder, path)
    _check_descriptive_fields(config, path)
    return config, decoder


def read_vocab(path: Path, vocab_size: int) -> Vocabulary:
    """vocab.json, checked to hold exactly ``vocab_size`` (already capped) distinct words."""
    data = _read_json(path)  # its size cap bounds the word count
    try:
        vocab = Vocabulary.from_data(data)
    except ValueError as exc:
        raise BundleError(f"{path}: not a valid vocabulary ({exc})") from None
    if len(vocab) != vocab_size:
        raise BundleError(f"{path}: holds {len(vocab)} words but {CONFIG_FILE} says vocab_size {vocab_size}")
    return vocab


def _numbers(value) -> bool:
    return isinstance(value, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)


def read_metrics(path: Path) -> dict:
    """metrics.json (optional): an object; its 'scores', when present, an object of objects."""
    metrics = _read_object(path, required=False)
    scores = metrics.get("scores", {})
    if not isinstance(scores, dict) or not all(isinstance(s, dict) for s in scores.values()):
        raise BundleError(f"{path}: 'scores' must be an object of {{metric: value}} objects")
    return metrics


def read_history(path: Path) -> dict:
    """history.json (optional): an object; 'loss' and 'val_loss', when present, lists of numbers."""
    history = _read_object(path, required=False)
    for key in ("loss", "val_loss"):
        if key in history and not _numbers(history[key]):
            raise BundleError(f"{path}: '{key}' must be a list of numbers")
    return history


def _weights_file_shapes(weights_path: Path) -> list[tuple]:
    """Shapes of the arrays in a Keras weights file, read from its metadata only."""
    import h5py

    if not weights_path.is_file():
        raise BundleError(f"{weights_path}: file is missing")
    size = weights_path.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        raise BundleError(f"{weights_path}: file is {size:,} bytes, more than the {MAX_WEIGHTS_BYTES:,} "
                          f"a bundle may hold")
    shapes: list[tuple] = []
    try:
        with h5py.File(weights_path, "r") as f:
            if "layers" not in f:
                raise BundleError(f"{weights_path}: not a Keras weights file (no 'layers' group)")
            f["layers"].visititems(lambda _, obj: shapes.append(obj.shape) if isinstance(obj, h5py.Dataset) else None)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:  # HDF5's own errors for a damaged file
        raise BundleError(f"{weights_path}: unreadable, truncated or not HDF5 ({exc})") from None
    return shapes


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def _check_weights_digest(weights_path: Path, config: dict) -> None:
    expected = config.get(WEIGHTS_DIGEST)
    if expected is not None and file_sha256(weights_path) != expected:
        raise BundleError(f"{weights_path}: not the file {CONFIG_FILE} records ({WEIGHTS_DIGEST} differs): "
                          f"truncated, corrupt, or changed after training")


def _check_weight_shapes(weights_path: Path, decoder: DecoderConfig) -> None:
    """Compare the file's weight shapes with the decoder config.json describes, to name the mismatch."""
    expected = Counter(weight_shapes(decoder))
    found = Counter(tuple(s) for s in _weights_file_shapes(weights_path))
    if expected != found:
        extra, missing = sorted((found - expected).elements()), sorted((expected - found).elements())
        raise BundleError(f"{weights_path}: weight shapes do not match {CONFIG_FILE}: the file has "
                          f"{_short(extra) if extra else 'nothing'} where the decoder it describes needs "
                          f"{_short(missing) if missing else 'nothing'}")


def check_bundle_files(path: Path) -> tuple[dict, DecoderConfig, Vocabulary]:
    """Every check that needs no model: (config, decoder sizes, vocabulary), or BundleError."""
    config, decoder = read_config(path / CONFIG_FILE)
    vocab = read_vocab(path / VOCAB_FILE, decoder.vocab_size)
    _check_weight_shapes(path / WEIGHTS_FILE, decoder)
    _check_weights_digest(path / WEIGHTS_FILE, config)
    return config, decoder, vocab


def looks_complete(path: Path) -> bool:
    """Whether ``path`` holds a bundle that passes every check short of building the model."""
    try:
        check_bundle_files(Path(path))
    except BundleError:
        return False
    return True


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle, checking every file before the model is built.  A bundle folder missing
    because a publish was interrupted is first recovered (see :func:`recover_bundle`)."""
    path = Path(path)
    if not path.exists():
        recover_bundle(path)
    if not path.is_dir():
        raise BundleError(f"{path}: model folder not found")
    config, decoder_config, vocab = check_bundle_files(path)
    metrics = read_metrics(path / METRICS_FILE)
    history = read_history(path / HISTORY_FILE)

    weights_path = path / WEIGHTS_FILE
    model = build_decoder(decoder_config)
    try:
        model.load_weights(weights_path)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]  # Keras appends tensor dumps
        raise BundleError(f"{weights_path}: cannot be loaded into the decoder described by {CONFIG_FILE} "
                          f"(truncated, corrupt, or sizes that do not match): {reason}") from None
    clean_leftovers(path)
    return Bundle(path, config, vocab, model, metrics=metrics, history=history)


def write_json(path: str | Path, data) -> None:
    """Write ``data`` as indented JSON, atomically: a reader sees the old file or the new one, never
    half of one (written beside ``path``, then renamed over it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def save_bundle(path: str | Path, model: keras.Model, vocab: Vocabulary, config: dict,
                history: dict | None = None, metrics: dict | None = None) -> Path:
    """Write a bundle into ``path`` (created; existing files replaced)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # A fresh, uncompiled copy: the file then holds the decoder's weights only, no optimizer state.
    inference_model = build_decoder(DecoderConfig(**config["decoder"]))
    inference_model.set_weights(model.get_weights())
    inference_model.save_weights(path / WEIGHTS_FILE)
    config = {"format_version": FORMAT_VERSION, **config, WEIGHTS_DIGEST: file_sha256(path / WEIGHTS_FILE)}
    write_json(path / CONFIG_FILE, config)
    vocab.to_json(path / VOCAB_FILE)
    if history:
        write_json(path / HISTORY_FILE, history)
    if metrics:
        write_json(path / METRICS_FILE, metrics)
    return path


# -- publishing and recovery (rules in the module docstring) ------------------------------
def staging_path(destination: str | Path) -> Path:
    """Where a bundle for ``destination`` is written before :func:`publish` moves it in."""
    destination = Path(destination)
    return destination.with_name(f"{STAGING_PREFIX}{destination.name}")


def _aside_copies(destination: Path) -> list[Path]:
    """``<name>.old-<ns>`` folders next to ``destination``, newest first."""
    prefix = f"{destination.name}{ASIDE_MARK}"
    stamped = []
    for folder in destination.parent.glob(f"{prefix}*"):
        stamp = folder.name[len(prefix):]
        if stamp.isdigit():
            stamped.append((int(stamp), folder))
    return [folder for _, folder in sorted(stamped, reverse=True)]


def _move_aside(destination: Path) -> Path | None:
    """Rename ``destination`` to ``<name>.old-<ns>``; None when there was nothing to move."""
    aside = destination.with_name(f"{destination.name}{ASIDE_MARK}{time.time_ns()}")
    try:
        os.replace(destination, aside)
    except FileNotFoundError:
        return None
    return aside


def _delete(folder: Path) -> None:
    """Claim ``folder`` by renaming it to a trash name (one process wins), then delete it."""
    trash = folder.with_name(f"{TRASH_PREFIX}{folder.name}-{os.getpid()}-{time.time_ns()}")
    try:
        os.replace(folder, trash)
    except FileNotFoundError:
        return  # another process claimed it first
    shutil.rmtree(trash, ignore_errors=True)


def _put_in_place(candidate: Path, destination: Path) -> bool:
    """Move ``candidate`` to ``destination`` only if ``destination`` is absent; whether it moved."""
    try:
        os.replace(candidate, destination)  # fails on an existing (non-empty) destination
    except FileNotFoundError:
        return False  # the candidate was taken (published or claimed) by another process
    except OSError:
        if destination.exists():
            return False  # another process put a bundle in place first
        raise
    return True


def recover_bundle(destination: str | Path) -> Path | None:
    """If ``destination`` is missing (a publish killed between its two renames), put back the newest
    complete copy: the staged bundle, else the newest ``<name>.old-*``.  Returns the folder it
    moved into place, None when ``destination`` exists or no complete copy was found.  Deletes
    nothing."""
    destination = Path(destination)
    if destination.exists():
        return None
    for candidate in [staging_path(destination), *_aside_copies(destination)]:
        if not candidate.is_dir() or not looks_complete(candidate):
            continue
        try:
            moved = _put_in_place(candidate, destination)
        except OSError as exc:  # e.g. a read-only weights folder
            log.warning("%s is missing and %s could not be moved into its place: %s", destination, candidate, exc)
            return None
        if moved:
            log.warning("recovered %s from %s, the newest complete copy (a publish was interrupted)",
                        destination, candidate.name)
            return candidate
        if destination.exists():
            return None
    return None


def clean_leftovers(destination: str | Path) -> None:
    """Delete the moved-aside copies of ``destination`` and abandoned trash, once ``destination`` holds a
    complete bundle (callers check that).  Staged folders are left to training.train."""
    destination = Path(destination)
    for leftover in _aside_copies(destination):
        try:
            _delete(leftover)
        except OSError as exc:  # read-only folder: harmless, the bundle in place is complete
            log.warning("could not delete the leftover %s: %s", leftover, exc)
            return
    for trash in destination.parent.glob(f"{TRASH_PREFIX}{destination.name}{ASIDE_MARK}*"):
        shutil.rmtree(trash, ignore_errors=True)  # already claimed; a second deleter is harmless


def restore_bundle(destination: str | Path) -> None:
    """Recover ``destination`` if a publish was interrupted, then clean up once it is complete
    (training.train calls this before it writes a new staged bundle)."""
    destination = Path(destination)
    recover_bundle(destination)
    if looks_complete(destination):
        clean_leftovers(destination)


def _move_in(staging: Path, destination: Path) -> list[Path]:
    """Rename ``staging`` to ``destination``; returns the folders moved aside on the way, for deletion."""
    asides = []
    for _ in range(3):
        try:
            os.replace(staging, destination)
            return asides
        except FileNotFoundError:
            if not staging.exists() and destination.is_dir():
                log.info("%s was moved into place by a concurrent recovery", staging)
                return asides
            raise
        except OSError:
            if not destination.exists():
                raise
            # a concurrent recovery put an older copy back: move it aside as well and retry
            aside = _move_aside(destination)
            asides += [aside] if aside else []
    raise BundleError(f"{destination}: could not publish {staging}: another process keeps putting a bundle there")


def publish(staging: str | Path, destination: str | Path) -> Path:
    """Move a finished bundle from ``staging`` to ``destination``, replacing any older one.

    The old bundle is moved aside first and deleted only after the new one is in
    place.  A kill between the two renames leaves ``destination`` missing with both
    copies next to it; :func:`recover_bundle` (run by every load) puts the new one back.
    """
    staging, destination = Path(staging), Path(destination)
    aside = _move_aside(destination)
    asides = _move_in(staging, destination)
    for folder in [aside, *asides]:
        if folder is not None:
            _delete(folder)
    return destination
