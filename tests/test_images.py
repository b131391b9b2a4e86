"""Library-level image handling (issue 5.2): every awkward input gives a clear
:class:`ImageError` or an RGB 224x224 image, and EXIF orientation is honoured."""

from __future__ import annotations

import gc
import re
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from bad_inputs import CASES, ERROR, ERROR_HINTS, write_bad_inputs, write_bomb_png
from captioning import ImageError
from captioning.images import MAX_PIXELS, load_image, load_pixels

ERROR_NAMES = [n for n, e in CASES.items() if e == ERROR]
CAPTION_NAMES = [n for n, e in CASES.items() if e != ERROR]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return write_bad_inputs(tmp_path_factory.mktemp("bad_inputs"))


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def _diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel value, 0..255."""
    return float(np.abs(_pixels(a) - _pixels(b)).mean())


def _check_message(message: str, name: str) -> None:
    assert message and "\n" not in message, f"{name}: error message should be one line: {message!r}"
    assert re.search(ERROR_HINTS[name], message, re.IGNORECASE), f"{name}: unclear message {message!r}"
    assert "Traceback" not in message


@pytest.mark.parametrize("name", ERROR_NAMES)
def test_bad_file_gives_clear_error(cases, name):
    path, _ = cases[name]
    with pytest.raises(ImageError) as info:
        load_image(path)
    _check_message(str(info.value), name)


@pytest.mark.parametrize("name", ERROR_NAMES)
def test_bad_bytes_give_clear_error(cases, name):
    """The app hands the library uploaded bytes, not paths."""
    path, _ = cases[name]
    with pytest.raises(ImageError) as info:
        load_image(path.read_bytes())
    _check_message(str(info.value), name)


@pytest.mark.parametrize("name", CAPTION_NAMES)
def test_unusual_but_valid_image_becomes_rgb_square(cases, name):
    path, _ = cases[name]
    from_path = load_image(path)
    for source in (path, path.read_bytes()):
        image = load_image(source)
        assert image.mode == "RGB" and image.size == (224, 224)
        pixels = load_pixels(source)
        assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
        assert pixels.std() > 5, f"{name}: image came out flat"
        # a path and its bytes are the same image; load_pixels is load_image as an array
        np.testing.assert_array_equal(pixels, np.asarray(from_path))
        np.testing.assert_array_equal(np.asarray(image), np.asarray(from_path))


def test_files_are_closed_after_success_and_after_every_error(cases):
    """load_image closes the files it opens: valid images (an animated GIF keeps its file open
    until closed), refused ones (too small, too large) and damaged ones alike: no ResourceWarning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for path, expected in cases.values():
            try:
                load_pixels(path)
            except ImageError:
                assert expected == ERROR
            else:
                assert expected != ERROR
        gc.collect()
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert unclosed == []
    with Image.open(cases["animated.gif"][0]) as own:  # a caller's own image is the caller's to close
        first = load_image(own)
        own.seek(1)  # still open and usable
    assert _diff(first, load_image(cases["animated.gif"][0])) == 0


def test_decompression_bomb_is_refused_before_decoding(cases, monkeypatch):
    path, _ = cases["bomb_10000x10000.png"]
    assert path.stat().st_size < 100_000  # cheap on disk: 100 megapixels only once decoded

    def no_decoding(self):
        raise AssertionError("the 100-megapixel image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)  # decoding it would fail the test
    for source in (path, path.read_bytes()):
        with pytest.raises(ImageError, match="too large"):
            load_image(source)


def test_image_over_the_library_limit_but_under_pillows_is_refused(tmp_path, monkeypatch):
    """56 megapixels passes Pillow's own bomb check (89 M) but not MAX_PIXELS (50 M)."""
    width, height = 8000, 7000
    assert MAX_PIXELS < width * height < Image.MAX_IMAGE_PIXELS
    path = write_bomb_png(tmp_path / "big.png", width, height)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded a 56 MP image"))
    with pytest.raises(ImageError, match=r"too large \(8000x7000\)"):
        load_image(path)


def test_missing_and_unsupported_sources(tmp_path):
    with pytest.raises(ImageError, match="no such image file"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(ImageError, match="no such image file"):
        load_image(tmp_path / "folder.jpg")
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    with pytest.raises(ImageError, match="unsupported image input"):
        load_image(12345)
    with pytest.raises(ImageError, match="expected an array"):
        load_image(np.zeros((32, 32, 2), dtype=np.uint8))


def test_arrays_of_any_common_kind(cases):
    upright = load_image(cases["upright.jpg"][0])
    rgb = np.asarray(Image.open(cases["upright.jpg"][0]))
    assert _diff(load_image(rgb), upright) < 1
    assert _diff(load_image(rgb.astype(np.float32) / 255.0), upright) < 1  # floats in [0, 1]
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    assert _diff(load_image(rgba), upright) < 1
    gray = load_image(rgb.mean(axis=-1).astype(np.uint8))
    assert gray.mode == "RGB" and gray.size == (224, 224)
    assert _diff(load_image(rgb.astype(np.uint16) * 257), upright) < 1  # 16 bits, scaled as I;16 images are
    mask = load_image(rgb.mean(axis=-1) > 127)  # a boolean mask: black and white, not black and almost black
    assert _pixels(mask).max() == 255 and 0.2 < (_pixels(mask) > 127).mean() < 0.8


def test_premultiplied_alpha_modes_become_rgb(cases):
    """Pillow's La and RGBa (premultiplied alpha) convert to RGB only through LA and RGBA."""
    with Image.open(cases["upright.jpg"][0]) as photo:
        upright = photo.convert("RGB")
    for plain, mode in (("LA", "La"), ("RGBA", "RGBa")):
        image = load_image(upright.convert(plain).convert(mode))
        assert image.mode == "RGB" and image.size == (224, 224) and _pixels(image).std() > 5, mode


def test_exif_orientation_is_applied(cases):
    upright = load_image(cases["upright.jpg"][0])
    rotated_path = cases["exif_rotated.jpg"][0]
    with Image.open(rotated_path) as raw:
        assert raw.getexif().get(0x0112) == 6
        assert raw.size == (240, 320)  # stored on its side
        ignoring_exif = raw.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
    honoured = load_image(rotated_path)
    assert _diff(honoured, upright) < 4  # same picture, up to JPEG loss
    assert _diff(ignoring_exif, upright) > 5 * _diff(honoured, upright) + 10
    # the red block of the synthetic photo stays top left
    top_left = _pixels(honoured)[:40, :30].mean(axis=(0, 1))
    assert top_left[0] > 200 and top_left[1] < 80


def test_sixteen_bit_image_keeps_its_tones(cases):
    """I;16 must be scaled to 8 bits, not clipped (which would turn it almost white)."""
    gray16 = load_image(cases["gray16.png"][0])
    gray8 = load_image(cases["grayscale.jpg"][0])
    assert _diff(gray16, gray8) < 4
    assert 60 < _pixels(gray16).mean() < 200


def test_float_image_from_0_to_1_keeps_its_tones(cases):
    """Mode F with values from 0 to 1 (scientific TIFFs) is scaled as an array of such floats is,
    not read as 0-255 (which would make it black)."""
    floats = load_image(cases["float.tiff"][0])
    gray = load_image(cases["grayscale.jpg"][0]).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert _diff(floats, gray) < 4
    assert 60 < _pixels(floats).mean() < 200


def test_only_the_photo_formats_are_opened(cases, monkeypatch):
    """Pillow would hand an EPS file to Ghostscript; an upload never gets that far."""
    from PIL import EpsImagePlugin

    def ghostscript(*args, **kwargs):
        raise AssertionError("the EPS file reached Pillow's EPS plugin")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "load", ghostscript)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript, raising=False)
    with pytest.raises(ImageError, match="not an image we can read"):
        load_image(cases["drawing.eps"][0])


def test_cmyk_and_palette_keep_their_colours(cases):
    upright = load_image(cases["upright.jpg"][0])
    # 64 palette colours cost some accuracy; a palette read as grey levels would be far off
    for name, tolerance in (("cmyk.jpg", 8), ("photo.webp", 8), ("photo.bmp", 8), ("photo.avif", 8),
                            ("palette.png", 16)):
        assert _diff(load_image(cases[name][0]), upright) < tolerance, name


def test_transparency_is_flattened_onto_white(cases):
    rgba = _pixels(load_image(cases["rgba.png"][0]))
    assert rgba[:3].min() > 240  # alpha 0 at the top: white, not black
    upright = _pixels(load_image(cases["upright.jpg"][0]))
    assert np.abs(rgba[-3:] - upright[-3:]).mean() < 8  # opaque at the bottom: the photo


def test_animated_gif_uses_its_first_frame(cases):
    first = load_image(cases["animated.gif"][0])
    assert _diff(first, load_image(cases["upright.jpg"][0])) < 10
    blue = Image.new("RGB", (224, 224), (0, 0, 255))
    assert _diff(first, blue) > 60


# -- through the encoder ---------------------------------------------------------

def test_encoder_accepts_every_valid_case_and_refuses_every_bad_one(encoder, cases):
    valid = [cases[n][0] for n in CAPTION_NAMES]
    features = encoder.encode(valid)
    assert features.shape == (len(valid), encoder.feature_dim) and features.dtype == np.float32
    assert np.isfinite(features).all()
    # Each file's features are those of its pixels as load_pixels prepares them (files and
    # arrays take the same path), and no two different files collapse to the same features.
    np.testing.assert_allclose(features, encoder.encode([load_pixels(p) for p in valid]), rtol=0, atol=1e-4)
    assert len({f.round(3).tobytes() for f in features}) == len(valid)
    for name in ERROR_NAMES:
        with pytest.raises(ImageError):
            encoder.features(cases[name][0])


def test_encoder_sees_exif_rotated_photo_upright(encoder, cases):
    upright, rotated = encoder.encode([cases["upright.jpg"][0], cases["exif_rotated.jpg"][0]])
    with Image.open(cases["exif_rotated.jpg"][0]) as raw:
        (sideways,) = encoder.encode([np.asarray(raw.convert("RGB"))])  # EXIF dropped

    def cosine(a, b):
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    assert cosine(upright, rotated) > 0.97
    assert cosine(upright, rotated) > cosine(upright, sideways) + 0.02
