"""Interrupted training (issue 5.4): a run killed at any point leaves the bundle already
published intact, publishes nothing half-done, and running the same command again
continues from the last finished epoch."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from captioning.bundle import load_bundle
from captioning.data import CaptionBatches
from captioning.model import LSTM, DecoderConfig
from captioning.training import TrainSettings, fit_decoder

ROOT = Path(__file__).resolve().parents[1]
VARIANT = "learned"
EPOCHS = 4
TRAIN_ARGS = ["--limit-images", "30", "--epochs", str(EPOCHS), "--embedding-dim", "16", "--units", "16",
              "--min-count", "2", "--variant", VARIANT, "--settings", "greedy", "--scst-epochs", "0",
              "--patience", "10",  # no early stop: every run trains exactly EPOCHS epochs
              "--batch-size", "8"]  # ~20 steps an epoch, so that a signal sent after epoch 1 lands mid-run
WAIT_SECONDS = 240


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def epochs_logged(log: str) -> list[int]:
    return [int(n) for n in re.findall(r"INFO epoch (\d+):", log)]


class TrainRun:
    """``python -m training.train`` in a subprocess, its output in a log file."""

    def __init__(self, flickr8k: Path, work: Path, name: str):
        self.log_path = work / f"{name}.log"
        self.out, self.runs = work / "weights", work / "runs"
        command = [sys.executable, "-m", "training.train", "--data", str(flickr8k), *TRAIN_ARGS,
                   "--out", str(self.out), "--runs", str(self.runs), "--cache-dir", str(work / "cache")]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, path: Path) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while not path.exists():
            if self.process.poll() is not None:
                pytest.fail(f"training ended (exit {self.process.returncode}) before {path} appeared:\n{self.log}")
            if time.monotonic() > deadline:
                self.kill(signal.SIGKILL)
                pytest.fail(f"{path} did not appear within {WAIT_SECONDS} s:\n{self.log}")
            time.sleep(0.01)

    def kill(self, sig: int) -> int:
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"training did not stop within 60 s of signal {sig}:\n{self.log}")

    def finish(self) -> int:
        try:
            return self.process.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            pytest.fail(f"training did not finish within {WAIT_SECONDS} s:\n{self.log}")


@pytest.fixture
def work(tiny_weights, tmp_path) -> Path:
    """A weights/ folder that already holds a published ``learned`` bundle, and the feature cache
    of the tiny models (a superset of what these runs need, so no features are extracted)."""
    (tmp_path / "weights").mkdir()
    shutil.copytree(tiny_weights / VARIANT, tmp_path / "weights" / VARIANT)
    if (tiny_weights.parent / "cache").is_dir():
        shutil.copytree(tiny_weights.parent / "cache", tmp_path / "cache")
    return tmp_path


def test_killed_runs_keep_the_old_bundle_and_resume(flickr8k, work):
    weights, bundle = work / "weights", work / "weights" / VARIANT
    state_file = work / "runs" / VARIANT / "state.json"
    staging = weights / f".staging-{VARIANT}"
    before = snapshot(bundle)
    old_units = json.loads((bundle / "config.json").read_text())["decoder"]["units"]

    def assert_old_bundle_intact():
        assert snapshot(bundle) == before, "the published bundle changed"
        assert not list(weights.glob(f"{VARIANT}.old-*")), "a half-finished publish"

    # 1. Ctrl-C once the first epoch's checkpoint exists: mid-training (or at worst mid-evaluation).
    first = TrainRun(flickr8k, work, "first")
    first.wait_for(state_file)
    assert first.kill(signal.SIGINT) != 0, first.log
    assert_old_bundle_intact()
    state = json.loads(state_file.read_text())
    done = state["epoch"]
    assert 1 <= done <= EPOCHS and len(state["history"]["loss"]) == done
    logged = epochs_logged(first.log)  # an epoch may have been logged but not yet checkpointed
    assert logged[:done] == list(range(1, done + 1)) and len(logged) in (done, done + 1), first.log

    # 2. Run again, and kill -9 it while it evaluates the finished model in the staging folder.
    second = TrainRun(flickr8k, work, "second")
    second.wait_for(staging / "config.json")
    assert second.kill(signal.SIGKILL) == -signal.SIGKILL
    assert f"resuming after epoch {done} " in second.log, second.log
    assert epochs_logged(second.log) == list(range(done + 1, EPOCHS + 1)), "did not continue where it stopped"
    assert_old_bundle_intact()
    assert json.loads(state_file.read_text())["epoch"] == EPOCHS

    # 3. Run again to the end: nothing left to train, the new bundle is evaluated and published.
    third = TrainRun(flickr8k, work, "third")
    assert third.finish() == 0, third.log
    assert f"resuming after epoch {EPOCHS} " in third.log
    assert epochs_logged(third.log) == []

    assert sorted(p.name for p in weights.iterdir()) == [VARIANT, "training.log",  # no staging, no .old
                                                         "training_summary.json"]
    assert not (work / "runs" / VARIANT).exists(), "checkpoints of a finished run are removed"
    new = load_bundle(bundle)
    assert new.config["decoder"]["units"] == 16 != old_units
    assert new.config["training"]["epochs_run"] == EPOCHS
    assert len(new.history["loss"]) == len(new.history["val_loss"]) == EPOCHS
    assert new.history["loss"][:done] == state["history"]["loss"], "history of the first run was lost"
    assert (bundle / "metrics.json").is_file()


# -- fit_decoder in process: which checkpoints are resumed ---------------------------

def _batches(seed: int, n_images: int = 12, feature_dim: int = 8, vocab_size: int = 12):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_images, feature_dim)).astype(np.float32)
    rows = np.repeat(np.arange(n_images), 2)
    sequences = [[2, *rng.integers(4, vocab_size, size=int(rng.integers(2, 6))).tolist(), 3] for _ in rows]
    return (CaptionBatches(features, rows, sequences, batch_size=8, shuffle=True, seed=0),
            CaptionBatches(features, rows[:8], sequences[:8], batch_size=8, shuffle=False))


def test_only_a_checkpoint_of_the_same_model_and_data_is_resumed(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="captioning.training")
    checkpoints = tmp_path / "runs"
    small = DecoderConfig(vocab_size=12, feature_dim=8, embedding_dim=4, units=4, dropout=0.0)
    train, dev = _batches(seed=1)

    def fit(config, epochs, data=(train, dev), **settings):
        caplog.clear()
        model, history = fit_decoder(config, *data, TrainSettings(epochs=epochs, patience=10, **settings),
                                     checkpoints)
        return model, history, caplog.text

    _, history, log = fit(small, 1)
    assert len(history["loss"]) == 1 and "resuming" not in log

    _, history, log = fit(small, 2)  # same model and data, more epochs: continue
    assert "resuming after epoch 1 " in log and len(history["loss"]) == 2

    bigger = DecoderConfig(vocab_size=12, feature_dim=8, embedding_dim=4, units=6, dropout=0.0)
    model, history, log = fit(bigger, 3)  # other sizes: the old checkpoint cannot be used
    assert "other decoder sizes" in log and "resuming" not in log
    assert model.get_layer(LSTM).units == 6 and len(history["loss"]) == 3

    _, history, log = fit(bigger, 3, data=_batches(seed=2))  # other training data: start afresh too
    assert "other training data" in log and len(history["loss"]) == 3

    # other training settings (a rerun with another seed or learning rate): not the old run's epochs
    # under the new settings' name
    for changed in ({"seed": 7}, {"learning_rate": 0.01}, {"label_smoothing": 0.1}):
        fit(bigger, 1, data=_batches(seed=2))  # a checkpoint of the default settings
        _, history, log = fit(bigger, 1, data=_batches(seed=2), **changed)
        assert "other training settings" in log and "resuming" not in log, changed
        assert len(history["loss"]) == 1
    fit(bigger, 3, data=_batches(seed=2))  # afresh (the last checkpoint is label smoothing's): 3 epochs

    # a state.json written before this check (no "run" entry) is still resumed
    state_file = checkpoints / "state.json"
    state = json.loads(state_file.read_text())
    del state["run"]
    state_file.write_text(json.dumps(state))
    _, history, log = fit(bigger, 4, data=_batches(seed=2))
    assert "resuming after epoch 3 " in log and len(history["loss"]) == 4


def test_falls_of_the_validation_loss_below_min_delta_do_not_count_as_improvement(tmp_path):
    """Every epoch after the first moves the validation loss by far less than min_delta=10: the
    run stops after `patience` such epochs, shrinking the step after each, and still keeps the
    epoch of the lowest validation loss; with min_delta=0 the same run trains every epoch."""
    small = DecoderConfig(vocab_size=12, feature_dim=8, embedding_dim=4, units=4, dropout=0.0)
    train, dev = _batches(seed=1)
    settings = TrainSettings(epochs=6, patience=2, min_delta=10.0, learning_rate=1e-2)
    _, history = fit_decoder(small, train, dev, settings, tmp_path / "strict")
    assert len(history["loss"]) == 3 and history["stopped_early"]
    assert history["learning_rate"] == [1e-2, 1e-2, 1e-2 * settings.lr_decay]
    assert history["best_epoch"] == 1 + int(np.argmin(history["val_loss"]))
    assert history["val_loss"][1] < history["val_loss"][0]  # a fall, only under min_delta

    settings = TrainSettings(epochs=6, patience=2, min_delta=0.0, learning_rate=1e-2)
    _, history = fit_decoder(small, train, dev, settings, tmp_path / "plain")
    assert len(history["loss"]) == 6 and not history["stopped_early"]
    assert history["learning_rate"][:3] == [1e-2] * 3  # the same falls count as improvement here


def test_settings_recorded_before_min_delta_existed_read_as_what_they_ran():
    """A stage-1 bundle written before min_delta (e.g. for --from-bundles) stopped on any fall of the
    dev loss: it reads as min_delta 0; a recorded value is kept; a record lacking others is refused."""
    recorded = TrainSettings(epochs=7, min_delta=0.01).to_dict()
    assert TrainSettings.from_record(recorded) == TrainSettings(epochs=7, min_delta=0.01)
    del recorded["min_delta"], recorded["label_smoothing"]  # neither existed: plain cross-entropy then
    assert TrainSettings.from_record({**recorded, "epochs_run": 5}) == TrainSettings(epochs=7, min_delta=0.0)
    del recorded["patience"]
    with pytest.raises(ValueError, match="lack patience"):
        TrainSettings.from_record(recorded)
