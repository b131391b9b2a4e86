"""Caption decoding: greedy and beam search over an incremental NumPy decoder.

The trained Keras model reads whole captions.  To generate one word at a time
without re-running the LSTM over the prefix, :class:`StepDecoder` copies the
model's weights into NumPy and carries the LSTM state from word to word:

    image features --(once)--> image projection p
    word, (h, c)  --LSTM cell--> h', c';  p + h' -> Dense -> softmax -> next word

Each word costs one LSTM step; beam search runs all beams of a step as one batch.
Greedy and beam search live in :class:`Decoder`, written against the step interface only,
so an ensemble of decoders (:mod:`captioning.ensemble`) reuses them unchanged.
:func:`naive_greedy` is the textbook decoder (``model.predict`` on the padded
prefix for every word), kept as the reference the step decoder must match.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import keras
import numpy as np

from .diversity import STOPWORDS
from .model import IMAGE_PROJECTION, LSTM, MERGE_DENSE, WORD_EMBEDDING, WORD_PROBS
from .vocab import N_SPECIAL, Vocabulary


@dataclass
class Hypothesis:
    """One decoded caption: word ids (without start/end) and each word's log-probability."""

    ids: list[int]
    word_logprobs: list[float]  # one per id, plus the end token's when it finished
    finished: bool

    @property
    def logprob(self) -> float:
        return float(sum(self.word_logprobs))

    def score(self, length_penalty: float) -> float:
        """Log-probability normalised by length**alpha (alpha 0: raw sum, 1: mean per word)."""
        return self.logprob / max(1, len(self.word_logprobs)) ** length_penalty


LENGTH_PENALTY = 0.7  # beam search ranks captions by log p / length**0.7: a mild preference for longer ones
# A caption says each content word once: without this, 11-15% of beam-3 captions repeat one ("a boy
# rides a bike on a bike"); with it, dev CIDEr-D rose ~0.01 for each model (tools.repeats).
NO_REPEATS = True


def _sigmoid(x, xp=np):
    return 0.5 * (xp.tanh(0.5 * x) + 1.0)  # stable, no overflow warnings


def _log_softmax(logits, xp=np):
    shifted = logits - xp.max(logits, axis=-1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))


def lstm_step(xp, input_gates, state, lstm_recurrent, lstm_bias):
    """The LSTM cell: the words' input gates (n, 4 * units) and the state (h, c) -> the new (h, c)."""
    h, c = state
    z = input_gates + h @ lstm_recurrent + lstm_bias
    u = lstm_recurrent.shape[0]
    i, f = _sigmoid(z[:, :u], xp), _sigmoid(z[:, u:2 * u], xp)
    g, o = xp.tanh(z[:, 2 * u:3 * u]), _sigmoid(z[:, 3 * u:], xp)
    c = f * c + i * g
    return o * xp.tanh(c), c


def merge_output(xp, image_projection, h, merge_kernel, merge_bias, out_kernel, out_bias):
    """The merge: image projection + LSTM output (n, units) -> next-word log-probabilities (n, vocab)."""
    merged = xp.maximum((image_projection + h) @ merge_kernel + merge_bias, 0.0)
    return _log_softmax(merged @ out_kernel + out_bias, xp)


def merge_step(xp, input_gates, state, image_projection, lstm_recurrent, lstm_bias, merge_kernel, merge_bias,
               out_kernel, out_bias):
    """One step of the merge decoder: the words' LSTM input gates (n, 4 * units) and the state (h, c)
    -> (next-word log-probabilities (n, vocab), new state).  Written against an array namespace
    ``xp`` offering tanh, maximum, max, sum, exp and log: NumPy for :class:`StepDecoder`; the
    benchmark passes TensorFlow's ops to time the same step as a graph."""
    h, c = lstm_step(xp, input_gates, state, lstm_recurrent, lstm_bias)
    return merge_output(xp, image_projection, h, merge_kernel, merge_bias, out_kernel, out_bias), (h, c)


def banned_ids(vocab: Vocabulary) -> np.ndarray:
    """Ids the decoder never emits: padding, start and unknown."""
    return np.array([vocab.pad_id, vocab.start_id, vocab.unk_id])


def forbid_end_at_first_step(scores: np.ndarray, t: int, end_id: int, lowest: float = -np.inf) -> None:
    """At step ``t == 0`` give ``<end>`` the score ``lowest`` in place: a caption has at least one word."""
    if t == 0:
        scores[:, end_id] = lowest


def once_only_ids(vocab: Vocabulary) -> np.ndarray:
    """(vocab,) bool: the content words (every word but the function words of
    :data:`captioning.diversity.STOPWORDS` and the special tokens), which a caption says at most once."""
    return np.array([i >= N_SPECIAL and word not in STOPWORDS for i, word in enumerate(vocab.words)])


def forbid_repeats(scores: np.ndarray, prefixes, once_only: np.ndarray, lowest: float = -np.inf) -> None:
    """Give each row's content words already said (``prefixes[row]``, word ids) the score ``lowest``, in place."""
    for row, ids in enumerate(prefixes):
        said = [word for word in ids if once_only[word]]
        if said:
            scores[row, said] = lowest


def _top_indices(scores: np.ndarray, m: int) -> np.ndarray:
    """Flat indices of the ``m`` largest ``scores``, best first, ties in index order.

    The same as ``np.argsort(-scores, axis=None, kind="stable")[:m]`` without sorting
    the whole (beams, vocab) matrix: partition first, then sort the few that can win.
    """
    flat = scores.ravel()
    if flat.size > 4 * m:
        threshold = np.partition(flat, flat.size - m)[flat.size - m]  # the m-th largest
        candidates = np.flatnonzero(flat >= threshold)  # index order; keeps every tie at the threshold
        return candidates[np.argsort(-flat[candidates], kind="stable")][:m]
    return np.argsort(-flat, kind="stable")[:m]


class Decoder:
    """Greedy and beam search over any step function.

    A subclass provides ``vocab`` and three methods, and the searches below use nothing else:

    * ``project_image(features (n, feature_dim)) -> projection (n, d)``: once per image;
    * ``initial_state(n) -> (h, c)``: two arrays with one row per caption;
    * ``step(word_ids (n,), (h, c), projection (n, d)) -> (log-probabilities (n, vocab), (h', c'))``:
      the next-word scores of each row (banned words -inf) and the new state.

    Beam search keeps a hypothesis's state by indexing rows (``h[rows], c[rows]``), so the
    state may hold anything per row: :class:`StepDecoder` holds one LSTM's (h, c);
    :class:`captioning.ensemble.EnsembleDecoder` holds several, side by side.
    :func:`captioning.guided.constrained_beam_search` takes the same interface.
    """

    vocab: Vocabulary

    def project_image(self, features: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def initial_state(self, n: int):
        raise NotImplementedError

    def step(self, word_ids: np.ndarray, state, image_projection: np.ndarray):
        raise NotImplementedError

    @cached_property
    def once_only(self) -> np.ndarray:
        """(vocab,) bool: the words a caption says at most once (:func:`once_only_ids`)."""
        return once_only_ids(self.vocab)

    def greedy(self, features: np.ndarray, max_length: int, no_repeats: bool = NO_REPEATS) -> list[Hypothesis]:
        """Most likely word at each step, for a batch of images (n, feature_dim); with
        ``no_repeats``, no content word twice in a caption."""
        n = len(features)
        projection = self.project_image(features)
        state = self.initial_state(n)
        words = np.full(n, self.vocab.start_id)
        hyps = [Hypothesis([], [], False) for _ in range(n)]
        for t in range(max_length):
            logprobs, state = self.step(words, state, projection)
            forbid_end_at_first_step(logprobs, t, self.vocab.end_id)
            if no_repeats:
                forbid_repeats(logprobs, [hyp.ids for hyp in hyps], self.once_only)
            words = logprobs.argmax(axis=1)
            for row, hyp in enumerate(hyps):
                if hyp.finished:
                    continue
                hyp.word_logprobs.append(float(logprobs[row, words[row]]))
                if words[row] == self.vocab.end_id:
                    hyp.finished = True
                else:
                    hyp.ids.append(int(words[row]))
            if all(h.finished for h in hyps):
                break
        return hyps

    def beam_search(self, features: np.ndarray, beam_width: int, max_length: int,
                    length_penalty: float = LENGTH_PENALTY, n_best: int | None = None,
                    no_repeats: bool = NO_REPEATS) -> list[Hypothesis]:
        """The ``n_best`` (default ``beam_width``) captions of one image (feature_dim,),
        best first by length-normalised log-probability; with ``no_repeats``, no content word
        twice in a caption."""
        n_best = n_best or beam_width
        projection = self.project_image(features.reshape(1, -1))
        state = self.initial_state(1)
        alive = [Hypothesis([], [], False)]
        last_words = np.array([self.vocab.start_id])
        finished: list[Hypothesis] = []
        for t in range(max_length):
            logprobs, (h, c) = self.step(last_words, state, np.repeat(projection, len(alive), axis=0))
            forbid_end_at_first_step(logprobs, t, self.vocab.end_id)
            if no_repeats:
                forbid_repeats(logprobs, [hyp.ids for hyp in alive], self.once_only)
            totals = np.array([hyp.logprob for hyp in alive])[:, None] + logprobs
            # Best 2k continuations: enough that k stay alive after some end here.  An <end>
            # finishes a caption only if it ranks among the best k (as in fairseq and
            # Hugging Face), so a width-1 beam is exactly greedy decoding.
            next_alive, rows = [], []
            for rank, index in enumerate(_top_indices(totals, 2 * beam_width)):
                row, word = divmod(int(index), logprobs.shape[1])
                if not np.isfinite(totals[row, word]):
                    break
                parent = alive[row]
                lp = parent.word_logprobs + [float(logprobs[row, word])]
                if word == self.vocab.end_id:
                    if rank < beam_width:
                        finished.append(Hypothesis(parent.ids, lp, True))
                elif len(next_alive) < beam_width:
                    next_alive.append(Hypothesis(parent.ids + [word], lp, False))
                    rows.append(row)
            # Stop once the beam has finished k captions, however many the caller wants back,
            # so n_best=1 returns the same best caption as the full n-best list.
            if len(finished) >= max(beam_width, n_best) or not next_alive:
                break
            alive, last_words = next_alive, np.array([hyp.ids[-1] for hyp in next_alive])
            state = (h[rows], c[rows])
        else:
            finished.extend(alive)  # out of length: keep what we have
        if not finished:
            finished = alive
        finished.sort(key=lambda hyp: -hyp.score(length_penalty))
        return finished[:n_best]


class StepDecoder(Decoder):
    """NumPy re-implementation of the merge decoder, one word per call."""

    def __init__(self, model: keras.Model, vocab: Vocabulary):
        def weights(name):
            return [w.astype(np.float32) for w in model.get_layer(name).get_weights()]

        self.vocab = vocab
        self.image_kernel, self.image_bias = weights(IMAGE_PROJECTION)
        (embeddings,) = weights(WORD_EMBEDDING)
        lstm_kernel, self.lstm_recurrent, self.lstm_bias = weights(LSTM)
        # Embedding lookup followed by the LSTM's input kernel, folded into one table.
        self.input_gates = embeddings @ lstm_kernel  # (vocab, 4 * units)
        self.merge_kernel, self.merge_bias = weights(MERGE_DENSE)
        self.out_kernel, self.out_bias = weights(WORD_PROBS)
        self.units = self.lstm_recurrent.shape[0]
        self.banned = banned_ids(vocab)

    def project_image(self, features: np.ndarray) -> np.ndarray:
        """(n, feature_dim) -> (n, units), computed once per image."""
        return np.maximum(features.astype(np.float32) @ self.image_kernel + self.image_bias, 0.0)

    def initial_state(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        zeros = np.zeros((n, self.units), dtype=np.float32)
        return zeros, zeros.copy()

    @property
    def step_weights(self) -> tuple[np.ndarray, ...]:
        """The weights :func:`merge_step` takes after the image projection, in its order."""
        return (self.lstm_recurrent, self.lstm_bias, self.merge_kernel, self.merge_bias, self.out_kernel,
                self.out_bias)

    def step(self, word_ids: np.ndarray, state, image_projection: np.ndarray):
        """Feed one word per row; return (next-word log-probabilities (n, vocab), new state)."""
        logprobs, state = merge_step(np, self.input_gates[word_ids], state, image_projection, *self.step_weights)
        logprobs[:, self.banned] = -np.inf
        return logprobs, state


def naive_greedy(model: keras.Model, features: np.ndarray, vocab: Vocabulary, max_length: int,
                 no_repeats: bool = NO_REPEATS) -> list[list[int]]:
    """Textbook decoder: ``model.predict`` on the whole padded prefix for every word (and, with
    ``no_repeats``, never a content word already said).

    Slow (the LSTM re-reads the prefix each step); kept as a reference for tests
    and the benchmark.
    """
    n = len(features)
    tokens = np.zeros((n, max_length + 1), dtype=np.int32)
    tokens[:, 0] = vocab.start_id
    done = np.zeros(n, dtype=bool)
    outputs: list[list[int]] = [[] for _ in range(n)]
    banned, once_only = banned_ids(vocab), once_only_ids(vocab)
    for t in range(max_length):
        probs = model.predict({"image_features": features, "caption_in": tokens[:, :t + 1]}, verbose=0)[:, t]
        probs[:, banned] = -1.0
        if no_repeats:
            forbid_repeats(probs, outputs, once_only, lowest=-1.0)
        forbid_end_at_first_step(probs, t, vocab.end_id, lowest=-1.0)
        words = probs.argmax(axis=1)
        tokens[:, t + 1] = words
        for row in np.flatnonzero(~done):
            if words[row] == vocab.end_id:
                done[row] = True
            else:
                outputs[row].append(int(words[row]))
        if done.all():
            break
    return outputs
