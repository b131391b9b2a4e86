"""The command line (``python -m captioning caption``), run as users run it: in a subprocess.

Good images give one JSON line each on stdout, the same every run; bad images give one
``error: <path>: <reason>`` line each on stderr while the others are still captioned
(exit 1); a broken model gives a one-line error naming the file (exit 2).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bad_inputs import CAPTION, ERROR, ERROR_HINTS, write_bad_inputs

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300


def run_cli(*args, stdin: bytes | None = None, quiet_tf: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if quiet_tf:
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    else:  # as a user would run it: whatever TensorFlow logs must stay off stdout
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    result = subprocess.run([sys.executable, "-m", "captioning", *map(str, args)], cwd=ROOT, input=stdin,
                            capture_output=True, timeout=TIMEOUT, env=env)
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    return result


def json_lines(stdout: str) -> list[dict]:
    lines = stdout.splitlines()
    assert all(line.strip() for line in lines), f"blank line on stdout: {stdout!r}"
    return [json.loads(line) for line in lines]  # fails on anything that is not pure JSON


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def model(tiny_weights) -> Path:
    return tiny_weights / "word2vec"


@pytest.fixture(scope="module")
def good_images(sample_images) -> list[str]:
    """Three test photos, the first given relative to the working directory: the CLI must echo
    each path exactly as given."""
    paths = [str(p) for p in sample_images[:3]]
    paths[0] = os.path.relpath(paths[0], ROOT)
    return paths


@pytest.fixture(scope="module")
def bad_cases(tmp_path_factory, sample_images):
    return write_bad_inputs(tmp_path_factory.mktemp("cli_inputs"), photo=sample_images[3])


@pytest.fixture(scope="module")
def greedy_runs(model, good_images):
    """The same command twice; the first with TensorFlow's logging left at its noisy default."""
    return [run_cli("caption", "--model", model, *good_images, quiet_tf=quiet) for quiet in (False, True)]


def test_good_images_give_one_json_line_each(greedy_runs, good_images):
    result = greedy_runs[0]
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert [line["image"] for line in lines] == good_images
    for line in lines:
        assert set(line) == {"image", "caption"}
        assert isinstance(line["caption"], str) and line["caption"].strip()
        assert "<" not in line["caption"]  # no <start>/<end>/<unk>/<pad> tokens
    assert error_lines(result.stderr) == []


def test_cli_is_deterministic_and_matches_the_library(greedy_runs, model, good_images, encoder):
    first, second = greedy_runs
    assert second.returncode == 0, second.stderr
    assert first.stdout == second.stdout

    from captioning import Captioner

    captioner = Captioner.load(model, encoder=encoder)
    expected = [captioner.caption(ROOT / path) for path in good_images]
    assert [line["caption"] for line in json_lines(first.stdout)] == expected


def test_mix_of_good_and_bad_images(model, good_images, bad_cases, tmp_path, encoder):
    """Beam search over good photos, every bad input, every awkward-but-valid one, a missing
    file and one photo read from stdin: errors on stderr, captions for the rest, exit 1."""
    missing = str(tmp_path / "no_such_photo.jpg")
    bad = [str(path) for path, expected in bad_cases.values() if expected == ERROR] + [missing]
    valid = [str(path) for path, expected in bad_cases.values() if expected == CAPTION]
    args = [good_images[0], *bad[:4], "-", *valid, *bad[4:], good_images[1]]
    stdin_photo = ROOT / good_images[2]

    result = run_cli("caption", "--model", model, "--method", "beam", "--beam-width", "3", *args,
                     stdin=stdin_photo.read_bytes())
    assert result.returncode == 1, result.stderr

    lines = json_lines(result.stdout)
    assert [line["image"] for line in lines] == [a for a in args if a not in bad]
    for line in lines:
        assert set(line) == {"image", "caption", "candidates"}
        assert 1 <= len(line["candidates"]) <= 3
        assert line["candidates"][0][0] == line["caption"]
        for text, logprob in line["candidates"]:
            assert isinstance(text, str) and isinstance(logprob, float) and logprob <= 0

    # the same captions as the library gives for the same files
    from captioning import Captioner

    captioner = Captioner.load(model, encoder=encoder)
    for line in lines:
        path = stdin_photo if line["image"] == "-" else ROOT / line["image"]
        expected = captioner.describe(path, method="beam", beam_width=3)
        assert line["caption"] == expected.caption, line["image"]
        # the candidates too: the library's n-best list, texts and log-probabilities
        assert [text for text, _ in line["candidates"]] == [text for text, _ in expected.candidates], line
        np.testing.assert_allclose([lp for _, lp in line["candidates"]], [lp for _, lp in expected.candidates],
                                   rtol=0, atol=1e-4)

    errors = error_lines(result.stderr)
    assert len(errors) == len(bad), result.stderr
    for path in bad:
        (line,) = [e for e in errors if e.startswith(f"error: {path}: ")]
        hint = ERROR_HINTS.get(Path(path).name, "no such image file")
        assert re.search(hint, line, re.IGNORECASE), line
    assert "Traceback" not in result.stderr


def test_missing_model_folder_exits_2(tmp_path, good_images):
    result = run_cli("caption", "--model", tmp_path / "nope", good_images[0])
    assert result.returncode == 2 and result.stdout == ""
    (line,) = error_lines(result.stderr)
    assert str(tmp_path / "nope") in line and "not found" in line


# In process from here on: these fail before any image is read, and a subprocess costs seconds.

def _missing_vocab(bundle: Path) -> None:
    (bundle / "vocab.json").unlink()


def _truncated_weights(bundle: Path) -> None:
    weights = bundle / "decoder.weights.h5"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _newer_format(bundle: Path) -> None:
    config = json.loads((bundle / "config.json").read_text())
    (bundle / "config.json").write_text(json.dumps({**config, "format_version": 99}))


def _wrong_encoder(bundle: Path) -> None:
    config = json.loads((bundle / "config.json").read_text())
    (bundle / "config.json").write_text(json.dumps({**config, "encoder": "resnet_9000"}))


@pytest.mark.parametrize("breakage, file_name, problem", [
    (_missing_vocab, "vocab.json", "missing"),
    (_truncated_weights, "decoder.weights.h5", "truncated"),
    (_newer_format, "config.json", "newer"),
    (_wrong_encoder, "config.json", "encoder must be one of"),
])
def test_broken_model_exits_2_naming_the_file(model, good_images, tmp_path, capsys, breakage, file_name,
                                               problem):
    from captioning.__main__ import main

    bundle = Path(shutil.copytree(model, tmp_path / "broken"))
    breakage(bundle)
    assert main(["caption", "--model", str(bundle), good_images[0]]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = error_lines(captured.err)
    assert str(bundle / file_name) in line and problem in line, line


@pytest.mark.parametrize("args, message", [
    (["--beam-width", "0"], "at least 1"),
    (["--beam-width", "500", "--method", "beam"], "from 1 to 10"),
    (["--method", "sample"], "invalid choice"),
    (["--max-length", "x"], "whole number"),
    (["-", "-"], "only once"),
])
def test_bad_arguments_exit_2(model, good_images, capsys, args, message):
    from captioning.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(["caption", "--model", str(model), *args, good_images[0]])
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err


def test_no_command_exits_2(capsys):
    from captioning.__main__ import main

    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_guided_reports_labels_and_concepts():
    """--method guided with a committed model: the caption names the cat, and the line carries the
    encoder's top ImageNet labels and the concepts that guided it."""
    model = ROOT / "weights" / "learned"
    if not (model / "decoder.weights.h5").is_file():
        pytest.skip("no committed weights")
    result = run_cli("caption", "--model", model, "--method", "guided", "demo/examples/chelsea_cat.jpg")
    assert result.returncode == 0, result.stderr
    (line,) = json_lines(result.stdout)
    assert set(line) == {"image", "caption", "candidates", "labels", "concepts", "fallback", "rejected_concepts",
                         "familiarity"}
    assert "cat" in line["caption"].split() and line["concepts"] == ["cat"] and line["fallback"] is False
    assert line["candidates"][0][0] == line["caption"]
    names = [name for name, _ in line["labels"]]
    assert len(names) == 5 and "Egyptian Mau" in names
    assert all(0.0 <= p <= 1.0 for _, p in line["labels"])


GUIDED_NAMES = {"chelsea_cat.jpg": {"cat", "cats"}, "coffee.jpg": {"coffee", "cup", "cups", "mug"},
                "rocket.jpg": {"rocket"}}


@pytest.mark.parametrize("variant", ("learned", "fasttext", "word2vec"))
def test_guided_names_the_demo_subjects_and_reports_familiarity(variant):
    """--method guided names the cat, the coffee and the rocket with the committed models (the
    rocket thanks to the lower threshold for photos unlike the training photos), except where a
    model falls back to its plain caption (FALLS_BACK in tests/test_guided.py), and each line
    says how familiar the photo is (weights/familiarity.h5, beside the model folder)."""
    model = ROOT / "weights" / variant
    if not (model / "decoder.weights.h5").is_file() or not (ROOT / "weights" / "familiarity.h5").is_file():
        pytest.skip("no committed weights")
    photos = [f"demo/examples/{name}" for name in GUIDED_NAMES]
    result = run_cli("caption", "--model", model, "--method", "guided", *photos)
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert [line["image"] for line in lines] == photos
    from test_guided import FALLS_BACK

    for line, (name, words) in zip(lines, GUIDED_NAMES.items()):
        if (variant, name) not in FALLS_BACK:  # there: the plain beam caption (tests/test_guided.py)
            assert set(line["caption"].split()) & words, line
        familiarity = line["familiarity"]
        assert set(familiarity) == {"percentile", "familiar"} and isinstance(familiarity["familiar"], bool)
        assert 0.0 <= familiarity["percentile"] <= 100.0


def test_guided_without_a_familiarity_reference_reports_null(tmp_path):
    model = ROOT / "weights" / "learned"
    if not (model / "decoder.weights.h5").is_file():
        pytest.skip("no committed weights")
    shutil.copytree(model, tmp_path / "learned")  # no familiarity.h5 beside it
    result = run_cli("caption", "--model", tmp_path / "learned", "--method", "guided", "demo/examples/chelsea_cat.jpg")
    assert result.returncode == 0, result.stderr
    (line,) = json_lines(result.stdout)
    assert line["familiarity"] is None and "cat" in line["caption"].split()


def test_consensus_with_the_committed_models_matches_the_library(encoder, flickr8k):
    """--method consensus with a committed model: the caption is the first of the candidates, which
    are beam search's, re-ordered by a consensus score that falls; the same as the library's and
    as the one the committed evaluation recorded for this test photo."""
    model = ROOT / "weights" / "learned"
    if not (model / "decoder.weights.h5").is_file():
        pytest.skip("no committed weights")
    recorded = json.loads((model / "samples.json").read_text())["consensus3"]  # test image -> caption
    photo = flickr8k / "Flicker8k_Dataset" / next(iter(recorded))
    result = run_cli("caption", "--model", model, "--method", "consensus", photo)
    assert result.returncode == 0, result.stderr
    (line,) = json_lines(result.stdout)
    assert set(line) == {"image", "caption", "candidates", "consensus"}
    assert line["candidates"][0][0] == line["caption"] and len(line["candidates"]) == len(line["consensus"]) == 3
    assert line["consensus"] == sorted(line["consensus"], reverse=True)
    from captioning import Captioner

    library = Captioner.load(model, encoder=encoder).describe(str(photo), method="consensus", beam_width=3)
    assert library.caption == line["caption"]
    assert recorded[photo.name] == line["caption"]


def test_consensus_without_its_reference_exits_2(tmp_path):
    model = ROOT / "weights" / "learned"
    if not (model / "decoder.weights.h5").is_file():
        pytest.skip("no committed weights")
    shutil.copytree(model, tmp_path / "learned")  # nothing beside it
    result = run_cli("caption", "--model", tmp_path / "learned", "--method", "consensus", "demo/examples/motorcycle.jpg")
    assert result.returncode == 2 and result.stdout == ""
    assert len(error_lines(result.stderr)) == 1
    assert "neighbour_captions.json" in result.stderr and "build_familiarity" in result.stderr


def test_several_models_caption_as_their_ensemble(encoder, flickr8k):
    """--model given three times: the committed models' ensemble, whose beam-3 caption of a test
    photo is the one the committed evaluation recorded (weights/ensemble_samples.json) and the
    library's Ensemble gives."""
    models = [ROOT / "weights" / v for v in ("learned", "fasttext", "word2vec")]
    if not all((m / "decoder.weights.h5").is_file() for m in models):
        pytest.skip("no committed weights")
    recorded = json.loads((ROOT / "weights" / "ensemble_samples.json").read_text())["beam3"]
    photos = [flickr8k / "Flicker8k_Dataset" / name for name in list(recorded)[:2]]
    result = run_cli("caption", *[arg for m in models for arg in ("--model", m)], "--method", "beam", *photos)
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert [line["caption"] for line in lines] == [recorded[p.name] for p in photos]
    from captioning.ensemble import Ensemble

    ensemble = Ensemble.load(models, encoder=encoder)
    assert [line["caption"] for line in lines] == [ensemble.caption(str(p), method="beam", beam_width=3) for p in photos]
    alone = ensemble.members[0].candidates(str(photos[0]), beam_width=3)
    assert [[c, round(lp, 4)] for c, lp in alone] != lines[0]["candidates"]  # the three together, not the first alone


def test_models_with_different_vocabularies_exit_2(model, good_images, capsys):
    from captioning.__main__ import main

    committed = ROOT / "weights" / "learned"
    if not (committed / "decoder.weights.h5").is_file():
        pytest.skip("no committed weights")
    assert main(["caption", "--model", str(model), "--model", str(committed), good_images[0]]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = error_lines(captured.err)
    assert "different vocabularies" in line and str(model) in line, line
    # two bundles of one variant: the message tells them apart by folder, not "learned differs from learned"
    assert main(["caption", "--model", str(model.parent / "learned"), "--model", str(committed), good_images[0]]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert f"{committed} differs from {model.parent / 'learned'}" in line, line


def test_a_beam_of_one_lists_its_caption(capsys):
    """Beam and consensus of width 1 give an n-best list of one (greedy search's caption, which a
    beam of one finds), as guided decoding does; not an empty list."""
    from captioning.__main__ import main

    committed = ROOT / "weights" / "learned"
    if not (committed / "decoder.weights.h5").is_file():
        pytest.skip("no committed weights")
    photo = "demo/examples/motorcycle.jpg"
    assert main(["caption", "--model", str(committed), str(ROOT / photo)]) == 0
    greedy = json.loads(capsys.readouterr().out)["caption"]
    for method in ("beam", "consensus"):
        assert main(["caption", "--model", str(committed), "--method", method, "--beam-width", "1",
                     str(ROOT / photo)]) == 0
        line = json.loads(capsys.readouterr().out)
        assert line["caption"] == greedy and [c[0] for c in line["candidates"]] == [greedy], (method, line)
        if method == "consensus":
            assert len(line["consensus"]) == 1


def test_model_given_as_dot_finds_the_references_beside_it(monkeypatch, capsys):
    """`--model .` inside a bundle folder: the familiarity and consensus references one folder up
    are found, as with `--model ../learned`."""
    from captioning.__main__ import main

    committed = ROOT / "weights" / "learned"
    if not (committed / "decoder.weights.h5").is_file():
        pytest.skip("no committed weights")
    monkeypatch.chdir(committed)
    assert main(["caption", "--model", ".", "--method", "consensus", str(ROOT / "demo/examples/motorcycle.jpg")]) == 0
    assert len(json.loads(capsys.readouterr().out)["consensus"]) == 3
    assert main(["caption", "--model", ".", "--method", "guided", str(ROOT / "demo/examples/chelsea_cat.jpg")]) == 0
    assert json.loads(capsys.readouterr().out)["familiarity"] is not None
