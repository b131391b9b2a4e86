"""What a request may bring in: files uploaded through Gradio only, and never more bytes than allowed.

Two guards, at the two doors:

- :class:`UploadedImage`, the page's photo component. Its ``preprocess`` hands the caption
  event the bytes of a file only when that file lies in Gradio's upload folder (where Gradio
  stores whatever a browser or client uploaded, and copies of the example photos it serves).
  Any other path, existing or not, gets the same error, decided from
  the path string alone: the file is never opened, hashed, copied or even looked at.
- :class:`BodyLimit`, ASGI middleware that counts each request body's bytes as they arrive
  (with a Content-Length or chunked) and answers 413 once the route's limit is passed,
  so an oversized upload is never spooled to disk in full.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Callable, Iterable

import gradio as gr

from captioning import ImageError

from .ui import cannot_caption

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # one photo; also Gradio's upload limit
FORM_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and the small setting fields
# Our multipart route carries one photo. Every other body may carry one photo as a base64 data:
# URL (Gradio's JSON event payloads), a third bigger; Gradio's own /gradio_api/upload gets that
# looser cap too, so that its max_file_size check, which deletes the partial file, answers first.
UPLOAD_ROUTES = ("/api/caption",)
MAX_UPLOAD_BODY = MAX_UPLOAD_BYTES + FORM_OVERHEAD_BYTES
MAX_OTHER_BODY = MAX_UPLOAD_BYTES * 4 // 3 + FORM_OVERHEAD_BYTES

EXAMPLE_FILE = "photo.jpg"  # the file name API snippets use
NOT_UPLOADED = "that file was not uploaded to this app: upload the photo itself"
NOT_FETCHED = "this app does not fetch images from URLs: upload the photo itself"


def too_big_message(limit: int = MAX_UPLOAD_BYTES) -> str:
    return f"the upload is too big; the limit is {limit // 2**20} MB"


def _normalised(path: str | Path) -> str:
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def is_inside(path: str, folders: Iterable[str]) -> bool:
    """Whether ``path`` lies inside one of ``folders``, judged from the strings alone."""
    path = _normalised(path)
    return any(path.startswith(folder.rstrip(os.sep) + os.sep) for folder in folders)


def payload_bytes(payload, allowed_folders: Iterable[str]) -> bytes | None:
    """The bytes of a Gradio image payload (ImageData, or its dict): a base64 ``data:`` URL, or a
    file under ``allowed_folders``. None when the payload holds no image. Raises ImageError."""
    if payload is None:
        return None
    if hasattr(payload, "model_dump"):
        payload = payload.model_dump()
    if not isinstance(payload, dict):
        raise ImageError(NOT_UPLOADED)
    url, path = payload.get("url"), payload.get("path")
    if isinstance(url, str) and url.startswith("data:") and not path:
        return _data_url_bytes(url)
    if url and not path:
        raise ImageError(NOT_FETCHED)
    if not path:
        return None
    if not isinstance(path, str) or not is_inside(path, [_normalised(f) for f in allowed_folders]):
        raise ImageError(NOT_UPLOADED)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_UPLOAD_BYTES + 1)
    except OSError:  # gone, or a folder or anything else that is not a file Gradio stored: the same answer
        raise ImageError("the uploaded file is no longer on the server (uploads expire after an hour): "
                         "upload it again") from None
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageError(too_big_message())
    return data


def _data_url_bytes(url: str) -> bytes:
    encoded = url.split(",", 1)[1] if "," in url else ""
    if len(encoded) * 3 // 4 > MAX_UPLOAD_BYTES:  # judge the size before decoding
        raise ImageError(too_big_message())
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ImageError("the image data URL is not valid base64") from None


class UploadedImage(gr.Image):
    """``gr.Image`` whose preprocess returns the photo's bytes, read only from uploaded files.

    Gradio itself checks that a file was uploaded only for payloads that carry its ``meta``
    marker, and only in a launched app; a bare ``{"path": ...}`` would reach a plain
    ``gr.Image.preprocess`` and be opened. This component judges every payload itself.
    """

    is_template = True  # rendered by the frontend's own Image component
    # No __init__ of its own: Gradio sends the page the arguments of the constructor's signature.

    def example_payload(self):
        """What the page's "Use via API" snippet sends: a file of the caller's own, not a web URL that
        fails offline."""
        return {"path": EXAMPLE_FILE, "orig_name": EXAMPLE_FILE, "meta": {"_type": "gradio.FileData"}}

    def example_value(self):
        return EXAMPLE_FILE

    def preprocess(self, payload) -> bytes | None:
        try:
            return payload_bytes(payload, [self.GRADIO_CACHE])
        except ImageError as exc:
            raise gr.Error(cannot_caption(exc), title="Unusable image",
                           print_exception=False) from None


class BodyLimit:
    """ASGI middleware: at most ``limit_for(path)`` bytes of request body, counted as they arrive."""

    def __init__(self, app, limit_for: Callable[[str], int] | None = None):
        self.app = app
        self.limit_for = limit_for or body_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope.get("path", ""))
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await _send_413(send)
        received, exceeded, started = 0, False, False

        async def counted_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _TooBig()
            return message

        async def guarded_send(message):
            nonlocal started
            if exceeded and not started:
                return  # the app's own answer to a cut-off body; ours follows
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _TooBig:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _send_413(send)


class _TooBig(Exception):
    pass


def body_limit(path: str) -> int:
    return MAX_UPLOAD_BODY if path.rstrip("/") in UPLOAD_ROUTES else MAX_OTHER_BODY


async def _send_413(send) -> None:
    body = json.dumps({"error": too_big_message()}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
