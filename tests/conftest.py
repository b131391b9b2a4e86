"""Shared fixtures: a few real Flickr8k images and tiny models trained on them.

The tiny models are trained once per test session (a couple of epochs on a few
dozen images), through the same command-line entry point users run, so the
tests exercise the real pipeline end to end.  Their captions are poor; tests
check behaviour, not quality.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from captioning.variants import VARIANTS  # noqa: E402  (importing captioning imports TensorFlow)

ROOT = Path(__file__).resolve().parents[1]
FLICKR8K = Path(os.environ.get("FLICKR8K_DIR", ROOT.parent / "shared" / "data" / "flickr8k"))
TINY_IMAGES_PER_SPLIT = 40


def in_ci() -> bool:
    """True under CI (``CI=true``, as GitHub Actions, GitLab and most runners set it)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def skip_unless_ci(reason: str, allow_module_level: bool = False):
    """Skip for a missing prerequisite (dataset, browser) on a developer's machine; under CI the
    same absence FAILS, so that a CI run without them cannot pass by skipping."""
    if in_ci():
        pytest.fail(f"{reason} [required under CI=true]", pytrace=False)
    pytest.skip(reason, allow_module_level=allow_module_level)


def _require_flickr8k() -> Path:
    if not (FLICKR8K / "Flickr8k_text" / "Flickr8k.token.txt").is_file():
        skip_unless_ci(f"Flickr8k not found at {FLICKR8K} (set FLICKR8K_DIR)")
    return FLICKR8K


@pytest.fixture(scope="session")
def flickr8k() -> Path:
    return _require_flickr8k()


@pytest.fixture(scope="session")
def sample_images(flickr8k) -> list[Path]:
    """A handful of real test-split photos."""
    names = (flickr8k / "Flickr8k_text" / "Flickr_8k.testImages.txt").read_text().split()[:6]
    return [flickr8k / "Flicker8k_Dataset" / n for n in names]


@pytest.fixture(scope="session")
def encoder():
    from captioning import load_encoder
    from captioning.encoders import DEFAULT_ENCODER

    return load_encoder(DEFAULT_ENCODER)  # the committed models' and the tiny models' encoder


@pytest.fixture(scope="session")
def tiny_weights(flickr8k, tmp_path_factory) -> Path:
    """A weights/ folder with tiny learned, fasttext and word2vec bundles."""
    from training.train import main as train_main

    work = tmp_path_factory.mktemp("tiny")
    out = work / "weights"
    code = train_main([
        "--data", str(flickr8k), "--variant", "all", "--limit-images", str(TINY_IMAGES_PER_SPLIT),
        "--epochs", "3", "--embedding-dim", "32", "--units", "32", "--min-count", "2", "--scst-epochs", "0",
        "--out", str(out), "--runs", str(work / "runs"), "--cache-dir", str(work / "cache"),
        "--settings", "greedy",
    ])
    assert code == 0
    assert all((out / v / "decoder.weights.h5").is_file() for v in VARIANTS)
    return out


def complete_weights(folder: Path) -> bool:
    return all((folder / v / name).is_file() for v in VARIANTS
               for name in ("config.json", "vocab.json", "decoder.weights.h5"))


@pytest.fixture(scope="session")
def weights(request) -> tuple[Path, bool]:
    """(weights folder for the app, whether these are the real trained models): the committed
    weights/ when complete, else the tiny test models."""
    committed = ROOT / "weights"
    if complete_weights(committed):
        return committed, True
    return request.getfixturevalue("tiny_weights"), False


@contextlib.contextmanager
def served_app(weights_dir: Path, folder: Path, command: str):
    """The app on a free loopback port (`python app.py` or `uvicorn app:app`), with its example cache,
    Gradio upload folder, temp folder and log in ``folder``; yields {"url", "examples_cache",
    "uploads", "tmp", "log"}."""
    from demo.server import running_app

    paths = {name: folder / name for name in ("examples_cache", "uploads", "tmp")}
    for path in paths.values():
        path.mkdir(exist_ok=True)
    log = folder / "server.log"
    env = {"GRADIO_EXAMPLES_CACHE": str(paths["examples_cache"]), "GRADIO_TEMP_DIR": str(paths["uploads"]),
           "TMPDIR": str(paths["tmp"])}
    with running_app(weights_dir, command=command, log_file=log, env=env) as url:
        yield {"url": url, "log": log, **paths}


def tracebacks_through_our_code(log_text: str) -> list[str]:
    """The tracebacks in a server log that pass through this project's code (app.py, demo/,
    captioning/): an exception our handlers let escape. Gradio's own refusals of bad input
    (a slider value out of range, a file that was not uploaded) print tracebacks too, wholly
    inside Gradio; those are not counted."""
    ours = re.compile(r'File "' + re.escape(str(ROOT)) + r'/(?!\.venv/)[^"]+"')
    blocks = re.split(r"(?m)^(?=Traceback \(most recent call last\):)", log_text)
    return [b[:3000] for b in blocks if b.startswith("Traceback") and ours.search(b.split("\n\n")[0])]


@pytest.fixture(scope="session")
def server(weights, tmp_path_factory):
    """`python app.py` with the committed weights (or the tiny models), shared by the app tests."""
    with served_app(weights[0], tmp_path_factory.mktemp("app"), command="python") as served:
        yield served


@pytest.fixture(scope="session")
def client(server):
    import gradio_client

    return gradio_client.Client(server["url"] + "/", verbose=False)


@pytest.fixture
def tiny_bundle_copy(tiny_weights, tmp_path) -> Path:
    """A private copy of the tiny word2vec bundle, free to break."""
    return Path(shutil.copytree(tiny_weights / "word2vec", tmp_path / "word2vec"))


def small_split_files(flickr8k: Path, folder: Path, sizes=(12, 4, 8)) -> list[str]:
    """A small train/dev/test split (the first images of Flickr8k's own splits), as split files."""
    text = flickr8k / "Flickr8k_text"
    paths = []
    for name, size in zip(("trainImages", "devImages", "testImages"), sizes):
        path = folder / f"{name}.txt"
        path.write_text("\n".join((text / f"Flickr_8k.{name}.txt").read_text().split()[:size]) + "\n")
        paths.append(str(path))
    return paths
