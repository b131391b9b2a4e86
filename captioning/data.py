"""Teacher-forcing batches: one sequence per caption, grouped by length.

For a caption ``<start> a dog runs <end>`` the input is ``<start> a dog runs`` and the
target ``a dog runs <end>``: the model learns every prefix of the caption in one
sequence.  Captions of similar length share a batch, padded to a multiple of
``pad_to`` so that few distinct shapes reach the compiled training step.
"""

from __future__ import annotations

import math

import numpy as np

from .vocab import Vocabulary


def without_autotune(dataset):
    """``dataset`` with tf.data's autotuning off.  Our pipelines set their parallelism and prefetch
    themselves; left on, deleting an iterator waits for the autotuner's thread, which made most
    Flickr8k epochs on 2 cores take 41.0 s of which 24 s were training steps."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def encode_captions(captions: dict[str, list[str]], image_index: dict[str, int], vocab: Vocabulary,
                    max_words: int) -> tuple[np.ndarray, list[list[int]]]:
    """(image row per caption, token ids per caption); captions longer than ``max_words`` are dropped."""
    rows, sequences = [], []
    for image, texts in captions.items():
        for text in texts:
            ids = vocab.encode(text)
            if len(ids) - 2 <= max_words:
                rows.append(image_index[image])
                sequences.append(ids)
    return np.array(rows, dtype=np.int64), sequences


class CaptionBatches:
    """Batches of ``({"image_features", "caption_in"}, target, weights)``; a new
    shuffle every pass when ``shuffle``.  :meth:`dataset` wraps them for ``model.fit``."""

    def __init__(self, features: np.ndarray, rows: np.ndarray, sequences: list[list[int]],
                 batch_size: int = 64, shuffle: bool = True, seed: int = 0, pad_to: int = 4):
        self.features = features
        self.rows = rows
        self.sequences = sequences
        self.lengths = np.array([len(s) - 1 for s in sequences])
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.pad_to = pad_to
        self.rng = np.random.default_rng(seed)

    def _make_batches(self) -> list[np.ndarray]:
        if self.shuffle:  # random order within each length, then random batch order
            order = np.lexsort((self.rng.random(len(self.lengths)), self.lengths))
        else:
            order = np.argsort(self.lengths, kind="stable")
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.shuffle:
            self.rng.shuffle(batches)
        return batches

    def __len__(self) -> int:
        return int(math.ceil(len(self.lengths) / self.batch_size))

    def __iter__(self):
        for members in self._make_batches():
            yield self._batch(members)

    def _batch(self, members: np.ndarray):
        width = int(math.ceil(self.lengths[members].max() / self.pad_to) * self.pad_to)
        caption_in = np.zeros((len(members), width), dtype=np.int32)
        target = np.zeros((len(members), width), dtype=np.int32)
        for row, member in enumerate(members):
            seq = self.sequences[member]
            caption_in[row, :len(seq) - 1] = seq[:-1]
            target[row, :len(seq) - 1] = seq[1:]
        weights = (target != 0).astype(np.float32)
        inputs = {"image_features": self.features[self.rows[members]], "caption_in": caption_in}
        return inputs, target, weights

    def dataset(self):
        """A ``tf.data.Dataset`` over the batches (time dimension left open)."""
        return batch_dataset(lambda: iter(self), self.features.shape[1:], len(self))


def batch_dataset(generate, feature_shape: tuple[int, ...], batches: int):
    """A ``tf.data.Dataset`` over the ``batches`` teacher-forcing batches that ``generate()`` yields
    (as :meth:`CaptionBatches._batch` makes them; time dimension left open), the next one prepared
    during the current step, the autotuner off.  ``feature_shape``: one image's features,
    ``(feature_dim,)`` for pooled ones."""
    import tensorflow as tf

    signature = (
        {"image_features": tf.TensorSpec((None, *feature_shape), tf.float32),
         "caption_in": tf.TensorSpec((None, None), tf.int32)},
        tf.TensorSpec((None, None), tf.int32),
        tf.TensorSpec((None, None), tf.float32),
    )
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return without_autotune(dataset.apply(tf.data.experimental.assert_cardinality(batches)).prefetch(2))
