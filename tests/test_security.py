"""The attacks of the security issue, replayed against a real `python app.py` on loopback.

1. The caption event reads only uploaded files: any other path, with or without Gradio's
   ``meta`` marker, existing or not, gets the same "not uploaded" refusal, fast, and nothing
   lands in Gradio's cache.
2-3. Request bodies are capped while they stream in (Content-Length or chunked).
4. POST /api/caption shares the models' bounded wait: a burst gets 200s and 503s with
   Retry-After, every 503 before its upload is read, and /api/health keeps answering.
5-7. The host rule, one error shape, strict settings.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from demo.admission import Admission, Busy
from demo.models import check_settings, SettingsError
from demo.server import ROOT
from demo.uploads import MAX_UPLOAD_BYTES, payload_bytes

httpx = pytest.importorskip("httpx")
gradio_client = pytest.importorskip("gradio_client")

PHOTO = ROOT / "demo" / "examples" / "chelsea_cat.jpg"
META = {"_type": "gradio.FileData"}


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def call_caption(server, image_payload) -> tuple[str, float]:
    """Run the `caption` event through Gradio's REST route; (the event's final SSE lines, seconds)."""
    started = time.perf_counter()
    posted = httpx.post(server["url"] + "/gradio_api/call/caption", json={"data": [image_payload, "greedy", 3]},
                        timeout=30)
    posted.raise_for_status()
    answer = httpx.get(server["url"] + f"/gradio_api/call/caption/{posted.json()['event_id']}", timeout=30).text
    return answer, time.perf_counter() - started


@pytest.fixture(scope="module")
def outside_paths(flickr8k, tmp_path_factory) -> dict[str, str]:
    """Paths a client might name: real files outside the app, and one that does not exist."""
    big = tmp_path_factory.mktemp("outside") / "big.bin"
    with open(big, "wb") as f:  # sparse: 200 MB on paper, nothing on disk
        f.truncate(200 * 2**20)
    photo = next((flickr8k / "Flicker8k_Dataset").glob("*.jpg"))
    return {"flickr8k photo": str(photo), "passwd": "/etc/passwd", "200 MB file": str(big),
            "missing": str(Path(photo).with_name("no_such_photo.jpg")),
            "dot-dot into the upload folder and out": "/tmp/gradio/../../etc/passwd"}


# -- 1. only uploaded files ----------------------------------------------------------------------
@pytest.mark.parametrize("with_meta", [False, True], ids=["bare path", "with meta"])
def test_caption_event_refuses_files_that_were_not_uploaded(server, outside_paths, with_meta):
    before = files_under(server["uploads"])
    messages = {}
    for name, path in outside_paths.items():
        payload = {"path": path, **({"meta": META} if with_meta else {})}
        answer, seconds = call_caption(server, payload)
        assert "event: error" in answer and "not uploaded" in answer, (name, answer)
        assert seconds < 5, (name, seconds)  # refused from the path alone, never read (a generous bound)
        messages[name] = answer.replace(path, "<path>").replace(os.path.normpath(path), "<path>")
    assert len(set(messages.values())) == 1, messages  # existing, missing, big: indistinguishable
    assert files_under(server["uploads"]) == before  # nothing copied into Gradio's cache


def test_gradio_client_bare_paths_are_refused_alike(client, outside_paths):
    errors = []
    for name in ("flickr8k photo", "missing"):
        with pytest.raises(Exception) as caught:
            client.predict({"path": outside_paths[name]}, "greedy", 3, api_name="/caption")
        errors.append(str(caught.value).replace(outside_paths[name], "<path>"))
    assert "not uploaded" in errors[0] and errors[0] == errors[1], errors


def test_an_uploaded_photo_is_still_captioned(client):
    captions = client.predict(gradio_client.handle_file(str(PHOTO)), "greedy", 3, api_name="/caption")[:3]
    assert len(captions) == 3 and all(c.strip() for c in captions), captions


def test_payload_bytes_never_opens_a_refused_path(tmp_path, monkeypatch):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "p.jpg").write_bytes(b"abc")
    assert payload_bytes({"path": str(uploads / "p.jpg")}, [str(uploads)]) == b"abc"
    assert payload_bytes({"url": "data:image/png;base64,YWJj"}, [str(uploads)]) == b"abc"
    assert payload_bytes(None, [str(uploads)]) is None and payload_bytes({"path": None}, [str(uploads)]) is None

    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    for path in ["/etc/passwd", str(uploads) + "/../secret.jpg", str(uploads) + "x/p.jpg", str(tmp_path)]:
        with pytest.raises(Exception, match="not uploaded"):
            payload_bytes({"path": path}, [str(uploads)])
    assert opened == []


def test_payload_bytes_answers_a_folder_as_it_answers_a_missing_file(tmp_path):
    """Inside the upload folder, a folder or a file that is gone get one and the same ImageError
    (not an IsADirectoryError, and no hint of which folders exist); a web URL is not fetched."""
    from captioning import ImageError

    uploads = tmp_path / "uploads"
    (uploads / "0123abcd").mkdir(parents=True)
    messages = set()
    for path in (uploads / "0123abcd", uploads / "gone.jpg"):
        with pytest.raises(ImageError, match="no longer on the server") as info:
            payload_bytes({"path": str(path)}, [str(uploads)])
        messages.add(str(info.value))
    assert len(messages) == 1
    with pytest.raises(ImageError, match="does not fetch images from URLs"):
        payload_bytes({"url": "https://example.com/cat.jpg"}, [str(uploads)])


def test_payload_bytes_limits_data_urls():
    import base64

    big = "data:image/png;base64," + base64.b64encode(b"\0" * (MAX_UPLOAD_BYTES + 10)).decode()
    with pytest.raises(Exception, match="too big"):
        payload_bytes({"url": big}, [])
    with pytest.raises(Exception, match="base64"):
        payload_bytes({"url": "data:image/png;base64,@@@"}, [])


# -- 2-3. bodies capped while streaming ------------------------------------------------------------
def chunked_multipart(megabytes: int):
    yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n\r\n'
    for _ in range(megabytes):
        yield b"\0" * 2**20
    yield b"\r\n--b--\r\n"


@pytest.mark.parametrize("route", ["/api/caption", "/gradio_api/upload", "/gradio_api/queue/join"])
def test_chunked_bodies_are_cut_off_at_the_limit(server, route):
    before = files_under(server["tmp"]) | files_under(server["uploads"])
    answer = httpx.post(server["url"] + route, content=chunked_multipart(200), timeout=60,
                        headers={"content-type": "multipart/form-data; boundary=b"})
    assert answer.status_code == 413, answer.text
    after = files_under(server["tmp"]) | files_under(server["uploads"])
    assert sum(p.stat().st_size for p in after - before) < 2 * MAX_UPLOAD_BYTES


def test_declared_oversize_body_is_refused_before_reading(server):
    """A Content-Length over the limit is answered at once, before any of the body is sent."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(server["url"])
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        sock.sendall(b"POST /api/caption HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     + f"Content-Length: {500 * 2**20}\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(4096):  # the server closes the connection after its answer
            answer += chunk
        answer = answer.decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413") and '"error"' in answer and "limit" in answer, answer


# -- 4. a bounded wait shared with the page -------------------------------------------------------------
def test_burst_gets_answers_or_503_and_health_keeps_answering(server):
    photo = PHOTO.read_bytes()
    health: list[tuple[int, float]] = []
    stop = threading.Event()

    def probe():
        with httpx.Client(timeout=20) as c:
            while not stop.is_set():
                started = time.perf_counter()
                health.append((c.get(server["url"] + "/api/health").status_code, time.perf_counter() - started))
                time.sleep(0.1)

    def one(i):
        data = photo + f"-{i}".encode() + b"\0" * (2 * 2**20)  # unique, 2 MB: no feature-cache answers
        return httpx.post(server["url"] + "/api/caption", files={"image": (f"p{i}.jpg", data)}, timeout=120,
                          data={"method": "beam", "beam_width": "10"})

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        with ThreadPoolExecutor(48) as pool:
            answers = list(pool.map(one, range(48)))
    finally:
        stop.set()
        prober.join()
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) >= 1 and statuses.count(200) >= 1, statuses
    assert all(a.headers.get("retry-after") and "busy" in a.json()["error"] for a in answers if a.status_code == 503)
    # Turned away by Admission.place(), before reading the upload; not by turn() after reading it.
    assert all("in progress" in a.json()["error"] for a in answers if a.status_code == 503), \
        [a.json()["error"] for a in answers if a.status_code == 503]
    assert health and all(code == 200 for code, _ in health)
    assert max(s for _, s in health) < 5, health  # generous: the README reports the measured figure


def test_admission_turns_away_beyond_the_bound():
    gate = Admission(max_waiting=1, timeout=1.0)
    entered = threading.Event()
    release = threading.Event()

    def hold():
        with gate.turn():
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    try:
        with pytest.raises(Busy, match="waited"):  # one may wait, but only 1 s
            with gate.turn():
                pass
        waiter = threading.Thread(target=lambda: pytest.raises(Busy, gate.turn().__enter__))
        waiter.start()
        deadline = time.monotonic() + 5
        while gate.waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        with pytest.raises(Busy, match="waiting"):  # the queue of one is taken
            with gate.turn():
                pass
        waiter.join()
    finally:
        release.set()
        holder.join()
    with gate.turn():  # free again
        assert gate.waiting == 0


def test_admission_places_are_bounded_and_given_back():
    gate = Admission(max_waiting=1, timeout=1.0)
    with gate.place(), gate.place():  # one captioned, one waiting
        with pytest.raises(Busy, match="2 requests in progress"):
            with gate.place():
                pass
    with pytest.raises(RuntimeError):  # a failure inside gives its place back too
        with gate.place():
            raise RuntimeError("upload unreadable")
    with gate.place(), gate.place():
        pass


# -- 5-7. host rule, error shape, settings ------------------------------------------------------------
def test_host_rule():
    from app import server_host

    assert server_host({}) == "127.0.0.1"
    assert server_host({"SPACE_ID": "me/captions"}) == "0.0.0.0"
    assert server_host({"SPACE_ID": "me/captions", "GRADIO_SERVER_NAME": "10.1.2.3"}) == "10.1.2.3"


@pytest.mark.parametrize("request_kwargs, status, hint", [
    ({"method": "GET", "url": "/api/nothing"}, 404, "no API route"),
    ({"method": "GET", "url": "/api"}, 404, "no API route"),
    ({"method": "POST", "url": "/api/caption", "files": [("image", ("a.jpg", b"x"))] * 20}, 400, "one file"),
    ({"method": "POST", "url": "/api/caption", "files": [("image", ("a.jpg", b"x")), ("method", ("m.jpg", b"x"))]},
     400, "plain text fields"),
    ({"method": "POST", "url": "/api/caption", "files": {"method": ("m.jpg", b"x")}}, 422, "plain text field"),
    ({"method": "POST", "url": "/api/caption", "files": {"image": ("a.jpg", b"x")},
      "data": {"method": ["beam", "guided"]}}, 422, "more than once"),
    ({"method": "POST", "url": "/api/caption", "data": {"image": "x" * (1024 * 1024 + 10)}}, 400, "as a file"),
    ({"method": "POST", "url": "/api/caption", "files": {"image": (None, b"x" * (1024 * 1024 + 10))}}, 400,
     "as a file"),
    ({"method": "POST", "url": "/api/caption", "files": {"image": ("a.jpg", b"x")}, "data": {"beam_width": "７"}},
     422, "beam_width"),
    ({"method": "POST", "url": "/api/caption", "files": {"image": ("a.jpg", b"x")}, "data": {"colour": "red"}},
     422, "unknown field"),
    ({"method": "POST", "url": "/api/caption", "content": b"garbage",
      "headers": {"content-type": "multipart/form-data; boundary=zz"}}, 400, "multipart"),
    ({"method": "PUT", "url": "/api/health"}, 405, "not allowed"),
    ({"method": "OPTIONS", "url": "/api/caption"}, 405, "not allowed"),
    ({"method": "POST", "url": "/api/caption", "json": {"image": "x"}}, 422, "no image"),
])
def test_every_api_error_has_one_shape(server, request_kwargs, status, hint):
    kwargs = dict(request_kwargs)
    answer = httpx.request(kwargs.pop("method"), server["url"] + kwargs.pop("url"), timeout=30, **kwargs)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert list(body) == ["error"] and hint.lower() in body["error"].lower(), body


def test_client_that_leaves_mid_upload_leaves_no_traceback(server):
    """Phones lose their connection: that is routine, not an error of ours to log with a traceback."""
    import socket
    from urllib.parse import urlsplit

    from conftest import tracebacks_through_our_code

    where = urlsplit(server["url"])
    part = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n' + b"x" * 1000
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        sock.sendall(b"POST /api/caption HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     + f"Content-Length: {2 * 2**20}\r\n\r\n".encode() + part)
        time.sleep(0.5)  # the server is reading the body when the client goes
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "disconnected during its upload" not in server["log"].read_text():
        time.sleep(0.2)
    log_text = server["log"].read_text(errors="replace")
    assert "disconnected during its upload" in log_text
    assert tracebacks_through_our_code(log_text) == []


def test_health_answers_head_and_wrong_methods_say_what_is_allowed(server):
    """Uptime checks use HEAD; a wrong method gets 405 with Allow, in our shape, not Gradio's 404."""
    assert httpx.head(server["url"] + "/api/health", timeout=30).status_code == 200
    answer = httpx.request("OPTIONS", server["url"] + "/api/caption", timeout=30)
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"


def test_openapi_documents_the_caption_form(server):
    """/api/docs can send a photo: the route's multipart form is in the schema."""
    schema = httpx.get(server["url"] + "/api/openapi.json", timeout=30).json()
    form = schema["paths"]["/api/caption"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["image"] and form["properties"]["image"]["format"] == "binary"
    assert set(form["properties"]) == {"image", "method", "beam_width", "max_length"}


def test_slow_upload_is_cut_off_and_gives_its_place_back(tiny_weights):
    """A client that sends a byte now and then holds one of the API's few places only until the
    upload deadline; then it gets 408 and the place is free again."""
    import asyncio

    from fastapi import FastAPI

    from demo.api import add_json_api
    from demo.models import ModelSet

    models = ModelSet.load(tiny_weights)
    api = FastAPI()
    add_json_api(api, models, upload_seconds=0.5)
    boundary = "slowslow"

    async def trickle():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
               "Content-Type: image/jpeg\r\n\r\n").encode()
        for _ in range(20):  # 10 s of a byte every half second, far past the deadline
            await asyncio.sleep(0.5)
            yield b"x"

    async def send():
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            started = time.perf_counter()
            answer = await c.post("/api/caption", content=trickle(),
                                  headers={"content-type": f"multipart/form-data; boundary={boundary}"})
            return answer, time.perf_counter() - started

    answer, seconds = asyncio.run(send())
    assert answer.status_code == 408 and "did not arrive within 0.5 s" in answer.json()["error"]
    assert seconds < 5
    with contextlib.ExitStack() as places:  # every place free again: max_waiting + 1 can be taken
        for _ in range(models.admission.max_waiting + 1):
            places.enter_context(models.admission.place())


@pytest.mark.parametrize("width", ["７", True, "3e0x", " 4 ", "+2"])
def test_beam_width_accepts_only_plain_ascii_numbers(width):
    if width in (" 4 ", "+2"):
        assert check_settings("beam", width, None, 20).beam_width == int(str(width).strip())
    else:
        with pytest.raises(SettingsError):
            check_settings("beam", width, None, 20)

