"""The Gradio demo and its JSON API (issue 3), against a real `python app.py` on a free port.

The app is served with the committed weights/ when they are complete (as in CI and on a
fresh checkout), else with the session's tiny models (whose captions can be empty, so the
"non-empty and different" check needs the real ones).  Every awkward input from
tests/bad_inputs.py goes through both the Gradio endpoint and POST /api/caption; each must
give a clear message or captions, and the server must answer the next good request.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bad_inputs import CASES, ERROR, ERROR_HINTS, write_bad_inputs
from demo.models import METHODS, MODELS, VARIANTS, SettingsError, check_settings, pca_2d
from conftest import tracebacks_through_our_code
from demo.server import ROOT
from demo.uploads import MAX_UPLOAD_BYTES

httpx = pytest.importorskip("httpx")
gradio_client = pytest.importorskip("gradio_client")
from gradio_client.exceptions import AppError  # noqa: E402  (what a gr.Error or a refused input raises)

EXAMPLES = ROOT / "demo" / "examples"
PHOTO = EXAMPLES / "chelsea_cat.jpg"
OTHER_PHOTO = EXAMPLES / "rocket.jpg"


@pytest.fixture(scope="module")
def bad_cases(tmp_path_factory):
    return write_bad_inputs(tmp_path_factory.mktemp("bad_inputs"), photo=PHOTO)


def predict(client, image, method="greedy", beam_width=3):
    image = gradio_client.handle_file(str(image)) if image is not None else None
    return client.predict(image, method, beam_width, api_name="/caption")


def post(server, image: Path | bytes | None, method="greedy", beam_width=3, name="photo.jpg", **fields):
    files = None
    if image is not None:
        data = image.read_bytes() if isinstance(image, Path) else image
        files = {"image": (image.name if isinstance(image, Path) else name, data, "application/octet-stream")}
    return httpx.post(server["url"] + "/api/caption", files=files, timeout=60,
                      data={"method": method, "beam_width": str(beam_width), **fields})


_FIRST_ANSWER: list[str] = []


def assert_still_serving(client):
    """The server still answers a good request, with the same captions as the first time it was
    asked (not merely some strings: a failed request or an empty caption fails here)."""
    captions = list(predict(client, PHOTO)[:3])
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions), captions
    if not _FIRST_ANSWER:
        _FIRST_ANSWER.extend(captions)
    assert captions == _FIRST_ANSWER


# -- the captioning endpoint ------------------------------------------------------------------------
def test_caption_endpoint_takes_image_method_beam_width(client):
    params = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/caption"]["parameters"]
    assert [p["parameter_name"] for p in params] == ["image", "method", "beam_width"]


def test_examples_are_cached_lazily(server):
    """Nothing is cached at start-up (the folder appears on first use of an example)."""
    assert not list(server["examples_cache"].rglob("log.csv"))


@pytest.mark.parametrize("method", METHODS)
def test_three_captions_first(client, method):
    """The endpoint's outputs: the three captions, then the details of the same captions."""
    *captions, details = predict(client, PHOTO, method, 3)
    assert len(captions) == len(MODELS) and all(c.strip() for c in captions), captions
    assert details["method"] == method and [details[v] for v in MODELS] == captions  # the three, then the ensemble
    assert details["encoder_labels"] and all(0 <= d["probability"] <= 1 for d in details["encoder_labels"])


def test_guided_through_the_api_names_the_cat(client, server, weights):
    if not weights[1]:
        pytest.skip("needs the committed models")
    *captions, details = predict(client, PHOTO, "guided", 3)
    assert all("cat" in c.split() for c in captions), captions
    assert all("cat" in details["details"][v]["concepts"] for v in MODELS), details
    answer = post(server, PHOTO, "guided", 3).json()
    assert [answer[v] for v in MODELS] == captions and answer["encoder_labels"][0]["probability"] > 0.3


def test_consensus_through_the_api_reorders_the_beams_candidates(server, weights):
    """method=consensus: each model's candidates are beam search's own, in the consensus order, and
    its caption is the first of them."""
    if not weights[1]:
        pytest.skip("needs the committed models and their consensus reference")
    beam, consensus = (post(server, OTHER_PHOTO, method, 3).json() for method in ("beam", "consensus"))
    assert consensus["method"] == "consensus"
    for name in MODELS:
        ranked = [c["caption"] for c in consensus["details"][name]["candidates"]]
        assert sorted(ranked) == sorted(c["caption"] for c in beam["details"][name]["candidates"])
        assert consensus[name] == ranked[0]


def test_real_models_give_distinct_nonempty_captions(client, weights):
    if not weights[1]:
        pytest.skip("committed weights/ are not complete; tiny test models may produce empty captions")
    cat = predict(client, PHOTO, "beam", 3)[:3]
    rocket = predict(client, OTHER_PHOTO, "beam", 3)[:3]
    assert all(c.strip() for c in cat + rocket), (cat, rocket)
    assert cat != rocket


def test_http_api_returns_the_same_captions(client, server):
    for method, width in [("greedy", 3), ("beam", 4)]:
        expected = predict(client, OTHER_PHOTO, method, width)[:3]
        answer = post(server, OTHER_PHOTO, method, width)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert [body[v] for v in VARIANTS] == list(expected)
        assert body["method"] == method and body["beam_width"] == width
        assert set(body["timings"]) == {"encode_seconds", *MODELS}
        if method == "beam":
            assert all(1 <= len(body["details"][v]["candidates"]) <= width for v in VARIANTS)


def test_http_api_max_length(server):
    answer = post(server, PHOTO, "greedy", 1, max_length="2")
    assert answer.status_code == 200, answer.text
    assert all(len(answer.json()[v].split()) <= 2 for v in VARIANTS)


# -- bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_through_gradio(client, server, weights, bad_cases, name):
    path, expected = bad_cases[name]
    if expected == ERROR:
        with pytest.raises(AppError) as caught:  # a gr.Error shown in the page, not a crash
            predict(client, path)
        message = str(caught.value)
        assert message.startswith("Cannot caption this image:"), message
        assert re.search(ERROR_HINTS.get(name, "."), message, re.I), message
        assert "Traceback" not in message
    else:
        captions = list(predict(client, path)[:3])
        assert all(c.strip() for c in captions) or not weights[1], captions  # tiny models may say nothing
        answer = post(server, path)  # the page and the API caption the same file the same way
        assert answer.status_code == 200 and [answer.json()[v] for v in VARIANTS] == captions, answer.text
    assert_still_serving(client)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_through_http(server, client, weights, bad_cases, name):
    path, expected = bad_cases[name]
    answer = post(server, path)
    if expected == ERROR:
        assert answer.status_code == 400, answer.text
        assert re.search(ERROR_HINTS.get(name, "."), answer.json()["error"], re.I), answer.text
    else:
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert all(isinstance(body[v], str) for v in VARIANTS) and body["method"] == "greedy", body
        assert all(body[v].strip() for v in VARIANTS) or not weights[1], body  # tiny models may say nothing
    assert_still_serving(client)


def test_no_image(client, server):
    with pytest.raises(AppError, match="(?i)no image"):
        predict(client, None)
    answer = post(server, None)
    assert answer.status_code == 422 and "image" in answer.json()["error"]
    assert_still_serving(client)


@pytest.mark.parametrize("method, width, hint", [
    ("sideways", 3, "method|choices"), ("", 3, "method|choices"), ("beam", 0, "beam_width|minimum"),
    ("beam", 11, "beam_width|maximum"), ("beam", 2.5, "beam_width"),
])
def test_bad_settings(client, server, method, width, hint):
    """Refused with a reason, by Gradio's own input checks or ours."""
    with pytest.raises(AppError, match=hint):  # refused by the app, not a client-side failure
        predict(client, PHOTO, method, width)
    if method == "":
        return  # an empty form field reads as absent over HTTP: the default, greedy, applies
    answer = post(server, PHOTO, method, width)
    assert answer.status_code == 422, answer.text
    assert re.search(hint, answer.json()["error"]), answer.text


@pytest.mark.parametrize("fields", [{"beam_width": "many"}, {"max_length": "0"}, {"max_length": "1000"}])
def test_bad_settings_http(server, fields):
    answer = httpx.post(server["url"] + "/api/caption", timeout=60,
                        files={"image": ("cat.jpg", PHOTO.read_bytes(), "image/jpeg")},
                        data={"method": "beam", "beam_width": "3", **fields})
    assert answer.status_code == 422 and answer.json()["error"], answer.text


def test_uploads_are_limited(client, server, tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(PHOTO.read_bytes() + b"\0" * (MAX_UPLOAD_BYTES + 1024))
    answer = post(server, big)
    assert answer.status_code == 413 and "limit" in answer.json()["error"]
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # refused by the upload limit
        predict(client, big)
    assert_still_serving(client)


def test_not_multipart(server, client):
    answer = httpx.post(server["url"] + "/api/caption", json={"image": "x"}, timeout=30)
    assert answer.status_code == 422 and "multipart" in answer.json()["error"], answer.text
    assert_still_serving(client)


def test_no_traceback_from_our_code_in_server_log(server):
    # test_browser.py has the same check for its own server: `uvicorn app:app` (this one is
    # `python app.py`); each guards the server its tests drove.
    assert tracebacks_through_our_code(server["log"].read_text(errors="replace")) == []


# -- helpers, no server needed ---------------------------------------------------------------------------
def test_check_settings():
    assert check_settings("beam", "4", None, 20).beam_width == 4
    assert check_settings(" Greedy ", 3.0, "7", 20).max_length == 7
    for bad in [("top-k", 3, None), ("beam", "x", None), ("beam", 3, "21"), ("beam", 99, None),
                ("beam", None, None), ("beam", 3, "1.5")]:
        with pytest.raises(SettingsError):
            check_settings(*bad, 20)


def test_pca_2d_projects_onto_main_axes():
    import numpy as np

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)) * np.array([10, 3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    coords, ratio = pca_2d(vectors)
    assert coords.shape == (50, 2)
    assert ratio[0] > ratio[1] > 0.05 and ratio.sum() > 0.95
    assert pca_2d(vectors[:1])[0].shape == (1, 2)


def test_word_probs_html_escapes_and_marks_end():
    from captioning import CaptionResult
    from demo.ui import END_TOKEN, word_probs_html

    html = word_probs_html(CaptionResult("a <b>", ["a", "<b>"], [0.9, 0.2, 0.5]), "Model")
    assert "&lt;b&gt;" in html and '<span class="w"><b>' not in html
    assert END_TOKEN in html and "0.90" in html


def test_weights_from_hub_repo(monkeypatch, tmp_path):
    import huggingface_hub

    from demo.models import weights_dir_from_env

    calls = []

    def fake_snapshot_download(**kwargs):
        calls.append(kwargs)
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("CAPTION_WEIGHTS_REPO", "someone/captions")
    assert weights_dir_from_env() == tmp_path
    assert calls[0]["repo_id"] == "someone/captions"
    monkeypatch.delenv("CAPTION_WEIGHTS_REPO")
    monkeypatch.setenv("CAPTION_WEIGHTS_DIR", str(tmp_path / "w"))
    assert weights_dir_from_env() == tmp_path / "w"


def test_push_to_hub(tmp_path, capsys):
    from training import push_to_hub

    with pytest.raises(SystemExit):
        push_to_hub.parse_args(["--repo", "not a repo"])
    assert push_to_hub.main(["--repo", "me/captions", "--weights", str(tmp_path)]) == 2
    assert "nothing uploaded" in capsys.readouterr().err

    for variant in VARIANTS:
        for name in push_to_hub.REQUIRED_FILES:
            (tmp_path / variant).mkdir(exist_ok=True)
            (tmp_path / variant / name).write_text("x")

    class FakeApi:
        calls = []

        def create_repo(self, **kwargs):
            self.calls.append(("create_repo", kwargs))

        def upload_folder(self, **kwargs):
            self.calls.append(("upload_folder", kwargs))
            return "https://huggingface.co/me/captions/commit/1"

    api = FakeApi()
    assert push_to_hub.push(tmp_path, "me/captions", api=api).endswith("/commit/1")
    (_, created), (_, uploaded) = api.calls
    assert created["repo_id"] == "me/captions" and created["exist_ok"]
    assert uploaded["folder_path"] == str(tmp_path)
    assert sorted(uploaded["allow_patterns"]) == sorted([*(f"{v}/*" for v in VARIANTS), "familiarity.h5",
                                                         "neighbour_captions.json", "ensemble_metrics.json",
                                                         "seed_runs.json"])


def test_a_model_repo_carries_everything_the_app_reads_beside_the_bundles(monkeypatch, tmp_path):
    """What push_to_hub --repo uploads from the committed weights/ is what the app downloads, and it
    holds every file the app reads there (the About tab's seed table came from seed_runs.json, which
    a model repository lacked)."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    from demo.models import weights_dir_from_env
    from training import push_to_hub

    weights = ROOT / "weights"
    uploads = []
    api = type("Api", (), {"create_repo": lambda self, **kw: None,
                           "upload_folder": lambda self, **kw: uploads.append(kw) or "commit"})()
    assert push_to_hub.push(weights, "me/captions", api=api) == "commit"
    files = [p.relative_to(weights).as_posix() for p in weights.rglob("*") if p.is_file()]
    uploaded = set(filter_repo_objects(files, allow_patterns=uploads[0]["allow_patterns"]))
    downloads = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kw: downloads.append(kw) or str(tmp_path))
    monkeypatch.setenv("CAPTION_WEIGHTS_REPO", "me/captions")
    weights_dir_from_env()
    assert downloads[0]["allow_patterns"] == uploads[0]["allow_patterns"]
    read_by_the_app = {"familiarity.h5", "neighbour_captions.json", "ensemble_metrics.json", "seed_runs.json",
                       *(f"{v}/{name}" for v in VARIANTS for name in push_to_hub.REQUIRED_FILES)}
    assert read_by_the_app <= uploaded, read_by_the_app - uploaded


def test_a_malformed_weights_repo_is_one_line(monkeypatch):
    from demo.models import WeightsSourceError, weights_dir_from_env

    monkeypatch.setenv("CAPTION_WEIGHTS_REPO", "not a repo")
    with pytest.raises(WeightsSourceError, match="USER/NAME"):
        weights_dir_from_env()


def test_a_port_that_is_not_a_number_stops_the_app_in_one_line():
    """Gradio reads GRADIO_SERVER_PORT as it is imported: app.py says what is wrong before that."""
    import subprocess
    import sys

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "GRADIO_SERVER_PORT": "abc"}
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "GRADIO_SERVER_PORT must be a port number" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]


def test_a_malformed_weights_repo_stops_the_app_in_one_line(monkeypatch):
    import app

    monkeypatch.setenv("CAPTION_WEIGHTS_REPO", "not a repo")
    with pytest.raises(SystemExit, match="cannot start the demo: CAPTION_WEIGHTS_REPO must name a Hub repository"):
        app.main()


def test_importing_app_loads_no_models():
    """`uvicorn app:app` builds the app on first access of app.app; a plain import does nothing."""
    import app

    assert app._default_app.cache_info().currsize == 0
    assert "app" not in vars(app)  # served by the module's __getattr__, built on first access
    with pytest.raises(AttributeError):
        app.no_such_thing


def test_space_front_matter_matches_requirements():
    """README.md's Hugging Face Space header runs app.py with the Gradio version requirements.txt pins."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if not text.startswith("---"):
        pytest.skip("README.md has no Space front matter yet")
    header = dict(re.findall(r"^(\w+):\s*\"?([^\"\n]*)\"?\s*$", text.split("---")[1], re.M))
    pinned = re.search(r"^gradio==(\S+)", (ROOT / "requirements.txt").read_text(), re.M)
    assert header.get("sdk") == "gradio" and header.get("app_file") == "app.py", header
    assert pinned and header.get("sdk_version") == pinned.group(1), (header, pinned)
    assert header.get("python_version"), header
