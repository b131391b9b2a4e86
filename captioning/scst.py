"""Self-critical sequence training (Rennie et al. 2017): fine-tune a decoder on its own captions,
rewarded by their CIDEr-D.

Cross-entropy training teaches the next word after a *reference* prefix; at test time the model
continues its *own* prefix, and it is scored on whole captions.  SCST closes both gaps with
REINFORCE on the test metric:

    for a minibatch of images:
        sample k captions per image from the model            (NumPy step decoder, no gradients)
        reward r = CIDEr-D of each caption against the image's training references
        advantage a = r - mean reward of the image's other k-1 samples   (the self-critical baseline)
        loss = -mean over words of a * log p(word | prefix, image)       (teacher-forced Keras passes,
                                                                          rows grouped by length)
             + w * cross-entropy of the images' reference captions        (optional, w = cross_entropy_weight)

The baseline makes the update push up the captions better than their siblings and push down
the worse ones, with no value network.  CIDEr-D is pycocoevalcap's own scorer; its document
frequencies come from the training split once (not from the minibatch), and ``<end>`` counts as
a word in both the samples and the references, so a caption that stops mid-phrase ("a dog in
the <end>") loses the reward of the references' final n-grams.  Frozen embeddings stay frozen
(the Keras pass trains ``model.trainable_variables`` only), so the embedding comparison stays fair.

Sampling runs with dropout off, and so does the gradient pass: the log-probabilities are those
of the policy that produced the samples.

Checkpoint folder layout (as in :mod:`captioning.training`; written atomically):
    last.weights.h5    weights after the latest finished epoch
    best.weights.h5    weights with the best dev CIDEr-D so far (the epoch-0 weights count too)
    state.json         epochs done, dev CIDEr-D per epoch, the best epoch, mean reward per epoch, and
                       what the checkpoint is of (:func:`checkpoint_identity`): it is resumed only
                       by the same fine-tuning of the same starting model
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
from pycocoevalcap.cider.cider_scorer import CiderScorer, cook_refs, cook_test

from .bundle import write_json
from .cider import scored_text
from .decoding import Decoder, StepDecoder, forbid_end_at_first_step
from .text import tokenize
from .training import save_atomic
from .vocab import Vocabulary

log = logging.getLogger(__name__)


@dataclass
class ScstSettings:
    # Passes over the training images; the best by dev CIDEr-D is kept.  Measured with 8: best epochs
    # 2 (learned), 3 (FastText), 8 (Word2Vec, 0.006 above its epoch 3); every further epoch costs ~110 s.
    epochs: int = 3
    images_per_batch: int = 50  # x samples_per_image captions per gradient step
    samples_per_image: int = 5  # the baseline of each sample is the mean reward of the other 4
    learning_rate: float = 5e-5
    clipnorm: float = 5.0
    select_beam_width: int = 3  # epochs are compared by dev CIDEr-D of the captions this beam gives (1: greedy)
    # Weight of the batch images' reference captions' cross-entropy added to the loss (0: pure SCST).
    # Pure SCST narrows the vocabulary to the safest words; the references pull it back.
    cross_entropy_weight: float = 0.2
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class _Frequencies(dict):
    """Document frequencies that answer 0 for an n-gram never seen, without storing it
    (pycocoevalcap indexes a defaultdict, which would grow by every sampled n-gram)."""

    def __missing__(self, ngram) -> float:
        return 0.0


class _FixedIdfCider(CiderScorer):
    """pycocoevalcap's CIDEr-D with the IDF fixed in advance.  ``compute_cider`` takes the log of
    the number of images it scores as N; here N and the document frequencies are the whole
    training split's, so a caption's reward does not depend on which minibatch it is in."""

    def __init__(self, document_frequency: _Frequencies, log_images: float):
        super().__init__()
        self.document_frequency = document_frequency
        self._log_images = log_images

    ref_len = property(lambda self: self._log_images, lambda self, value: None)


class CiderDReward:
    """CIDEr-D (x10, as reported) of captions against one split's references.

    ``references``: image name -> its reference captions (cleaned text, as in the corpus).
    Calling it with image names and captions (word lists; ``finished`` says which ended with
    ``<end>``) returns one reward per caption (n,).  pycocoevalcap computes it, vectorising the
    references anew for each caption: right for a minibatch's 5 references per image; consensus
    re-ranking, which scores against 100 at a time, uses :class:`captioning.cider.CiderDIndex`.
    """

    def __init__(self, references: Mapping[str, Sequence[str]]):
        self._cooked = {image: cook_refs([scored_text(tokenize(r), True) for r in refs])
                        for image, refs in references.items()}
        counter = CiderScorer()
        counter.crefs = list(self._cooked.values())
        counter.compute_doc_freq()
        self._document_frequency = _Frequencies(counter.document_frequency)
        self._log_images = math.log(len(self._cooked))

    def __call__(self, images: Sequence[str], captions: Sequence[Sequence[str]],
                 finished: Sequence[bool]) -> np.ndarray:
        scorer = _FixedIdfCider(self._document_frequency, self._log_images)
        scorer.crefs = [self._cooked[image] for image in images]
        scorer.ctest = [cook_test(scored_text(words, done)) for words, done in zip(captions, finished)]
        return np.asarray(scorer.compute_cider(), dtype=np.float64)


def sample_captions(decoder: Decoder, features: np.ndarray, samples_per_image: int, max_length: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``samples_per_image`` captions per image (n, feature_dim), drawn word by word from the
    model's distribution (temperature 1; banned words never; no ``<end>`` first).

    Returns (ids (n * k, T <= max_length) padded with 0 -- ``<end>`` included where a caption
    finished --, finished (n * k,) bool); rows ``i * k .. i * k + k - 1`` belong to image i."""
    vocab = decoder.vocab
    projection = np.repeat(decoder.project_image(features), samples_per_image, axis=0)  # (n * k, units)
    rows = len(projection)
    ids = np.zeros((rows, max_length), dtype=np.int32)
    finished = np.zeros(rows, dtype=bool)
    active = np.arange(rows)  # the rows still writing; a finished row is not stepped again
    state, words = decoder.initial_state(rows), np.full(rows, vocab.start_id)
    for t in range(max_length):
        logprobs, state = decoder.step(words, state, projection[active])  # (active, vocab)
        forbid_end_at_first_step(logprobs, t, vocab.end_id)
        # Inverse CDF, every row at once: the first word whose cumulative probability passes a
        # uniform draw (a banned word adds nothing to the sum, so it is never the first).  One
        # draw per row, finished or not, so that a row's draws do not depend on the others.
        cumulative = np.cumsum(np.exp(logprobs), axis=1)  # (active, vocab)
        draws = rng.random(rows)[active] * cumulative[:, -1]
        words = np.minimum((cumulative <= draws[:, None]).sum(axis=1), len(vocab) - 1)  # (active,)
        ids[active, t] = words
        ending = words == vocab.end_id
        finished[active[ending]] = True
        going, (h, c) = ~ending, state
        active, words, state = active[going], words[going], (h[going], c[going])  # rows, as beam search keeps them
        if not len(active):
            break
    longest = int((ids != 0).sum(axis=1).max())
    return ids[:, :longest], finished


def leave_one_out_advantages(rewards: np.ndarray) -> np.ndarray:
    """(images, k) rewards -> (images, k) advantages: each reward minus the mean of the image's
    other k - 1 rewards."""
    k = rewards.shape[1]
    if k < 2:
        raise ValueError("the self-critical baseline needs at least 2 samples per image")
    others = (rewards.sum(axis=1, keepdims=True) - rewards) / (k - 1)
    return rewards - others


def teacher_forcing_arrays(ids: np.ndarray, start_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sampled ids (n, T) (0-padded, ``<end>`` where finished) -> (caption_in, target, weights),
    each (n, T): the input is ``<start>`` + the sample shifted right, the target the sample."""
    caption_in = np.zeros_like(ids)
    caption_in[:, 0] = start_id
    caption_in[:, 1:] = ids[:, :-1]
    return caption_in, ids, (ids != 0).astype(np.float32)


LENGTH_GROUPS = 3  # teacher-forced passes per step (with them an SCST epoch took 108-115 s, not 134: README)


def by_length(features: np.ndarray, caption_in: np.ndarray, target: np.ndarray, weights: np.ndarray,
              scale: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """Teacher-forcing rows -- features (n, f), caption_in, target, weights (n, T), scale (n,) --
    in ``LENGTH_GROUPS`` groups of similar length (some empty when n is smaller), each cut to its
    longest row: the same words with less padding for the LSTM to run over (a batch of samples is
    padded to its longest sample)."""
    lengths = weights.sum(axis=1)
    groups = []
    for members in np.array_split(np.argsort(lengths, kind="stable"), LENGTH_GROUPS):
        width = max(int(lengths[members].max(initial=0)), 1)
        groups.append((features[members], caption_in[members, :width], target[members, :width],
                       weights[members, :width], scale[members]))
    return groups


def _mean_log_prob(model: keras.Model, groups):
    """sum over the words of every group of scale x log p(target word | prefix, image), divided by
    the number of words in all groups: one mean, however the rows are grouped."""
    import tensorflow as tf

    total, words = 0.0, 0.0
    for features, caption_in, target, weights, scale in groups:
        probs = model({"image_features": features, "caption_in": caption_in}, training=False)  # (n, T, V)
        log_probs = tf.math.log(tf.maximum(tf.gather(probs, target, batch_dims=2), 1e-12))  # (n, T)
        total += tf.reduce_sum(scale[:, None] * log_probs * weights)
        words += tf.reduce_sum(weights)
    return total / words


def make_policy_gradient_step(model: keras.Model, optimizer: keras.optimizers.Optimizer,
                              cross_entropy_weight: float = 0.0):
    """A compiled step: ``samples`` (:func:`by_length` of the sampled captions, scale = their
    advantages) -> loss, applying the gradient of -mean(advantage x log p(target word)) over the
    words of the samples.  With ``cross_entropy_weight`` > 0 the step takes ``references`` too
    (:func:`by_length` of the reference captions, scale 1) and adds their mean per-word
    cross-entropy, times the weight.  Traced once: every size is left open."""
    import tensorflow as tf

    variables = model.trainable_variables
    group = (tf.TensorSpec((None, model.inputs[0].shape[-1]), tf.float32),  # features
             tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None, None), tf.int32),  # caption_in, target
             tf.TensorSpec((None, None), tf.float32), tf.TensorSpec((None,), tf.float32))  # weights, scale
    groups = [group] * LENGTH_GROUPS

    def loss_and_update(samples, references):
        with tf.GradientTape() as tape:
            loss = -_mean_log_prob(model, samples)
            if references is not None:
                loss += cross_entropy_weight * -_mean_log_prob(model, references)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    if cross_entropy_weight > 0:
        return tf.function(loss_and_update, input_signature=[groups, groups])
    return tf.function(lambda samples: loss_and_update(samples, None), input_signature=[groups])


def reference_arrays(vocab: Vocabulary, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference captions (cleaned text) -> teacher-forcing (caption_in, target, weights), each (m, T)."""
    encoded = [vocab.encode(caption) for caption in captions]  # <start> ... <end>
    ids = np.zeros((len(encoded), max(len(e) for e in encoded) - 1), dtype=np.int32)
    for row, sequence in enumerate(encoded):
        ids[row, :len(sequence) - 1] = sequence[1:]
    return teacher_forcing_arrays(ids, vocab.start_id)


def best_captions(decoder: Decoder, features: np.ndarray, max_length: int, beam_width: int) -> list[list[str]]:
    """Each image's caption (as words) from beam search of ``beam_width`` (1: greedy, in one batch)."""
    if beam_width == 1:
        hyps = decoder.greedy(features, max_length)
    else:
        hyps = [decoder.beam_search(row, beam_width, max_length)[0] for row in features]
    return [[decoder.vocab.words[i] for i in hyp.ids] for hyp in hyps]


@dataclass
class ScstData:
    """One split for SCST: image names, their feature rows (n, feature_dim), their reward and, for
    the cross-entropy term, each image's reference captions (cleaned text)."""

    images: list[str]
    features: np.ndarray
    reward: CiderDReward
    references: list[list[str]] | None = None


def dev_cider(model: keras.Model, vocab: Vocabulary, dev: ScstData, max_length: int, beam_width: int) -> float:
    """Corpus CIDEr-D (with ``<end>``, as the reward) of the dev split's captions from beam search
    of ``beam_width`` -- the decoding the test scores are reported for -- with the split's own
    document frequencies."""
    captions = best_captions(StepDecoder(model, vocab), dev.features, max_length, beam_width)
    return float(np.mean(dev.reward(dev.images, captions, [True] * len(captions))))


def weights_digest(model: keras.Model) -> str:
    """A digest of the model's weights, shapes included: which starting (stage-1) model a fine-tuning
    began from.  Stage 1 ends by loading its best checkpoint, so a rerun that resumes the same
    stage 1 gets the same digest, and one that retrained it (other settings) does not."""
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(repr(weights.shape).encode())
        digest.update(np.ascontiguousarray(weights).tobytes())
    return digest.hexdigest()[:16]


def _data_digest(vocab: Vocabulary, train: ScstData, dev: ScstData) -> str:
    """A digest of the vocabulary and the training and dev images fine-tuned and scored on."""
    return hashlib.sha256(json.dumps([vocab.words, train.images, dev.images]).encode()).hexdigest()[:16]


# What a checkpoint's identity records, as the warning names it when it differs.
IDENTITY_LABELS = {"settings": "SCST settings", "start_weights": "starting (stage-1) weights",
                   "decoder": "decoder config", "data": "vocabulary or images"}


def checkpoint_identity(model: keras.Model, vocab: Vocabulary, train: ScstData, dev: ScstData,
                        settings: ScstSettings, decoder: Mapping | None) -> dict:
    """What an SCST checkpoint must match to be resumed: the settings, the starting weights (taken
    before any checkpoint is loaded), the decoder's config and the data."""
    return {"settings": settings.to_dict(), "start_weights": weights_digest(model),
            "decoder": dict(decoder) if decoder is not None else None, "data": _data_digest(vocab, train, dev)}


def _resumable(state: dict | None, identity: dict, checkpoint_dir: Path) -> dict | None:
    """``state`` if its checkpoint is of this very fine-tuning, else None, with a warning saying why
    (a checkpoint from before the identity was recorded cannot show its starting model: not resumed)."""
    if state is None:
        return None
    if "start_weights" not in state:
        log.warning("%s holds an SCST checkpoint that does not record its starting model; starting stage 2 afresh",
                    checkpoint_dir)
        return None
    differ = [label for key, label in IDENTITY_LABELS.items() if state.get(key) != identity[key]]
    if differ:
        log.warning("%s holds an SCST checkpoint of other %s; starting stage 2 afresh", checkpoint_dir,
                    ", ".join(differ))
        return None
    return state


def fine_tune(model: keras.Model, vocab: Vocabulary, train: ScstData, dev: ScstData, max_length: int,
              settings: ScstSettings, checkpoint_dir: str | Path,
              keep_epochs: str | Path | None = None, decoder: Mapping | None = None) -> tuple[keras.Model, dict]:
    """SCST from the model's current (cross-entropy) weights; resumes a checkpoint in
    ``checkpoint_dir`` only when it fine-tuned the same starting weights with the same settings,
    ``decoder`` config (the model's :class:`captioning.model.DecoderConfig` as a dict) and data; any
    other checkpoint there is discarded.  Returns the model holding the best weights by dev CIDEr-D
    (possibly the starting ones: epoch 0) and the history ``{"dev_cider": [epoch 0, 1, ...],
    "mean_reward": [...], "epoch_seconds": [...], "best_epoch": n}``.  With ``keep_epochs``, every epoch's weights are
    also copied there as ``epoch<n>.weights.h5`` (``tools.average_epochs`` reads them)."""
    if settings.cross_entropy_weight > 0 and train.references is None:
        raise ValueError("a cross-entropy weight needs the training images' reference captions (ScstData.references)")
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    if keep_epochs is not None:
        Path(keep_epochs).mkdir(parents=True, exist_ok=True)
    last, best, state_file = (checkpoint_dir / n for n in ("last.weights.h5", "best.weights.h5", "state.json"))
    identity = checkpoint_identity(model, vocab, train, dev, settings, decoder)
    state = json.loads(state_file.read_text()) if state_file.is_file() and last.is_file() else None
    state = _resumable(state, identity, checkpoint_dir)
    if state is not None:
        model.load_weights(last)
        log.info("SCST: resuming after epoch %d (best dev CIDEr-D %.4f)", state["epoch"], max(state["dev_cider"]))
    else:
        _discard_checkpoint(checkpoint_dir, keep_epochs)
        state = {**identity, "epoch": 0, "best_epoch": 0, "mean_reward": [], "epoch_seconds": [],
                 "dev_cider": [dev_cider(model, vocab, dev, max_length, settings.select_beam_width)]}
        save_atomic(model.save_weights, best)
        log.info("SCST: dev CIDEr-D %.4f before fine-tuning", state["dev_cider"][0])

    optimizer = keras.optimizers.Adam(settings.learning_rate, clipnorm=settings.clipnorm)
    step = make_policy_gradient_step(model, optimizer, settings.cross_entropy_weight)
    k, per_batch = settings.samples_per_image, settings.images_per_batch
    while state["epoch"] < settings.epochs:
        epoch = state["epoch"]
        rng = np.random.default_rng([settings.seed, epoch])  # a resumed epoch draws what it would have
        started = time.perf_counter()
        order = rng.permutation(len(train.images))
        decoder, rewards = StepDecoder(model, vocab), []
        for start in range(0, len(order), per_batch):
            members = order[start:start + per_batch]
            features = train.features[members]  # (b, f)
            ids, finished = sample_captions(decoder, features, k, max_length, rng)  # (b * k, T)
            words = [[vocab.words[i] for i in row if i not in (0, vocab.end_id)] for row in ids]
            images = [train.images[m] for m in members for _ in range(k)]
            reward = train.reward(images, words, finished).reshape(len(members), k)
            advantages = leave_one_out_advantages(reward).reshape(-1).astype(np.float32)
            samples = by_length(np.repeat(features, k, axis=0).astype(np.float32),
                                *teacher_forcing_arrays(ids, vocab.start_id), advantages)
            if settings.cross_entropy_weight > 0:
                counts = [len(train.references[m]) for m in members]
                arrays = reference_arrays(vocab, [c for m in members for c in train.references[m]])
                step(samples, by_length(np.repeat(features, counts, axis=0).astype(np.float32), *arrays,
                                        np.ones(len(arrays[0]), np.float32)))
            else:
                step(samples)
            decoder = StepDecoder(model, vocab)  # the sampler follows the updated weights
            rewards.append(reward.mean())
        score = dev_cider(model, vocab, dev, max_length, settings.select_beam_width)
        seconds = time.perf_counter() - started
        state["dev_cider"].append(score)
        state["mean_reward"].append(float(np.mean(rewards)))
        state["epoch_seconds"].append(round(seconds, 2))
        improved = score > max(state["dev_cider"][:-1])
        log.info("SCST epoch %d: mean sample reward %.4f, dev CIDEr-D %.4f, %.1f s%s", epoch + 1,
                 state["mean_reward"][-1], score, seconds, " (best)" if improved else "")
        if improved:
            save_atomic(model.save_weights, best)
            state["best_epoch"] = epoch + 1
        state["epoch"] = epoch + 1
        save_atomic(model.save_weights, last)
        if keep_epochs is not None:
            shutil.copyfile(last, Path(keep_epochs) / f"epoch{epoch + 1}.weights.h5")
        write_json(state_file, state)

    model.load_weights(best)
    return model, {key: state[key] for key in ("dev_cider", "mean_reward", "epoch_seconds", "best_epoch")}


def _discard_checkpoint(checkpoint_dir: Path, keep_epochs: str | Path | None) -> None:
    """Before starting afresh: remove another fine-tuning's checkpoint and kept epochs, so that a run
    killed in its first epoch leaves nothing of the other one to resume, nor to average with its own."""
    for name in ("state.json", "last.weights.h5", "best.weights.h5"):
        (checkpoint_dir / name).unlink(missing_ok=True)
    for kept in Path(keep_epochs).glob("epoch*.weights.h5") if keep_epochs is not None else []:
        kept.unlink()
