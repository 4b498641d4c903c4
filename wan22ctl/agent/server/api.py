"""The HTTP API on FastAPI (served by uvicorn, see `listen.py`): OpenAI's Videos API over the
`Service`, the kit's own routes, the web page and the API's documentation.

Routes:
    POST   /v1/videos                 submit: multipart form as `openai.videos.create` sends it (prompt,
                                      model, seconds, size, input_reference file, and any kit field; s2v:
                                      audio and pose_video files), or JSON (the kit's fields, files in
                                      base64, or OpenAI's); `Idempotency-Key` header.
                                      -> 201 Video, 200 for a replay
    GET    /v1/videos                 cursor page (?after=ID&limit=100&order=asc|desc; the kit adds
                                      before=ID and state=queued|running|...)
    GET    /v1/videos/{id}            one Video: status, progress 0-100, and the kit's live steps/expert/ETA
    GET    /v1/videos/{id}/events     server-sent events until the job ends
    GET    /v1/videos/{id}/content    the MP4 (?variant=video; byte ranges for players that seek)
    POST   /v1/videos/{id}/cancel     queued: cancelled now; running: stops at the next step
    DELETE /v1/videos/{id}            the job and its files (not while running) -> video.deleted
    GET    /healthz  /readyz (503 while loading)  /v1/info  /metrics (Prometheus text)
    GET    /  (the web page)  /docs  /openapi.json

Errors are OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, plus `field` (= param)
for the kit's clients, so the `openai` SDK raises its class for the status (401
AuthenticationError, 404 NotFoundError, 400/422, 413, 429 RateLimitError). Every `/v1` route and
/metrics needs the API key when one is configured (`Authorization: Bearer KEY` or `X-API-Key`);
the health probes, the page and the docs do not. Store and engine calls are blocking (SQLite
commits with fsync), so those routes are plain functions that Starlette runs in its thread pool;
event streams wait on the event loop and share one computed view per job and change.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from wan22ctl import __version__
from wan22ctl.agent.server import requests as reqs
from wan22ctl.agent.server.store import STATES, TERMINAL, IdempotencyConflict, StoreUnavailable

log = logging.getLogger("wan22ctl.server")

WEB_DIR = Path(__file__).with_name("web")
MAX_BODY_BYTES = 24 * 1024 * 1024  # a 16 MiB image in base64 plus the rest (s2v with big uploads: --max-body-mb)
MAX_CONCURRENT = 512  # requests in progress at once (each event stream counts for its life)
BODY_IDLE_TIMEOUT_S = 10.0  # a client that stops sending its body mid-way is answered 408
SSE_KEEPALIVE_S = 15.0
JOB_ID = re.compile(r"video_[0-9a-f]{24}")
PUBLIC_PATHS = frozenset(("/healthz", "/readyz", "/", "/docs", "/openapi.json", "/favicon.ico"))
UNLIMITED_PATHS = frozenset(("/healthz", "/readyz"))  # probes answer even when the server is saturated
MAX_SEQ = 2**63 - 1
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "invalid_request_error", 408: "invalid_request_error", 409: "conflict_error",
               413: "invalid_request_error", 415: "invalid_request_error", 416: "invalid_request_error",
               422: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable"}


class ApiError(Exception):
    """An answer other than success: status, message and the request field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None, headers: dict | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.headers, self.code = status, message, field, headers, code


def error_response(status: int, message: str, field: str | None = None, headers: dict | None = None,
                   code: str | None = None) -> JSONResponse:
    """OpenAI's error object (what the SDK reads), with the kit's `field` beside `param`."""
    error = {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": field, "code": code}
    if field:
        error["field"] = field
    return JSONResponse({"error": error}, status_code=status, headers=headers)


# ----------------------------------------------------------------------------- schema (documentation)


class Video(BaseModel):
    """OpenAI's `Video` object; the kit's keys (state, progress_detail, seed, timings, ...) follow it."""

    model_config = ConfigDict(extra="allow")
    id: str
    object: str = "video"
    status: str
    progress: int
    created_at: int
    completed_at: Optional[int] = None
    expires_at: Optional[int] = None
    model: str
    prompt: Optional[str] = None
    size: str
    seconds: str
    error: Optional[dict] = None
    state: str
    progress_detail: dict
    seed: Optional[int] = None


class VideoPage(BaseModel):
    object: str = "list"
    data: list[Video]
    has_more: bool
    first_id: Optional[str] = None
    last_id: Optional[str] = None


class VideoDeleted(BaseModel):
    id: str
    object: str = "video.deleted"
    deleted: bool


class ErrorBody(BaseModel):
    error: dict


_ERRORS = {s: {"model": ErrorBody} for s in (400, 401, 404, 409, 413, 415, 422, 429)}
_CREATE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["prompt"], "properties": {
        "prompt": {"type": "string"},
        "model": {"type": "string", "description": "the task this server loaded (or its checkpoint folder)"},
        "seconds": {"type": "string", "description": "clip length; frames = the 4n+1 nearest to seconds x fps"},
        "size": {"type": "string", "example": "1280x720"},
        "input_reference": {"type": "string", "format": "binary", "description": "PNG, JPEG or WebP (i2v, ti2v, s2v)"},
        "audio": {"type": "string", "format": "binary", "description": "s2v: the speech (WAV, FLAC, MP3, Ogg, M4A)"},
        "pose_video": {"type": "string", "format": "binary", "description": "s2v: a DW-pose video (MP4)"},
        **{name: {"type": "string"} for name in ("negative_prompt", "frame_num", "sample_steps", "sample_shift",
                                                 "sample_guide_scale", "sample_solver", "seed", "num_clip",
                                                 "start_from_ref")}}}},
    "application/json": {"schema": {"type": "object", "required": ["prompt"], "properties": {
        "prompt": {"type": "string"}, "negative_prompt": {"type": "string"}, "size": {"type": "string"},
        "frame_num": {"type": "integer"}, "sample_steps": {"type": "integer"}, "sample_shift": {"type": "number"},
        "sample_guide_scale": {"oneOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}]},
        "sample_solver": {"type": "string", "enum": ["unipc", "dpm++"]}, "seed": {"type": "integer"},
        "image": {"type": "string", "description": "base64 or a data: URL"},
        "audio": {"type": "string", "description": "s2v: base64 or a data: URL"},
        "pose_video": {"type": "string", "description": "s2v: base64 or a data: URL"},
        "num_clip": {"type": "integer", "description": "s2v: at most this many clips"},
        "start_from_ref": {"type": "boolean", "description": "s2v: the image is the first frame"},
        "model": {"type": "string"}, "seconds": {"type": "string"}}}}}}}


# ----------------------------------------------------------------------------- event streams


class Changes:
    """Hands the service's changes (from any thread) to the event streams on the event loop, and
    computes each job's view once per change however many streams watch it."""

    def __init__(self, service):
        self.service = service
        self._event: asyncio.Event | None = None
        self._views: dict[str, tuple[int, asyncio.Future]] = {}

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._event = asyncio.Event()

        def hand_on() -> None:
            try:
                loop.call_soon_threadsafe(self._bump)
            except RuntimeError:  # the loop has closed: the server is stopping
                pass

        self.service.on_change(hand_on)

    def _bump(self) -> None:
        event, self._event = self._event, asyncio.Event()
        self._views.clear()
        event.set()

    async def wait(self, version: int, timeout: float) -> None:
        """Return once the service's version differs from `version` (or after `timeout`)."""
        event = self._event
        if self.service.version != version:
            return
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def view(self, job_id: str) -> tuple[int, str | None, str | None]:
        """(version, job state, JSON text) of a job as of now; state None when it is gone."""
        version = self.service.version
        cached = self._views.get(job_id)
        if cached is None or cached[0] != version:
            cached = (version, asyncio.ensure_future(run_in_threadpool(self._compute, job_id)))
            self._views[job_id] = cached
        state, text = await asyncio.shield(cached[1])
        return version, state, text

    def _compute(self, job_id: str) -> tuple[str | None, str | None]:
        job = self.service.store.get(job_id)
        if job is None:
            return None, None
        return job.state, json.dumps(self.service.view(job), default=str)


# ----------------------------------------------------------------------------- gate


class Gate:
    """ASGI middleware in front of every route: the API key, and how many requests may be in
    progress at once (past it: 429 with Retry-After). Health probes skip both."""

    def __init__(self, app, api_key: str | None, max_concurrent: int):
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.max_concurrent = max_concurrent
        self.in_progress = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            return await self.app(scope, receive, send)
        path = scope["path"]
        if self.key is not None and path not in PUBLIC_PATHS and not path.startswith("/static/"):
            if not self._authorised(scope["headers"]):
                response = error_response(401, "missing or wrong API key (send Authorization: Bearer KEY)",
                                          headers={"WWW-Authenticate": 'Bearer realm="wan22ctl"'},
                                          code="invalid_api_key")
                return await response(scope, receive, send)
        if self.in_progress >= self.max_concurrent:
            response = error_response(429, f"{self.max_concurrent} requests are in progress; retry shortly",
                                      headers={"Retry-After": "1"})
            return await response(scope, receive, send)
        self.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1

    def _authorised(self, headers) -> bool:
        given = b""
        for name, value in headers:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
                break
            if name == b"x-api-key":
                given = value.strip()
        return bool(given) and hmac.compare_digest(given, self.key)


# ----------------------------------------------------------------------------- request bodies


async def read_body(request: Request, max_body: int, idle_timeout: float) -> bytes:
    """The whole body, refusing more than `max_body` bytes (413, from Content-Length before any
    is read) and a client that stalls for `idle_timeout` seconds mid-body (408)."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ApiError(400, "Content-Length must be a number of bytes")
        if int(length) > max_body:
            raise ApiError(413, f"request body larger than {max_body} bytes")
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), idle_timeout)
        except StopAsyncIteration:
            break
        except ClientDisconnect:
            raise ApiError(400, "the request body ended before its Content-Length") from None
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body stopped arriving for {idle_timeout:g} s",
                           headers={"Connection": "close"}) from None
        size += len(chunk)
        if size > max_body:
            raise ApiError(413, f"request body larger than {max_body} bytes", headers={"Connection": "close"})
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # noqa: SLF001  Starlette's cache: request.form() parses these bytes
    return body


def parse_json(raw: bytes):
    try:
        return json.loads(raw or b"{}")
    except RecursionError:
        raise ApiError(400, "body is not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, and ints past Python's digit limit
        raise ApiError(400, f"body is not valid JSON: {exc}") from None


async def parse_form(request: Request) -> dict:
    """A multipart (or urlencoded) form as a request body: text fields, files as their bytes."""
    try:
        # one file more than the uploads, so that one given twice is answered "given more than once"
        form = await request.form(max_files=len(reqs.UPLOADS) + 1, max_fields=64)
    except StarletteHTTPException as exc:  # python-multipart could not parse it
        raise ApiError(400, f"malformed form body: {exc.detail}") from None
    except (ValueError, UnicodeDecodeError, AssertionError) as exc:
        raise ApiError(400, f"malformed form body: {exc}") from None
    fields: dict[str, Any] = {}
    try:
        for name, value in form.multi_items():
            if name in fields:
                raise ApiError(422, "given more than once", field=name)
            if isinstance(value, str):
                fields[name] = value
            else:
                data = await value.read()
                await value.close()
                fields[name] = data
    finally:
        await form.close()
    return reqs.form_fields(fields)


# ----------------------------------------------------------------------------- the app


def build_app(service, api_key: str | None, info: dict, *, max_body: int = MAX_BODY_BYTES,
              max_concurrent: int = MAX_CONCURRENT, body_idle_timeout: float = BODY_IDLE_TIMEOUT_S):
    """The ASGI application (the FastAPI app inside the `Gate`) and its `Changes` hub, which
    `listen.serve` attaches to the event loop it runs the app on."""
    app = FastAPI(title="wan22ctl resident server", version=__version__, docs_url=None, redoc_url=None,
                  description="Wan2.2 video generation behind OpenAI's Videos API. Send "
                              "`Authorization: Bearer KEY` when the server has an API key.")
    changes = Changes(service)

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.field, exc.headers, exc.code)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        message = {404: f"no route {request.method} {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        return error_response(422, first.get("msg", "invalid request"), str((first.get("loc") or ["", "request"])[-1]))

    @app.exception_handler(StoreUnavailable)
    async def _queue_away(request, exc: StoreUnavailable):  # a shared queue's database: retry later, not a bug
        return error_response(503, str(exc), headers={"Retry-After": "5"}, code="queue_unavailable")

    @app.exception_handler(Exception)
    async def _bug(request, exc: Exception):
        log.error("error handling %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error (see the server log)")

    def job_or_404(job_id: str):
        job = service.store.get(job_id) if JOB_ID.fullmatch(job_id) else None
        if job is None:
            raise ApiError(404, f"no video {job_id}", code="video_not_found")
        return job

    # ------------------------------------------------------------------ probes, info, metrics

    @app.get("/healthz", tags=["server"])
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["server"],
             responses={503: {"description": "loading, loading failed, or the shared queue unreachable"}})
    async def readyz():
        ready, body = service.readiness()
        return body if ready else JSONResponse(body, 503)

    @app.get("/v1/info", tags=["server"])
    def server_info():
        eng = service.engine
        data = dict(info)
        data.update(ready=service.ready, load_seconds=eng.load_seconds, world_size=eng.world_size,
                    progress_hooked=eng.hooked_modules, uptime_seconds=time.time() - service.started_at,
                    models=list(reqs.model_names(info["task"])), **_task_facts(info["task"]),
                    versions={"wan22ctl": __version__, "python": platform.python_version(),
                              "torch": getattr(sys.modules.get("torch"), "__version__", None),
                              "wan22_ref": os.environ.get("WAN22_REF")})
        return data

    @app.get("/metrics", tags=["server"], response_class=Response)
    def metrics():
        return Response(service.metrics_text(), media_type="text/plain; version=0.0.4")

    # ------------------------------------------------------------------ videos

    @app.post("/v1/videos", tags=["videos"], status_code=201, response_model=None, openapi_extra=_CREATE_BODY,
              responses={201: {"model": Video}, 200: {"model": Video, "description": "an Idempotency-Key replay"},
                         **_ERRORS})
    async def create_video(request: Request):
        """Queue a video. `openai.videos.create(prompt=..., seconds=..., size=..., input_reference=...)` works."""
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 255:
            raise ApiError(422, "must be 1-255 characters", field="Idempotency-Key")
        ctype = (request.headers.get("content-type") or "application/json").split(";")[0].strip().lower()
        if ctype not in ("application/json", "multipart/form-data", "application/x-www-form-urlencoded"):
            raise ApiError(415, "send the request as multipart/form-data or application/json")
        raw = await read_body(request, max_body, body_idle_timeout)
        try:
            body = parse_json(raw) if ctype == "application/json" else await parse_form(request)
            job, created = await run_in_threadpool(service.submit, body, key)
        except reqs.RequestInvalid as exc:
            raise ApiError(exc.status, exc.reason, field=exc.field) from None
        except IdempotencyConflict:
            raise ApiError(409, "this Idempotency-Key was used with a different request",
                           field="Idempotency-Key") from None
        view = await run_in_threadpool(service.view, job)
        return JSONResponse(view, 201 if created else 200, headers={"Location": f"/v1/videos/{job.id}"})

    @app.get("/v1/videos", tags=["videos"], response_model=None, responses={200: {"model": VideoPage}, **_ERRORS})
    def list_videos(after: Optional[str] = None, before: Optional[str] = None, limit: Optional[str] = None,
                    order: str = "asc", state: Optional[str] = None):
        """A cursor page of videos (oldest first unless order=desc); `after`/`before` take an id."""
        if state is not None and state not in STATES:
            raise ApiError(422, f"choose one of {', '.join(STATES)}", field="state")
        if order not in ("asc", "desc"):
            raise ApiError(422, "choose asc or desc", field="order")
        count = min(_int_param(limit, "limit", 100, 1, MAX_SEQ), 1000)
        after_seq, before_seq = _cursor(after, "after"), _cursor(before, "before")
        if order == "desc" and after_seq is not None:  # a desc page continues below its last id
            after_seq, before_seq = None, after_seq if before_seq is None else min(after_seq, before_seq)
        jobs = service.store.list(state, count + 1, after_seq or 0, newest_first=order == "desc",
                                  before_seq=before_seq)
        data = service.views(jobs[:count])
        return JSONResponse({"object": "list", "data": data, "has_more": len(jobs) > count,
                             "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})

    def _cursor(value: Optional[str], name: str) -> Optional[int]:
        if value is None or value == "":
            return None
        if JOB_ID.fullmatch(value):
            job = service.store.get(value)
            if job is None:
                raise ApiError(422, f"no video {value} (deleted?)", field=name)
            return job.seq
        return _int_param(value, name, None, 0, MAX_SEQ)

    @app.get("/v1/videos/{video_id}", tags=["videos"], response_model=None,
             responses={200: {"model": Video}, **_ERRORS})
    def retrieve_video(video_id: str):
        return JSONResponse(service.view(job_or_404(video_id)))

    @app.delete("/v1/videos/{video_id}", tags=["videos"], response_model=None,
                responses={200: {"model": VideoDeleted}, **_ERRORS})
    def delete_video(video_id: str):
        job_or_404(video_id)
        deleted, reason = service.delete(video_id)
        if reason:
            raise ApiError(409, reason)
        if not deleted:
            raise ApiError(404, f"no video {video_id}", code="video_not_found")
        return {"id": video_id, "object": "video.deleted", "deleted": True}

    @app.post("/v1/videos/{video_id}/cancel", tags=["videos"], response_model=None,
              responses={200: {"model": Video}, **_ERRORS})
    def cancel_video(video_id: str):
        job_or_404(video_id)
        job = service.cancel(video_id)
        if job is None:
            raise ApiError(404, f"no video {video_id}", code="video_not_found")
        if job.state in TERMINAL and job.state != "cancelled":
            raise ApiError(409, f"the job already ended ({job.state})")
        return JSONResponse(service.view(job))

    @app.get("/v1/videos/{video_id}/content", tags=["videos"], response_class=FileResponse,
             responses={200: {"content": {"video/mp4": {}}}, 206: {"description": "a byte range"}, **_ERRORS})
    def video_content(video_id: str, variant: str = "video"):
        """The MP4; `variant` other than `video` (OpenAI's thumbnail, spritesheet) is not made here."""
        job = job_or_404(video_id)
        if variant != "video":
            raise ApiError(404, f"variant {variant!r} is not available: this server makes only the video",
                           field="variant")
        if job.state != "succeeded":
            raise ApiError(409, f"no content: the job is {job.state}")
        if not job.output or not os.path.isfile(job.output):
            raise ApiError(404, "the video file is gone from the outputs folder")
        return FileResponse(job.output, media_type="video/mp4", filename=os.path.basename(job.output))

    @app.get("/v1/videos/{video_id}/events", tags=["videos"], response_class=EventSourceResponse,
             responses={200: {"content": {"text/event-stream": {}}}, **_ERRORS})
    async def video_events(video_id: str):
        """Server-sent events: `progress` while it runs, then `succeeded`, `failed`, `cancelled` or
        `deleted`; each `data` is the Video."""
        _, state, _ = await changes.view(video_id) if JOB_ID.fullmatch(video_id) else (0, None, None)
        if state is None:
            raise ApiError(404, f"no video {video_id}", code="video_not_found")

        async def stream():
            last, n = None, 0
            while True:
                version, state, text = await changes.view(video_id)
                if state is None:
                    yield ServerSentEvent(json.dumps({"id": video_id}), event="deleted", id=str(n + 1), sep="\n")
                    return
                if text != last:
                    n += 1
                    yield ServerSentEvent(text, event=state if state in TERMINAL else "progress", id=str(n),
                                          sep="\n")
                    last = text
                if state in TERMINAL:
                    return
                await changes.wait(version, SSE_KEEPALIVE_S)

        return EventSourceResponse(stream(), ping=SSE_KEEPALIVE_S, sep="\n", headers={"Cache-Control": "no-cache"})

    # ------------------------------------------------------------------ the page and the docs

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return FileResponse(WEB_DIR / "docs.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return Gate(app, api_key, max_concurrent), changes


def _task_facts(task_name: str) -> dict:
    """What a client (the web page) needs to build a request for this server's task."""
    from wan22ctl import catalog

    t = catalog.TASKS[task_name]
    return {"sizes": [s.replace("*", "x") for s in t.sizes], "default_size": t.default_size.replace("*", "x"),
            "fps": t.fps, "default_frames": t.frame_num, "default_steps": t.sample_steps,
            "accepts_image": t.accepts_image, "needs_image": t.needs_image, "needs_audio": "audio" in t.inputs}


def _int_param(value: Optional[str], name: str, default: Optional[int], lo: int, hi: int) -> Optional[int]:
    if value is None or value == "":
        return default
    if not re.fullmatch(r"\d{1,19}", value) or not lo <= int(value) <= hi:
        raise ApiError(422, f"must be an integer from {lo} to {hi}", field=name)
    return int(value)
