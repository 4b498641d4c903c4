"""The host's client of the resident server (`wan22ctl up --serve`): find it, queue requests, follow jobs.

The server is reached at http://SERVER_HOST:SERVER_PORT (127.0.0.1 when it listens on every
address) with WAN22_API_KEY, else the key `up --serve` generated into
OUTPUT_DIR/.wan22ctl/server/api_key. Failures become the CLI's one-line errors: a refused key
or a refused request is the user's to fix (UserError), no answer is the environment's (EnvError).
Standard library only (urllib), imported when a call is made, so `wan22ctl --help` stays fast;
drawing is the caller's (`follow` hands each job update to a callback).
"""

from __future__ import annotations

import base64
import json
from typing import Callable, Iterator

from wan22ctl import catalog
from wan22ctl.errors import EnvError, RunFailed, UserError
from wan22ctl.settings import Settings

TERMINAL = ("succeeded", "failed", "cancelled")
PROBE_TIMEOUT_S = 0.5
RECONNECT_S = 600.0  # how long `wait` waits for a restarting server (A14B loads take minutes)


class ServerError(Exception):
    """The server answered with an error status: the status and its JSON error object."""

    def __init__(self, status: int, error: dict):
        super().__init__(error.get("message", f"HTTP {status}"))
        self.status = status
        self.error = error


class ServerClient:
    """A small JSON client for the server's `/v1/videos` API."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or None
        self.timeout = timeout

    def _request(self, method: str, path: str, body=None, timeout: float | None = None):
        import urllib.request

        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers), \
            (timeout or self.timeout)

    def call(self, method: str, path: str, body=None, *, headers: dict | None = None, timeout: float | None = None):
        """The decoded JSON answer; ServerError for an error status, OSError when nobody answers."""
        import urllib.error
        import urllib.request

        req, timeout = self._request(method, path, body, timeout)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            try:
                error = json.loads(e.read()).get("error") or {}
            except (ValueError, AttributeError):
                error = {}
            raise ServerError(e.code, error) from None

    def events(self, job_id: str) -> Iterator[tuple[str, dict]]:
        """Server-sent events of one job until it ends: (event name, job JSON)."""
        import urllib.error
        import urllib.request

        req, _ = self._request("GET", f"/v1/videos/{job_id}/events")
        req.add_header("Accept", "text/event-stream")
        try:
            resp = urllib.request.urlopen(req, timeout=120)  # the server sends a keep-alive every 15 s
        except urllib.error.HTTPError as e:
            raise ServerError(e.code, (json.loads(e.read() or b"{}").get("error") or {})) from None
        name = "message"
        with resp:
            for raw in resp:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    yield name, json.loads(line[6:])
                    name = "message"


def server_url(settings: Settings) -> str:
    """Where the host reaches the server: SERVER_HOST (loopback for a wildcard) and SERVER_PORT."""
    host = settings.server_host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.server_port}"


def api_key(settings: Settings) -> str | None:
    """WAN22_API_KEY, else the key `up --serve` generated into OUTPUT_DIR (readable by this user only)."""
    if settings.wan22_api_key:
        return settings.wan22_api_key
    from wan22ctl.paths import main_mounts
    from wan22ctl.plan.container import SERVER_KEY_FILE

    try:
        with open(main_mounts(settings).to_host(SERVER_KEY_FILE)) as f:
            return f.readline().strip() or None
    except OSError:
        return None


def client_for(settings: Settings) -> ServerClient:
    return ServerClient(server_url(settings), api_key(settings))


def user_facing(exc: ServerError, client: ServerClient) -> Exception:
    """A server's error answer as the CLI's error."""
    if exc.status == 401:
        return UserError(f"the server at {client.base_url} refused the API key",
                         fix="set WAN22_API_KEY to the key the server was started with")
    if exc.status == 422:
        return UserError(f"{exc.error.get('field', 'request')}: {exc}")
    if exc.status in (400, 404, 409, 413):
        return UserError(str(exc))
    return RunFailed(f"the server answered {exc.status}: {exc}")


def call(settings: Settings, method: str, path: str, body=None):
    """One call whose failures become the CLI's one-line errors."""
    client = client_for(settings)
    try:
        return client.call(method, path, body)
    except ServerError as exc:
        raise user_facing(exc, client) from None
    except OSError as exc:
        raise EnvError(f"no server answers at {client.base_url} ({getattr(exc, 'reason', exc)})",
                       fix="start it with `wan22ctl up --serve` (or set SERVER_HOST/SERVER_PORT)") from None


# --------------------------------------------------------------------------- for `wan22ctl generate`


def request_body(request) -> dict:
    """The `POST /v1/videos` body for a `plan.launch.GenerationRequest` (its files read and encoded)."""
    from wan22ctl.paths import CONTAINER_CHECKPOINT_DIR

    body = {"prompt": request.prompt, "task": request.task, "size": request.size, "frame_num": request.frame_num,
            "sample_steps": request.sample_steps, "sample_shift": request.sample_shift, "seed": request.seed,
            "sample_solver": request.solver,
            # always named, so a server with other LoRAs merged refuses it (400) instead of running it
            "loras": [{"file": f"{CONTAINER_CHECKPOINT_DIR}/{r['file']}", "scale": r["scale"], "expert": r["expert"]}
                      for r in request.loras if not (request.preset and r.get("catalog"))]}
    if request.preset:
        body["preset"] = request.preset
    if request.guide_scale is not None:
        body["sample_guide_scale"] = float(request.guide_scale)
    for name in ("image", "audio", "pose_video"):
        path = getattr(request, name)
        if path:
            with open(path, "rb") as f:
                body[name] = base64.b64encode(f.read()).decode("ascii")
    if "audio" in catalog.TASKS[request.task].inputs:  # s2v-14B
        body.update(num_clip=request.num_clip, start_from_ref=request.start_from_ref)
        if request.tts_text is not None:  # the server says why it does not synthesize speech (400)
            body["tts_text"] = request.tts_text
    return body


def server_for(settings: Settings, task: str) -> ServerClient | None:
    """A client for the running server when it serves `task`, else None (`generate` runs generate.py).

    None when no server answers at SERVER_HOST:SERVER_PORT within half a second, or when the
    server loaded another task. A server that refuses the API key is the user's to fix: UserError.
    """
    client = client_for(settings)
    try:
        client.call("GET", "/healthz", timeout=PROBE_TIMEOUT_S)
    except (OSError, ServerError):
        return None
    try:
        info = client.call("GET", "/v1/info")
    except ServerError as exc:
        raise user_facing(exc, client) from None
    except OSError:
        return None
    return client if info.get("task") == task else None


def submit(client: ServerClient, request) -> dict:
    """Queue `request` (a `plan.launch.GenerationRequest`) on the server: the job as the server
    reports it. What the server rejects about the request (422) is a UserError."""
    try:
        return client.call("POST", "/v1/videos", request_body(request))
    except ServerError as exc:
        raise user_facing(exc, client) from None
    except OSError as exc:
        raise EnvError(f"the server at {client.base_url} stopped answering ({getattr(exc, 'reason', exc)})",
                       fix="check `wan22ctl logs`; `wan22ctl jobs` lists what it queued") from None


def as_run(job: dict) -> dict:
    """A finished server job as the result `generate` reports for a run (status ok/failed/cancelled)."""
    seconds = (job["finished_at"] or 0) - (job["started_at"] or job["finished_at"] or 0)
    return {"status": "ok" if job["state"] == "succeeded" else job["state"], "video": job.get("output"),
            "sidecar": job.get("sidecar"), "total_s": seconds, "reason": error_text(job), "job": job["id"]}


def error_text(job: dict) -> str | None:
    """Why a job failed or was cancelled (the server's `error` is OpenAI's {code, message})."""
    return (job.get("error") or {}).get("message")


def follow(client: ServerClient, job_id: str, on_update: Callable[[dict], None],
           on_lost: Callable[[str], None], reconnect_s: float = RECONNECT_S) -> dict:
    """Hand every update of a job to `on_update` until it ends; the final job, as the server reports it.

    A server that restarts meanwhile (crash, `docker restart`, a reload) is waited for up to
    `reconnect_s` seconds (`on_lost` hears why once): the queue survives it, and so does the job.
    """
    import http.client
    import time

    final: dict | None = None
    lost_since: float | None = None
    try:
        while final is None:
            try:
                for _, job in client.events(job_id):
                    lost_since = None
                    on_update(job)
                    if job["state"] in TERMINAL:
                        final = job
            except (OSError, http.client.HTTPException) as exc:
                now = time.monotonic()
                if lost_since is None:
                    lost_since = now
                    on_lost(f"lost the server at {client.base_url} ({exc}); waiting for it to come back")
                if now - lost_since > reconnect_s:
                    raise EnvError(f"the server at {client.base_url} did not come back within "
                                   f"{reconnect_s:.0f} s", fix="check `wan22ctl logs`") from None
                time.sleep(1.0)
    except ServerError as exc:
        raise user_facing(exc, client) from None
    return final
