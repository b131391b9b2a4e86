"""Distributed training (issue 14.3): ``--strategy mirrored`` and ``--strategy multiworker`` train
what one process trains.

- TF_CONFIG is checked before TensorFlow sees it, with errors that say what is wrong.
- A global batch's replica slices add up to it, with the weights that make the summed loss the
  one-process loss.
- In process: the mirrored path on this machine's one CPU device equals the default path (loss
  history and weights), and resumes a checkpoint the default path wrote.
- Two ``python -m training.train --strategy multiworker`` processes on loopback (two replicas,
  gradients all-reduced over gRPC) finish, only the chief publishes, and the chief's loss curve
  equals a single-process run's.

Tolerance of the two comparisons: relative 1e-5 in process and 1e-4 across processes.  Measured:
1e-7 (float32 rounding: the summed slices and the all-reduce add in another order than one
process's batch mean; over 16 steps of Adam it stays there).  The errors this guards against are
three orders larger: while this was built, a padded slice counted in the loss tracker gave 6e-4,
Keras's per-replica mean of an odd dev batch 7.5e-3, and one empty extra optimizer step per epoch
moved the weights by 1e-3.  Dropout is off in the cross-process run: each replica draws its own
masks (``captioning.distribute``), so with dropout two replicas agree with one process only in
distribution.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from captioning import distribute
from captioning.data import CaptionBatches
from captioning.distribute import DistributeError, DistributedBatches, parse_tf_config
from captioning.model import DecoderConfig
from captioning.training import TrainSettings, fit_decoder

ROOT = Path(__file__).resolve().parents[1]
WAIT_SECONDS = 300


# -- TF_CONFIG -----------------------------------------------------------------------

def _config(cluster, task) -> str:
    return json.dumps({"cluster": cluster, "task": task})


TWO = {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}


@pytest.mark.parametrize("text, message", [
    (None, "needs TF_CONFIG"),
    ("", "needs TF_CONFIG"),
    ("{'cluster': 1}", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    (_config({}, {"type": "worker", "index": 0}), "no 'cluster'"),
    (_config({"worker": ["a:1"], "ps": ["b:2"]}, {"type": "worker", "index": 0}), "parameter servers"),
    (_config({"worker": []}, {"type": "worker", "index": 0}), "non-empty list"),
    (_config({"worker": ["127.0.0.1"]}, {"type": "worker", "index": 0}), "is not 'host:port'"),
    (_config({"worker": ["127.0.0.1:99999"]}, {"type": "worker", "index": 0}), "port must be 1-65535"),
    (_config({"worker": ["127.0.0.1:2222", "127.0.0.1:2222"]}, {"type": "worker", "index": 0}), "twice"),
    (_config({"worker": ["host one:2222"]}, {"type": "worker", "index": 0}), "not a host name"),
    (_config({"chief": ["a:1", "b:2"], "worker": ["c:3"]}, {"type": "chief", "index": 0}), "exactly one"),
    (_config(TWO, None), "no 'task'"),
    (_config(TWO, {"type": "evaluator", "index": 0}), "not a job of the cluster"),
    (_config(TWO, {"type": "worker", "index": 2}), "index 2 is out of range"),
    (_config(TWO, {"type": "worker", "index": "0"}), "out of range"),
])
def test_a_bad_tf_config_is_refused_saying_what_is_wrong(text, message):
    with pytest.raises(DistributeError, match=message):
        parse_tf_config(text)


def test_a_good_tf_config_and_its_chief():
    config = parse_tf_config(_config(TWO, {"type": "worker", "index": 1}))
    assert distribute.chief_of(config) == ("worker", 0)
    with_chief = parse_tf_config(_config({"chief": ["[::1]:2221"], **TWO}, {"type": "worker", "index": 0}))
    assert distribute.chief_of(with_chief) == ("chief", 0)


def test_strategies_by_name(monkeypatch):
    assert distribute.make_strategy("default") is None
    assert distribute.is_chief(None) and distribute.num_workers(None) == 1
    with pytest.raises(DistributeError, match="unknown strategy 'horovod'"):
        distribute.make_strategy("horovod")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(DistributeError, match="needs TF_CONFIG"):  # refused before TensorFlow starts a server
        distribute.make_strategy("multiworker")


def test_train_refuses_a_bad_tf_config_before_doing_anything(monkeypatch, tmp_path):
    from training.train import main as train_main

    monkeypatch.setenv("TF_CONFIG", _config(TWO, {"type": "worker", "index": 5}))
    with pytest.raises(SystemExit, match="index 5 is out of range"):
        train_main(["--strategy", "multiworker", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


# -- slices of a global batch --------------------------------------------------------

def _batches(seed: int = 1, images: int = 20, batch_size: int = 27, vocab_size: int = 30, feature_dim: int = 16,
             dev: bool = False) -> CaptionBatches:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(images, feature_dim)).astype(np.float32)
    rows = np.repeat(np.arange(images), 5)
    sequences = [[2, *rng.integers(4, vocab_size, size=int(rng.integers(2, 12))).tolist(), 3] for _ in rows]
    if dev:
        return CaptionBatches(features, rows[:45], sequences[:45], batch_size=16, shuffle=False)
    return CaptionBatches(features, rows, sequences, batch_size=batch_size, shuffle=True, seed=0)


@pytest.mark.parametrize("replicas, size", [(1, 27), (2, 27), (3, 27), (4, 3)])
def test_replica_slices_add_up_to_the_global_batch(replicas, size):
    batches = _batches()
    split = DistributedBatches(batches, SimpleNamespace(num_replicas_in_sync=replicas))
    members = split.order[0][:size]
    inputs, target, weights = batches._batch(members)
    slices = split.split(members)
    assert len(slices) == replicas and all(len(s[1]) >= 1 for s in slices)  # no replica gets an empty slice
    rows = [len(s[1]) for s in slices]
    assert max(rows) - min(rows) <= 1
    joined = [np.concatenate([s[i] for s in slices]) for i in (1, 2)]
    real = slice(0, len(members))  # weight-0 copies follow when there are fewer captions than replicas
    np.testing.assert_array_equal(joined[0][real], target)
    np.testing.assert_array_equal(np.concatenate([s[0]["caption_in"] for s in slices])[real], inputs["caption_in"])
    np.testing.assert_array_equal(np.concatenate([s[0]["image_features"] for s in slices])[real],
                                  inputs["image_features"])
    assert not joined[1][len(members):].any()
    # Keras's one-process loss: sum of the real words' losses / (captions x padded length)
    np.testing.assert_allclose(joined[1][real], weights / weights.size)


# -- one process, with and without a strategy ----------------------------------------

CONFIG = DecoderConfig(vocab_size=30, feature_dim=16, embedding_dim=8, units=8)  # dropout 0.5, as trained


@pytest.fixture(scope="module")
def mirrored():
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(["/cpu:0"])


def _fit(folder: Path, epochs: int, strategy=None, label_smoothing: float = 0.0):
    settings = TrainSettings(epochs=epochs, patience=10, label_smoothing=label_smoothing)
    model, history = fit_decoder(CONFIG, _batches(), _batches(dev=True), settings, folder, strategy=strategy)
    return model.get_weights(), history


def _assert_same(a, b, rtol=1e-5):
    (weights_a, history_a), (weights_b, history_b) = a, b
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(history_b[key], history_a[key], rtol=rtol, atol=0, err_msg=key)
    assert history_b["best_epoch"] == history_a["best_epoch"]
    for x, y in zip(weights_a, weights_b):
        np.testing.assert_allclose(y, x, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_mirrored_on_one_device_trains_what_the_default_path_trains(tmp_path, mirrored, label_smoothing):
    default = _fit(tmp_path / "default", 3, label_smoothing=label_smoothing)
    distributed = _fit(tmp_path / "mirrored", 3, mirrored, label_smoothing)
    _assert_same(default, distributed)
    state = json.loads((tmp_path / "mirrored" / "state.json").read_text())
    assert state["epoch"] == 3 and (tmp_path / "mirrored" / "best.weights.h5").is_file()


def test_mirrored_resumes_a_checkpoint_of_the_default_path(tmp_path, mirrored, caplog):
    """Resuming draws the batch order and dropout afresh (in either path), so the reference is the
    default path resuming the same checkpoint."""
    for name in ("default", "mirrored"):
        _fit(tmp_path / name, 1)
    resumed_default = _fit(tmp_path / "default", 2)
    with caplog.at_level("INFO", logger="captioning.training"):
        resumed_mirrored = _fit(tmp_path / "mirrored", 2, mirrored)
    assert "resuming after epoch 1 " in caplog.text
    _assert_same(resumed_default, resumed_mirrored)


# -- two workers on loopback ---------------------------------------------------------

TINY = ["--variant", "learned", "--limit-images", "40", "--embedding-dim", "32", "--units", "32", "--min-count", "2",
        "--epochs", "2", "--batch-size", "27", "--dropout", "0", "--scst-epochs", "0", "--no-evaluate"]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Training:
    """``python -m training.train`` in a subprocess, CPU only, its output in a log file."""

    def __init__(self, flickr8k: Path, work: Path, name: str, cache: Path, extra: list[str], tf_config=None):
        self.out, self.runs, self.log_path = work / name / "out", work / name / "runs", work / f"{name}.log"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1"}
        env.pop("TF_CONFIG", None)
        if tf_config:
            env["TF_CONFIG"] = tf_config
        command = [sys.executable, "-m", "training.train", "--data", str(flickr8k), *TINY, *extra,
                   "--out", str(self.out), "--runs", str(self.runs), "--cache-dir", str(cache)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _finish(*runs: Training) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    try:
        for run in runs:
            run.process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"training did not finish within {WAIT_SECONDS} s:\n" + "\n----\n".join(r.log for r in runs))
    finally:
        for run in runs:
            run.stop()
    for run in runs:
        assert run.process.returncode == 0, run.log


def test_two_workers_on_loopback_train_what_one_process_trains(flickr8k, tmp_path):
    cache = tmp_path / "cache"
    single = Training(flickr8k, tmp_path, "single", cache, [])  # also extracts the features both workers read
    _finish(single)

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = [Training(flickr8k, tmp_path, f"worker{i}", cache, ["--strategy", "multiworker"],
                        tf_config=_config(cluster, {"type": "worker", "index": i})) for i in range(2)]
    _finish(*workers)
    chief, other = workers

    expected = json.loads((single.out / "learned" / "history.json").read_text())
    history = json.loads((chief.out / "learned" / "history.json").read_text())
    for key in ("loss", "val_loss"):
        assert len(history[key]) == 2
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-4, atol=0, err_msg=key)
    config = json.loads((chief.out / "learned" / "config.json").read_text())["training"]
    assert (config["strategy"], config["replicas"]) == ("multiworker", 2)

    # The other worker trained the same model (its losses are the same all-reduced numbers) and
    # published nothing: no bundle, no checkpoints, only its log and summary.
    summary = json.loads((other.out / "training_summary-worker1.json").read_text())["variants"][0]
    assert summary["loss"] == history["loss"] and summary["val_loss"] == history["val_loss"]
    assert sorted(p.name for p in other.out.iterdir()) == ["training-worker1.log", "training_summary-worker1.json"]
    assert not other.runs.exists() and not (chief.runs / "learned").exists()
    assert "the chief evaluates, fine-tunes and publishes" in other.log
