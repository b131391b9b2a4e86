"""The plain JSON API beside the Gradio page.

    POST /api/caption   multipart: image (one file), method, beam_width[, max_length]
    GET  /api/health    {"status": "ok", ...} once the models are loaded

Every error, from these routes or from FastAPI itself (bad form, unknown /api route), has
one shape: ``{"error": "<what is wrong>"}`` with the HTTP status saying what kind.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from captioning import ImageError
from captioning.images import READABLE_NAMES
from captioning.settings import MAX_BEAM_WIDTH

from .admission import Busy
from .models import DEFAULT_BEAM_WIDTH, METHODS, VARIANTS, ModelSet, SettingsError
from .uploads import MAX_UPLOAD_BYTES, too_big_message

log = logging.getLogger("demo")

FORM_FIELDS = ("image", "method", "beam_width", "max_length")
SETTING_FIELDS = FORM_FIELDS[1:]  # plain text fields
# The whole form must arrive within this many seconds: a 10 MB photo at 3 Mbit/s. A request holds
# one of the API's few places while its upload arrives (admission.place), so without a deadline a
# handful of clients that send a byte now and then would shut everyone else out.
UPLOAD_SECONDS = 30
# What the multipart parser's refusals mean for this route's one file and three short fields.
FORM_PROBLEMS = {
    "Too many files": f"send one file, the photo, in the field 'image'; {', '.join(SETTING_FIELDS)} are plain "
                      "text fields",
    "Too many fields": f"too many form fields; expected {', '.join(FORM_FIELDS)}",
}
FORM_PROBLEMS["Part exceeded maximum size"] = FORM_PROBLEMS["Field exceeded maximum size"] = (
    "a text field is over 1 MB: send the photo as a file (with a filename) in the field 'image' of a "
    "multipart form")
CAPTION_BODY = {  # the form, for /api/docs (the route reads the request itself, so FastAPI cannot infer it)
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["image"],
        "properties": {
            "image": {"type": "string", "format": "binary",
                      "description": f"the photo ({READABLE_NAMES}; at most {MAX_UPLOAD_BYTES // 2**20} MB)"},
            "method": {"type": "string", "enum": list(METHODS), "default": "greedy"},
            "beam_width": {"type": "integer", "minimum": 1, "maximum": MAX_BEAM_WIDTH, "default": DEFAULT_BEAM_WIDTH},
            "max_length": {"type": "integer", "minimum": 1, "description": "longest caption in words "
                                                                           "(default: the models' limit)"},
        }}}},
}


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def busy(exc: Busy) -> JSONResponse:
    return error(503, str(exc), headers={"Retry-After": str(exc.retry_after)})


def add_json_api(api: FastAPI, models: ModelSet, upload_seconds: float = UPLOAD_SECONDS) -> None:
    @api.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @api.exception_handler(RequestValidationError)
    async def validation_error(_request, exc: RequestValidationError):
        return error(422, "; ".join(str(e.get("msg", e)) for e in exc.errors()) or "invalid request")

    @api.api_route("/api/health", methods=["GET", "HEAD"])
    async def health():  # async: answers on the event loop even when every worker thread is busy
        return {"status": "ok", "models": list(VARIANTS), "max_length": models.max_length,
                "waiting": models.admission.waiting}

    async def caption_one(request: Request) -> JSONResponse | dict:
        """Read the form and the upload, caption it (in a worker thread, waiting its turn for the models)."""
        try:
            async with asyncio.timeout(upload_seconds):
                form = await request.form(max_files=1, max_fields=len(FORM_FIELDS))
        except HTTPException as exc:  # too many files or fields, malformed multipart
            return error(exc.status_code, form_problem(str(exc.detail)))
        except TimeoutError:
            return error(408, f"the upload did not arrive within {upload_seconds:g} s; send a smaller photo")
        except ClientDisconnect:  # the client went away mid-upload: nobody to answer
            log.info("a client disconnected during its upload")
            return Response(status_code=400)
        try:
            problem = form_fields_problem(form)
            if problem:
                return error(422, problem)
            settings = models.settings(form.get("method", "greedy"), form.get("beam_width", DEFAULT_BEAM_WIDTH),
                                       form.get("max_length"))
            image = form.get("image")
            if not isinstance(image, UploadFile):
                return error(422, "no image: send the photo as the multipart file field 'image'")
            data = await image.read(MAX_UPLOAD_BYTES + 1)
            if len(data) > MAX_UPLOAD_BYTES:
                return error(413, too_big_message())
            result = await run_in_threadpool(models.caption, data, settings)
        except SettingsError as exc:
            return error(422, str(exc))
        except ImageError as exc:
            return error(400, f"cannot caption this image: {exc}")
        except Busy as exc:
            return busy(exc)
        except Exception:
            log.exception("captioning failed")
            return error(500, "captioning failed; the server logged the details")
        finally:
            await form.close()
        return result.as_json()

    @api.post("/api/caption", openapi_extra={"requestBody": CAPTION_BODY})
    async def caption(request: Request):
        """Caption one photo with the three models: {"learned", "fasttext", "word2vec", "timings", ...}."""
        try:
            with models.admission.place():  # taken before the upload is read
                return await caption_one(request)
        except Busy as exc:
            return busy(exc)

    # Without this, unknown /api/... paths (and other methods on known ones) would fall through to
    # the Gradio app mounted at /, which answers in its own shape.
    known = {route.path: sorted(route.methods) for route in api.routes
             if getattr(route, "path", "").startswith("/api/") and getattr(route, "methods", None)}

    async def unknown_route(request: Request, rest: str = ""):
        path = f"/api/{rest}"
        if path in known:
            return error(405, f"method {request.method} not allowed for {path}",
                         headers={"Allow": ", ".join(known[path])})
        return error(404, f"no API route {path}; see /api/docs")

    for pattern in ("/api", "/api/{rest:path}"):
        api.add_api_route(pattern, unknown_route, methods=list(ANY_METHOD), include_in_schema=False)


ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def form_problem(detail: str) -> str:
    """The multipart parser's refusal, said in terms of this route's form."""
    return next((message for start, message in FORM_PROBLEMS.items() if detail.startswith(start)), detail)


def form_fields_problem(form) -> str | None:
    """What is wrong with the form's fields (unknown, repeated, or a file where text belongs), or None."""
    unknown = sorted(set(form.keys()) - set(FORM_FIELDS))
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}; expected {', '.join(FORM_FIELDS)}"
    repeated = [name for name in FORM_FIELDS if len(form.getlist(name)) > 1]
    if repeated:
        return f"field(s) {', '.join(repeated)} given more than once; send each once"
    files = [name for name in SETTING_FIELDS if isinstance(form.get(name), UploadFile)]
    if files:
        return f"{', '.join(files)} must be a plain text field, not a file"
    return None
