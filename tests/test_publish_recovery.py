"""A publish killed between its two renames (issue 15): ``weights/<name>/`` is missing, the new bundle
is still staged and the old one is moved aside.  Loading and the next training run put the newest
complete copy back on their own, and nothing is deleted before a complete bundle is in place."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from captioning import Captioner
from captioning.bundle import (CONFIG_FILE, WEIGHTS_FILE, BundleError, load_bundle, looks_complete, publish,
                               recover_bundle, staging_path)

ROOT = Path(__file__).resolve().parents[1]

# Runs publish() in a child process that SIGKILLs itself right after the first rename.
KILLED_PUBLISH = textwrap.dedent("""
    import os, signal, sys
    from captioning import bundle

    real_replace = os.replace
    def replace_then_die(src, dst):
        real_replace(src, dst)
        os.kill(os.getpid(), signal.SIGKILL)
    bundle.os.replace = replace_then_die
    bundle.publish(sys.argv[1], sys.argv[2])
""")


def _named_copy(source: Path, target: Path, name: str) -> Path:
    """A copy of the bundle ``source`` at ``target`` whose config.json says which copy it is."""
    shutil.copytree(source, target)
    config = json.loads((target / CONFIG_FILE).read_text())
    (target / CONFIG_FILE).write_text(json.dumps({**config, "name": name}))
    return target


def _killed_publish(weights: Path, bundle: Path, variant: str = "word2vec") -> Path:
    """``weights/<variant>`` holding an "old" bundle, a "new" one staged, and publish() killed between its
    renames; returns the (now missing) destination."""
    destination = weights / variant
    if destination.exists():
        destination.rename(weights / f"{variant}-replaced-by-the-test")  # no rmtree: tests watch deletions
    _named_copy(bundle, destination, "old")
    staging = _named_copy(bundle, staging_path(destination), "new")
    child = subprocess.run([sys.executable, "-c", KILLED_PUBLISH, str(staging), str(destination)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == -9, child.stderr  # killed, not finished
    assert not destination.exists() and staging.is_dir()
    assert [p.name.split(".old-")[0] for p in weights.glob(f"{variant}.old-*")] == [variant]
    return destination


@pytest.fixture
def weights(tiny_weights, tmp_path) -> Path:
    """A private weights/ folder with the three tiny bundles."""
    return Path(shutil.copytree(tiny_weights, tmp_path / "weights"))


@pytest.fixture
def deletions_checked(monkeypatch):
    """Fails the test if anything is deleted while no complete bundle is in place at ``destination``;
    returns a dict to set "destination" in and the list of deleted folders."""
    watch = {"destination": None, "deleted": []}
    real_rmtree = shutil.rmtree

    def checked_rmtree(path, *args, **kwargs):
        destination = watch["destination"]
        assert destination is not None and looks_complete(destination), \
            f"{path} deleted while {destination} holds no complete bundle"
        assert Path(path).resolve() != destination.resolve()
        watch["deleted"].append(Path(path))
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", checked_rmtree)
    return watch


def test_captioner_load_recovers_the_staged_bundle_after_a_kill(weights, tiny_weights, encoder, caplog, deletions_checked):
    destination = _killed_publish(weights, tiny_weights / "word2vec")
    deletions_checked["destination"] = destination

    with caplog.at_level(logging.WARNING, logger="captioning.bundle"):
        captioner = Captioner.load(destination, encoder=encoder)

    assert captioner.config["name"] == "new"  # the staged bundle is the newer one
    assert f"recovered {destination} from .staging-word2vec" in caplog.text
    assert looks_complete(destination)
    assert not list(weights.glob("word2vec.old-*")), "the superseded copy is cleaned once the new one is in place"
    assert len(deletions_checked["deleted"]) == 1


def test_cli_recovers_after_a_kill(weights, tiny_weights, sample_images):
    destination = _killed_publish(weights, tiny_weights / "word2vec")
    result = subprocess.run([sys.executable, "-m", "captioning", "caption", "--model", str(destination),
                             str(sample_images[0])], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["caption"]
    assert f"recovered {destination} from .staging-word2vec" in result.stderr
    assert json.loads((destination / CONFIG_FILE).read_text())["name"] == "new"


def test_app_model_set_recovers_after_a_kill(weights, tiny_weights):
    from demo.models import ModelSet

    destination = _killed_publish(weights, tiny_weights / "word2vec")
    models = ModelSet.load(weights)
    assert models.captioners["word2vec"].config["name"] == "new"
    assert (destination / "decoder.weights.h5").is_file()


def test_next_training_run_recovers_before_anything_else(weights, tiny_weights, tmp_path, caplog):
    """training.train recovers at start, before reading any data (here: a data folder that does not exist)."""
    from training.train import main as train_main

    destination = _killed_publish(weights, tiny_weights / "word2vec")
    with pytest.raises(SystemExit, match="captions file not found"):  # the data, read after the recovery
        train_main(["--data", str(tmp_path / "no-data"), "--variant", "word2vec", "--out", str(weights),
                    "--runs", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")])
    assert json.loads((destination / CONFIG_FILE).read_text())["name"] == "new"
    assert looks_complete(destination)
    assert not list(weights.glob("word2vec.old-*"))


def test_an_incomplete_staged_copy_falls_back_to_the_newest_complete_old_one(weights, deletions_checked):
    destination = weights / "word2vec"
    bundle = destination.rename(weights / "source")
    staging = _named_copy(bundle, staging_path(destination), "staged")
    (staging / WEIGHTS_FILE).write_bytes((staging / WEIGHTS_FILE).read_bytes()[:1000])  # killed mid-write
    _named_copy(bundle, weights / "word2vec.old-1000", "older")
    _named_copy(bundle, weights / "word2vec.old-2000", "newer")
    deletions_checked["destination"] = destination

    assert load_bundle(destination).config["name"] == "newer"
    assert not (weights / "word2vec.old-1000").exists()  # superseded, deleted after "newer" was in place
    assert staging.is_dir(), "loading never deletes a staged folder: a training run may own it"


def test_no_complete_copy_fails_cleanly_and_deletes_nothing(weights, deletions_checked):
    destination = weights / "word2vec"
    staging = destination.rename(staging_path(destination))
    (staging / WEIGHTS_FILE).unlink()
    aside = _named_copy(staging, weights / "word2vec.old-1", "old")
    (aside / CONFIG_FILE).write_text("{")

    with pytest.raises(BundleError, match=r"word2vec: model folder not found"):
        load_bundle(destination)
    assert staging.is_dir() and aside.is_dir()
    assert deletions_checked["deleted"] == []


def _replace_with_interference(monkeypatch, interference):
    """os.replace as publish() sees it, with ``interference`` run once right after the first rename,
    standing for another process acting between publish's two renames."""
    import os

    real_replace, calls = os.replace, []

    def replace(src, dst):
        real_replace(src, dst)
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 1:
            interference()

    monkeypatch.setattr("captioning.bundle.os.replace", replace)
    return calls


def test_publish_survives_a_concurrent_recovery_between_its_renames(weights, monkeypatch):
    """An app starting between the renames recovers the staged bundle itself; publish then finds it in
    place and still removes the old copy."""
    destination = weights / "word2vec"
    staging = _named_copy(destination, staging_path(destination), "new")
    _replace_with_interference(monkeypatch, lambda: recover_bundle(destination))

    publish(staging, destination)
    assert json.loads((destination / CONFIG_FILE).read_text())["name"] == "new"
    assert not staging.exists() and not list(weights.glob("word2vec.old-*"))


def test_publish_moves_aside_an_old_copy_put_back_between_its_renames(weights, monkeypatch):
    """If another process puts the old copy back between the renames, publish moves it aside again."""
    destination = weights / "word2vec"
    staging = _named_copy(destination, staging_path(destination), "new")

    def put_old_back():
        (aside,) = weights.glob("word2vec.old-*")
        aside.rename(destination)

    _replace_with_interference(monkeypatch, put_old_back)
    publish(staging, destination)
    assert json.loads((destination / CONFIG_FILE).read_text())["name"] == "new"
    assert not staging.exists() and not list(weights.glob("word2vec.old-*"))
