"""The resident server: `wan22ctl serve`, and from the host `jobs`, `wait ID`, `cancel ID`.

Examples:
    wan22ctl up --serve                  # the container runs the server (SERVER_TASK, port SERVER_PORT)
    wan22ctl serve --task t2v-A14B --plan auto   # run it here instead (inside the container, say)
    wan22ctl generate --task ti2v-5B --prompt "..."   # goes to the server when one serves that task
    wan22ctl generate --task ti2v-5B --prompt-file prompts.txt   # so does every valid line of a batch
    wan22ctl jobs                        # queued, running and recent jobs
    wan22ctl jobs --state failed --json
    wan22ctl wait video_0123...          # live steps, expert and ETA until the job ends
    wan22ctl cancel video_0123...        # a running job stops at its next denoising step

The server is reached at http://SERVER_HOST:SERVER_PORT (127.0.0.1 when it listens on every
address) with WAN22_API_KEY when set. Paths the server reports under /opt/outputs are shown
as host paths under OUTPUT_DIR. Stdlib HTTP (urllib) and rich are imported by the commands.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Annotated, Iterator, Optional

import typer

from wan22ctl.cli.common import JsonOpt, console, emit, settings_from
from wan22ctl.errors import EnvError, RunFailed, UserError

TERMINAL = ("succeeded", "failed", "cancelled")
PROBE_TIMEOUT_S = 0.5
RECONNECT_S = 600.0  # how long `wait` waits for a restarting server (A14B loads take minutes)
# Server phases -> the phase names the generate view knows (wan22ctl.cli.generate.PHASE_LABEL).
PHASES = {"encoding": "text_encode", "denoising": "denoise", "decoding": "decode", "saving": "save"}


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
        import urllib.request  # here, not at import: `wan22ctl --help` stays fast

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


def server_url(settings) -> str:
    """Where the host reaches the server: SERVER_HOST (loopback for a wildcard) and SERVER_PORT."""
    host = settings["SERVER_HOST"]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings['SERVER_PORT']}"


def client_for(settings) -> ServerClient:
    return ServerClient(server_url(settings), settings["WAN22_API_KEY"] or None)


def _call(settings, method: str, path: str, body=None):
    """A call whose failures become the CLI's one-line errors."""
    client = client_for(settings)
    try:
        return client.call(method, path, body)
    except ServerError as exc:
        raise _user_facing(exc, client) from None
    except OSError as exc:
        raise EnvError(f"no server answers at {client.base_url} ({getattr(exc, 'reason', exc)})",
                       fix="start it with `wan22ctl up --serve` (or set SERVER_HOST/SERVER_PORT)") from None


def _user_facing(exc: ServerError, client: ServerClient):
    if exc.status == 401:
        return UserError(f"the server at {client.base_url} refused the API key",
                         fix="set WAN22_API_KEY to the key the server was started with")
    if exc.status == 422:
        return UserError(f"{exc.error.get('field', 'request')}: {exc}")
    if exc.status in (404, 409):
        return UserError(str(exc))
    return RunFailed(f"the server answered {exc.status}: {exc}")


def host_path(settings, path: str | None) -> str | None:
    """A path under the container's /opt/outputs as the host sees it under OUTPUT_DIR."""
    from wan22ctl import catalog

    if path and path.startswith(catalog.CONTAINER_OUTPUT_DIR + "/"):
        return os.path.join(settings["OUTPUT_DIR"], path[len(catalog.CONTAINER_OUTPUT_DIR) + 1:])
    return path


def _localise(settings, job: dict) -> dict:
    job = dict(job)
    for key in ("output", "sidecar"):
        job[key] = host_path(settings, job.get(key))
    return job


# --------------------------------------------------------------------------- for `wan22ctl generate`


def request_body(request) -> dict:
    """The `POST /v1/videos` body for a `plan.launch.GenerationRequest` (its image read and encoded)."""
    body = {"prompt": request.prompt, "task": request.task, "size": request.size, "frame_num": request.frame_num,
            "sample_steps": request.sample_steps, "sample_shift": request.sample_shift, "seed": request.seed,
            "sample_solver": request.solver}
    if request.guide_scale is not None:
        body["sample_guide_scale"] = float(request.guide_scale)
    if request.image:
        with open(request.image, "rb") as f:
            body["image"] = base64.b64encode(f.read()).decode("ascii")
    return body


def server_for(settings, task: str) -> ServerClient | None:
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
        raise _user_facing(exc, client) from None
    except OSError:
        return None
    return client if info.get("task") == task else None


def submit(client: ServerClient, request) -> dict:
    """Queue `request` (a `plan.launch.GenerationRequest`) on the server: the job as the server
    reports it. What the server rejects about the request (422) is a UserError."""
    try:
        return client.call("POST", "/v1/videos", request_body(request))
    except ServerError as exc:
        raise _user_facing(exc, client) from None
    except OSError as exc:
        raise EnvError(f"the server at {client.base_url} stopped answering ({getattr(exc, 'reason', exc)})",
                       fix="check `wan22ctl logs`; `wan22ctl jobs` lists what it queued") from None


def as_run(job: dict) -> dict:
    """A finished server job as the result `generate` reports for a run (status ok/failed/cancelled)."""
    seconds = (job["finished_at"] or 0) - (job["started_at"] or job["finished_at"] or 0)
    return {"status": "ok" if job["state"] == "succeeded" else job["state"], "video": job.get("output"),
            "sidecar": job.get("sidecar"), "total_s": seconds, "reason": job.get("error"), "job": job["id"]}


def follow_job(settings, job_id: str, out, *, quiet: bool = False, label: str | None = None,
               reconnect_s: float = RECONNECT_S) -> dict:
    """Draw a job with the `generate` progress view until it ends; the final job, as the server reports it.

    A server that restarts meanwhile (crash, `docker restart`, a reload) is waited for up to
    `reconnect_s` seconds: the queue survives it, and so does the job.
    """
    import http.client
    import time

    from wan22ctl.cli.generate import RunView

    client = client_for(settings)
    final: dict | None = None
    lost_since: float | None = None
    try:
        with RunView(out, quiet=quiet, label=label or job_id) as view:
            state = {"phase": None}
            while final is None:
                try:
                    for _, job in client.events(job_id):
                        lost_since = None
                        _show(view, job, state)
                        if job["state"] in TERMINAL:
                            final = job
                except (OSError, http.client.HTTPException) as exc:
                    now = time.monotonic()
                    if lost_since is None:
                        lost_since = now
                        view.progress.console.print(f"lost the server at {client.base_url} ({exc}); "
                                                    "waiting for it to come back", markup=False)
                    if now - lost_since > reconnect_s:
                        raise EnvError(f"the server at {client.base_url} did not come back within "
                                       f"{reconnect_s:.0f} s", fix="check `wan22ctl logs`") from None
                    time.sleep(1.0)
    except ServerError as exc:
        raise _user_facing(exc, client) from None
    return final


def wait_for_job(settings, job_id: str, *, as_json: bool = False, reconnect_s: float = RECONNECT_S) -> dict:
    """`wan22ctl wait`: follow a job until it ends; the final job (host paths).

    Raises RunFailed when the job failed or was cancelled. Ctrl-C stops watching, not the job.
    """
    from wan22ctl.cli.generate import _fmt_s

    out = console(stderr=as_json)
    try:
        final = _localise(settings, follow_job(settings, job_id, out, quiet=as_json, reconnect_s=reconnect_s))
    except KeyboardInterrupt:
        out.print(f"stopped watching; {job_id} goes on (`wan22ctl wait {job_id}` to follow it again, "
                  f"`wan22ctl cancel {job_id}` to stop it)")
        raise
    if final["state"] == "succeeded":
        seconds = (final["finished_at"] or 0) - (final["started_at"] or 0)
        out.print(f"saved {final['output']} ({_fmt_s(seconds)} on the server, seed {final['seed']})", markup=False)
        return final
    if as_json:
        emit(final, True, print)
    raise RunFailed(f"{job_id} {final['state']}: {final.get('error') or 'no reason given'}")


def _show(view, job: dict, state: dict) -> None:
    """One server-sent job update on the generate progress view."""
    p = job.get("progress") or {}
    if job["state"] == "queued":
        view.progress.update(view.task, description=f"{view.label}: queued (position {p.get('queue_position', 0) + 1})")
    elif p.get("phase") in PHASES and p["phase"] != state["phase"]:
        state["phase"] = p["phase"]
        view.on_event({"event": "phase", "name": PHASES[p["phase"]], "state": "start"})
    if p.get("phase") in ("denoising", "decoding", "saving"):
        view.on_event({"event": "progress", "step": p.get("step", 0), "total": p.get("total"),
                       "eta_s": p.get("eta_seconds")})
        if p.get("expert") and p["phase"] == "denoising":
            view.progress.update(view.task, description=f"{view.label}: denoising "
                                                        f"({p['expert'].replace('_', '-')} expert)")


# --------------------------------------------------------------------------- `up --serve`


def serve_spec(settings, stack: str):
    """The container spec of `wan22ctl up --serve` (main stack only; a key when published beyond localhost)."""
    import ipaddress

    from wan22ctl.plan.container import plan_serve_container

    if stack != "main":
        raise UserError("--serve runs Wan2.2's resident server; it belongs to the main stack")
    if not ipaddress.ip_address(settings["SERVER_HOST"]).is_loopback and not settings["WAN22_API_KEY"]:
        raise UserError(f"SERVER_HOST={settings['SERVER_HOST']} publishes the server beyond this machine without a key",
                        fix="set WAN22_API_KEY (clients send Authorization: Bearer KEY), or SERVER_HOST=127.0.0.1")
    return plan_serve_container(settings)


def prepare_serve(settings) -> None:
    """Put the API key where the server reads it (OUTPUT_DIR, mode 600), or remove a stale one."""
    from wan22ctl import catalog
    from wan22ctl.plan.container import SERVER_KEY_FILE

    path = os.path.join(settings["OUTPUT_DIR"], os.path.relpath(SERVER_KEY_FILE, catalog.CONTAINER_OUTPUT_DIR))
    if not settings["WAN22_API_KEY"]:
        if os.path.exists(path):
            os.remove(path)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(settings["WAN22_API_KEY"] + "\n")
    os.replace(path + ".tmp", path)


# --------------------------------------------------------------------------- commands


def _progress_text(job: dict) -> str:
    p = job.get("progress") or {}
    if job["state"] == "queued":
        return f"#{p.get('queue_position', 0) + 1} in queue"
    if job["state"] == "running":
        text = f"{p.get('phase')} {p.get('step', 0)}/{p.get('total')}"
        if p.get("eta_seconds") is not None:
            from wan22ctl.cli.generate import _fmt_s

            text += f" ETA {_fmt_s(p['eta_seconds'])}"
        return text
    return f"{p.get('step', 0)}/{p.get('total')}" if job["state"] != "succeeded" else "done"


def _render_jobs(data: dict) -> None:
    from rich.table import Table

    jobs = data["data"]
    if not jobs:
        print("no jobs")
        return
    table = Table(show_header=True, header_style="bold")
    for col in ("id", "state", "progress", "prompt", "output / error"):
        table.add_column(col, overflow="fold")
    for j in jobs:
        prompt = j["prompt"] if len(j["prompt"]) <= 40 else j["prompt"][:39] + "…"
        table.add_row(j["id"], j["state"], _progress_text(j), prompt, j.get("output") or j.get("error") or "")
    console().print(table)


def jobs(
    state: Annotated[Optional[str], typer.Option("--state", help="Only jobs in this state: queued, running, succeeded, failed, cancelled.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="The newest this many jobs (shown oldest first).")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List the server's jobs with their state and progress."""
    settings = settings_from()
    query = f"?order=desc&limit={max(1, limit)}" + (f"&state={state}" if state else "")
    data = _call(settings, "GET", "/v1/videos" + query)
    data["data"] = [_localise(settings, j) for j in reversed(data["data"])]
    emit(data, as_json, _render_jobs)


def wait(
    job_id: Annotated[str, typer.Argument(help="The job id (video_...).")],
    as_json: JsonOpt = False,
) -> None:
    """Follow a job until it ends: steps, expert, seconds per step and ETA; exit 1 if it failed."""
    settings = settings_from()
    final = wait_for_job(settings, job_id, as_json=as_json)
    if as_json:
        emit(final, True, print)


def cancel(
    job_id: Annotated[str, typer.Argument(help="The job id (video_...).")],
    as_json: JsonOpt = False,
) -> None:
    """Cancel a job: a queued one at once, a running one at its next denoising step."""
    settings = settings_from()
    job = _localise(settings, _call(settings, "POST", f"/v1/videos/{job_id}/cancel"))
    emit(job, as_json, lambda j: print(f"{job_id} cancelled" if j["state"] == "cancelled"
                                       else f"{job_id} stops at its next step (`wan22ctl wait {job_id}` to see it end)"))


def serve(ctx: typer.Context) -> None:
    """Run the resident server here (in the container, or on any machine with Wan2.2 and torch).

    Every option goes to `wan22ctl-agent server` (see `wan22ctl serve --help-server`), run by
    Wan2.2's Python (WAN22_PYTHON, default python3) so that `wan` and torch import in-process.
    From the host, `wan22ctl up --serve` starts it in the container instead.
    """
    import shutil
    import sys

    args = list(ctx.args)
    if "--help-server" in args:
        args = ["--help"]
    python = os.environ.get("WAN22_PYTHON", "python3")
    exe = shutil.which(python)
    if exe is None:
        raise EnvError(f"{python} is not on PATH", fix="set WAN22_PYTHON to the Python that has torch and Wan2.2")
    source = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p))
    sys.stdout.flush()
    os.execve(exe, [exe, "-m", "wan22ctl.agent", "server", *args], env)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("serve", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(serve)
    app.command("jobs")(jobs)
    app.command("wait")(wait)
    app.command("cancel")(cancel)
