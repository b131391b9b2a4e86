"""Turning whatever a user hands us into the RGB square the encoder expects.

One function, :func:`load_image`, is used by feature extraction for training and
by every inference path, so a photo is prepared the same way everywhere:
EXIF orientation applied, any mode (L, P, RGBA, CMYK, I;16, ...) converted to RGB,
first frame of an animation, then resized to ``size`` x ``size`` without keeping
the aspect ratio (how the Flickr8k training images were made).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# The file formats we open, by Pillow's names, and as a person would name them. Only these: Pillow
# knows dozens more, some of which hand the file to other programs (EPS and Ghostscript), and an
# upload should not reach any of that. (JPEG covers MPO, a camera's JPEG with a preview in it.)
READABLE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF")
READABLE_NAMES = "JPEG, PNG, GIF, WebP, BMP, TIFF, AVIF"

# Refuse decompression bombs: 50 megapixels is far above any photo we need.
MAX_PIXELS = 50_000_000
MIN_SIDE = 8  # smaller images carry nothing to caption

ImageSource = Union[str, Path, bytes, "Image.Image", np.ndarray]


class ImageError(ValueError):
    """The input cannot be used as an image; the message is fit to show a user."""


def _open(source) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError("the file is empty")
        stream = io.BytesIO(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"no such image file: {path}")
        if path.stat().st_size == 0:
            raise ImageError(f"the file is empty: {path.name}")
        stream = path
    else:
        raise ImageError(f"unsupported image input of type {type(source).__name__}")
    image = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream, formats=READABLE_FORMATS)
            _check_size(image.size)
            image.load()
    except BaseException as exc:
        if image is not None:  # refused or unreadable: release the file Pillow opened
            image.close()
        if isinstance(exc, ImageError) or not isinstance(exc, Exception):
            raise
        if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            raise ImageError("the image is too large to process") from None
        if isinstance(exc, UnidentifiedImageError):
            raise ImageError(f"the file is not an image we can read ({READABLE_NAMES})") from None
        if isinstance(exc, (OSError, SyntaxError, ValueError)):
            raise ImageError(f"the image file is damaged or truncated ({exc})") from None
        raise
    return image


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"expected an array of shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    if array.dtype == np.bool_:  # a mask: True is white
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        if array.dtype == np.uint16:  # 16-bit, as PIL's I;16 images are scaled (to_rgb)
            array = array / 257.0
        elif np.issubdtype(array.dtype, np.floating) and array.size and float(np.nanmax(array)) <= 1.0:
            array = array * 255.0
        array = np.clip(np.nan_to_num(array), 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def _check_size(size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageError(f"the image is too large ({width}x{height}); the limit is {MAX_PIXELS // 1_000_000} megapixels")
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"the image is too small ({width}x{height}); it needs at least {MIN_SIDE} pixels a side")


PREMULTIPLIED = {"La": "LA", "RGBa": "RGBA"}  # modes with premultiplied alpha -> the same with plain alpha


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB, flattening transparency onto white."""
    if image.mode == "RGB":
        return image
    if image.mode in PREMULTIPLIED:  # Pillow converts these only to their plain-alpha twins
        image = image.convert(PREMULTIPLIED[image.mode])
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.nan_to_num(np.asarray(image, dtype=np.float64))
        brightest = float(array.max()) if array.size else 0.0
        if image.mode.startswith("I;16") or brightest > 255:
            top = 65535.0  # 16-bit
        elif image.mode == "F" and brightest <= 1.0:
            top = 1.0  # floats from 0 to 1, as arrays are read (_from_array)
        else:
            top = 255.0
        return Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(source: ImageSource, size: int = 224) -> Image.Image:
    """Open ``source`` (path, bytes, PIL image or array) as an RGB ``size`` x ``size`` image.

    Raises :class:`ImageError` with a user-facing message when it cannot.
    """
    opened = _open(source)
    owned = opened is not source  # opened here (from a path, bytes or an array): closed here
    try:
        _check_size(opened.size)
        if getattr(opened, "is_animated", False):
            opened.seek(0)
        image = ImageOps.exif_transpose(opened)
        image = to_rgb(image)
        return image.resize((size, size), Image.Resampling.BICUBIC)  # always a new image
    except ImageError:
        raise
    except (OSError, ValueError) as exc:
        raise ImageError(f"the image could not be decoded ({exc})") from None
    finally:
        if owned:
            opened.close()


def load_pixels(source: ImageSource, size: int = 224) -> np.ndarray:
    """:func:`load_image` as a uint8 array of shape (size, size, 3)."""
    return np.asarray(load_image(source, size), dtype=np.uint8)
