"""A small CNN + LSTM image-captioning library.

image -> :mod:`captioning.images` (load, orient, RGB, 224x224)
      -> :mod:`captioning.encoders` (pretrained CNN -> pooled features)
      -> :mod:`captioning.decoding` (merge decoder, greedy or beam search)
      -> caption

Training pieces: :mod:`corpus`, :mod:`vocab`, :mod:`features`, :mod:`embeddings`,
:mod:`model`, :mod:`data`, :mod:`training`, :mod:`evaluation`, :mod:`bundle`.
"""

from .captioner import Captioner, CaptionResult
from .encoders import ImageEncoder, load_encoder
from .images import ImageError

__all__ = ["Captioner", "CaptionResult", "ImageEncoder", "ImageError", "load_encoder"]
__version__ = "0.1.0"
