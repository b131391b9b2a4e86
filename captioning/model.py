"""The "merge" caption decoder (Tanti et al. 2018).

    image features -> Dropout -> Dense(units, relu) ----------------.
                                                                     add -> Dense(units, relu) -> Dense(vocab, softmax)
    caption prefix -> Embedding -> Dropout -> LSTM(units) ----------'

The image never enters the LSTM: the LSTM only models the words so far, and the
image projection is added to its output at every position.  The model reads a
whole caption at once (teacher forcing) and predicts the next word at every
position, so one training sequence covers every prefix of a caption.

Only built-in layers are used, so saved weights load with Keras safe mode and the
architecture is rebuilt from ``config.json`` rather than deserialised.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import numpy as np
from keras import layers


@dataclass
class DecoderConfig:
    vocab_size: int
    feature_dim: int
    embedding_dim: int = 256
    units: int = 256
    dropout: float = 0.5
    embedding_trainable: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


# Layer names: the NumPy step decoder and the bundle loader find weights by these.
IMAGE_PROJECTION = "image_projection"
WORD_EMBEDDING = "word_embedding"
LSTM = "lstm"
MERGE_DENSE = "merge_dense"
WORD_PROBS = "word_probs"


def build_decoder(config: DecoderConfig, embedding_matrix: np.ndarray | None = None) -> keras.Model:
    """Inputs ``image_features`` (batch, feature_dim) and ``caption_in`` (batch, time) word ids,
    padded with 0; output next-word probabilities (batch, time, vocab_size)."""
    if embedding_matrix is not None and embedding_matrix.shape != (config.vocab_size, config.embedding_dim):
        raise ValueError(f"embedding matrix is {embedding_matrix.shape}, "
                         f"config says ({config.vocab_size}, {config.embedding_dim})")
    features = keras.Input((config.feature_dim,), name="image_features")
    caption_in = keras.Input((None,), dtype="int32", name="caption_in")

    image = layers.Dropout(config.dropout, name="image_dropout")(features)
    image = layers.Dense(config.units, activation="relu", name=IMAGE_PROJECTION)(image)
    image = layers.Reshape((1, config.units), name="image_per_step")(image)  # broadcasts over time

    embedding = layers.Embedding(
        config.vocab_size, config.embedding_dim, mask_zero=True, name=WORD_EMBEDDING,
        trainable=config.embedding_trainable,
        embeddings_initializer=(keras.initializers.Constant(embedding_matrix)
                                if embedding_matrix is not None else "uniform"),
    )
    words = embedding(caption_in)
    words = layers.Dropout(config.dropout, name="word_dropout")(words)
    words = layers.LSTM(config.units, return_sequences=True, name=LSTM)(words)

    merged = layers.Add(name="merge")([image, words])
    merged = layers.Dense(config.units, activation="relu", name=MERGE_DENSE)(merged)
    probs = layers.Dense(config.vocab_size, activation="softmax", name=WORD_PROBS)(merged)
    return keras.Model([features, caption_in], probs, name="merge_decoder")


def weight_shapes(config: DecoderConfig) -> list[tuple[int, ...]]:
    """The shapes of the weights :func:`build_decoder` creates for ``config``, computed without building
    anything, so a bundle's sizes and its weights file can be checked before any memory is allocated
    (``tests/test_bundle.py`` checks that they match the built model's)."""
    v, f, e, u = config.vocab_size, config.feature_dim, config.embedding_dim, config.units
    return [
        (v, e),                           # word_embedding
        (f, u), (u,),                     # image_projection
        (e, 4 * u), (u, 4 * u), (4 * u,),  # lstm: kernel, recurrent kernel, bias (4 gates)
        (u, u), (u,),                     # merge_dense
        (u, v), (v,),                     # word_probs
    ]


def parameter_count(config: DecoderConfig) -> int:
    return sum(int(np.prod(shape)) for shape in weight_shapes(config))
