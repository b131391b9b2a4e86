"""A corpus of awkward and broken image files, generated on demand (no committed binaries).

    from tests.bad_inputs import write_bad_inputs, ERROR_HINTS
    cases = write_bad_inputs(tmp_path)            # or write_bad_inputs(tmp_path, photo="some.jpg")
    for name, (path, expected) in cases.items():  # expected: "error" or "caption"
        ...

Every case must give either a clear error (an :class:`captioning.ImageError` in the
library, a one-line ``error:`` in the CLI, a 4xx answer from the HTTP API) or a
correct caption.  ``ERROR_HINTS[name]`` is a regular expression the error message
of an ``"error"`` case should match (case-insensitive), so tests can check the
message says *what* is wrong.  The same files are used by the library, CLI and
app tests.

Everything here is cheap: the 10000x10000 "decompression bomb" is a valid PNG of
about 15 KB (1-bit pixels, zlib-compressed rows), written without ever holding
the image in memory.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ERROR, CAPTION = "error", "caption"
EXIF_ORIENTATION = 0x0112
BOMB_SIDE = 10_000

# name -> regex the error message should match (case-insensitive)
ERROR_HINTS = {
    "empty.jpg": r"empty",
    "text_named.jpg": r"not an image",
    "truncated.jpg": r"truncated|damaged",
    "zero_byte.png": r"empty",
    "one_pixel.png": r"too small",
    "bomb_10000x10000.png": r"too large",
    "photo_in.zip": r"not an image",
    "drawing.eps": r"not an image",  # Pillow reads EPS through Ghostscript; we do not open it at all
}

# name -> expected outcome, in the order they are written
CASES = {
    "empty.jpg": ERROR,
    "text_named.jpg": ERROR,
    "truncated.jpg": ERROR,
    "zero_byte.png": ERROR,
    "one_pixel.png": ERROR,
    "bomb_10000x10000.png": ERROR,
    "photo_in.zip": ERROR,
    "drawing.eps": ERROR,
    "gray16.png": CAPTION,
    "float.tiff": CAPTION,  # mode F, values from 0 to 1 (grayscale.jpg mirrored)
    "cmyk.jpg": CAPTION,
    "palette.png": CAPTION,
    "palette_transparent.png": CAPTION,
    "rgba.png": CAPTION,
    "grayscale.jpg": CAPTION,
    "animated.gif": CAPTION,
    "exif_rotated.jpg": CAPTION,
    "upright.jpg": CAPTION,  # the exif_rotated photo as it should look, for comparison
    "small_8x8.png": CAPTION,  # the smallest size accepted
    "photo.webp": CAPTION,
    "photo.bmp": CAPTION,
    "photo.avif": CAPTION,
}


def synthetic_photo(width: int = 320, height: int = 240) -> Image.Image:
    """A deterministic, clearly asymmetric RGB picture (gradients plus a block in one corner),
    used when no real photo is given."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([255 * x / width, 255 * y / height, 128 + 64 * np.sin(x / 17.0) * np.cos(y / 23.0)], axis=-1)
    rgb[: height // 4, : width // 5] = (250, 20, 20)  # red block, top left
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def _photo(photo) -> Image.Image:
    if photo is None:
        return synthetic_photo()
    if isinstance(photo, Image.Image):
        return photo.convert("RGB")
    with Image.open(photo) as image:
        return image.convert("RGB")


def _jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_bomb_png(path: Path, width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> Path:
    """A valid 1-bit grayscale PNG of ``width`` x ``height`` (all black), streamed row by row:
    ~15 KB on disk, 100 megapixels (300 MB as RGB) once decoded."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte 0, then packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))
    return path


def write_exif_rotated(folder: Path, photo: Image.Image) -> tuple[Path, Path]:
    """``upright.jpg`` and ``exif_rotated.jpg``: the same photo, the second stored turned a quarter
    counter-clockwise with EXIF Orientation 6 ("rotate 90 degrees clockwise to view").  A loader that
    honours EXIF shows both the same way."""
    upright = folder / "upright.jpg"
    upright.write_bytes(_jpeg_bytes(photo))
    stored = photo.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    rotated = folder / "exif_rotated.jpg"
    rotated.write_bytes(_jpeg_bytes(stored, exif=exif.tobytes()))
    return upright, rotated


def write_bad_inputs(folder: str | Path, photo=None) -> dict[str, tuple[Path, str]]:
    """Write every case into ``folder`` (created) and return ``{name: (path, "error" | "caption")}``.

    ``photo`` (a path or PIL image) is the picture the valid-but-unusual cases are made from;
    a synthetic picture is used when it is None.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = _photo(photo)
    jpeg = _jpeg_bytes(image)

    def out(name: str) -> Path:
        return folder / name

    out("empty.jpg").write_bytes(b"")
    out("text_named.jpg").write_text("This is not a picture, just some text saved as .jpg\n" * 20)
    out("truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    out("zero_byte.png").write_bytes(b"")
    Image.new("RGB", (1, 1), (200, 30, 30)).save(out("one_pixel.png"))
    write_bomb_png(out("bomb_10000x10000.png"))
    with zipfile.ZipFile(out("photo_in.zip"), "w") as archive:
        archive.writestr("photo.jpg", jpeg)
    out("drawing.eps").write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n%%EndComments\n"
                                  "newpath 0 0 moveto 64 64 lineto stroke\nshowpage\n%%EOF\n")

    # Valid images in unusual modes: each must be captioned.
    gray = np.asarray(image.convert("L"), dtype=np.uint16) * 257  # full 16-bit range
    Image.fromarray(gray).save(out("gray16.png"))  # mode I;16
    mirrored = image.convert("L").transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # not gray16.png's pixels again
    Image.fromarray(np.asarray(mirrored, dtype=np.float32) / 255.0).save(out("float.tiff"))  # mode F
    image.convert("CMYK").save(out("cmyk.jpg"), quality=90)
    image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(out("palette.png"))
    palette = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 0
    palette.save(out("palette_transparent.png"), transparency=0)
    rgba = image.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(image.size))
    rgba.save(out("rgba.png"))
    image.convert("L").save(out("grayscale.jpg"), quality=90)
    frames = [image, Image.new("RGB", image.size, (0, 0, 255)), Image.new("RGB", image.size, (0, 255, 0))]
    frames[0].save(out("animated.gif"), save_all=True, append_images=frames[1:], duration=100, loop=0)
    write_exif_rotated(folder, image)
    image.resize((8, 8)).save(out("small_8x8.png"))
    image.save(out("photo.webp"), quality=90)
    image.save(out("photo.bmp"))
    image.save(out("photo.avif"), quality=90)

    cases = {name: (out(name), expected) for name, expected in CASES.items()}
    missing = [name for name, (path, _) in cases.items() if not path.is_file()]
    assert not missing, f"bad-input generator did not write {missing}"
    return cases


def error_cases(cases: dict[str, tuple[Path, str]]) -> dict[str, Path]:
    return {name: path for name, (path, expected) in cases.items() if expected == ERROR}


def caption_cases(cases: dict[str, tuple[Path, str]]) -> dict[str, Path]:
    return {name: path for name, (path, expected) in cases.items() if expected == CAPTION}


if __name__ == "__main__":  # python -m tests.bad_inputs FOLDER: write the corpus to look at it
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "bad_inputs")
    for case, (file, outcome) in write_bad_inputs(target).items():
        print(f"{outcome:8s} {file.stat().st_size:9d} B  {file}")
