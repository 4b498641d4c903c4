"""The HTTP API (stdlib `http.server`): OpenAI-style `/v1/videos` routes over the `Service`.

Routes:
    POST   /v1/videos                 submit (JSON; `Idempotency-Key` header) -> 201, or 200 for a replay
    GET    /v1/videos                 list (?state=queued&limit=50&order=asc|desc&after=SEQ&before=SEQ)
    GET    /v1/videos/{id}            one job: state, progress (phase, step, total, expert, s/step, ETA)
    GET    /v1/videos/{id}/events     server-sent events until the job ends
    GET    /v1/videos/{id}/content    the MP4 (one byte Range for players that seek)
    POST   /v1/videos/{id}/cancel     queued: cancelled now; running: stops at the next step
    DELETE /v1/videos/{id}            the job and its files (not while running)
    GET    /healthz  /readyz (503 while loading)  /v1/info  /metrics (Prometheus text)

Errors are JSON: `{"error": {"type", "message", "field"?}}`. Every route but the two health
probes needs the API key when one is configured (`Authorization: Bearer KEY` or `X-API-Key`).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import platform
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from wan22ctl import __version__
from wan22ctl.agent.server.requests import RequestInvalid
from wan22ctl.agent.server.store import STATES, TERMINAL, IdempotencyConflict

log = logging.getLogger("wan22ctl.server")

MAX_BODY_BYTES = 24 * 1024 * 1024  # a 16 MiB image in base64 plus the rest
SSE_KEEPALIVE_S = 15.0
MAX_CONNECTIONS = 128  # open connections (each SSE stream holds one)
_JOB_ROUTE = re.compile(r"^/v1/videos/(video_[0-9a-f]{24})(/events|/content|/cancel)?$")
PUBLIC_PATHS = ("/healthz", "/readyz")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class ApiServer(ThreadingHTTPServer):
    """The listening socket; handler threads are daemons so a stuck client never blocks exit."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, service, api_key: str | None, info: dict, max_body: int = MAX_BODY_BYTES,
                 max_connections: int = MAX_CONNECTIONS):
        super().__init__(address, Handler)
        self.service = service
        self.api_key = api_key or None
        self.info = info
        self.max_body = max_body
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request, client_address):
        # One thread per connection, but not without bound: past the limit answer 503 at once.
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class Handler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"
    server_version = f"wan22ctl/{__version__}"
    timeout = 60  # a client that stops sending mid-request is dropped

    def log_message(self, fmt, *args):  # through logging, not stderr prints
        log.debug("%s %s", self.address_string(), fmt % args)

    # ------------------------------------------------------------------ responses

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data, default=str).encode(), "application/json", headers)

    def _error(self, status: int, message: str, field: str | None = None, headers: dict | None = None) -> None:
        kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                409: "conflict_error", 411: "invalid_request_error", 413: "request_too_large",
                415: "invalid_request_error", 422: "invalid_request_error", 503: "unavailable"}.get(status, "error")
        err = {"type": kind, "message": message}
        if field:
            err["field"] = field
        self._json(status, {"error": err}, headers)

    # ------------------------------------------------------------------ plumbing

    def _authorised(self, path: str) -> bool:
        key = self.server.api_key
        if key is None or path in PUBLIC_PATHS:
            return True
        given = self.headers.get("X-API-Key") or ""
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if given and hmac.compare_digest(given.encode(), key.encode()):
            return True
        self._error(401, "missing or wrong API key (send Authorization: Bearer KEY)",
                    headers={"WWW-Authenticate": 'Bearer realm="wan22ctl"'})
        return False

    def _read_json(self):
        """The request body as JSON, or None after answering 411/413/415/400."""
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._error(411, "Content-Length is required")
            return None
        if int(length) > self.server.max_body:
            self.close_connection = True
            self._error(413, f"request body larger than {self.server.max_body} bytes")
            return None
        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
        if ctype != "application/json":
            self.close_connection = True
            self._error(415, "send the request as application/json")
            return None
        raw = self.rfile.read(int(length))
        self.close_connection = self._close_wanted
        try:
            return json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self._error(400, f"body is not valid JSON: {exc}")
            return None

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        self._close_wanted = self.close_connection  # what the client's Connection header asked for
        if (self.headers.get("Content-Length") or "0") != "0" or self.headers.get("Transfer-Encoding"):
            # Answered without reading the body (401, 404, 413, ...) the connection cannot carry
            # another request: its next bytes are this body. _read_json undoes this once it read it.
            self.close_connection = True
        try:
            if not self._authorised(path):
                return
            handler = self._dispatch(method, path)
            if handler is None:
                self._error(404, f"no route {method} {path}")
            else:
                handler(path, parse_qs(url.query))
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:
            log.exception("error handling %s %s", method, path)
            try:
                self._error(500, "internal error (see the server log)")
            except OSError:
                pass

    def _dispatch(self, method: str, path: str):
        fixed = {
            ("GET", "/healthz"): self._healthz, ("GET", "/readyz"): self._readyz,
            ("GET", "/v1/info"): self._info, ("GET", "/metrics"): self._metrics,
            ("GET", "/v1/videos"): self._list, ("POST", "/v1/videos"): self._submit,
        }
        if (method, path) in fixed:
            return fixed[(method, path)]
        m = _JOB_ROUTE.match(path)
        if not m:
            return None
        routes = {("GET", None): self._get, ("DELETE", None): self._delete, ("GET", "/events"): self._events,
                  ("GET", "/content"): self._content, ("POST", "/cancel"): self._cancel}
        handler = routes.get((method, m.group(2)))
        return None if handler is None else (lambda path, query: handler(m.group(1), query))

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_DELETE(self):
        self._route("DELETE")

    # ------------------------------------------------------------------ routes

    def _healthz(self, path, query):
        self._json(200, {"status": "ok"})

    def _readyz(self, path, query):
        svc = self.server.service
        if svc.ready:
            self._json(200, {"ready": True})
        elif svc.load_error:
            self._json(503, {"ready": False, "phase": "failed", "error": svc.load_error})
        else:
            self._json(503, {"ready": False, "phase": "loading"})

    def _info(self, path, query):
        svc = self.server.service
        eng = svc.engine
        data = dict(self.server.info)
        data.update(ready=svc.ready, load_seconds=eng.load_seconds, world_size=eng.world_size,
                    progress_hooked=eng.hooked_modules, uptime_seconds=time.time() - svc.started_at,
                    versions={"wan22ctl": __version__, "python": platform.python_version(),
                              "torch": getattr(sys.modules.get("torch"), "__version__", None),
                              "wan22_ref": os.environ.get("WAN22_REF")})
        self._json(200, data)

    def _metrics(self, path, query):
        self._send(200, self.server.service.metrics_text().encode(), "text/plain; version=0.0.4")

    def _list(self, path, query):
        svc = self.server.service
        state = (query.get("state") or [None])[0]
        if state is not None and state not in STATES:
            return self._error(422, f"choose one of {', '.join(STATES)}", field="state")
        order = (query.get("order") or ["asc"])[0]
        if order not in ("asc", "desc"):
            return self._error(422, "choose asc or desc", field="order")
        try:
            limit = int((query.get("limit") or ["100"])[0])
            after = int((query.get("after") or ["0"])[0])
            before = int(query["before"][0]) if query.get("before") else None
        except ValueError:
            return self._error(422, "limit, after and before must be integers", field="limit")
        limit = max(1, min(limit, 1000))
        jobs = svc.store.list(state, limit + 1, after, newest_first=order == "desc", before_seq=before)
        data = [svc.view(j) | {"seq": j.seq} for j in jobs[:limit]]
        self._json(200, {"object": "list", "data": data, "has_more": len(jobs) > limit,
                         "last_seq": data[-1]["seq"] if data else None})

    def _submit(self, path, query):
        body = self._read_json()
        if body is None:
            return
        key = self.headers.get("Idempotency-Key")
        if key is not None and not (1 <= len(key) <= 255):
            return self._error(422, "must be 1-255 characters", field="Idempotency-Key")
        try:
            job, created = self.server.service.submit(body, key)
        except RequestInvalid as exc:
            return self._error(422, exc.reason, field=exc.field)
        except IdempotencyConflict:
            return self._error(409, "this Idempotency-Key was used with a different request",
                               field="Idempotency-Key")
        self._json(201 if created else 200, self.server.service.view(job),
                   {"Location": f"/v1/videos/{job.id}"})

    def _job_or_404(self, job_id):
        job = self.server.service.store.get(job_id)
        if job is None:
            self._error(404, f"no video {job_id}")
        return job

    def _get(self, job_id, query):
        job = self._job_or_404(job_id)
        if job is not None:
            self._json(200, self.server.service.view(job))

    def _cancel(self, job_id, query):
        if self._job_or_404(job_id) is None:
            return
        job = self.server.service.cancel(job_id)
        if job is None:
            return self._error(404, f"no video {job_id}")
        if job.state in TERMINAL and job.state != "cancelled":
            return self._error(409, f"the job already ended ({job.state})")
        self._json(200, self.server.service.view(job))

    def _delete(self, job_id, query):
        deleted, reason = self.server.service.delete(job_id)
        if reason:
            return self._error(409, reason)
        if not deleted:
            return self._error(404, f"no video {job_id}")
        self._json(200, {"id": job_id, "object": "video.deleted", "deleted": True})

    def _content(self, job_id, query):
        job = self._job_or_404(job_id)
        if job is None:
            return
        if job.state != "succeeded" or not job.output or not os.path.isfile(job.output):
            return self._error(409 if job.state != "succeeded" else 404,
                               f"no content: the job is {job.state}" if job.state != "succeeded"
                               else "the video file is gone from the outputs folder")
        size = os.path.getsize(job.output)
        start, end = 0, size - 1
        m = _RANGE.fullmatch((self.headers.get("Range") or "").strip())
        if m and (m.group(1) or m.group(2)):  # one byte range, for players that seek
            if m.group(1):
                start, end = int(m.group(1)), int(m.group(2)) if m.group(2) else size - 1
            else:
                start = max(0, size - int(m.group(2)))
            end = min(end, size - 1)
            if start > end:
                return self._error(416, "range outside the file", headers={"Content-Range": f"bytes */{size}"})
        self.send_response(206 if m and (m.group(1) or m.group(2)) else 200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if m and (m.group(1) or m.group(2)):
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Disposition", f'attachment; filename="{os.path.basename(job.output)}"')
        self.end_headers()
        with open(job.output, "rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0 and (chunk := f.read(min(1 << 20, left))):
                self.wfile.write(chunk)
                left -= len(chunk)

    def _events(self, job_id, query):
        svc = self.server.service
        job = self._job_or_404(job_id)
        if job is None:
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        last, n = None, 0
        while True:
            with svc.changed:
                version = svc.version
            job = svc.store.get(job_id)
            if job is None:
                self._sse("deleted", {"id": job_id}, n)
                return
            view = svc.view(job)
            snapshot = json.dumps(view, sort_keys=True, default=str)
            if snapshot != last:
                n += 1
                self._sse("progress" if job.state not in TERMINAL else job.state, view, n)
                last = snapshot
            if job.state in TERMINAL:
                return
            with svc.changed:
                if svc.version == version and not svc.changed.wait(timeout=SSE_KEEPALIVE_S):
                    self.wfile.write(b": keepalive\n\n")
                    self.wfile.flush()

    def _sse(self, event: str, data: dict, n: int) -> None:
        self.wfile.write(f"id: {n}\nevent: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode())
        self.wfile.flush()
