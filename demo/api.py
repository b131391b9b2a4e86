"""The plain JSON API beside the Gradio page.

    POST /api/caption   multipart: image (one file), method, beam_width[, max_length]
    GET  /api/health    {"status": "ok", ...} once the models are loaded

Every error, from these routes or from FastAPI itself (bad form, unknown /api route), has
one shape: ``{"error": "<what is wrong>"}`` with the HTTP status saying what kind.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from captioning import ImageError

from .admission import Busy
from .models import DEFAULT_BEAM_WIDTH, VARIANTS, ModelSet, SettingsError
from .uploads import MAX_UPLOAD_BYTES, too_big_message

log = logging.getLogger("demo")

FORM_FIELDS = ("image", "method", "beam_width", "max_length")


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def busy(exc: Busy) -> JSONResponse:
    return error(503, str(exc), headers={"Retry-After": str(exc.retry_after)})


def add_json_api(api: FastAPI, models: ModelSet) -> None:
    @api.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @api.exception_handler(RequestValidationError)
    async def validation_error(_request, exc: RequestValidationError):
        return error(422, "; ".join(str(e.get("msg", e)) for e in exc.errors()) or "invalid request")

    @api.get("/api/health")
    async def health():  # async: answers on the event loop even when every worker thread is busy
        return {"status": "ok", "models": list(VARIANTS), "max_length": models.max_length,
                "waiting": models.admission.waiting}

    async def caption_one(request: Request) -> JSONResponse | dict:
        """Read the form and the upload, caption it (in a worker thread, waiting its turn for the models)."""
        try:
            form = await request.form(max_files=1, max_fields=len(FORM_FIELDS))
        except HTTPException as exc:  # too many files or fields, malformed multipart
            return error(exc.status_code, str(exc.detail))
        try:
            unknown = sorted(set(form.keys()) - set(FORM_FIELDS))
            if unknown:
                return error(422, f"unknown field(s) {', '.join(unknown)}; expected {', '.join(FORM_FIELDS)}")
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

    @api.post("/api/caption")
    async def caption(request: Request):
        """Caption one photo with the three models: {"learned", "fasttext", "word2vec", "timings", ...}."""
        try:
            with models.admission.place():  # taken before the upload is read
                return await caption_one(request)
        except Busy as exc:
            return busy(exc)

    # Without this, unknown /api/... paths would fall through to the Gradio app mounted at /.
    known = {route.path for route in api.routes if getattr(route, "path", "").startswith("/api/")}

    @api.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def unknown_route(request: Request, rest: str):
        if f"/api/{rest}" in known:
            return error(405, f"method {request.method} not allowed for /api/{rest}")
        return error(404, f"no API route /api/{rest}; see /api/docs")
