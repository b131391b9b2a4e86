"""Command-line interface.

    python -m captioning caption --model weights/word2vec photo.jpg other.png
    python -m captioning caption --model weights/word2vec --method beam --beam-width 5 photo.jpg
    python -m captioning caption --model weights/word2vec --method guided photo.jpg
    python -m captioning caption --model weights/word2vec --method consensus photo.jpg
    cat photo.jpg | python -m captioning caption --model weights/word2vec -
    python -m captioning caption --model weights/learned --model weights/fasttext --model weights/word2vec \\
        --method beam photo.jpg

``caption`` prints one JSON object per image and line on stdout:

    {"image": "photo.jpg", "caption": "a dog runs through the grass"}

and with ``--method beam`` also ``"candidates": [[caption, log-probability], ...]``, best
first.  ``--method consensus`` (beam search's n-best re-ranked by the captions of the 20
training photos most like this one; needs familiarity.h5 and neighbour_captions.json beside the
model folder) gives the candidates in its order, and ``"consensus"``: each one's score.
``--method guided`` (beam search guided to name what the encoder's ImageNet head sees)
adds to those ``"labels"`` (the encoder's top ImageNet classes, ``[[name, probability], ...]``),
``"concepts"`` (the caption words it was guided to say), ``"fallback"`` (true when the guided
caption scored too poorly and the plain beam caption was kept), ``"rejected_concepts"`` and
``"familiarity": {"percentile": ..., "familiar": ...}`` (how close the photo is to the training
photos, from familiarity.h5 beside the model folder; null without that file).  Guidance is
bolder on an unfamiliar photo: a concept the ImageNet head sees needs a lower share to be said.
An image that cannot be read gives ``error: <path>: <reason>`` on stderr and the
other images are still captioned; the exit status is then 1.  A model folder that
cannot be loaded gives a one-line error and exit status 2 (as do bad arguments).
Logging and TensorFlow messages go to stderr, so stdout holds only JSON lines.

``--model`` given more than once captions with those models as one ensemble (``captioning.ensemble.Ensemble``: beam
search over the mean of their next-word log-probabilities, the app's "All three together");
they must share the vocabulary and the image encoder.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported, where it still is

import argparse
import contextlib
import json
import sys

from .settings import DEFAULT_BEAM_WIDTH, METHODS

EXIT_OK, EXIT_IMAGE_FAILED, EXIT_USAGE = 0, 1, 2
STDIN = "-"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m captioning", description="Caption images with a trained model.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    caption = commands.add_parser("caption", help="caption images; one JSON line per image on stdout",
                                  description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    caption.add_argument("images", nargs="+", metavar="IMAGE", help=f"image files ('{STDIN}' reads one from stdin)")
    caption.add_argument("--model", required=True, action="append", metavar="FOLDER",
                         help="model bundle folder, e.g. weights/word2vec; given more than once: their ensemble")
    caption.add_argument("--method", choices=METHODS, default="greedy",
                         help="decoding (default: %(default)s)")
    caption.add_argument("--beam-width", type=_positive_int, default=DEFAULT_BEAM_WIDTH,
                         help="beams for --method beam, consensus or guided (default: %(default)s)")
    caption.add_argument("--max-length", type=_positive_int, help="longest caption in words (default: the model's)")
    caption.set_defaults(run=run_caption)
    return parser


def _error(message: str) -> None:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)  # always one line


def run_caption(args, parser: argparse.ArgumentParser) -> int:
    from .captioner import Captioner
    from .settings import SettingsError, parse_settings

    try:  # the limits every door shares; the length limit is checked again once the model is known
        parse_settings(args.method, args.beam_width)
    except SettingsError as exc:
        parser.error(f"argument --beam-width: {exc}")
    if args.images.count(STDIN) > 1:
        parser.error(f"'{STDIN}' (stdin) can be given only once")

    from .bundle import BundleError
    from .ensemble import Ensemble
    from .images import ImageError

    models = " ".join(args.model)
    try:
        # Anything a library prints while loading goes to stderr: stdout is for JSON only.
        with contextlib.redirect_stdout(sys.stderr):
            captioner = Captioner.load(args.model[0]) if len(args.model) == 1 else Ensemble.load(args.model)
    except BundleError as exc:
        _error(f"cannot load model: {exc}")
        return EXIT_USAGE
    except (ValueError, ImportError) as exc:  # unknown or unavailable encoder, encoder or vocabulary mismatch
        _error(f"cannot load model {models}: {exc}")
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - e.g. a config.json value of the wrong type
        _error(f"cannot load model {models}: {type(exc).__name__}: {exc}")
        return EXIT_USAGE
    try:
        parse_settings(args.method, args.beam_width, args.max_length, longest=captioner.max_length)
    except SettingsError as exc:
        _error(f"--max-length: {exc}")
        return EXIT_USAGE
    if args.method == "consensus" and captioner.consensus is None:
        _error(f"--method consensus: no consensus reference for {args.model[0]}: it needs familiarity.h5 and "
               "neighbour_captions.json in the folder above it (python -m training.build_familiarity)")
        return EXIT_USAGE

    failed = 0
    for image in args.images:
        try:
            source = sys.stdin.buffer.read() if image == STDIN else image
            with contextlib.redirect_stdout(sys.stderr):
                result = captioner.describe(source, method=args.method, beam_width=args.beam_width,
                                            max_length=args.max_length)
        except ImageError as exc:
            _error(f"{image}: {exc}")
            failed += 1
            continue
        except Exception as exc:  # noqa: BLE001 - one broken image must not stop the others
            _error(f"{image}: unexpected failure ({type(exc).__name__}: {exc})")
            failed += 1
            continue
        line = {"image": image, "caption": result.caption}
        if args.method in ("beam", "consensus", "guided"):
            line["candidates"] = [[text, round(logprob, 4)] for text, logprob in result.candidates]
        if args.method == "consensus":
            line["consensus"] = [round(score, 4) for score in result.candidate_scores]
        if args.method == "guided":
            line["labels"] = [[name, round(p, 4)] for name, p in result.labels]
            line["concepts"] = result.concepts
            line["fallback"] = result.fallback
            line["rejected_concepts"] = result.rejected_concepts
            f = result.familiarity
            line["familiarity"] = None if f is None else {"percentile": round(f.percentile, 1), "familiar": f.familiar}
        print(json.dumps(line, ensure_ascii=False), flush=True)
    return EXIT_IMAGE_FAILED if failed else EXIT_OK


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args, parser)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_IMAGE_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
