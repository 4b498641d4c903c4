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

The server is reached at http://SERVER_HOST:SERVER_PORT (`wan22ctl.server_client`). Paths the
server reports under /opt/outputs are shown as host paths under OUTPUT_DIR.
"""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from wan22ctl import server_client
from wan22ctl.cli.options import JobIdArg, JsonOpt
from wan22ctl.cli.output import Output, fmt_duration
from wan22ctl.errors import EnvError, RunFailed
from wan22ctl.server_client import error_text
from wan22ctl.paths import main_mounts
from wan22ctl.settings import load_cli_settings


def _on_host(settings, job: dict) -> dict:
    to_host = main_mounts(settings).to_host
    return {**job, "output": to_host(job.get("output")), "sidecar": to_host(job.get("sidecar"))}


def _progress_text(job: dict) -> str:
    p = job.get("progress_detail") or {}
    if job["state"] == "queued":
        return f"#{p.get('queue_position', 0) + 1} in queue"
    if job["state"] == "running":
        text = f"{p.get('phase')} {p.get('step', 0)}/{p.get('total')}"
        if p.get("eta_seconds") is not None:
            text += f" ETA {fmt_duration(p['eta_seconds'])}"
        return text
    return f"{p.get('step', 0)}/{p.get('total')}" if job["state"] != "succeeded" else "done"


def _render_jobs(out: Output, data: dict) -> None:
    jobs = data["data"]
    if not jobs:
        out.say("no jobs")
        return
    out.table(("id", "state", "progress", "prompt", "output / error"),
              [(j["id"], j["state"], _progress_text(j), j["prompt"] if len(j["prompt"]) <= 40 else j["prompt"][:39] + "…",
                j.get("output") or error_text(j) or "") for j in jobs])


def jobs(
    state: Annotated[Optional[str], typer.Option("--state", help="Only jobs in this state: queued, running, succeeded, failed, cancelled.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="The newest this many jobs (shown oldest first).")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List the server's jobs with their state and progress."""
    settings = load_cli_settings()
    out = Output(as_json)
    query = f"?order=desc&limit={max(1, limit)}" + (f"&state={state}" if state else "")
    data = server_client.call(settings, "GET", "/v1/videos" + query)
    data["data"] = [_on_host(settings, j) for j in reversed(data["data"])]
    out.result(data, lambda d: _render_jobs(out, d))


def wait(job_id: JobIdArg, as_json: JsonOpt = False) -> None:
    """Follow a job until it ends: steps, expert, seconds per step and ETA; exit 1 if it failed.

    Ctrl-C stops watching, not the job. A server that restarts meanwhile is waited for.
    """
    settings = load_cli_settings()
    out = Output(as_json)
    client = server_client.client_for(settings)
    try:
        with out.run_view(job_id) as view:
            final = server_client.follow(client, job_id, view.on_job, view.say)
    except KeyboardInterrupt:
        out.say(f"stopped watching; {job_id} goes on (`wan22ctl wait {job_id}` to follow it again, "
                f"`wan22ctl cancel {job_id}` to stop it)")
        raise
    final = _on_host(settings, final)
    out.result(final)
    if final["state"] == "succeeded":
        seconds = (final["finished_at"] or 0) - (final["started_at"] or 0)
        out.say(f"saved {final['output']} ({fmt_duration(seconds)} on the server, seed {final['seed']})")
        return
    raise RunFailed(f"{job_id} {final['state']}: {error_text(final) or 'no reason given'}")


def cancel(job_id: JobIdArg, as_json: JsonOpt = False) -> None:
    """Cancel a job: a queued one at once, a running one at its next denoising step."""
    settings = load_cli_settings()
    out = Output(as_json)
    job = _on_host(settings, server_client.call(settings, "POST", f"/v1/videos/{job_id}/cancel"))
    out.result(job, lambda j: out.say(f"{job_id} cancelled" if j["state"] == "cancelled" else
                                      f"{job_id} stops at its next step (`wan22ctl wait {job_id}` to see it end)"))


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
