"""A video for Chromium's fake camera (--use-file-for-fake-video-capture): photos shown in turn.

Chromium loops a YUV4MPEG2 (.y4m) file as the camera's picture, so a browser test can point the
"webcam" at known photos and watch the captions change when the photo does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT, FPS = 640, 480, 10


def _yuv420(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 RGB -> planar Y, U, V (BT.601, studio range; chroma subsampled 2x2)."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b

    def half(plane):  # average each 2x2 block
        return plane.reshape(HEIGHT // 2, 2, WIDTH // 2, 2).mean(axis=(1, 3))

    planes = [y, half(u), half(v)]
    return b"".join(np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes() for p in planes)


def write_y4m(photos: list[Path], path: Path, seconds_each: float = 2.0) -> Path:
    """A looping video showing each photo for ``seconds_each`` seconds."""
    frames = [_yuv420(np.asarray(Image.open(p).convert("RGB").resize((WIDTH, HEIGHT)))) for p in photos]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            for _ in range(int(seconds_each * FPS)):
                f.write(b"FRAME\n" + frame)
    return path
