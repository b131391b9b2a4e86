"""Fitting a decoder: Adam, validation every epoch; on a plateau, back to the best
weights with a smaller learning rate; early stopping on validation loss, the best
weights kept, and a checkpoint after every epoch so that a killed
run resumes where it stopped.

Checkpoint folder layout (all written atomically):
    last.keras   model + optimizer state after the latest finished epoch
    best.weights.h5   weights with the lowest validation loss so far
    state.json   epoch count, best validation loss, epochs without improvement, history
                 and what the run trains (decoder sizes, training data): a checkpoint of another
                 model or data set is not resumed

Under a ``tf.distribute`` strategy (:mod:`captioning.distribute`) the same loop trains the
same global batches, split across the replicas; only the chief writes that folder.  The other
workers of a multi-worker run write their checkpoints to a temporary folder of their own,
deleted when they finish, and resume from the chief's folder when they can read it (the same
``--runs`` on storage every worker sees).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import keras
import numpy as np
from keras import ops

from . import distribute
from .bundle import write_json
from .data import CaptionBatches
from .model import DecoderConfig, build_decoder

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    epochs: int = 20
    batch_size: int = 256  # fewer, bigger steps: an epoch on 2 CPU cores takes about 2/3 of the time it took at 64
    learning_rate: float = 2e-3  # with 4x the batch of the first recipe (64, 1e-3)
    clipnorm: float = 5.0
    patience: int = 3  # epochs in a row without validation improvement before stopping
    lr_decay: float = 0.2  # after an epoch without improvement: back to the best weights, learning rate x this
    # A smaller fall of the validation loss is no improvement (the weights are still kept if lowest):
    # in the runs before this rule, the 6-8 epochs after the second plateau lowered it by 0.001-0.002 in all.
    min_delta: float = 0.005
    min_learning_rate: float = 1e-5
    seed: int = 0
    # Share of each target word's probability spread evenly over the vocabulary (0: plain
    # cross-entropy). Not the default: 0.1 lifted Word2Vec's dev CIDEr-D by 0.03, its test CIDEr by
    # 0.001, and cost it 34 of its 375 distinct test words (README, "Nor label smoothing").
    label_smoothing: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, recorded: dict) -> TrainSettings:
        """The settings a bundle's config.json recorded (its "training" section); a bundle written
        before a setting existed ran with that setting's earlier behaviour (BEFORE_RECORDED)."""
        values = {**BEFORE_RECORDED, **recorded}
        missing = [f.name for f in fields(cls) if f.name not in values]
        if missing:
            raise ValueError(f"the recorded training settings lack {', '.join(missing)}")
        return cls(**{f.name: values[f.name] for f in fields(cls)})


# Settings added after bundles were first written, with the value that reproduces what those bundles ran.
BEFORE_RECORDED = {"min_delta": 0.0,  # before it, any fall of the dev loss counted as improvement
                   "label_smoothing": 0.0}


def word_losses(target, probs, label_smoothing: float = 0.0):
    """Cross-entropy at each position, (B, T), of the decoder's word probabilities ``probs`` (B, T, V)
    against the word ids ``target`` (B, T); with label smoothing e, the target distribution is
    1 - e on the word plus e / V on every word of the vocabulary."""
    losses = keras.losses.sparse_categorical_crossentropy(target, probs)  # (B, T)
    if not label_smoothing:
        return losses
    mean_log_prob = ops.mean(ops.log(ops.clip(probs, 1e-7, 1.0)), axis=-1)  # (B, T)
    return (1.0 - label_smoothing) * losses - label_smoothing * mean_log_prob


@keras.saving.register_keras_serializable(package="captioning")
class CaptionLoss(keras.losses.Loss):
    """:func:`word_losses` as a Keras loss, so that a checkpoint (``last.keras``) loads with it."""

    def __init__(self, label_smoothing: float = 0.0, name: str = "caption_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        return word_losses(y_true, y_pred, self.label_smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def compile_decoder(model: keras.Model, settings: TrainSettings) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate, clipnorm=settings.clipnorm),
        loss=CaptionLoss(settings.label_smoothing) if settings.label_smoothing
        else keras.losses.SparseCategoricalCrossentropy(),
        weighted_metrics=[],
    )
    return model


def save_atomic(save, path: Path) -> None:
    tmp = path.with_name("tmp-" + path.name)
    save(str(tmp))
    os.replace(tmp, path)


def _run_identity(config: DecoderConfig, train: CaptionBatches, settings: TrainSettings,
                  embedding_matrix: np.ndarray | None = None) -> dict:
    """What a checkpoint must match to be resumed: the decoder's sizes, the training captions, the
    training settings but the number of epochs (a run may be resumed to go on longer) and the
    frozen word vectors it started from."""
    digest = hashlib.sha256(np.ascontiguousarray(train.rows, dtype=np.int64).tobytes())
    for sequence in train.sequences:
        digest.update(np.asarray([len(sequence), *sequence], dtype=np.int64).tobytes())
    vectors = (None if embedding_matrix is None else
               hashlib.sha256(np.ascontiguousarray(embedding_matrix, dtype=np.float32).tobytes()).hexdigest()[:16])
    recipe = {key: value for key, value in settings.to_dict().items() if key != "epochs"}
    return {"decoder": config.to_dict(), "train_data": digest.hexdigest()[:16], "settings": recipe,
            "embedding": vectors}


# What a run's identity records, as the warning names it when it differs.
RUN_PARTS = {"decoder": "decoder sizes", "train_data": "training data", "settings": "training settings",
             "embedding": "word vectors"}


LAST, BEST, STATE = "last.keras", "best.weights.h5", "state.json"  # the checkpoint folder's files


def fit_decoder(
    config: DecoderConfig,
    train: CaptionBatches,
    dev: CaptionBatches,
    settings: TrainSettings,
    checkpoint_dir: str | Path,
    embedding_matrix: np.ndarray | None = None,
    strategy=None,
    build=build_decoder,
) -> tuple[keras.Model, dict]:
    """Train (or resume) and return the model holding its best weights, with the history:
    ``{"loss": [...], "val_loss": [...], "epoch_seconds": [...], "best_epoch": n, "stopped_early": bool}``.

    ``strategy``: a ``tf.distribute`` strategy from :func:`captioning.distribute.make_strategy`
    (created before any other TensorFlow op), or None for one process on one device.  With a
    strategy the returned model is a plain single-device copy of the trained weights, so that
    evaluation and fine-tuning afterwards run on this worker alone.

    ``build(config, embedding_matrix) -> keras.Model``: the decoder to fit, :func:`build_decoder` unless
    a measuring tool tries another architecture (``tools/stage1_probes.py``)."""
    checkpoint_dir = Path(checkpoint_dir)
    if distribute.is_chief(strategy):
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        return _fit(config, train, dev, settings, checkpoint_dir, embedding_matrix, strategy, build)
    own = Path(tempfile.mkdtemp(prefix=f"worker{distribute.worker_index(strategy)}-checkpoints-"))
    try:
        for name in (LAST, BEST, STATE):  # the chief's checkpoint, where this worker can read it
            if (checkpoint_dir / name).is_file():
                shutil.copy2(checkpoint_dir / name, own / name)
        return _fit(config, train, dev, settings, own, embedding_matrix, strategy, build)
    finally:
        shutil.rmtree(own, ignore_errors=True)


def _fit(config: DecoderConfig, train: CaptionBatches, dev: CaptionBatches, settings: TrainSettings,
         checkpoint_dir: Path, embedding_matrix: np.ndarray | None, strategy, build) -> tuple[keras.Model, dict]:
    last, best, state_file = checkpoint_dir / LAST, checkpoint_dir / BEST, checkpoint_dir / STATE
    keras.utils.set_random_seed(settings.seed)

    identity = _run_identity(config, train, settings, embedding_matrix)
    state = json.loads(state_file.read_text()) if state_file.is_file() and last.is_file() else None
    if state is not None and "run" in state:  # checkpoints without "run" predate the check
        differ = [label for key, label in RUN_PARTS.items() if state["run"].get(key) != identity[key]]
        if differ:
            log.warning("%s holds a checkpoint of other %s; starting afresh", checkpoint_dir, ", ".join(differ))
            state = None
    if strategy is not None:
        log.info("training with %s", distribute.describe(strategy))
        distribute.check_same_on_all_workers(strategy, {
            "resume epoch": state["epoch"] if state else 0, "training batches": len(train),
            "training data digest": int(identity["train_data"][:12], 16)})
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        if state is not None:
            model = keras.saving.load_model(last, safe_mode=True)
            log.info("resuming after epoch %d (best validation loss %.4f)", state["epoch"], state["best_val_loss"])
        else:
            state = {"epoch": 0, "best_val_loss": float("inf"), "best_epoch": 0, "wait": 0,
                     "learning_rate": settings.learning_rate,
                     "history": {"loss": [], "val_loss": [], "epoch_seconds": [], "learning_rate": []}}
            model = compile_decoder(build(config, embedding_matrix), settings)
    state["run"] = identity

    history = state["history"]
    if strategy is None:
        train_data, dev_data = train.dataset(), dev.dataset()
    else:
        trainer = distribute.DistributedTrainer(model, strategy, train, dev, settings.label_smoothing)
    stopped_early = state["wait"] >= settings.patience
    while state["epoch"] < settings.epochs and not stopped_early:
        epoch = state["epoch"]
        model.optimizer.learning_rate.assign(state["learning_rate"])
        started = time.perf_counter()
        if strategy is None:
            result = model.fit(train_data, validation_data=dev_data, epochs=epoch + 1,
                               initial_epoch=epoch, shuffle=False, verbose=0)
            loss, val_loss = result.history["loss"][-1], result.history["val_loss"][-1]
        else:
            loss, val_loss = trainer.epoch()
        seconds = time.perf_counter() - started
        history["loss"].append(float(loss))
        history["val_loss"].append(float(val_loss))
        history["epoch_seconds"].append(round(seconds, 2))
        history["learning_rate"].append(state["learning_rate"])
        best_before = state["best_val_loss"]
        best_so_far = val_loss < best_before
        log.info("epoch %d: loss %.4f, val_loss %.4f, lr %.1e, %.1f s%s", epoch + 1, loss, val_loss,
                 state["learning_rate"], seconds, " (best)" if best_so_far else "")
        if best_so_far:  # the checkpoint kept is always the lowest validation loss
            save_atomic(model.save_weights, best)
            state.update(best_val_loss=float(val_loss), best_epoch=epoch + 1)
        if val_loss < best_before - settings.min_delta:
            state["wait"] = 0
        else:
            # Plateau (no fall, or one under min_delta): continue from the best weights with a smaller step.
            state["wait"] += 1
            model.load_weights(best)
            state["learning_rate"] = max(settings.min_learning_rate, state["learning_rate"] * settings.lr_decay)
        state["epoch"] = epoch + 1
        save_atomic(model.save, last)
        write_json(state_file, state)
        stopped_early = state["wait"] >= settings.patience

    model.load_weights(best)
    if strategy is not None:  # what follows (evaluation, fine-tuning, saving) runs on one worker, one device
        model = _single_device_copy(model, config, settings, build)
    return model, {**history, "best_epoch": state["best_epoch"], "stopped_early": stopped_early}


def _single_device_copy(model: keras.Model, config: DecoderConfig, settings: TrainSettings, build) -> keras.Model:
    """The trained weights in a decoder built outside any strategy (plain variables on this host)."""
    copy = compile_decoder(build(config, None), settings)
    copy.set_weights(model.get_weights())
    return copy
