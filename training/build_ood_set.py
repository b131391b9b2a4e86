"""Assemble the out-of-domain photo set in ``evaluation/ood/`` from photos that installed
packages ship inside their wheels (nothing is downloaded).

    python -m training.build_ood_set [--out evaluation/ood]

Each photo is shrunk to at most 640 px on its longer side and saved as JPEG quality 85.
``expected.json`` (written here from :data:`PHOTOS`) lists, per photo, where it came from, its
licence and the words a right caption names its main subject with.  Needs scikit-image,
matplotlib, scikit-learn and gradio installed (see evaluation/ood/README.md for the versions).
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from PIL import Image

OOD_DIR = Path(__file__).resolve().parents[1] / "evaluation" / "ood"
MAX_SIDE = 640
JPEG_QUALITY = 85

# name -> (package, path inside it, licence, words that name the main subject)
PHOTOS = {
    "astronaut": ("skimage", "data/astronaut.png", "public domain (NASA)", ["astronaut", "woman", "women", "lady"]),
    "cameraman": ("skimage", "data/camera.png", "CC0 (Lav Varshney)", ["man", "camera", "photographer"]),
    "chelsea": ("skimage", "data/chelsea.png", "CC0 (Stefan van der Walt)", ["cat", "cats", "kitten"]),
    "coffee": ("skimage", "data/coffee.png", "CC0 (Rachel Michetti)", ["coffee", "cup", "cups", "mug"]),
    "rocket": ("skimage", "data/rocket.jpg", "public domain (SpaceX)", ["rocket"]),
    "motorcycle": ("skimage", "data/motorcycle_left.png",
                   "Middlebury 2014 stereo benchmark, shipped in scikit-image (BSD-3-Clause); no separate "
                   "licence stated for the image", ["motorcycle", "motorcycles", "motorbike", "bike"]),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "public domain (U.S. Navy)",
                     ["woman", "lady", "officer"]),
    "china": ("sklearn", "datasets/images/china.jpg", "CC BY 2.0 (danielbuechele on Flickr)",
              ["temple", "pagoda", "tower", "building"]),
    "flower": ("sklearn", "datasets/images/flower.jpg", "CC BY 2.0 (vultilion on Flickr)", ["flower", "flowers"]),
    "lion": ("gradio", "media_assets/images/lion.jpg",
             "shipped in gradio (Apache-2.0); the photo's own source and licence are not stated",
             ["lion", "lions", "cat", "cats"]),
    "cheetah": ("gradio", "media_assets/images/cheetah.jpg",
                "shipped in gradio (Apache-2.0); the photo's own source and licence are not stated",
                ["cheetah", "leopard", "cat", "cats"]),
    "cheetah_cub": ("gradio", "test_data/cheetah2.jpg",
                    "shipped in gradio (Apache-2.0); the photo's own source and licence are not stated",
                    ["cheetah", "leopard", "cat", "cats", "cub", "kitten"]),
}


def source_path(package: str, inner: str) -> Path:
    return Path(importlib.import_module(package).__file__).parent / inner


def shrink(src: Path, dst: Path) -> None:
    image = Image.open(src).convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    image.save(dst, "JPEG", quality=JPEG_QUALITY)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OOD_DIR)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (package, inner, licence, words) in PHOTOS.items():
        shrink(source_path(package, inner), args.out / f"{name}.jpg")
        expected[name] = {"file": f"{name}.jpg", "source": f"{package}/{inner}", "licence": licence,
                          "subject_words": words}
    (args.out / "expected.json").write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(expected)} photos and expected.json to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
